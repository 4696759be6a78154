"""torchspine model files: ``.safetensors`` weights plus a typed description that rebuilds the model.

One file format for every task and every writer: ``torchspine convert`` (official TF checkpoints) and the trainer's
export (``OUTPUT_DIR/model.safetensors``) both write a `ModelFile` next to the tensors, and
`torchspine.load_model` reads it back. The description is JSON under the ``"torchspine"`` key of the safetensors
header: the task, the backbone (registered variant and its full `SpineNetCfg`, so searched or custom architectures
round-trip), the numerics, the head settings, the input size, the category ids and names, and where the weights
came from. Builders never read it: `torchspine.loading` turns it into their explicit arguments.

Format history (``format_version``):

* 1: untyped dicts (``variant``, ``cfg``, ``backbone_args``, ``head`` / ``classifier``, ``image_size``,
  ``source``), RetinaNet, classification and backbone files only, no category names. Still read.
* 2: this module's `ModelFile` (all four tasks, categories, provenance).

Files are read without unpickling anything: safetensors, or ``torch.load(weights_only=True)`` for plain ``.pt``
state dicts (which carry no description).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import nn

from torchspine.errors import TorchspineError
from torchspine.specs import SpecError, SpineNetCfg, cfg_from_dict, cfg_to_dict

__all__ = [
    "FORMAT_VERSION",
    "BackboneInfo",
    "ClassifierHeadInfo",
    "MaskRCNNHeadInfo",
    "ModelFile",
    "ModelFileError",
    "Numerics",
    "Provenance",
    "RetinaNetHeadInfo",
    "load_backbone_state",
    "load_state",
    "read_model_file",
    "read_tensors",
    "save_model_file",
]

FORMAT_VERSION = 2
METADATA_KEY = "torchspine"
Task = Literal["backbone", "classification", "retinanet", "maskrcnn"]
TASKS: tuple[str, ...] = get_args(Task)
# Format-1 RetinaNet files did not record the anchor size; it was the paper's per-backbone value.
_FORMAT1_ANCHOR_SIZE_4 = ("spinenet143", "spinenet143l", "spinenet190", "resnet152_fpn")


class ModelFileError(TorchspineError, ValueError):
    """A weights file that cannot be read or does not fit the model; the message names the file (and tensor)."""


@dataclass(frozen=True)
class Numerics:
    """How the backbone computes: which official implementation's padding/pooling, activation, BatchNorm.

    Attributes:
        semantics: ``"tpu"`` (tensorflow/tpu) or ``"model_garden"``.
        act: activation name of backbone and heads.
        norm_eps: BatchNorm epsilon.
        norm_momentum: BatchNorm momentum, PyTorch convention.
    """

    semantics: str
    act: str
    norm_eps: float
    norm_momentum: float


@dataclass(frozen=True)
class BackboneInfo:
    """The backbone of the file.

    Attributes:
        variant: the registered SpineNet name, ``"custom"`` for an unregistered `SpineNetCfg` (e.g. a searched
            one), or a ResNet-FPN name.
        cfg: the full SpineNet architecture; None for ResNet-FPN.
        numerics: None for ResNet-FPN.
    """

    variant: str
    cfg: SpineNetCfg | None = None
    numerics: Numerics | None = None


@dataclass(frozen=True)
class ClassifierHeadInfo:
    """The paper's classification head (multi-level average, pool, linear) has no settings besides the classes."""


