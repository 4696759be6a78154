"""Build a detector from a weights file: converted official weights carry their architecture in metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from torch import nn

from torchspine.weights import read_metadata


def load_detector(
    weights: str | Path,
    *,
    model: str | None = None,
    task: Literal["retinanet", "maskrcnn"] | None = None,
    num_classes: int | None = None,
    image_size: int | None = None,
) -> nn.Module:
    """A RetinaNet or Mask R-CNN with `weights` loaded, in eval mode.

    Files written by ``torchspine convert`` (and by the trainer) describe their model; plain state dicts need
    `model`, `task` and `num_classes`.
    """
    from torchspine.models.detection.mask_rcnn import build_mask_rcnn
    from torchspine.models.detection.retinanet import build_retinanet

    meta = read_metadata(weights)
    task = task or (meta or {}).get("task")
    if task == "retinanet":
        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        detector = build_retinanet(model, weights=weights, image_size=image_size, **kwargs)
    elif task == "maskrcnn":
        if model is None or num_classes is None:
            raise ValueError(f"{weights}: a Mask R-CNN state dict needs --model and --num-classes")
        detector = build_mask_rcnn(model, num_classes=num_classes, image_size=image_size, weights=weights)
    elif meta is None:
        raise ValueError(f"{weights}: no torchspine metadata; pass --task retinanet|maskrcnn and --model")
    else:
        raise ValueError(f"{weights} holds a {task} model, not a detector")
    return detector.eval()
