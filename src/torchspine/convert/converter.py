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
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from torchspine.convert.tf_checkpoint import list_variables, load_variables, resolve_checkpoint_prefix
from torchspine.convert.tpu_names import tpu_backbone_units, tpu_retinanet_head_names
from torchspine.convert.transforms import conv_kernel
from torchspine.models.detection.heads import RetinaNetHead
from torchspine.models.spinenet import SpineNet
from torchspine.registry import VARIANTS, variant_info
from torchspine.specs import (
    FILTER_SIZES,
    SPINENET_MOBILE_BLOCKS,
    SPINENET_STEM_FILTERS,
    SpineNetCfg,
    cfg_to_dict,
    plan_graph,
)

Task = Literal["backbone", "retinanet", "maskrcnn", "classification"]
SourceFormat = Literal["tpu", "model_garden"]

FORMAT_VERSION = 1
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


class ConversionError(ValueError):
    """The checkpoint cannot be converted (not SpineNet, another architecture, missing or mismatched variables)."""


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


def _detect_format(names: list[str]) -> tuple[SourceFormat, str]:
    """(format, backbone root) of a checkpoint, from its variable names."""
    if any(n.startswith("spinenet/") for n in names):
        return "tpu", "spinenet"
    if any(n.startswith("spinenet_mbconv/") for n in names):
        raise ConversionError(
            "this is a tensorflow/tpu SpineNet-MBConv checkpoint; that model (swish/sigmoid "
            "squeeze-excitation) is not implemented, only Model Garden's SpineNet-Mobile is"
        )
    for root in ("backbone", "model/_backbone"):
        if any(n.startswith(f"{root}/layer_with_weights-") for n in names):
            return "model_garden", root
    sample = ", ".join(names[:5])
    raise ConversionError(
        f"not a SpineNet checkpoint: no 'spinenet/...' (tensorflow/tpu) or "
        f"'backbone/layer_with_weights-K/...' (Model Garden) variables (found e.g. {sample})"
    )


def _detect_task(names: list[str], fmt: SourceFormat) -> Task:
    if fmt == "tpu":
        if any(n.startswith(("rpn_head/", "fast_rcnn_head/", "mask_head/")) for n in names):
            return "maskrcnn"
        if any(n.startswith("retinanet/") for n in names):
            return "retinanet"
        if any(n.startswith("classification_head/") for n in names):
            return "classification"
        return "backbone"
    if any(n.startswith(("head/_cls_convs/", "model/_head/_cls_convs/")) for n in names):
        return "retinanet"
    return "backbone"


def _interval(value: int, base: int) -> tuple[float, float]:
    """Scales s with ``int(base * s) == value``."""
    return value / base, (value + 1) / base


def _pick(lo: float, hi: float, preferred: tuple[float, ...]) -> float:
    """A representative of [lo, hi): a preferred value if one fits, else the shortest decimal inside."""
    for value in preferred:
        if lo <= value < hi:
            return value
    for digits in range(1, 8):
        value = float(np.ceil(lo * 10**digits) / 10**digits)
        if value < hi:
            return value
    return lo


def _scale_from_widths(widths: Mapping[int, int], family: str) -> float:
    """filter_size_scale reproducing the per-level widths `widths` ({level: C})."""
    lo, hi = 0.0, float("inf")
    for level, width in widths.items():
        a, b = _interval(width, FILTER_SIZES[family][level])  # type: ignore[index]
        lo, hi = max(lo, a), min(hi, b)
    if not lo < hi:
        raise ConversionError(f"block widths {dict(widths)} fit no single filter_size_scale: not a SpineNet")
    return _pick(lo, hi, (1.0, 0.65, 1.3, 0.6, 0.5, 0.25))


def _match_variant(cfg: SpineNetCfg) -> str | None:
    """The registered variant with this topology (endpoint width aside), if any."""
    for name, info in VARIANTS.items():
        if name.startswith("test_"):
            continue
        if dataclasses.replace(info.cfg, endpoints_num_filters=cfg.endpoints_num_filters) == cfg:
            return name
    return None


