"""Crash-safe training checkpoints: a versioned plain-data format, atomic writes, rotation and best-model tracking.

A checkpoint is one ``torch.save`` file holding a dict of plain data (tensors, numbers, strings, lists, dicts), so
that it loads with ``torch.load(..., weights_only=True)``: loading never runs pickled code, and a checkpoint can be
opened without the classes that wrote it. Its keys (format version ``FORMAT_VERSION``)::

    format_version  int, bumped when the layout changes (compatibility shims are added only then)
    step            optimizer steps taken so far
    epoch           current epoch
    data_position   samples consumed in the current epoch (the resumable sampler skips them on resume)
    model           model state dict (unwrapped from DDP)
    optimizer       optimizer state dict
    scheduler       LR scheduler state dict, or None
    scaler          GradScaler state dict, or None
    rng             {"torch", "cuda" (list, may be empty), "numpy", "python"}, see `capture_rng_state`
    config          the experiment configuration as a plain dict
    metrics         {name: float}, e.g. the last evaluation
    versions        {"torch", "torchspine"} that wrote the file

Other keys (hook states, for instance) may be added freely; validation checks only the required ones.

Crash safety comes from writing every file to a temporary name in the same directory, ``fsync``-ing it, renaming it
over the final name (``os.replace`` is atomic on POSIX) and ``fsync``-ing the directory, so a crash or ``kill -9``
at any point leaves either the old or the new complete file under the final name. `CheckpointManager` derives the
latest checkpoint from the file names (``ckpt-{step:08d}.pt``) rather than from a pointer file: there is no second
file that could disagree with the checkpoints after a crash, and a checkpoint that fails to load is skipped in favour
of the previous one. The layout follows detectron2's ``Checkpointer``/``PeriodicCheckpointer`` (Apache-2.0); the
code is written from scratch.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import math
import os
import pickle
import random
import re
import secrets
import shutil
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from torchspine.errors import TorchspineError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1

REQUIRED_KEYS = (
    "format_version",
    "step",
    "epoch",
    "data_position",
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "rng",
    "config",
    "metrics",
    "versions",
)

CKPT_PATTERN = re.compile(r"^ckpt-(\d{8,})\.pt$")
# Temporary names start with "." (hidden, and never matched by CKPT_PATTERN) and carry the writer's pid so that a
# later save can tell leftovers of a dead process from its own file in flight.
TMP_PATTERN = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")
BEST_NAME = "best.pt"

# Leaf types that torch.load(weights_only=True) accepts; anything else (numpy scalars, dataclasses, enums, Paths)
# would be pickled as a class and make the checkpoint unloadable on resume, which is the worst moment to find out.
# Exact types, not isinstance: np.float64 subclasses float and IntEnum subclasses int, yet both pickle as classes.
_PLAIN_LEAVES = frozenset({str, bytes, int, float, bool, complex, type(None), torch.dtype, torch.device, torch.Size})
_PLAIN_MAPPINGS = frozenset({dict, OrderedDict})
_PLAIN_SEQUENCES = frozenset({list, tuple, set})


class CheckpointError(TorchspineError, RuntimeError):
    """A checkpoint file cannot be loaded, or does not hold a valid torchspine checkpoint."""


# ---------------------------------------------------------------------------------------------------------------------
# RNG state


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states of torch, CUDA, NumPy and Python as plain data that loads with ``weights_only=True``.

    NumPy's legacy state tuple holds a ``uint32`` array and Python's holds a 625-int tuple; both become tensors,
    ints and lists so no numpy object is pickled. CUDA states are captured only if CUDA is initialized: a process that
    never touched CUDA has not used its generators, and initializing CUDA here would cost seconds and break forked
    data-loader workers.

    Returns:
        ``{"torch": ByteTensor, "cuda": [ByteTensor per device], "numpy": {...}, "python": {...}}``.
    """
    np_state = np.random.get_state(legacy=False)
    version, internal, gauss_next = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
        "numpy": {
            "bit_generator": str(np_state["bit_generator"]),
            # uint32 words stored as int64: every value fits, and int64 tensors are supported everywhere.
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64).copy()),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": {
            "version": int(version),
            "internal": [int(v) for v in internal],
            "gauss_next": None if gauss_next is None else float(gauss_next),
        },
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the global RNGs from `capture_rng_state` output, so that the next draws repeat exactly.

    Args:
        state: as returned by `capture_rng_state` (possibly after a save/load round trip).
    """
    torch.set_rng_state(state["torch"].cpu())
    cuda = list(state.get("cuda") or [])
    if cuda:
        if not torch.cuda.is_available():
            logger.warning("checkpoint holds CUDA RNG states but CUDA is not available; they are not restored")
        else:
            count = torch.cuda.device_count()
            if len(cuda) != count:
                logger.warning(
                    "checkpoint holds %d CUDA RNG states for %d devices; restoring the first %d",
                    len(cuda),
                    count,
                    min(len(cuda), count),
                )
            for device, cuda_state in enumerate(cuda[:count]):
                torch.cuda.set_rng_state(cuda_state.cpu(), device)
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np.asarray(np_state["key"].numpy(), dtype=np.uint32), "pos": int(np_state["pos"])},
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        }
    )
    py_state = state["python"]
    random.setstate((int(py_state["version"]), tuple(int(v) for v in py_state["internal"]), py_state["gauss_next"]))


# ---------------------------------------------------------------------------------------------------------------------
# Building, validating, saving and loading one checkpoint


def _versions() -> dict[str, str]:
    # Imported here: torchspine/__init__ imports the models, and the engine must not create an import cycle with it.
    from torchspine import __version__

    # str(): torch.__version__ is a TorchVersion, a str subclass that weights_only would refuse to unpickle.
    return {"torch": str(torch.__version__), "torchspine": str(__version__)}


def _plain_config(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"config must be a dict or a dataclass instance, not {type(config).__name__}")


def build_checkpoint(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    epoch: int = 0,
    data_position: int = 0,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    config: Any = None,
    metrics: Mapping[str, float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Assemble a checkpoint dict of the current format from live training objects.

    Args:
        model: the model; a DDP wrapper is unwrapped so the keys carry no ``module.`` prefix.
        optimizer: its ``state_dict()`` is stored (momentum buffers included).
        step: optimizer steps taken.
        epoch: current epoch.
        data_position: samples consumed in the current epoch.
        scheduler: LR scheduler with ``state_dict()``, or None.
        scaler: ``torch.amp.GradScaler``, or None.
        config: experiment configuration (a dict or a dataclass instance, stored as a plain dict).
        metrics: latest metrics, stored as floats.
        **extra: further plain-data entries (hook states, ...).

    Returns:
        The checkpoint dict, with the current RNG states and library versions.
    """
    model = getattr(model, "module", model)
    return {
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "epoch": int(epoch),
        "data_position": int(data_position),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "rng": capture_rng_state(),
        "config": _plain_config(config),
        "metrics": {str(k): float(v) for k, v in (metrics or {}).items()},
        "versions": _versions(),
        **extra,
    }


