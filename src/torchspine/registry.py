"""Named SpineNet variants: ``create_model``, ``list_models``, ``is_model`` (timm style).

The scaling table is Model Garden's / tensorflow/tpu's ``SCALING_MAP`` (`torchspine.specs` holds the block tables);
the reference numbers are the official implementations' measured parameter and multiply-add counts (see
``tests/test_reference_counts.py``).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchspine.models.spinenet import Semantics, SpineNet
from torchspine.specs import SPINENET_MOBILE_BLOCKS, SpineNetCfg

_SPINENET_CFG_FIELDS = frozenset(f.name for f in dataclasses.fields(SpineNetCfg))
_MODEL_ARGS = frozenset(
    {
        "in_chans",
        "semantics",
        "act",
        "norm_eps",
        "norm_momentum",
        "drop_path_rate",
        "se_gate",
        "dropblock_keep_prob",
        "dropblock_size",
        "dropblock_min_level",
    }
)


@dataclass(frozen=True)
class VariantInfo:
    """A registered variant: its architecture, default numerics, and the official reference numbers.

    Attributes:
        cfg: topology and widths.
        act: default activation (the official recipe's).
        semantics: default numerics (the implementation that released weights for it).
        image_size: the paper's detection input size.
        params: official backbone trainable parameters (None for test variants).
        macs: official backbone multiply-adds at `image_size`, or None where unpublished.
        description: one line for ``torchspine list``.
    """

    cfg: SpineNetCfg
    act: str
    semantics: Semantics
    image_size: int
    params: int | None
    macs: float | None
    description: str


def _mobile(endpoints: int, scale: float) -> SpineNetCfg:
    return SpineNetCfg(
        family="mobile", blocks=SPINENET_MOBILE_BLOCKS, endpoints_num_filters=endpoints, filter_size_scale=scale
    )


# NOTE: spinenet49s follows SCALING_MAP (128-channel endpoints). The released tensorflow/tpu SpineNet-49S detection
# checkpoint and the published 11.9M params / 33.8B FLOPs use 256: create_model("spinenet49s",
# endpoints_num_filters=256) builds that model (reference spinenet.md §0.7, §4.4).
VARIANTS: dict[str, VariantInfo] = {
    "spinenet49s": VariantInfo(
        SpineNetCfg(endpoints_num_filters=128, filter_size_scale=0.65),
        "swish",
        "tpu",
        640,
        9_089_215,
        12.33e9,
        "SpineNet-49 with widths x0.65",
    ),
    "spinenet49": VariantInfo(SpineNetCfg(), "swish", "tpu", 640, 21_831_488, 28.26e9, "the NAS-found SpineNet-49"),
    "spinenet96": VariantInfo(
        SpineNetCfg(block_repeats=2),
        "swish",
        "tpu",
        1024,
        36_262_976,
        119.05e9,
        "SpineNet-49 with every block repeated twice",
    ),
    "spinenet143": VariantInfo(
        SpineNetCfg(block_repeats=3, resample_alpha=1.0),
        "swish",
        "tpu",
        1280,
        60_247_616,
        295.26e9,
        "blocks x3, alpha 1.0",
    ),
    "spinenet143l": VariantInfo(
        SpineNetCfg(block_repeats=3, resample_alpha=1.0, filter_size_scale=1.3),
        "swish",
        "tpu",
        1280,
        100_796_257,
        None,
        "SpineNet-143 with widths x1.3 (code only)",
    ),
    "spinenet190": VariantInfo(
        SpineNetCfg(endpoints_num_filters=512, filter_size_scale=1.3, resample_alpha=1.0, block_repeats=4),
        "swish",
        "tpu",
        1280,
        126_587_664,
        620.98e9,
        "blocks x4, widths x1.3, alpha 1.0, 512-d endpoints",
    ),
    "spinenet49_mobile": VariantInfo(
        _mobile(48, 1.0),
        "hard_swish",
        "model_garden",
        384,
        2_268_708,
        0.785e9,
        "MBConv SpineNet-49 (Model Garden SpineNetMobile)",
    ),
    "spinenet49s_mobile": VariantInfo(
        _mobile(40, 0.65), "hard_swish", "model_garden", 384, 975_678, 0.341e9, "MBConv SpineNet-49, widths x0.65"
    ),
    "spinenet49xs_mobile": VariantInfo(
        _mobile(24, 0.6), "swish", "model_garden", 256, 842_456, 0.129e9, "MBConv SpineNet-49, widths x0.6"
    ),
    "test_spinenet": VariantInfo(
        SpineNetCfg(endpoints_num_filters=32, filter_size_scale=0.25, resample_alpha=0.5),
        "swish",
        "tpu",
        128,
        None,
        None,
        "tiny SpineNet-49 topology for tests",
    ),
    "test_spinenet_mobile": VariantInfo(
        _mobile(16, 0.25), "swish", "model_garden", 128, None, None, "tiny SpineNet-49 mobile topology for tests"
    ),
}

_ENTRYPOINTS: dict[str, Callable[..., SpineNet]] = {}


def register_model(fn: Callable[..., SpineNet]) -> Callable[..., SpineNet]:
    """Register a variant entrypoint under its function name (which must have a `VARIANTS` entry)."""
    if fn.__name__ not in VARIANTS:
        raise KeyError(f"no VARIANTS entry for model entrypoint {fn.__name__!r}")
    _ENTRYPOINTS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*", *, include_test: bool = False) -> list[str]:
    """Registered variant names matching the shell-style `pattern`, in the paper's order (small to large, then
    mobile); the tiny test variants only on request."""
    names = [n for n in _ENTRYPOINTS if fnmatch.fnmatch(n, pattern)]
    if not include_test and not pattern.startswith("test"):
        names = [n for n in names if not n.startswith("test_")]
    return names


def is_model(name: str) -> bool:
    return name in _ENTRYPOINTS


def variant_info(name: str) -> VariantInfo:
    """The `VariantInfo` of `name`; unknown names raise ``ValueError`` with close matches."""
    if name not in VARIANTS:
        close = difflib.get_close_matches(name, list(VARIANTS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (available: {', '.join(list_models(include_test=True))})")
    return VARIANTS[name]


def create_model(name: str, *, weights: str | Path | None = None, **overrides: Any) -> SpineNet:
    """Build the variant `name`.

    Args:
        name: a name from `list_models` (``include_test=True`` lists the tiny test variants too).
        weights: optional local weights file (``.safetensors``, or ``.pt``/``.pth`` read with ``weights_only``),
            loaded strictly. A file from ``torchspine convert`` also sets the architecture and numerics it was
            converted with; for a detector or classifier file, its backbone is loaded.
        **overrides: `SpineNetCfg` fields (``endpoints_num_filters``, ``min_level``, ``max_level``, ``blocks``,
            ...) and `SpineNet` arguments (``semantics``, ``act``, ``norm_eps``, ``norm_momentum``,
            ``drop_path_rate``, ``in_chans``, ``se_gate``, ``dropblock_keep_prob``, ``dropblock_size``,
            ``dropblock_min_level``). Anything else is an error.

    Returns:
        The backbone, in train mode, with TF-style random initialisation unless `weights` is given.
    """
    fn = _ENTRYPOINTS.get(name)
    if fn is None:
        variant_info(name)  # raises with suggestions
        raise AssertionError("unreachable")
    prefix = ""
    if weights is not None:
        from torchspine.weights import backbone_kwargs, read_metadata  # lazy: only needed with a file

        meta = read_metadata(weights)
        if meta is not None:
            if meta.get("variant") not in (name, "custom"):
                raise ValueError(f"{weights} holds {meta.get('variant')} weights, not {name}")
            # The file's architecture and numerics, then the caller's explicit overrides (e.g. drop_path_rate).
            overrides = {**backbone_kwargs(meta), **overrides}
            prefix = "" if meta.get("task") == "backbone" else "backbone."
    model = fn(**overrides)
    if weights is not None:
        from torchspine.weights import load_weights

        load_weights(model, weights, prefix=prefix)
    return model


def _create(name: str, **overrides: Any) -> SpineNet:
    info = VARIANTS[name]
    unknown = set(overrides) - _SPINENET_CFG_FIELDS - _MODEL_ARGS
    if unknown:
        options = sorted(_SPINENET_CFG_FIELDS | _MODEL_ARGS)
        hints = {k: difflib.get_close_matches(k, options, n=1) for k in sorted(unknown)}
        detail = "; ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise TypeError(f"create_model({name!r}): unknown argument(s) {detail}; expected some of {options}")
    cfg_overrides = {k: v for k, v in overrides.items() if k in _SPINENET_CFG_FIELDS}
    model_args = {k: v for k, v in overrides.items() if k in _MODEL_ARGS}
    model_args.setdefault("act", info.act)
    model_args.setdefault("semantics", info.semantics)
    cfg = dataclasses.replace(info.cfg, **cfg_overrides) if cfg_overrides else info.cfg
    return SpineNet(cfg, **model_args)


@register_model
def spinenet49s(**overrides: Any) -> SpineNet:
    """SpineNet-49S: SpineNet-49 with widths x0.65 and 128-d endpoints (the released detector uses 256)."""
    return _create("spinenet49s", **overrides)


@register_model
def spinenet49(**overrides: Any) -> SpineNet:
    """SpineNet-49: the architecture found by the search, 256-d P3-P7."""
    return _create("spinenet49", **overrides)


@register_model
def spinenet96(**overrides: Any) -> SpineNet:
    """SpineNet-96: every SpineNet-49 block repeated twice."""
    return _create("spinenet96", **overrides)


@register_model
def spinenet143(**overrides: Any) -> SpineNet:
    """SpineNet-143: blocks repeated three times, resampling alpha 1.0."""
    return _create("spinenet143", **overrides)


@register_model
def spinenet143l(**overrides: Any) -> SpineNet:
    """SpineNet-143L: SpineNet-143 with widths x1.3 (in the official code, not in the paper)."""
    return _create("spinenet143l", **overrides)


@register_model
def spinenet190(**overrides: Any) -> SpineNet:
    """SpineNet-190: blocks repeated four times, widths x1.3, alpha 1.0, 512-d endpoints."""
    return _create("spinenet190", **overrides)


@register_model
def spinenet49_mobile(**overrides: Any) -> SpineNet:
    """SpineNet-49 Mobile: MBConv blocks with squeeze-excitation, 48-d endpoints, hard-swish."""
    return _create("spinenet49_mobile", **overrides)


@register_model
def spinenet49s_mobile(**overrides: Any) -> SpineNet:
    """SpineNet-49S Mobile: widths x0.65, 40-d endpoints, hard-swish."""
    return _create("spinenet49s_mobile", **overrides)


@register_model
def spinenet49xs_mobile(**overrides: Any) -> SpineNet:
    """SpineNet-49XS Mobile: widths x0.6, 24-d endpoints, swish."""
    return _create("spinenet49xs_mobile", **overrides)


@register_model
def test_spinenet(**overrides: Any) -> SpineNet:
    """Tiny SpineNet-49 topology (widths x0.25, 32-d endpoints) for fast tests."""
    return _create("test_spinenet", **overrides)


@register_model
def test_spinenet_mobile(**overrides: Any) -> SpineNet:
    """Tiny SpineNet-Mobile topology (widths x0.25, 16-d endpoints) for fast tests."""
    return _create("test_spinenet_mobile", **overrides)
