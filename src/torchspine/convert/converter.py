"""Convert official SpineNet TensorFlow checkpoints (tensorflow/tpu TF1, Model Garden TF2) to torchspine weights.

The conversion is a table: every torchspine parameter and BatchNorm statistic gets exactly one TF variable, named by
rules derived from the model's plan (`tpu_names`, `model_garden_names`). Shapes are checked after the layout
transform, every model tensor must be covered, and every TF variable under the backbone/head scopes must be used;
optimizer slots, step counters, EMA copies and heads that were not asked for are skipped and listed in the report.
Nothing is written unless all of this holds.

What a TF checkpoint does not store is inferred or asked for: the architecture (from variable shapes), the numerics
(from the format: tensorflow/tpu vs Model Garden), BatchNorm epsilon (from the format and task, overridable) and the
activation (not inferable from weights: from a "-best" name, the Model Garden zoo's choices, or ``act=``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from torchspine.convert.infer import (
    ConversionError,
    SourceFormat,
    Task,
    detect_format,
    detect_task,
    infer_mg_cfg,
    infer_tpu_cfg,
    match_variant,
)
from torchspine.convert.tf_checkpoint import list_variables, load_variables, resolve_checkpoint_prefix
from torchspine.convert.tpu_names import tpu_backbone_units, tpu_maskrcnn_head_names, tpu_retinanet_head_names
from torchspine.convert.transforms import BN_SUFFIXES, conv_kernel, dense_kernel_from_nhwc, transformed_shape
from torchspine.modelfile import (
    BackboneInfo,
    ClassifierHeadInfo,
    MaskRCNNHeadInfo,
    ModelFile,
    Numerics,
    Provenance,
    RetinaNetHeadInfo,
)
from torchspine.models.detection.heads import RetinaNetHead
from torchspine.models.detection.mask_rcnn import build_mask_rcnn
from torchspine.models.spinenet import SpineNet
from torchspine.registry import variant_info
from torchspine.specs import SpineNetCfg, cfg_to_dict
from torchspine.variants import backbone_defaults

CANONICAL_ASPECT_RATIOS = (0.5, 1.0, 2.0)  # torchspine's anchor order (Model Garden's)
SOURCE_ASPECT_RATIOS = {"tpu": (1.0, 2.0, 0.5), "model_garden": (0.5, 1.0, 2.0)}
# BatchNorm (epsilon, PyTorch momentum) the official configs train with; not stored in checkpoints.
NORM_DEFAULTS: dict[tuple[str, str], tuple[float, float]] = {
    ("tpu", "retinanet"): (1e-4, 1 - 0.997),  # tensorflow/tpu base config (its RetinaNet SpineNet configs)
    ("tpu", "maskrcnn"): (1e-3, 1 - 0.99),  # spinenet*_mrcnn.yaml override
    ("tpu", "classification"): (1e-5, 1 - 0.9),  # spinenet*_classification.yaml
    ("model_garden", "retinanet"): (1e-3, 1 - 0.99),
    ("model_garden", "backbone"): (1e-3, 1 - 0.99),
}
_SKIP_PATTERNS = [
    (re.compile(r"(^|/)global_step($|/)|^save_counter/|^step/"), "training step counter"),
    (re.compile(r"/(Momentum|Adam|Adam_1|RMSProp|RMSProp_1)$|^optimizer/|/\.OPTIMIZER_SLOT/"), "optimizer slot"),
    (re.compile(r"ExponentialMovingAverage|/ema/|^ema_"), "exponential-moving-average copy (raw weights used)"),
    (re.compile(r"^_CHECKPOINTABLE_OBJECT_GRAPH$"), "object graph (metadata)"),
]


@dataclass
class ConversionReport:
    """What a conversion did, variable by variable (written as JSON by ``torchspine convert --report``)."""

    source: str
    source_format: str
    task: str
    model: str
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    mapped: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)


@dataclass(frozen=True)
class _Entry:
    torch_key: str
    tf_name: str
    transform: str  # conv | depthwise | dense | copy
    out_perm: tuple[int, ...] | None = None  # output-channel permutation (anchor order)


# ---------------------------------------------------------------------------------------------------------------
# Format, task and architecture inference


# ---------------------------------------------------------------------------------------------------------------
# The conversion


def _anchor_perm(num_anchors: int, per_anchor: int, source: tuple[float, ...]) -> tuple[int, ...] | None:
    """Output-channel permutation taking `source` aspect-ratio order to torchspine's (scale-major layout)."""
    ratios = len(source)
    if source == CANONICAL_ASPECT_RATIOS or num_anchors % ratios:
        return None
    src = [source.index(r) for r in CANONICAL_ASPECT_RATIOS]
    perm = []
    for s in range(num_anchors // ratios):
        for j in range(ratios):
            anchor = s * ratios + src[j]
            perm.extend(anchor * per_anchor + p for p in range(per_anchor))
    return tuple(perm)


def _infer_act(path: Path, fmt: SourceFormat, cfg: SpineNetCfg, act: str | None, notes: list[str]) -> str:
    if act is not None:
        notes.append(f"activation {act!r}: given")
        return act
    if fmt == "model_garden":
        # Model Garden's recipes: swish for SpineNet-49/96/143/190 and Mobile-49XS, hard_swish for Mobile-49/49S.
        act = "hard_swish" if cfg.family == "mobile" and cfg.filter_size_scale >= 0.65 else "swish"
        notes.append(
            f"activation {act!r}: inferred (every Model Garden SpineNet recipe with released weights uses "
            f"it); pass act= if this checkpoint was trained otherwise"
        )
        return act
    if "best" in str(path).lower():
        notes.append("activation 'swish': inferred from '-best' in the path (protocol C checkpoints)")
        return "swish"
    raise ConversionError(
        f"{path}: a TF checkpoint does not record its activation; pass --act relu|swish (tensorflow/tpu protocol-B "
        "model-zoo checkpoints such as spinenet-49.tar.gz use relu, the '-best' ones swish)"
    )


def convert_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: str | None = None,
    task: Task | None = None,
    semantics: Literal["auto", "tpu", "model_garden"] = "auto",
    act: str | None = None,
    norm_eps: float | None = None,
) -> tuple[dict[str, torch.Tensor], ModelFile, ConversionReport]:
    """Convert a TF SpineNet checkpoint to a torchspine state dict.

    Args:
        path: checkpoint prefix, or a folder holding one.
        model: registered variant to build (default: inferred from the variable shapes).
        task: what to convert (default: everything the checkpoint holds; ``"backbone"`` extracts the backbone).
        semantics: numerics of the converted model (default: those of the checkpoint's implementation).
        act: activation the checkpoint was trained with (inferred where possible, see module docstring).
        norm_eps: BatchNorm epsilon (default: the official config's for this format and task).

    Returns:
        ``(state_dict, model_file, report)``; write them with `torchspine.modelfile.save_model_file`, and
        `torchspine.load_model` rebuilds the model.

    Raises:
        ConversionError: the checkpoint is not a convertible SpineNet, or does not match `model`.
        CheckpointError / FileNotFoundError: unreadable files.
    """
    prefix = resolve_checkpoint_prefix(path)
    listing = list_variables(prefix)
    shapes = {name: shape for name, (shape, _) in listing.items()}
    names = sorted(listing)
    fmt, root = detect_format(names)
    found_task = detect_task(names, fmt)
    task = task or found_task
    if task != "backbone" and task != found_task:
        raise ConversionError(f"--task {task} but the checkpoint holds a {found_task} model")
    semantics = fmt if semantics == "auto" else semantics
    notes: list[str] = []

    inferred = infer_tpu_cfg(shapes) if fmt == "tpu" else infer_mg_cfg(shapes, root)
    if model is not None:
        cfg = dataclasses.replace(
            variant_info(model).cfg,
            endpoints_num_filters=inferred.endpoints_num_filters,
            min_level=inferred.min_level,
            max_level=inferred.max_level,
        )
        if cfg != inferred:
            guess = match_variant(inferred) or "a custom configuration"
            raise ConversionError(
                f"the checkpoint does not match --model {model}: its shapes describe {guess} "
                f"(filter_size_scale={inferred.filter_size_scale}, block_repeats="
                f"{inferred.block_repeats}, resample_alpha={inferred.resample_alpha})"
            )
    cfg = inferred
    variant = model or match_variant(cfg) or "custom"
    act = _infer_act(prefix, fmt, cfg, act, notes)
    default_eps, norm_momentum = NORM_DEFAULTS.get((fmt, found_task), NORM_DEFAULTS[(fmt, "retinanet")])
    eps = default_eps if norm_eps is None else norm_eps
    notes.append(
        f"BatchNorm epsilon {eps} ({'given' if norm_eps is not None else 'official config default'}; not "
        f"stored in checkpoints)"
    )
    backbone_args = {"semantics": semantics, "act": act, "norm_eps": eps, "norm_momentum": norm_momentum}
    if semantics != fmt:
        notes.append(
            f"numerics {semantics!r} differ from the checkpoint's implementation ({fmt!r}): outputs will "
            "not match the official model"
        )

    with torch.device("meta"):
        backbone = SpineNet(cfg, **backbone_args)
    entries = _backbone_entries(backbone, fmt, root, "" if task == "backbone" else "backbone.")
    num_classes: int | None = None
    head_info: RetinaNetHeadInfo | ClassifierHeadInfo | MaskRCNNHeadInfo | None = None
    own = {("" if task == "backbone" else "backbone.") + k: v for k, v in backbone.state_dict().items()}
    if task == "retinanet":
        anchor_size = backbone_defaults(variant).retinanet.anchor_size
        notes.append(f"anchor size {anchor_size} (the paper's for {variant}; not stored in checkpoints)")
        num_classes, head_info, head_entries, head = _head(shapes, fmt, cfg, act, eps, norm_momentum, anchor_size)
        entries += head_entries
        own.update({f"head.{k}": v for k, v in head.state_dict().items()})
    elif task == "maskrcnn":
        anchor_size = backbone_defaults(variant).mask_rcnn.anchor_size
        notes.append(f"anchor size {anchor_size} (the paper's for {variant}; not stored in checkpoints)")
        num_classes, head_info, head_entries, head_state = _maskrcnn_head(shapes, backbone, act, anchor_size)
        entries += head_entries
        own.update(head_state)
    elif task == "classification":
        kernel = shapes["classification_head/dense/kernel"]
        num_classes, head_info = kernel[1], ClassifierHeadInfo()
        entries += [
            _Entry("fc.weight", "classification_head/dense/kernel", "dense"),
            _Entry("fc.bias", "classification_head/dense/bias", "copy"),
        ]
        own.update({"fc.weight": torch.empty(kernel[1], kernel[0]), "fc.bias": torch.empty(kernel[1])})

    report = ConversionReport(
        source=str(prefix),
        source_format=fmt,
        task=task,
        model=variant,
        settings={**backbone_args, "cfg": cfg_to_dict(cfg)},
        notes=notes,
    )
    state = _apply(prefix, entries, shapes, own, report, task, fmt, root)
    metadata = ModelFile(
        task=task,
        backbone=BackboneInfo(variant, cfg, Numerics(**backbone_args)),
        num_classes=num_classes,
        head=head_info,
        provenance=Provenance("converted", checkpoint=prefix.name, implementation=fmt),
    )
    return state, metadata, report