def _infer_tpu_cfg(shapes: Mapping[str, tuple[int, ...]]) -> SpineNetCfg:
    root_convs = sorted(
        int(m.group(1) or 0) for n in shapes if (m := re.fullmatch(r"spinenet/conv2d(?:_(\d+))?/kernel", n))
    )
    first_block = [
        n for n in shapes if re.fullmatch(r"spinenet/sub_policy0/scale_permuted_block_2/conv2d(_\d+)?/kernel", n)
    ]
    if not root_convs or not first_block:
        raise ConversionError("tensorflow/tpu checkpoint without the SpineNet stem or first block variables")
    repeats = len(first_block) // 3  # the first block is a bottleneck: 3 convs per repeat
    c2 = shapes["spinenet/sub_policy0/scale_permuted_block_2/conv2d/kernel"][3]  # its 1x1: 4 * C2 -> C2
    # Stem groups: 3 convs per bottleneck, plus a projection shortcut unless 64 == 4 * C2 (as in TF's rule).
    stem_convs = 6 * repeats + (4 * c2 != SPINENET_STEM_FILTERS)
    num_endpoints = len(root_convs) - 1 - stem_convs
    if repeats < 1 or num_endpoints < 1:
        raise ConversionError(f"unexpected tensorflow/tpu stem layout ({len(root_convs)} root convs)")
    widths: dict[int, int] = {2: c2}
    num_blocks = len({m.group(1) for n in shapes if (m := re.match(r"spinenet/sub_policy(\d+)/", n))})
    tpu_blocks = SpineNetCfg().blocks[:num_blocks]
    for i, spec in enumerate(tpu_blocks):
        # conv2d_1 is the 3x3 of a bottleneck (C -> C) and the first 3x3 of a residual block (C_in -> C).
        kernel = shapes.get(f"spinenet/sub_policy{i}/scale_permuted_block_{i + 2}/conv2d_1/kernel")
        if kernel is not None:
            widths.setdefault(spec.level, kernel[3])
    scale = _scale_from_widths(widths, "spinenet")
    mid = shapes["spinenet/sub_policy0/resample_with_alpha_resample_0_0/conv2d/kernel"][3]
    lo, hi = _interval(mid, c2)
    alpha = _pick(lo, hi, (0.5, 1.0, 0.25))
    endpoints = shapes[f"spinenet/conv2d_{stem_convs + 1}/kernel"][3]
    return SpineNetCfg(
        blocks=SpineNetCfg().blocks,
        endpoints_num_filters=endpoints,
        filter_size_scale=scale,
        resample_alpha=alpha,
        block_repeats=repeats,
        min_level=3,
        max_level=2 + num_endpoints,
    )


def _mg_layers(shapes: Mapping[str, tuple[int, ...]], root: str) -> dict[int, dict[str, tuple[int, ...]]]:
    layers: dict[int, dict[str, tuple[int, ...]]] = {}
    pattern = re.compile(rf"{re.escape(root)}/layer_with_weights-(\d+)/(.+)/\.ATTRIBUTES/VARIABLE_VALUE")
    for name, shape in shapes.items():
        if m := pattern.fullmatch(name):
            layers.setdefault(int(m.group(1)), {})[m.group(2)] = shape
    return layers