def restore_checkpoint(
    state: Mapping[str, Any],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    restore_rng: bool = True,
) -> None:
    """Load a checkpoint's states into live training objects (the inverse of `build_checkpoint`).

    Args:
        state: a validated checkpoint dict.
        model: receives ``state["model"]`` strictly (a DDP wrapper is unwrapped).
        optimizer: receives the optimizer state if given.
        scheduler: receives the scheduler state if given and stored.
        scaler: receives the GradScaler state if given and stored.
        restore_rng: also restore the global RNGs, which exact resumption needs.
    """
    getattr(model, "module", model).load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    if restore_rng:
        restore_rng_state(state["rng"])


def check_plain(obj: Any, where: str = "state") -> None:
    """Raise if `obj` holds anything that ``torch.load(weights_only=True)`` would refuse.

    Checking before writing turns an unloadable checkpoint (found only when resuming) into an error at save time
    that names the offending entry.

    Args:
        obj: the nested structure to check.
        where: name of `obj` used in the error message.

    Raises:
        TypeError: naming the first entry of a disallowed type.
    """
    kind = type(obj)
    if kind in _PLAIN_LEAVES or isinstance(obj, torch.Tensor):  # Tensor subclasses (Parameter) are allowed
        return
    if kind in _PLAIN_MAPPINGS:
        for key, value in obj.items():
            if type(key) not in _PLAIN_LEAVES:
                raise TypeError(f"{where}: key {key!r} of type {type(key).__name__} is not plain data")
            check_plain(value, f"{where}[{key!r}]")
        return
    if kind in _PLAIN_SEQUENCES:
        for i, value in enumerate(obj):
            check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}, which torch.load(weights_only=True) cannot "
        "load; convert it to tensors, numbers, strings, lists or dicts"
    )