def _backbone_entries(model: SpineNet, fmt: SourceFormat, root: str, prefix: str) -> list[_Entry]:
    if fmt == "tpu":
        entries = []
        for unit, conv, bn in tpu_backbone_units(model, root):
            entries.append(_Entry(f"{prefix}{unit}.conv.weight", f"{conv}/kernel", "conv"))
            entries += [_Entry(f"{prefix}{unit}.bn.{t}", f"{bn}/{f}", "copy") for f, t in BN_SUFFIXES.items()]
        return entries
    from torchspine.convert.model_garden_names import model_garden_backbone_names

    return [_Entry(prefix + k, tf, x) for k, tf, x in model_garden_backbone_names(model, root)]


def _head(
    shapes: Mapping[str, tuple[int, ...]],
    fmt: SourceFormat,
    cfg: SpineNetCfg,
    act: str,
    eps: float,
    momentum: float,
    anchor_size: float,
) -> tuple[int, RetinaNetHeadInfo, list[_Entry], RetinaNetHead]:
    levels = range(cfg.min_level, cfg.max_level + 1)
    if fmt == "tpu":
        num_convs = len([n for n in shapes if re.fullmatch(r"retinanet/class_net/class-\d+/kernel", n)])
        tower, cls_pred, box_pred = (
            shapes.get("retinanet/class_net/class-0/kernel"),
            shapes.get("retinanet/class_net/class-predict/kernel"),
            shapes.get("retinanet/box_net/box-predict/kernel"),
        )
        separable = False
    else:
        from torchspine.convert.model_garden_names import SUFFIX

        head_root = "head" if any(n.startswith("head/") for n in shapes) else "model/_head"
        num_convs = len({m.group(1) for n in shapes if (m := re.match(rf"{head_root}/_cls_convs/(\d+)/", n))})
        separable = f"{head_root}/_classifier/depthwise_kernel{SUFFIX}" in shapes
        kernel = "pointwise_kernel" if separable else "kernel"
        tower = shapes.get(f"{head_root}/_cls_convs/0/{kernel}{SUFFIX}")
        cls_pred = shapes.get(f"{head_root}/_classifier/{kernel}{SUFFIX}")
        box_pred = shapes.get(f"{head_root}/_box_regressor/{kernel}{SUFFIX}")
    if tower is None or cls_pred is None or box_pred is None:
        raise ConversionError("RetinaNet head variables incomplete (tower conv or predictors missing)")
    num_anchors = box_pred[3] // 4
    num_classes = cls_pred[3] // num_anchors
    head_info = RetinaNetHeadInfo(
        num_convs=num_convs,
        num_filters=tower[3],
        separable=separable,
        anchor_size=anchor_size,
        num_scales=num_anchors // len(CANONICAL_ASPECT_RATIOS),
        aspect_ratios=CANONICAL_ASPECT_RATIOS,  # converted heads are permuted to torchspine's order
    )
    with torch.device("meta"):
        head = RetinaNetHead(
            cfg.endpoints_num_filters,
            num_anchors,
            num_classes,
            num_levels=len(levels),
            num_convs=num_convs,
            num_filters=tower[3],
            act=act,
            norm_eps=eps,
            norm_momentum=momentum,
            separable=separable,
        )
    if fmt == "tpu":
        names = tpu_retinanet_head_names(num_convs, levels)
    else:
        from torchspine.convert.model_garden_names import model_garden_head_names

        names = model_garden_head_names(num_convs, len(levels), separable, head_root)
    cls_perm = _anchor_perm(num_anchors, num_classes, SOURCE_ASPECT_RATIOS[fmt])
    box_perm = _anchor_perm(num_anchors, 4, SOURCE_ASPECT_RATIOS[fmt])
    entries = []
    for key, tf_name in names.items():
        if "depthwise_kernel" in tf_name:
            transform = "depthwise"
        elif tf_name.split("/")[-1].startswith(("kernel", "pointwise_kernel")) or "kernel/" in tf_name:
            transform = "conv"
        else:
            transform = "copy"
        is_pred_out = key.startswith(("cls.predict", "box.predict")) and not key.endswith("depthwise.weight")
        perm = (cls_perm if key.startswith("cls.") else box_perm) if is_pred_out else None
        entries.append(_Entry(f"head.{key}", tf_name, transform, perm))
    return num_classes, head_info, entries, head