def _infer_mg_cfg(shapes: Mapping[str, tuple[int, ...]], root: str) -> SpineNetCfg:
    layers = _mg_layers(shapes, root)
    stem = layers.get(0, {}).get("kernel")
    if stem is None:
        raise ConversionError("Model Garden checkpoint without a stem convolution at layer_with_weights-0")
    last_bn = layers[max(layers)].get("gamma")
    if last_bn is None:
        raise ConversionError("Model Garden checkpoint whose last layer is not the endpoint BatchNorm")
    endpoints = last_bn[0]
    if stem[:2] == (3, 3):  # mobile: 3x3/2 stem conv to width(0)
        widths = {0: stem[3]}
        for parts in layers.values():
            if "_conv0/kernel" in parts and "_squeeze_excitation/_se_reduce/kernel" in parts:
                c_in, c_out = parts["_conv0/kernel"][2], parts["_conv2/kernel"][3]
                if c_in != c_out:  # a stem block: width(level - 1) -> width(level)
                    level = 1 if c_in == widths[0] else 2
                    widths[level] = c_out
        base = SpineNetCfg(
            family="mobile",
            blocks=SPINENET_MOBILE_BLOCKS,
            endpoints_num_filters=endpoints,
            filter_size_scale=_scale_from_widths(widths, "mobile"),
        )
        candidates = [dataclasses.replace(base, min_level=lv) for lv in (3, 2)]
    else:
        widths = {}
        for parts in layers.values():
            if "_shortcut/kernel" in parts:
                widths[2] = parts["_conv1/kernel"][3]
        blocks = [p for p in layers.values() if "_conv1/kernel" in p]
        by_width = sorted(
            {p["_conv1/kernel"][3] for p in blocks if "_conv3/kernel" not in p}
            | {p["_conv2/kernel"][3] for p in blocks if "_conv3/kernel" in p}
        )
        widths.update({level: w for level, w in zip((3, 4), [w for w in by_width if w != widths.get(2)], strict=False)})
        scale = _scale_from_widths(widths, "spinenet")
        candidates = []
        for min_level in (3, 2):
            cfg = SpineNetCfg(endpoints_num_filters=endpoints, filter_size_scale=scale, min_level=min_level)
            live = sum(node.live for node in plan_graph(cfg).blocks) + 2
            if len(blocks) % live == 0:
                for alpha in (0.5, 1.0, 0.25):
                    candidates.append(dataclasses.replace(cfg, block_repeats=len(blocks) // live, resample_alpha=alpha))
    for cfg in candidates:
        if _mg_layout_matches(cfg, shapes, root):
            return cfg
    raise ConversionError(
        f"the Model Garden checkpoint's {len(layers)} weighted layers match no SpineNet layout "
        f"(tried {len(candidates)} candidate configurations); pass --model if it is a variant"
    )


def _meta_backbone(cfg: SpineNetCfg, semantics: str) -> SpineNet:
    with torch.device("meta"):
        return SpineNet(cfg, semantics=semantics)  # type: ignore[arg-type]


def _mg_layout_matches(cfg: SpineNetCfg, shapes: Mapping[str, tuple[int, ...]], root: str) -> bool:
    from torchspine.convert.model_garden_names import model_garden_backbone_names

    model = _meta_backbone(cfg, "model_garden")
    own = model.state_dict()
    entries = model_garden_backbone_names(model, root)
    n_tf = sum(1 for n in shapes if n.startswith(f"{root}/layer_with_weights-"))
    return len(entries) == n_tf and all(
        e.tf_name in shapes and _transformed_shape(shapes[e.tf_name], e.transform) == tuple(own[e.torch_key].shape)
        for e in map(lambda t: _Entry(*t), entries)
    )


def _transformed_shape(shape: tuple[int, ...], transform: str) -> tuple[int, ...]:
    if transform == "conv":
        return (shape[3], shape[2], shape[0], shape[1])
    if transform == "depthwise":
        return (shape[2], shape[3], shape[0], shape[1])
    if transform == "dense":
        return (shape[1], shape[0])
    return tuple(shape)


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
) -> tuple[dict[str, torch.Tensor], dict[str, Any], ConversionReport]:
    """Convert a TF SpineNet checkpoint to a torchspine state dict.

    Args:
        path: checkpoint prefix, or a folder holding one.
        model: registered variant to build (default: inferred from the variable shapes).
        task: what to convert (default: everything the checkpoint holds; ``"backbone"`` extracts the backbone).
        semantics: numerics of the converted model (default: those of the checkpoint's implementation).
        act: activation the checkpoint was trained with (inferred where possible, see module docstring).
        norm_eps: BatchNorm epsilon (default: the official config's for this format and task).

    Returns:
        ``(state_dict, metadata, report)``; `metadata` rebuilds the model (see `torchspine.weights`).

    Raises:
        ConversionError: the checkpoint is not a convertible SpineNet, or does not match `model`.
        CheckpointError / FileNotFoundError: unreadable files.
    """
    prefix = resolve_checkpoint_prefix(path)
    listing = list_variables(prefix)
    shapes = {name: shape for name, (shape, dtype) in listing.items() if dtype != np.dtype(object)}
    names = sorted(listing)
    fmt, root = _detect_format(names)
    found_task = _detect_task(names, fmt)
    task = task or found_task
    if task == "maskrcnn" or (task != "backbone" and found_task == "maskrcnn"):
        raise ConversionError(
            "Mask R-CNN heads need torchspine's Mask R-CNN model, which does not exist yet; "
            "use --task backbone to extract the backbone"
        )
    if task != "backbone" and task != found_task:
        raise ConversionError(f"--task {task} but the checkpoint holds a {found_task} model")
    semantics = fmt if semantics == "auto" else semantics
    notes: list[str] = []

    inferred = _infer_tpu_cfg(shapes) if fmt == "tpu" else _infer_mg_cfg(shapes, root)
    if model is not None:
        cfg = dataclasses.replace(
            variant_info(model).cfg,
            endpoints_num_filters=inferred.endpoints_num_filters,
            min_level=inferred.min_level,
            max_level=inferred.max_level,
        )
        if cfg != inferred:
            guess = _match_variant(inferred) or "a custom configuration"
            raise ConversionError(
                f"the checkpoint does not match --model {model}: its shapes describe {guess} "
                f"(filter_size_scale={inferred.filter_size_scale}, block_repeats="
                f"{inferred.block_repeats}, resample_alpha={inferred.resample_alpha})"
            )
    cfg = inferred
    variant = model or _match_variant(cfg) or "custom"
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
    metadata: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "task": task,
        "variant": variant,
        "cfg": cfg_to_dict(cfg),
        "backbone_args": backbone_args,
    }
    own = {("" if task == "backbone" else "backbone.") + k: v for k, v in backbone.state_dict().items()}
    if task == "retinanet":
        head_meta, head_entries, head = _head(shapes, fmt, cfg, act, eps, norm_momentum)
        metadata["head"] = head_meta
        entries += head_entries
        own.update({f"head.{k}": v for k, v in head.state_dict().items()})
    elif task == "classification":
        kernel = shapes["classification_head/dense/kernel"]
        metadata["classifier"] = {"num_classes": kernel[1]}
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
    metadata["source"] = {"checkpoint": prefix.name, "format": fmt, "variables_mapped": len(report.mapped)}
    return state, metadata, report