def validate_checkpoint(state: Any, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Check that `state` is a torchspine checkpoint of the current format.

    Args:
        state: the loaded object.
        path: file it came from, named in errors.

    Returns:
        `state`, unchanged.

    Raises:
        CheckpointError: wrong type, missing keys, or a format version this code cannot read.
    """
    name = str(path) if path is not None else "checkpoint"
    if not isinstance(state, dict):
        raise CheckpointError(f"{name}: expected a dict, found {type(state).__name__}; not a torchspine checkpoint")
    if "format_version" not in state:
        raise CheckpointError(f"{name}: no 'format_version' key; not a torchspine training checkpoint")
    version = state["format_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{name}: format_version must be an int, found {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{name}: format_version {version} was written by a newer torchspine (this one reads {FORMAT_VERSION})"
        )
    if version != FORMAT_VERSION:
        # NOTE: no older format exists yet; a shim that upgrades old dicts goes here when the format changes.
        raise CheckpointError(f"{name}: unknown format_version {version} (this torchspine reads {FORMAT_VERSION})")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{name}: missing required keys {missing}")
    for key in ("step", "epoch", "data_position"):
        if not isinstance(state[key], int) or isinstance(state[key], bool) or state[key] < 0:
            raise CheckpointError(f"{name}: {key!r} must be a non-negative int, found {state[key]!r}")
    for key in ("model", "optimizer", "rng", "config", "metrics", "versions"):
        if not isinstance(state[key], dict):
            raise CheckpointError(f"{name}: {key!r} must be a dict, found {type(state[key]).__name__}")
    return state


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk. Windows cannot open directories, and its
    # MoveFileEx-based os.replace is as durable as it gets there.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _replace_durably(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write `state` to `path` atomically: after a crash at any moment, `path` is the old or the new complete file.

    The data goes to a temporary file in the same directory (a rename is atomic only within one file system), is
    flushed and ``fsync``-ed, renamed over `path` with ``os.replace``, and the directory is ``fsync``-ed so the rename
    itself survives a power cut. This is the low-level primitive; it does not validate `state`.

    Args:
        state: what to save (plain data, see `check_plain`).
        path: final file name.

    Returns:
        `path` as a `Path`.
    """
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        _replace_durably(tmp, path)
    except BaseException:
        # Includes KeyboardInterrupt: do not leave a temporary file behind if we can help it.
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", validate: bool = True) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and validate it.

    Args:
        path: checkpoint file.
        map_location: where tensors go (default CPU, so a GPU checkpoint loads anywhere).
        validate: check the format version and required keys.

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: `path` does not exist.
        CheckpointError: the file is truncated or corrupt, holds pickled objects that ``weights_only`` refuses, or is
            not a checkpoint of a format this code reads. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "checkpoint not found", str(path))
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (zero bytes); a write was interrupted or the disk was full")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch wraps the real cause in a page of advice; keep the one line that says what was refused.
        detail = str(exc)
        if "WeightsUnpickler error:" in detail:
            detail = detail.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        if "Unsupported global" in detail:
            # weights_only refuses globals it does not know, e.g. a pickled custom class: never execute them.
            raise CheckpointError(
                f"{path}: refused by torch.load(weights_only=True); the file holds pickled objects that are not "
                f"plain data (not a torchspine checkpoint, or written by other code): {detail}"
            ) from exc
        raise CheckpointError(f"{path}: cannot be read (truncated or corrupt?): {detail}") from exc
    except Exception as exc:  # zip/pickle corruption surfaces as RuntimeError, EOFError, ValueError, ...
        raise CheckpointError(f"{path}: cannot be read (truncated or corrupt?): {type(exc).__name__}: {exc}") from exc
    return validate_checkpoint(state, path) if validate else state


