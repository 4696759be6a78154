"""A trained detector as a self-describing ``.safetensors`` file, the same format ``torchspine convert`` writes.

The metadata (`torchspine.weights` format 1) records the backbone variant, its architecture and numerics, the head
and the training input size, so ``torchspine eval/predict --weights model.safetensors`` and
``build_retinanet(weights=...)`` rebuild the model with no further flags. The file holds tensors only (no pickle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from torchspine.convert.converter import FORMAT_VERSION, save_converted
from torchspine.models.detection.anchors import ASPECT_RATIOS
from torchspine.models.spinenet import SpineNet
from torchspine.specs import cfg_to_dict


def retinanet_metadata(model: nn.Module, variant: str, image_size: int) -> dict[str, Any]:
    """Format-1 metadata of a `build_retinanet` model whose backbone was built from the registered `variant`."""
    backbone, head = model.backbone, model.head
    meta: dict[str, Any] = {"format_version": FORMAT_VERSION, "task": "retinanet", "variant": variant}
    if isinstance(backbone, SpineNet):
        meta["cfg"] = cfg_to_dict(backbone.cfg)
        meta["backbone_args"] = {
            "semantics": backbone.semantics,
            "act": backbone.act_name,
            "norm_eps": backbone.norm_eps,
            "norm_momentum": backbone.norm_momentum,
        }
    meta["head"] = {
        "num_classes": head.num_classes,
        "num_anchors": head.num_anchors,
        "num_convs": head.num_convs,
        "num_filters": head.num_filters,
        "separable": head.separable,
        "num_levels": head.num_levels,
        "anchor_aspect_ratios": list(ASPECT_RATIOS),
    }
    meta["image_size"] = image_size
    meta["source"] = {"format": "torchspine-train"}
    return meta


def export_retinanet(model: nn.Module, path: str | Path, *, variant: str, image_size: int) -> Path:
    """Write `model`'s weights (float tensors as trained, BN statistics included) and metadata to `path`."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_converted(state, retinanet_metadata(model, variant, image_size), path)