def _maskrcnn_head(
    shapes: Mapping[str, tuple[int, ...]],
    backbone: SpineNet,
    act: str,
    anchor_size: float,
) -> tuple[int, MaskRCNNHeadInfo, list[_Entry], dict[str, torch.Tensor]]:
    """tensorflow/tpu Mask R-CNN heads: settings from the variable shapes, entries, and the model's head tensors."""

    def count(pattern: str) -> int:
        return len([n for n in shapes if re.fullmatch(pattern, n)])

    rpn = shapes.get("rpn_head/rpn/kernel")
    cls_pred = shapes.get("fast_rcnn_head/class-predict/kernel")
    box_pred = shapes.get("fast_rcnn_head/box-predict/kernel")
    fc = shapes.get("fast_rcnn_head/fc6/kernel")
    rpn_cls = shapes.get("rpn_head/rpn-class/kernel")
    if rpn is None or cls_pred is None or box_pred is None or fc is None or rpn_cls is None:
        raise ConversionError(
            "Mask R-CNN head variables incomplete (need rpn_head/rpn, rpn_head/rpn-class, fast_rcnn_head/fc6, "
            "fast_rcnn_head/class-predict and fast_rcnn_head/box-predict)"
        )
    num_classes = cls_pred[1]
    if box_pred[1] != 4 * num_classes:
        raise ConversionError(
            f"fast_rcnn_head/box-predict has {box_pred[1]} outputs: only class-specific box regression "
            f"(4 x {num_classes}, the official SpineNet configs) is supported"
        )
    num_anchors = rpn_cls[3]
    if num_anchors != len(CANONICAL_ASPECT_RATIOS):
        raise ConversionError(
            f"rpn_head/rpn-class predicts {num_anchors} anchors per location; the Mask R-CNN recipes use 1 scale x "
            f"{len(CANONICAL_ASPECT_RATIOS)} aspect ratios"
        )
    head_dim = rpn[3]
    num_convs = count(r"fast_rcnn_head/conv_\d+/kernel")
    mask_convs = count(r"mask_head/mask-conv-l\d+/kernel")
    widths = {
        "rpn_head/rpn": head_dim,
        "fast_rcnn_head/conv_0": shapes.get("fast_rcnn_head/conv_0/kernel", (0, 0, 0, head_dim))[3],
        "mask_head/mask-conv-l0": shapes.get("mask_head/mask-conv-l0/kernel", (0, 0, 0, 0))[3],
    }
    if mask_convs != num_convs or len(set(widths.values())) != 1:
        raise ConversionError(
            f"torchspine's Mask R-CNN shares one conv width and depth between its heads; this checkpoint has "
            f"widths {widths}, {num_convs} box-head and {mask_convs} mask-head convs"
        )
    info = MaskRCNNHeadInfo(
        head_dim=head_dim,
        num_convs=num_convs,
        fc_dim=fc[1],
        anchor_size=anchor_size,
        rpn_num_convs=count(r"rpn_head/rpn(-\d+)?/kernel"),
        num_fcs=count(r"fast_rcnn_head/fc\d+/kernel"),
    )
    with torch.device("meta"):  # the heads take the backbone's activation and BN settings
        model = build_mask_rcnn(
            backbone,
            num_classes=num_classes,
            image_size=640,
            head_dim=info.head_dim,
            num_convs=info.num_convs,
            fc_dim=info.fc_dim,
            anchor_size=anchor_size,
            act=act,
            rpn_num_convs=info.rpn_num_convs,
            num_fcs=info.num_fcs,
        )
    names = tpu_maskrcnn_head_names(
        rpn_num_convs=info.rpn_num_convs,
        num_convs=num_convs,
        num_fcs=info.num_fcs,
        levels=range(backbone.cfg.min_level, backbone.cfg.max_level + 1),
    )
    source = SOURCE_ASPECT_RATIOS["tpu"]
    perms = {
        "rpn.head.cls_logits": _anchor_perm(num_anchors, 1, source),
        "rpn.head.bbox_pred": _anchor_perm(num_anchors, 4, source),
    }
    entries = [_Entry(key, tf_name, transform, perms.get(key.rsplit(".", 1)[0])) for key, tf_name, transform in names]
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    return num_classes, info, entries, state


