"""One proxy trial of the architecture search: train a sampled SpineNet briefly, read its held-out box AP.

Du et al., "SpineNet" (CVPR 2020, arXiv 1912.05027) §4.2: every sampled architecture is trained on a proxy task
(SpineNet-49's layout at reduced widths, 512 px, 5 epochs of COCO train2017) and rewarded with its AP on 7,392
held-out training images. Here the proxy is a registered experiment (``search_proxy_spinenet49`` for the paper's,
``search_demo`` for a CPU-sized one), so a trial is exactly a ``torchspine train`` run with one more override,
``model.backbone_spec``; the searched model and the retrained winner are built by the same code.

What a trial folder holds (``task.output_dir``): ``spec.json`` (the architecture as block rows, the file
``torchspine train --set model.backbone_spec=FILE`` reads), the run's ``config.yaml``, ``holdout_ids.json``,
``metrics.jsonl``, one checkpoint and ``model.safetensors``. A retried trial (its worker was killed) resumes from the
checkpoint there.

Failure semantics (the search contract): a diverged run (non-finite losses) is a *result*, reward 0 with the reason,
fed to the searcher; anything else (out of memory, a killed or interrupted run, bad data, a bug) is raised, so the
worker records an infrastructure failure and the trial is retried instead of teaching the controller noise.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import Tensor, nn

from torchspine.config import ExperimentCfg, load_config
from torchspine.engine import run as engine_run
from torchspine.engine.build import build_datasets, build_model, num_classes_for
from torchspine.engine.trainer import NonFiniteLossError
from torchspine.specs import BlockSpec
from torchspine.utils.complexity import measure

SPEC_FILE = "spec.json"
REWARD_METRIC = "bbox/AP"


class TrialInterrupted(RuntimeError):
    """The trial's training stopped before its last step (SIGTERM/SIGINT): not a result, retry it."""


@dataclass(frozen=True)
class TrialTask:
    """What a worker hands to the trial runner.

    Attributes:
        number: the trial's number in the study.
        blocks: the sampled architecture.
        experiment: registered proxy experiment, e.g. ``"search_demo"``.
        overrides: ``--set`` style overrides recorded in the study, applied after the experiment.
        output_dir: the trial's folder, ``<run_dir>/trials/<number>/``; a retry resumes from its checkpoints.
        device: torch device to train on.
    """

    number: int
    blocks: tuple[BlockSpec, ...]
    experiment: str
    overrides: tuple[str, ...]
    output_dir: Path
    device: str


@dataclass(frozen=True)
class TrialOutcome:
    """The result of a trial that ran to its end (infrastructure failures are raised, never returned).

    Attributes:
        status: ``"complete"``, or ``"diverged"`` when training hit non-finite losses.
        reward: box AP on the held-out images (0.0 when diverged).
        reason: why the trial diverged; empty when complete.
        metrics: the final evaluation (``"bbox/AP"``, ``"bbox/AP50"``, ...), plus ``"steps"``.
        macs: backbone + head multiply-adds for one image at the proxy's image size (pruned graph: blocks that
            feed no output are not built, so not counted).
        params: backbone + head trainable parameters.
        train_seconds: wall-clock seconds of training and evaluation in this attempt (a resumed attempt counts only
            its own part).
    """

    status: Literal["complete", "diverged"]
    reward: float
    reason: str
    metrics: dict[str, float]
    macs: float
    params: int
    train_seconds: float


def write_spec(blocks: Sequence[BlockSpec], path: Path) -> Path:
    """Write `blocks` as JSON block rows (`torchspine.load_cfg` format), atomically (a retry rewrites it)."""
    rows = [[b.level, b.block_fn, list(b.input_offsets), b.is_output] for b in blocks]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(rows) + "\n")
    tmp.replace(path)
    return path


def trial_config(task: TrialTask, spec_file: Path) -> ExperimentCfg:
    """The resolved config of `task`: its experiment, its overrides, then ``model.backbone_spec=spec_file``."""
    return load_config(task.experiment, [], [*task.overrides, f"model.backbone_spec={spec_file}"])


class _BackboneHead(nn.Module):
    """Backbone + RetinaNet head as one module, so complexity counting skips anchors, matching and NMS."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone = detector.backbone
        self.head = detector.head

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.head(list(self.backbone(x).values()))


def proxy_complexity(cfg: ExperimentCfg, num_classes: int) -> tuple[int, int]:
    """``(macs, params)`` of `cfg`'s backbone + head at ``model.image_size``, counted on the meta device."""
    size = cfg.model.image_size
    cost = measure(lambda: _BackboneHead(build_model(cfg.model, num_classes)), (size, size))
    return cost.macs, cost.params


def run_proxy_trial(task: TrialTask) -> TrialOutcome:
    """Train `task`'s architecture on its proxy experiment and return the held-out box AP as the reward.

    Raises:
        TrialInterrupted: training stopped early on a signal (the next attempt resumes from the checkpoint).
        ConfigError, SpecError: the experiment, overrides or architecture cannot be resolved or built.
        Exception: anything else from training or evaluation (e.g. out of memory), unchanged.
    """
    output_dir = Path(task.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    spec_file = write_spec(task.blocks, output_dir / SPEC_FILE)
    cfg = trial_config(task, spec_file.resolve())
    start = time.perf_counter()
    try:
        # A retry (its worker was killed, or the trial was interrupted) continues from the trial's checkpoint.
        # ("auto": a folder whose first checkpoint was never completed starts from scratch.)
        resume = "auto" if (output_dir / "checkpoints").is_dir() else "never"
        result = engine_run.train_experiment(cfg, output_dir, resume=resume, device=task.device)
    except NonFiniteLossError as err:
        seconds = time.perf_counter() - start
        macs, params = proxy_complexity(cfg, _num_classes_of(cfg))
        return TrialOutcome("diverged", 0.0, f"non-finite loss: {err}", {}, float(macs), params, seconds)
    seconds = time.perf_counter() - start
    if result.step < result.max_steps:
        raise TrialInterrupted(f"trial {task.number} stopped at step {result.step} of {result.max_steps}")
    reward = result.metrics.get(REWARD_METRIC)
    if reward is None or not math.isfinite(reward) or reward < 0:
        raise RuntimeError(
            f"trial {task.number}: no usable {REWARD_METRIC} after training (got {reward!r}; metrics "
            f"{sorted(result.metrics)}); the held-out split must hold annotated images"
        )
    macs, params = proxy_complexity(cfg, int(result.model.head.num_classes))
    metrics = {**result.metrics, "steps": float(result.step)}
    return TrialOutcome("complete", float(reward), "", metrics, float(macs), params, seconds)


def _num_classes_of(cfg: ExperimentCfg) -> int:
    """Class count of a run whose model is gone (training diverged): the data set the config names decides it."""
    train_set, _ = build_datasets(cfg.data, cfg.model, engine_run.CACHE_DIR)
    return num_classes_for(cfg, train_set)