@dataclass(frozen=True)
class RetinaNetHeadInfo:
    """RetinaNet head and anchors.

    Attributes:
        num_convs: tower depth.
        num_filters: tower width.
        separable: separable tower convs (the mobile models).
        anchor_size: anchor base size in strides.
        num_scales: anchor scales per octave.
        aspect_ratios: anchor width/height ratios in the order of the predictor channels.
    """

    num_convs: int
    num_filters: int
    separable: bool
    anchor_size: float
    num_scales: int = 3
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class MaskRCNNHeadInfo:
    """Mask R-CNN heads.

    Attributes:
        head_dim: width of the RPN, box-head and mask-head convs.
        num_convs: convs of the box and mask heads.
        fc_dim: width of the box head's FC.
        anchor_size: RPN anchor size in strides.
        rpn_num_convs: convs of the RPN head.
        num_fcs: FC layers of the box head.
        anchor_num_scales: intermediate anchor scales per octave (1: tensorflow/tpu; 3: Model Garden's recipes).
            Files written before the field existed have 1.
    """

    head_dim: int
    num_convs: int
    fc_dim: int
    anchor_size: float
    rpn_num_convs: int = 1
    num_fcs: int = 1
    anchor_num_scales: int = 1


HeadInfo = ClassifierHeadInfo | RetinaNetHeadInfo | MaskRCNNHeadInfo
_HEAD_TYPES: dict[str, type | None] = {
    "backbone": None,
    "classification": ClassifierHeadInfo,
    "retinanet": RetinaNetHeadInfo,
    "maskrcnn": MaskRCNNHeadInfo,
}