def _backbone_entries(model: SpineNet, fmt: SourceFormat, root: str, prefix: str) -> list[_Entry]:
    if fmt == "tpu":
        entries = []
        for unit, conv, bn in tpu_backbone_units(model, root):
            entries.append(_Entry(f"{prefix}{unit}.conv.weight", f"{conv}/kernel", "conv"))
            entries += [
                _Entry(f"{prefix}{unit}.bn.{t}", f"{bn}/{f}", "copy")
                for f, t in {
                    "gamma": "weight",
                    "beta": "bias",
                    "moving_mean": "running_mean",
                    "moving_variance": "running_var",
                }.items()
            ]
        return entries
    from torchspine.convert.model_garden_names import model_garden_backbone_names

    return [_Entry(prefix + k, tf, x) for k, tf, x in model_garden_backbone_names(model, root)]


def _head(
    shapes: Mapping[str, tuple[int, ...]], fmt: SourceFormat, cfg: SpineNetCfg, act: str, eps: float, momentum: float
) -> tuple[dict[str, Any], list[_Entry], RetinaNetHead]:
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
    head_meta = {
        "num_classes": num_classes,
        "num_anchors": num_anchors,
        "num_convs": num_convs,
        "num_filters": tower[3],
        "separable": separable,
        "num_levels": len(levels),
        "anchor_aspect_ratios": list(CANONICAL_ASPECT_RATIOS),
        "anchor_num_scales": num_anchors // 3,
        "source_anchor_aspect_ratios": list(SOURCE_ASPECT_RATIOS[fmt]),
    }
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
    return head_meta, entries, head


def _claimed(name: str, fmt: SourceFormat, root: str, task: str) -> bool:
    """Whether `name` lies in a scope the conversion must consume completely."""
    if fmt == "tpu":
        heads = {"retinanet": ["retinanet/"], "classification": ["classification_head/"]}.get(task, [])
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
        if e.tf_name in shapes and _transformed_shape(shapes[e.tf_name], e.transform) != tuple(own[e.torch_key].shape)
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
            }
        )
    for key in own:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.long)
    return state


def save_converted(state: Mapping[str, torch.Tensor], metadata: Mapping[str, Any], out: str | os.PathLike[str]) -> Path:
    """Write a safetensors file atomically (temporary file, fsync, rename) with torchspine metadata."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        save_file(dict(state), tmp, metadata={"torchspine": json.dumps(metadata)})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
