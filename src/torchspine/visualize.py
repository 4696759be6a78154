"""Draw detector outputs (boxes, labels, scores, masks) onto images, and save them as PNG.

A thin layer over ``torchvision.utils.draw_bounding_boxes`` and ``draw_segmentation_masks`` that takes a
torchvision-style detection dict directly, filters it by score, names categories, and gives each category a colour
that depends only on its id, so the same class has the same colour in every image and every run.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

__all__ = ["category_color", "draw_detections", "save_png"]

# Stepping the hue by the golden ratio keeps neighbouring ids (1, 2, 3, ...) far apart on the colour wheel for
# any number of categories, unlike a fixed palette that repeats or a hash that can put two classes side by side.
_GOLDEN_RATIO = 0.618033988749895
_MASK_ALPHA = 0.45


def category_color(category_id: int) -> tuple[int, int, int]:
    """Return the RGB colour used for a category: a function of the id alone, so stable across images."""
    hue = (category_id * _GOLDEN_RATIO) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return round(255 * r), round(255 * g), round(255 * b)


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    # Rec. 601 luma: dark text on light boxes, white text on dark ones.
    luma = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def _check_image(image: torch.Tensor) -> None:
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image: expected a uint8 (3, H, W) tensor, got {image.dtype} {tuple(image.shape)}")


def draw_detections(
    image: torch.Tensor,
    output: Mapping[str, torch.Tensor],
    *,
    category_names: Mapping[int, str] | None = None,
    score_threshold: float = 0.3,
    mask_threshold: float = 0.5,
) -> torch.Tensor:
    """Draw one image's detections: translucent masks, then boxes with ``"<name> <score>"`` labels.

    Args:
        image: ``(3, H, W)`` uint8 RGB image, the one the detector saw (boxes are in its pixels).
        output: torchvision-style detections: ``boxes`` ``(N, 4)`` as ``[x1, y1, x2, y2]``, ``labels`` ``(N,)``,
            ``scores`` ``(N,)`` and optionally ``masks`` ``(N, 1, H, W)`` probabilities at image size.
        category_names: category id → name for the labels; ids without a name are shown as numbers.
        score_threshold: detections scoring below this are not drawn.
        mask_threshold: probability above which a mask pixel is drawn.

    Returns:
        A new ``(3, H, W)`` uint8 image on the CPU; ``image`` is not modified. With no detection above the
        threshold it is a copy of ``image``.
    """
    _check_image(image)
    canvas = image.detach().cpu().clone()
    scores = output["scores"].detach().cpu().float()
    # Ascending score order, so the most confident detections are drawn last, on top of the others.
    keep = torch.nonzero(scores >= score_threshold).flatten()
    keep = keep[torch.argsort(scores[keep], stable=True)]
    if keep.numel() == 0:
        return canvas
    boxes = output["boxes"].detach().cpu().float()[keep]
    labels = output["labels"].detach().cpu()[keep].tolist()
    colors = [category_color(int(label)) for label in labels]
    names = category_names or {}
    texts = [
        f"{names.get(int(label), str(int(label)))} {score:.2f}"
        for label, score in zip(labels, scores[keep], strict=True)
    ]

    masks = output.get("masks")
    if masks is not None:
        masks = masks.detach().cpu()[keep]
        if masks.dim() == 4:
            masks = masks[:, 0]
        if masks.shape[-2:] != canvas.shape[-2:]:
            raise ValueError(f"masks are {tuple(masks.shape[-2:])} but the image is {tuple(canvas.shape[-2:])}")
        masks = masks if masks.dtype == torch.bool else masks > mask_threshold
        canvas = draw_segmentation_masks(canvas, masks, alpha=_MASK_ALPHA, colors=colors)

    # Lines about 1/300 of the image's long side: visible on a 1333-pixel COCO image without hiding small objects.
    width = max(1, round(max(canvas.shape[-2:]) / 300))
    return draw_bounding_boxes(
        canvas,
        boxes,
        labels=texts,
        colors=colors,
        width=width,
        label_colors=[_text_color(c) for c in colors],
        fill_labels=True,
    )


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write a ``(3, H, W)`` uint8 RGB tensor as a PNG file, creating missing parent folders.

    Args:
        image: the image, on any device.
        path: output file; written as PNG whatever its suffix.

    Returns:
        ``path`` as a ``Path``.
    """
    _check_image(image)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(image.detach().cpu().permute(1, 2, 0).numpy())
    Image.fromarray(array).save(path, format="PNG")
    return path