def _claimed(name: str, fmt: SourceFormat, root: str, task: str) -> bool:
    """Whether `name` lies in a scope the conversion must consume completely."""
    if fmt == "tpu":
        heads = {
            "retinanet": ["retinanet/"],
            "classification": ["classification_head/"],
            "maskrcnn": ["rpn_head/", "fast_rcnn_head/", "mask_head/"],
        }.get(task, [])
        scopes = ["spinenet/", *heads]
    else:
        scopes = [f"{root}/", *(["head/", "model/_head/"] if task == "retinanet" else [])]
    return name.startswith(tuple(scopes))


def _apply(
    prefix: Path,
    entries: list[_Entry],
    shapes: Mapping[str, tuple[int, ...]],
    own: Mapping[str, torch.Tensor],
    report: ConversionReport,
    task: str,
    fmt: SourceFormat,
    root: str,
) -> dict[str, torch.Tensor]:
    needed = {k for k in own if not k.endswith("num_batches_tracked")}
    covered = {e.torch_key for e in entries}
    missing_tf = [e for e in entries if e.tf_name not in shapes]
    uncovered = sorted(needed - covered)
    problems = []
    if missing_tf:
        problems.append(
            f"{len(missing_tf)} expected TF variable(s) are not in the checkpoint, e.g. "
            + ", ".join(f"{e.tf_name} (for {e.torch_key})" for e in missing_tf[:3])
        )
    if uncovered:
        problems.append(f"{len(uncovered)} model tensor(s) have no TF source, e.g. {', '.join(uncovered[:3])}")
    mismatched = [
        f"{e.tf_name} {shapes[e.tf_name]} -> {e.torch_key} {tuple(own[e.torch_key].shape)}"
        for e in entries
        if e.tf_name in shapes and transformed_shape(shapes[e.tf_name], e.transform) != tuple(own[e.torch_key].shape)
    ]
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es), e.g. {'; '.join(mismatched[:3])}")
    used = {e.tf_name for e in entries}
    leftover = []
    for name in sorted(shapes):
        if name in used:
            continue
        reason = next((why for pattern, why in _SKIP_PATTERNS if pattern.search(name)), None)
        if reason is None and _claimed(name, fmt, root, task):
            leftover.append(name)
        else:
            report.skipped.append({"tf_name": name, "reason": reason or f"not part of the requested task ({task})"})
    if leftover:
        problems.append(
            f"{len(leftover)} checkpoint variable(s) are not used by the model, e.g. {', '.join(leftover[:3])}"
        )
    if problems:
        report.missing = [e.torch_key for e in missing_tf] + uncovered
        raise ConversionError(f"{prefix}: cannot convert to {report.model} ({task}): " + "; ".join(problems))

    arrays = load_variables(prefix, [e.tf_name for e in entries])
    state: dict[str, torch.Tensor] = {}
    for e in entries:
        value = arrays[e.tf_name]
        if e.transform in ("conv", "depthwise"):
            tensor = conv_kernel(value, depthwise=e.transform == "depthwise")
        elif e.transform == "dense":
            tensor = torch.from_numpy(np.ascontiguousarray(value.T))
        elif e.transform == "dense_nhwc":  # the official RoI features are 7x7 (maskrcnn_model.py)
            tensor = dense_kernel_from_nhwc(value, 7, 7)
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(value))
        if e.out_perm is not None:
            tensor = tensor[list(e.out_perm)].contiguous()
        state[e.torch_key] = tensor.to(torch.float32)
        report.mapped.append(
            {
                "tf_name": e.tf_name,
                "torch_key": e.torch_key,
                "shape": list(tensor.shape),
                **({"permuted": "anchor aspect-ratio order"} if e.out_perm else {}),
                **({"permuted": "input rows NHWC -> NCHW flatten order"} if e.transform == "dense_nhwc" else {}),
            }
        )
    for key in own:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.long)
    return state
