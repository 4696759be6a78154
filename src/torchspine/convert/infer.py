"""Infer what a TF SpineNet checkpoint holds from its variable names and shapes: format, task, architecture.

TF checkpoints store no configuration. tensorflow/tpu names are scoped by role (``spinenet/sub_policy{i}/...``),
Model Garden keys are ``layer_with_weights-K`` in Keras' topological order; in both, the widths of a few known
convolutions pin down ``filter_size_scale`` and ``resample_alpha`` (widths truncate with ``int()``, so each width
gives an interval of scales), the number of convolutions the ``block_repeats``, and the endpoint convs the endpoint
width. Model Garden layouts are then confirmed by matching every layer's shapes against the candidate model.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch

from torchspine.convert.transforms import transformed_shape
from torchspine.errors import TorchspineError
from torchspine.models.spinenet import SpineNet
from torchspine.registry import VARIANTS
from torchspine.specs import FILTER_SIZES, SPINENET_MOBILE_BLOCKS, SPINENET_STEM_FILTERS, SpineNetCfg, plan_graph

Task = Literal["backbone", "retinanet", "maskrcnn", "classification"]
SourceFormat = Literal["tpu", "model_garden"]


class ConversionError(TorchspineError, ValueError):
    """The checkpoint cannot be converted (not SpineNet, another architecture, missing or mismatched variables)."""


def detect_format(names: list[str]) -> tuple[SourceFormat, str]:
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


def detect_task(names: list[str], fmt: SourceFormat) -> Task:
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


def match_variant(cfg: SpineNetCfg) -> str | None:
    """The registered variant with this topology (endpoint width aside), if any."""
    for name, info in VARIANTS.items():
        if name.startswith("test_"):
            continue
        if dataclasses.replace(info.cfg, endpoints_num_filters=cfg.endpoints_num_filters) == cfg:
            return name
    return None


def infer_tpu_cfg(shapes: Mapping[str, tuple[int, ...]]) -> SpineNetCfg:
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


def infer_mg_cfg(shapes: Mapping[str, tuple[int, ...]], root: str) -> SpineNetCfg:
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
        candidates = [base]  # the mobile table has no level-2 output
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
        tf_name in shapes and transformed_shape(shapes[tf_name], transform) == tuple(own[torch_key].shape)
        for torch_key, tf_name, transform in entries
    )