@dataclass(frozen=True)
class Provenance:
    """Where the weights come from.

    Attributes:
        source: ``"converted"`` (an official TF checkpoint), ``"trained"`` (a torchspine run) or ``"saved"``.
        checkpoint: the converted checkpoint's name.
        implementation: the converted checkpoint's code base (``"tpu"``, ``"model_garden"``).
        experiment: the run's experiment name.
        step: the run's optimisation steps.
        metrics: the run's last evaluation, ``(("bbox/AP", 42.5), ...)``.
    """

    source: Literal["converted", "trained", "saved"] = "saved"
    checkpoint: str | None = None
    implementation: str | None = None
    experiment: str | None = None
    step: int | None = None
    metrics: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ModelFile:
    """The description stored with a model's tensors: enough to rebuild the model with no other argument.

    Attributes:
        task: what the tensors are: a bare backbone, a classifier, a RetinaNet or a Mask R-CNN.
        backbone: see `BackboneInfo`.
        num_classes: classifier / detector class outputs (detectors: background included, as torchvision);
            None for a bare backbone.
        head: the task's head settings (None for a bare backbone).
        image_size: the square input size the model was trained or converted for (None: the variant's default).
        categories: ``(id, name)`` of the classes, ids as the model's labels (detectors: COCO category ids;
            classifiers: output indices). Empty when unknown (e.g. converted COCO detectors: the COCO names apply).
        provenance: see `Provenance`.
        format_version: the format the file was written in (files are always written in `FORMAT_VERSION`).
    """

    task: Task
    backbone: BackboneInfo
    num_classes: int | None = None
    head: HeadInfo | None = None
    image_size: int | None = None
    categories: tuple[tuple[int, str], ...] = ()
    provenance: Provenance = field(default_factory=Provenance)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r}: expected one of {TASKS}")
        expected = _HEAD_TYPES[self.task]
        if (self.head is None) != (expected is None) or (expected is not None and not isinstance(self.head, expected)):
            want = expected.__name__ if expected else "no head"
            raise ValueError(f"a {self.task} model file needs {want}, got {type(self.head).__name__}")
        if (self.num_classes is None) != (self.task == "backbone"):
            raise ValueError(f"num_classes={self.num_classes!r} for task {self.task!r}")
        if self.backbone.cfg is not None and self.backbone.numerics is None:
            raise ValueError("a SpineNet backbone needs its numerics")

    @property
    def category_names(self) -> dict[int, str]:
        """Category id (model label) -> name."""
        return dict(self.categories)

    def to_json(self) -> str:
        data = asdict(self)
        data["backbone"]["cfg"] = cfg_to_dict(self.backbone.cfg) if self.backbone.cfg is not None else None
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ModelFile:
        """Parse a description of any supported format version (raises ``ValueError``/``KeyError`` if invalid)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        version = data.get("format_version")
        if version == 1:
            return _from_format1(data)
        if version != FORMAT_VERSION:
            raise ValueError(f"unknown format_version {version!r}")
        b = data["backbone"]
        backbone = BackboneInfo(
            variant=str(b["variant"]),
            cfg=cfg_from_dict(b["cfg"]) if b.get("cfg") is not None else None,
            numerics=Numerics(**b["numerics"]) if b.get("numerics") is not None else None,
        )
        task = data["task"]
        head_type = _HEAD_TYPES.get(task)
        head = None
        if head_type is not None:
            values = dict(data.get("head") or {})
            if "aspect_ratios" in values:
                values["aspect_ratios"] = tuple(values["aspect_ratios"])
            head = head_type(**values)
        prov = dict(data.get("provenance") or {})
        prov["metrics"] = tuple((str(k), float(v)) for k, v in prov.get("metrics", ()))
        return cls(
            task=task,
            backbone=backbone,
            num_classes=data.get("num_classes"),
            head=head,
            image_size=data.get("image_size"),
            categories=tuple((int(i), str(n)) for i, n in data.get("categories", ())),
            provenance=Provenance(**prov),
            format_version=FORMAT_VERSION,
        )


def _from_format1(meta: Mapping[str, Any]) -> ModelFile:
    """A format-1 description (the converter's and RetinaNet exporter's dicts before `ModelFile`)."""
    variant = str(meta.get("variant", "custom"))
    cfg = cfg_from_dict(meta["cfg"]) if "cfg" in meta else None
    args = meta.get("backbone_args") or {}
    numerics = None
    if cfg is not None:
        numerics = Numerics(args["semantics"], args["act"], float(args["norm_eps"]), float(args["norm_momentum"]))
    task = meta.get("task")
    head: HeadInfo | None = None
    num_classes = None
    if task == "retinanet":
        h = meta["head"]
        num_classes = int(h["num_classes"])
        head = RetinaNetHeadInfo(
            num_convs=int(h["num_convs"]),
            num_filters=int(h["num_filters"]),
            separable=bool(h["separable"]),
            anchor_size=4.0 if variant in _FORMAT1_ANCHOR_SIZE_4 else 3.0,
            num_scales=int(h.get("anchor_num_scales", int(h["num_anchors"]) // 3)),
            aspect_ratios=tuple(h.get("anchor_aspect_ratios", (0.5, 1.0, 2.0))),
        )
    elif task == "classification":
        num_classes = int(meta["classifier"]["num_classes"])
        head = ClassifierHeadInfo()
    elif task != "backbone":
        raise ValueError(f"unknown task {task!r}")
    source = meta.get("source") or {}
    if source.get("format") == "torchspine-train":
        provenance = Provenance("trained")
    elif "checkpoint" in source:
        provenance = Provenance("converted", checkpoint=source.get("checkpoint"), implementation=source.get("format"))
    else:
        provenance = Provenance()
    return ModelFile(
        task=task,
        backbone=BackboneInfo(variant, cfg, numerics),
        num_classes=num_classes,
        head=head,
        image_size=meta.get("image_size"),
        provenance=provenance,
        format_version=1,
    )


# --------------------------------------------------------------------------------------------------- reading


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if not path.is_file():
        raise ModelFileError(f"{path}: not a file")


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The safetensors JSON header, read by hand so a damaged file gets a precise message (and no big read)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ModelFileError(f"{path}: not a safetensors file (only {size} bytes)")
        length = int.from_bytes(prefix, "little")
        if length > min(size - 8, 100_000_000):
            raise ModelFileError(
                f"{path}: not a safetensors file, or truncated (its header claims {length} bytes, the file has {size})"
            )
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFileError(f"{path}: not a safetensors file (the header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a safetensors file (the header is not a JSON object)")
    data_size = size - 8 - length
    ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if ends and max(ends) > data_size:
        raise ModelFileError(
            f"{path}: truncated: its tensors need {max(ends)} bytes of data, the file holds {data_size}"
        )
    return header


def read_model_file(path: str | Path) -> ModelFile | None:
    """The `ModelFile` stored in `path`, or None for a file without one (a plain ``.pt`` or ``.safetensors``).

    Raises:
        FileNotFoundError: `path` does not exist.
        ModelFileError: not a safetensors file, truncated, a newer format, or a corrupt description.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix != ".safetensors":
        return None
    raw = (_safetensors_header(path).get("__metadata__") or {}).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        version = json.loads(raw).get("format_version")
    except (json.JSONDecodeError, AttributeError):
        raise ModelFileError(f"{path}: corrupt torchspine metadata (not a JSON object)") from None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: written in torchspine model-file format {version} by a newer torchspine; this version "
            f"reads formats 1-{FORMAT_VERSION}: upgrade torchspine"
        )
    try:
        return ModelFile.from_json(raw)
    except (KeyError, TypeError, ValueError, SpecError) as err:
        raise ModelFileError(f"{path}: invalid torchspine metadata ({type(err).__name__}: {err})") from None


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pt``/``.pth`` state dict loaded with ``weights_only=True``."""
    path = Path(path)
    _check_file(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        _safetensors_header(path)
        try:
            return load_file(path)
        except (SafetensorError, OSError) as err:
            raise ModelFileError(f"{path}: not a readable safetensors file ({err})") from None
    if path.suffix in {".pt", ".pth"}:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # any unpickling refusal or corruption becomes one clear error
            raise ModelFileError(f"{path}: cannot be loaded with weights_only=True ({err})") from None
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ModelFileError(f"{path}: expected a state dict of tensors (or a checkpoint with a 'model' entry)")
        return state
    raise ModelFileError(f"{path}: unsupported weights format {path.suffix!r}; expected .safetensors, .pt or .pth")


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, prefix: str = "") -> None:
    """Load `state` (read from `path`) into `model` strictly; with `prefix`, only its keys, stripped.

    Missing, unexpected or mis-shaped tensors are a `ModelFileError` naming the file and the tensors.
    """
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                parts.append(f"{title} ({len(items)}): {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}")
        raise ModelFileError(f"{path} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


# Where a backbone's tensors sit in a state dict without torchspine metadata: a bare backbone, a detector or
# classifier (``backbone.``), a classification trainer checkpoint (``classifier.backbone.``, `TrainableClassifier`).
_BACKBONE_PREFIXES = ("", "backbone.", "classifier.backbone.")


def load_backbone_state(backbone: nn.Module, path: str | Path) -> None:
    """Load the backbone tensors of `path` into `backbone` strictly: a backbone file's own tensors, or those under
    ``backbone.`` of a classifier or detector file; for a plain state dict or a trainer checkpoint (``ckpt-*.pt``
    of any task), the first of `_BACKBONE_PREFIXES` under which all of the backbone's tensors are found."""
    state = read_tensors(path)
    info = read_model_file(path)
    if info is not None:
        prefix = "" if info.task == "backbone" else "backbone."
    else:
        wanted = backbone.state_dict().keys()
        found = [p for p in _BACKBONE_PREFIXES if all(p + k in state for k in wanted)]
        prefix = found[0] if found else ("backbone." if any(k.startswith("backbone.") for k in state) else "")
    load_state(backbone, state, path, prefix=prefix)


# --------------------------------------------------------------------------------------------------- writing


def save_model_file(state: Mapping[str, torch.Tensor], info: ModelFile, path: str | os.PathLike[str]) -> Path:
    """Write `state` and `info` to a ``.safetensors`` file atomically (temporary file, fsync, rename).

    The parent folder must exist (a typo in an output path should not create folders silently).
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ModelFileError(f"{path}: model files are .safetensors")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: folder {path.parent} does not exist")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={METADATA_KEY: info.to_json()})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def categories_from(names: Mapping[int, str] | Sequence[str]) -> tuple[tuple[int, str], ...]:
    """``(id, name)`` pairs from an id -> name mapping or a list of names indexed from 0 (classifier classes)."""
    items = names.items() if isinstance(names, Mapping) else enumerate(names)
    return tuple(sorted((int(i), str(n)) for i, n in items))
