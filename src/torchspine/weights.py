"""Loading weights from local files: safetensors, or ``torch.load(weights_only=True)``; never unpickling code.

Files written by ``torchspine convert`` carry metadata (``{"torchspine": json}`` in the safetensors header) that
rebuilds the exact model: its task, architecture (`SpineNetCfg`), numerics (semantics, activation, BatchNorm
epsilon/momentum) and head settings. `load_pretrained` builds and loads that model with no other argument;
``create_model(name, weights=...)`` uses it too, so no flag needs repeating.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchspine.specs import SpecError, cfg_from_dict


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pt``/``.pth`` file loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    if path.suffix in {".pt", ".pth"}:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # any unpickling refusal or corruption becomes one clear error
            raise ValueError(f"{path}: cannot be loaded with weights_only=True ({err})") from None
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path}: expected a state dict of tensors (or a checkpoint with a 'model' entry)")
        return state
    raise ValueError(f"{path}: unsupported weights format {path.suffix!r}; expected .safetensors, .pt or .pth")


def read_metadata(path: str | Path) -> dict[str, Any] | None:
    """The torchspine metadata of a ``.safetensors`` file (None for other files or files without it)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            raw = (f.metadata() or {}).get("torchspine")
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: corrupt torchspine metadata ({err})") from None
    if meta.get("format_version") != 1:
        raise ValueError(
            f"{path}: torchspine weights format {meta.get('format_version')!r} is not supported "
            "(this version reads format 1)"
        )
    return meta


def backbone_kwargs(meta: dict[str, Any]) -> dict[str, Any]:
    """`create_model` keyword arguments (SpineNetCfg fields and SpineNet arguments) recorded in `meta`."""
    try:
        cfg = cfg_from_dict(meta["cfg"])
    except (KeyError, SpecError) as err:
        raise ValueError(f"torchspine metadata without a valid architecture ({err})") from None
    fields = {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}
    return {**fields, **meta.get("backbone_args", {})}


def load_weights(model: nn.Module, path: str | Path, prefix: str = "") -> None:
    """Load `path` into `model` strictly (only the keys under `prefix`, stripped, when one is given).

    Missing, unexpected or mis-shaped entries are an error naming them.
    """
    state = read_state_dict(path)
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
        raise ValueError(f"{path} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_pretrained(path: str | Path) -> nn.Module:
    """Build and load the model a converted weights file describes, in eval mode.

    Returns a `SpineNet` (task ``backbone``), an `ImageClassifier` (``classification``), or for ``retinanet`` a
    ``ModuleDict(backbone=SpineNet, head=RetinaNetHead)`` whose head gives the raw per-level outputs
    (``head.forward_levels(list(backbone(x).values()))``).
    """
    from torchspine.models.classifier import ImageClassifier
    from torchspine.models.detection.heads import RetinaNetHead
    from torchspine.models.spinenet import SpineNet

    meta = read_metadata(path)
    if meta is None:
        raise ValueError(f"{path}: no torchspine metadata; load it with create_model(name, weights=...) instead")
    backbone_kwargs(meta)  # validates the recorded architecture
    args = dict(meta.get("backbone_args", {}))
    backbone = SpineNet(cfg_from_dict(meta["cfg"]), **args)
    task = meta.get("task")
    if task == "backbone":
        model: nn.Module = backbone
    elif task == "classification":
        model = ImageClassifier(backbone, meta["classifier"]["num_classes"])
    elif task == "retinanet":
        h = meta["head"]
        head = RetinaNetHead(
            backbone.out_channels,
            h["num_anchors"],
            h["num_classes"],
            num_levels=h["num_levels"],
            num_convs=h["num_convs"],
            num_filters=h["num_filters"],
            act=args["act"],
            norm_eps=args["norm_eps"],
            norm_momentum=args["norm_momentum"],
            separable=h["separable"],
        )
        model = nn.ModuleDict({"backbone": backbone, "head": head})
    else:
        raise ValueError(f"{path}: unknown task {task!r} in torchspine metadata")
    load_weights(model, path)
    return model.eval()
