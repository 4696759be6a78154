"""Named SpineNet variants: ``create_model``, ``list_models``, ``is_model`` (timm style).

The scaling table is Model Garden's / tensorflow/tpu's ``SCALING_MAP``; it lives with the other per-backbone
defaults and reference numbers in `torchspine.variants` (`torchspine.specs` holds the block tables).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torchspine.errors import UsageError
from torchspine.modelfile import ModelFile, ModelFileError
from torchspine.models.spinenet import SpineNet
from torchspine.specs import SpineNetCfg
from torchspine.variants import BACKBONES, BackboneDefaults

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


# The registered SpineNets' rows of the one per-backbone table (`torchspine.variants`).
VariantInfo = BackboneDefaults
VARIANTS: dict[str, VariantInfo] = {name: d for name, d in BACKBONES.items() if d.cfg is not None}

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
        raise UsageError(f"unknown model {name!r}{hint} (available: {', '.join(list_models(include_test=True))})")
    return VARIANTS[name]


def create_model(name: str, *, weights: str | Path | None = None, **overrides: Any) -> SpineNet:
    """Build the variant `name`.

    Args:
        name: a name from `list_models` (``include_test=True`` lists the tiny test variants too).
        weights: optional local weights file (``.safetensors``, or ``.pt``/``.pth`` read with ``weights_only``),
            loaded strictly. A torchspine model file (`torchspine.modelfile`) also sets the architecture and
            numerics it records; for a detector or classifier file, its backbone is loaded.
        **overrides: `SpineNetCfg` fields (``endpoints_num_filters``, ``min_level``, ``max_level``, ``blocks``,
            ...) and `SpineNet` arguments (``semantics``, ``act``, ``norm_eps``, ``norm_momentum``,
            ``drop_path_rate``, ``in_chans``, ``se_gate``, ``dropblock_keep_prob``, ``dropblock_size``,
            ``dropblock_min_level``). Anything else is an error. With a model file, `SpineNet` arguments override
            the file's numerics, and a `SpineNetCfg` field that differs from the file's architecture is an error.

    Returns:
        The backbone, in train mode, with TF-style random initialisation unless `weights` is given.
    """
    fn = _ENTRYPOINTS.get(name)
    if fn is None:
        variant_info(name)  # raises with suggestions
        raise AssertionError("unreachable")
    if weights is None:
        return fn(**overrides)
    from torchspine.modelfile import load_state, read_model_file, read_tensors

    info = read_model_file(weights)
    if info is None:
        model = fn(**overrides)
        load_state(model, read_tensors(weights), weights)
        return model
    if info.backbone.variant not in (name, "custom"):
        raise ModelFileError(f"{weights} holds {info.backbone.variant} weights, not {name}")
    return spinenet_from_file(info, weights, overrides, load=True)


def spinenet_from_file(info: ModelFile, path: str | Path, overrides: Mapping[str, Any], *, load: bool) -> SpineNet:
    """The SpineNet a model file describes, with `overrides` (precedence: explicit arguments over the file).

    `SpineNet` arguments (numerics, regularisation) override the file's; a `SpineNetCfg` field that differs from
    the file's architecture cannot load its weights and is an error. With `load`, the file's backbone tensors are
    loaded strictly (from under ``backbone.`` for a classifier or detector file).
    """
    from torchspine.modelfile import load_state, read_tensors

    b = info.backbone
    if b.cfg is None or b.numerics is None:
        raise ModelFileError(f"{path}: its backbone is {b.variant}, not a SpineNet")
    _check_overrides("create_model", overrides)
    conflicts = [
        f"{k}={v!r} (the file's is {getattr(b.cfg, k)!r})"
        for k, v in overrides.items()
        if k in _SPINENET_CFG_FIELDS and v != getattr(b.cfg, k)
    ]
    if conflicts:
        raise ModelFileError(
            f"{path} holds a {b.variant} with another architecture: {', '.join(conflicts)}; its weights cannot "
            "load into that model"
        )
    args = {**dataclasses.asdict(b.numerics), **{k: v for k, v in overrides.items() if k in _MODEL_ARGS}}
    model = SpineNet(b.cfg, **args)
    if load:
        prefix = "" if info.task == "backbone" else "backbone."
        load_state(model, read_tensors(path), path, prefix=prefix)
    return model


def _check_overrides(name: str, overrides: Mapping[str, Any]) -> None:
    unknown = set(overrides) - _SPINENET_CFG_FIELDS - _MODEL_ARGS
    if unknown:
        options = sorted(_SPINENET_CFG_FIELDS | _MODEL_ARGS)
        hints = {k: difflib.get_close_matches(k, options, n=1) for k in sorted(unknown)}
        detail = "; ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise TypeError(f"create_model({name!r}): unknown argument(s) {detail}; expected some of {options}")


def _create(name: str, **overrides: Any) -> SpineNet:
    info = VARIANTS[name]
    _check_overrides(name, overrides)
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