# ---------------------------------------------------------------------------------------------------------------------
# Rotation


class CheckpointManager:
    """Periodic checkpoints in one directory: ``ckpt-{step:08d}.pt``, the best one as ``best.pt``, rotation.

    The latest checkpoint is derived from the file names: `latest` returns the highest step whose file loads and
    validates, skipping (and logging) truncated, corrupt or foreign files. Temporary files of a crashed writer are
    hidden names that `latest` never considers, and are deleted at the next `save`. Only one process (rank 0) should
    write a directory.

    ``best.pt`` is a hard link to the step checkpoint it came from (a copy on file systems without hard links), put
    in place by an atomic rename, so it survives the rotation of that step file. The best value so far is read back
    from ``best.pt`` itself, so it is right after a restart and cannot disagree with the file.

    Args:
        directory: where checkpoints go (created if missing).
        keep_last: step checkpoints to keep (at least 1); ``best.pt`` is not counted.
        best_metric: key in the checkpoint's metrics that selects ``best.pt``; None disables it.
        mode: whether a larger (``"max"``, e.g. AP) or smaller (``"min"``, e.g. loss) metric is better.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        keep_last: int = 3,
        best_metric: str | None = "bbox/AP",
        mode: Literal["max", "min"] = "max",
    ) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep_last = keep_last
        self.best_metric = best_metric
        self.mode = mode
        self._best_value: float | None = None
        self._best_loaded = False

    @property
    def best_path(self) -> Path:
        """Path of ``best.pt`` (it may not exist yet)."""
        return self.directory / BEST_NAME

    def path_for(self, step: int) -> Path:
        """File name of the checkpoint of `step`."""
        return self.directory / f"ckpt-{step:08d}.pt"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Step checkpoints present in the directory as ``(step, path)``, oldest first (not validated)."""
        found = []
        for entry in self.directory.iterdir():
            match = CKPT_PATTERN.match(entry.name)
            if match and entry.is_file():
                found.append((int(match.group(1)), entry))
        return sorted(found)

    def save(self, state: dict[str, Any], step: int, metrics: Mapping[str, float] | None = None) -> Path:
        """Write the checkpoint of `step` atomically, update ``best.pt`` and prune old checkpoints.

        Args:
            state: checkpoint dict (see `build_checkpoint`); its ``step`` is set to `step`.
            step: optimizer step, used in the file name.
            metrics: merged into ``state["metrics"]``; ``best_metric`` among them may update ``best.pt``.

        Returns:
            Path of the new step checkpoint.

        Raises:
            CheckpointError: `state` is not a valid checkpoint.
            TypeError: `state` holds data that ``weights_only=True`` could not load back.
        """
        self._remove_stale_temporaries()
        state = {**state, "step": int(step)}
        if metrics is not None:
            state["metrics"] = {**state.get("metrics", {}), **{str(k): float(v) for k, v in metrics.items()}}
        validate_checkpoint(state, f"state for step {step}")
        check_plain(state)
        path = save_checkpoint(state, self.path_for(step))
        self._maybe_update_best(path, state["metrics"])
        self._prune(keep=path)
        return path

    def latest(self) -> Path | None:
        """The newest step checkpoint that loads and validates, or None if there is none."""
        found = self._newest_valid()
        return None if found is None else found[0]

    def load(
        self, path: str | os.PathLike | None = None, map_location: Any = "cpu", *, update_best: bool = True
    ) -> dict[str, Any]:
        """Load and validate a checkpoint (``weights_only=True``).

        Args:
            path: file to load; None loads the newest valid step checkpoint (loading it only once).
            map_location: where tensors go.
            update_best: repair ``best.pt`` if a crash left it behind the loaded checkpoint. False for readers
                that must not write (the non-main processes of a distributed run).

        Returns:
            The checkpoint dict.

        Raises:
            FileNotFoundError: `path` is None and no valid checkpoint exists, or `path` does not exist.
            CheckpointError: `path` is given and invalid (the message names it).
        """
        if path is not None:
            return load_checkpoint(path, map_location=map_location)
        found = self._newest_valid(map_location)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "no valid checkpoint", str(self.directory))
        if not update_best:
            return found[1]
        # A crash between writing a step checkpoint and linking best.pt to it leaves best.pt behind; the run that
        # resumes from that checkpoint never saves it again, so catch up here (a no-op when best.pt is current).
        try:
            self._maybe_update_best(found[0], found[1]["metrics"])
        except OSError as exc:  # e.g. a read-only folder opened for evaluation: best.pt is not essential
            logger.warning("cannot update %s: %s", self.best_path, exc)
        return found[1]

    def _newest_valid(self, map_location: Any = "cpu") -> tuple[Path, dict[str, Any]] | None:
        # NOTE: validation is a full load. A checksum-less sidecar would be cheaper but can itself be stale; resuming
        # happens once per run, so correctness wins over the extra read.
        for _, path in reversed(self.checkpoints()):
            try:
                return path, load_checkpoint(path, map_location=map_location)
            except (CheckpointError, OSError) as exc:
                logger.warning("skipping checkpoint %s: %s", path, exc)
        return None

    def _is_better(self, value: float, best: float | None) -> bool:
        if math.isnan(value):
            return False
        if best is None or math.isnan(best):
            return True
        return value > best if self.mode == "max" else value < best

    def _current_best(self) -> float | None:
        if not self._best_loaded:
            self._best_loaded = True
            if self.best_path.is_file():
                try:
                    # mmap: only the pickled metadata is read, not the tensors.
                    best = torch.load(self.best_path, map_location="cpu", weights_only=True, mmap=True)
                    value = validate_checkpoint(best, self.best_path)["metrics"].get(self.best_metric)
                    self._best_value = None if value is None else float(value)
                except (CheckpointError, OSError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:
                    logger.warning("ignoring unreadable %s (it will be replaced): %s", self.best_path, exc)
        return self._best_value

    def _maybe_update_best(self, path: Path, metrics: Mapping[str, float]) -> None:
        if self.best_metric is None or self.best_metric not in metrics:
            return
        value = float(metrics[self.best_metric])
        if not self._is_better(value, self._current_best()):
            return
        tmp = _tmp_path(self.best_path)
        try:
            try:
                os.link(path, tmp)
            except OSError:
                # No hard links here (some network and FAT file systems): fall back to a durable copy.
                with open(path, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 16 << 20)
                    dst.flush()
                    os.fsync(dst.fileno())
            _replace_durably(tmp, self.best_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._best_value = value
        logger.info("new best %s = %.6g at %s", self.best_metric, value, path.name)

    def _prune(self, keep: Path) -> None:
        stale = [path for _, path in self.checkpoints()[: -self.keep_last] if path != keep]
        for path in stale:
            path.unlink(missing_ok=True)

    def _remove_stale_temporaries(self) -> None:
        # Temporary files of this process are in flight only inside save_checkpoint, which removes them on error;
        # any other pid's temporaries are leftovers of a crash (one writer per directory is assumed).
        own = os.getpid()
        for entry in self.directory.iterdir():
            match = TMP_PATTERN.match(entry.name)
            if match and int(match.group(1)) != own:
                logger.info("removing leftover temporary file %s", entry)
                entry.unlink(missing_ok=True)
