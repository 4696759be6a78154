"""The SpineNet architecture a `ModelCfg` describes: variant, then spec file, then explicit width fields.

One function shared by config validation (so a bad spec file fails when the config is loaded, naming the file) and
the model builder (so what is validated is exactly what is built). Precedence, each step over the previous one:

1. the registered variant's `SpineNetCfg` (``model.backbone``);
2. the spec file ``model.backbone_spec`` (`torchspine.load_cfg` format: block rows or `SpineNetCfg` fields), which is
   how a searched architecture is retrained;
3. the explicit width fields ``model.filter_size_scale`` / ``resample_alpha`` / ``endpoints_num_filters`` (the search
   proxies shrink any sampled layout this way);
4. ``model.min_level`` / ``max_level``, the single source of truth for the endpoint levels.

A spec file and an explicit field that set the same value differently is an error, never a silent choice.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torchspine.config.schema import RESNET_BACKBONES, ModelCfg
from torchspine.specs import SpecError, SpineNetCfg, load_cfg, plan_graph

_WIDTH_FIELDS = ("filter_size_scale", "resample_alpha", "endpoints_num_filters")


def spinenet_cfg(model: ModelCfg) -> SpineNetCfg | None:
    """The backbone config `model` builds (None for the ResNet-FPN baselines).

    Raises:
        SpecError: the spec file is missing or malformed (the message names it), contradicts an explicit field, or
            the resulting architecture cannot be built (e.g. widths that truncate to zero channels at some level,
            or a resampling path of ``int(C * alpha) = 0`` channels).
        ValueError: an unknown backbone name.
    """
    if model.backbone in RESNET_BACKBONES:
        return None
    from torchspine.registry import variant_info  # lazy: keeps `import torchspine.config` free of torch

    base = variant_info(model.backbone).cfg
    cfg = base
    if model.backbone_spec is not None:
        path = Path(model.backbone_spec)
        if not path.is_file():
            raise SpecError(f"model.backbone_spec: spec file {path} does not exist")
        cfg = load_cfg(path, base=base)
        for name in ("min_level", "max_level"):
            own, wanted = getattr(cfg, name), getattr(model, name)
            if own != getattr(base, name) and own != wanted:
                raise SpecError(
                    f"{path}: {name}={own} contradicts model.{name}={wanted} (the endpoint levels are set by "
                    f"model.min_level/max_level only)"
                )
    changes: dict[str, object] = {}
    for name in _WIDTH_FIELDS:
        value = getattr(model, name)
        if value is None:
            continue
        if model.backbone_spec is not None and getattr(cfg, name) not in (getattr(base, name), value):
            raise SpecError(
                f"model.{name}={value} contradicts {name}={getattr(cfg, name)} in the spec file {model.backbone_spec}"
            )
        changes[name] = value
    changes.update(min_level=model.min_level, max_level=model.max_level)
    where = f"spec file {model.backbone_spec}" if model.backbone_spec else f"backbone {model.backbone}"
    try:
        cfg = dataclasses.replace(cfg, **changes)
        plan_graph(cfg)  # resampling widths are only known once parents are resolved
    except SpecError as err:
        raise SpecError(f"{where}: {err}") from None
    return cfg
