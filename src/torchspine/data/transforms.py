"""The SpineNet detection input pipeline (scale jitter, random crop, horizontal flip) on ``(image, target)`` pairs.

Follows the official pipeline (TF Model Garden ``preprocess_ops.resize_and_crop_image`` / ``resize_and_crop_boxes``;
official input parsers): the long side is resized to ``image_size * s`` with ``s ~ U(scale_range)``, a window
of at most ``image_size x image_size`` is cropped at a uniformly random offset, boxes follow the same scale and
shift, are clipped to the window, and boxes left with no area are removed together with their labels, masks and
crowd flags. Two deliberate differences from TF:

* the output is **not padded** to a square: the detector pads each batch itself (torchvision's
  ``GeneralizedRCNNTransform`` with ``size_divisible``), which avoids a second copy of every image;
* mean/std normalisation is left to the model's transform as well, so the tensors stay in ``[0, 1]``.

Targets use the `CocoDetection` layout: ``boxes`` float32 ``(N, 4)`` xyxy pixels, ``labels`` int64 ``(N,)``,
``iscrowd`` int64 ``(N,)``, optional ``masks`` uint8 ``(N, H, W)``. Per-instance entries stay aligned.

Randomness: each random transform draws from ``generator`` when one is given, else from the global torch RNG.
The global RNG is the default because a ``DataLoader`` seeds it per worker from the trainer's seed, so workers
get different but reproducible streams without any plumbing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["Compose", "RandomHorizontalFlip", "RandomResizeCrop", "ResizeLongSide"]

Target = dict[str, Any]

# Target entries with one row per instance; all are filtered together when instances are removed.
PER_INSTANCE_KEYS = ("boxes", "labels", "iscrowd", "masks")


class Compose:
    """Apply ``(image, target)`` transforms in order.

    Args:
        transforms: the transforms, first applied first.
    """

    def __init__(self, transforms: Sequence[Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"{type(self).__name__}([{inner}\n])"


class RandomResizeCrop:
    """Scale jitter then random crop, as in the official SpineNet training pipeline.

    The image is resized (bilinear, half-pixel centres, no antialiasing, like TF's ``tf.image.resize``) so that
    its long side is ``round(image_size * s)`` with ``s ~ U(scale_range)``; masks use nearest neighbour on the
    same grid. A window of ``min(H', image_size) x min(W', image_size)`` is then cropped at an offset drawn
    uniformly from the valid range (TF: ``offset = floor(max_offset * U[0, 1))``).

    Args:
        image_size: target size of the long side at ``s = 1``, and the largest crop side.
        scale_range: ``(min, max)`` of the scale jitter ``s``; the official recipes use (0.5, 2.0) or (0.1, 2.0).
        generator: RNG to draw from; ``None`` uses the global torch RNG.
    """

    def __init__(
        self,
        image_size: int,
        scale_range: tuple[float, float] = (0.5, 2.0),
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < min <= max, got {scale_range}")
        self.image_size = image_size
        self.scale_range = (float(lo), float(hi))
        self.generator = generator

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        lo, hi = self.scale_range
        s = lo + (hi - lo) * _uniform(self.generator)
        h, w = image.shape[-2:]
        new_h, new_w = _long_side_size(h, w, self.image_size * s)
        crop_h, crop_w = min(new_h, self.image_size), min(new_w, self.image_size)
        top = math.floor((new_h - crop_h) * _uniform(self.generator))
        left = math.floor((new_w - crop_w) * _uniform(self.generator))
        return _resize_crop(image, target, (new_h, new_w), (top, left, crop_h, crop_w))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_size={self.image_size}, scale_range={self.scale_range})"


class ResizeLongSide:
    """Deterministic resize so that the long side equals ``image_size`` (aspect ratio kept, no crop, no pad).

    The evaluation-time counterpart of `RandomResizeCrop` (``s = 1``, where its crop is a no-op).

    Args:
        image_size: long side of the output.
    """

    def __init__(self, image_size: int) -> None:
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_size = image_size

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        h, w = image.shape[-2:]
        new_h, new_w = _long_side_size(h, w, float(self.image_size))
        return _resize_crop(image, target, (new_h, new_w), (0, 0, new_h, new_w))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_size={self.image_size})"


class RandomHorizontalFlip:
    """Mirror the image, its boxes and masks left-right with probability ``p``.

    Args:
        p: flip probability.
        generator: RNG to draw from; ``None`` uses the global torch RNG.
    """

    def __init__(self, p: float = 0.5, *, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p
        self.generator = generator

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if _uniform(self.generator) >= self.p:
            return image, target
        width = image.shape[-1]
        target = dict(target)
        if "boxes" in target:
            boxes = target["boxes"]
            # x1' = W - x2 and x2' = W - x1 keep x1 <= x2 (pixel-edge coordinates, so no "-1").
            target["boxes"] = torch.stack(
                [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1
            ).to(boxes.dtype)
        if "masks" in target:
            target["masks"] = target["masks"].flip(-1)
        return image.flip(-1), target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


def _uniform(generator: torch.Generator | None) -> float:
    """One draw from U[0, 1) on the given generator (or the global torch RNG)."""
    return float(torch.rand((), generator=generator))


def _long_side_size(h: int, w: int, long_side: float) -> tuple[int, int]:
    """Output size with the long side ``round(long_side)`` and the aspect ratio kept (each side at least 1)."""
    scale = long_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _resize_crop(
    image: torch.Tensor, target: Target, size: tuple[int, int], window: tuple[int, int, int, int]
) -> tuple[torch.Tensor, Target]:
    """Resize ``image`` (and the target) to ``size``, then keep ``window = (top, left, height, width)``."""
    h, w = image.shape[-2:]
    new_h, new_w = size
    top, left, crop_h, crop_w = window

    if (new_h, new_w) != (h, w):
        dtype = image.dtype
        resized = F.interpolate(
            image[None].to(torch.float32), size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False
        )[0]
        image = resized if dtype.is_floating_point else resized.round_().clamp_(0, 255).to(dtype)
        if dtype.is_floating_point and dtype != torch.float32:
            image = image.to(dtype)
    image = image[:, top : top + crop_h, left : left + crop_w]

    target = dict(target)
    if "masks" in target:
        target["masks"] = _nearest_resize_crop(target["masks"], (h, w), size, window)
    if "boxes" in target:
        # Per-axis factors equal the actual resize ratios, so boxes stay on the resized pixel grid exactly.
        sx, sy = new_w / w, new_h / h
        boxes = target["boxes"].to(torch.float32)
        boxes = boxes * boxes.new_tensor([sx, sy, sx, sy]) - boxes.new_tensor([left, top, left, top])
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, crop_w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, crop_h)
        target["boxes"] = boxes
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if not bool(keep.all()):
            for key in PER_INSTANCE_KEYS:
                if key in target:
                    target[key] = target[key][keep]
    return image, target


def _nearest_resize_crop(
    masks: torch.Tensor, src: tuple[int, int], size: tuple[int, int], window: tuple[int, int, int, int]
) -> torch.Tensor:
    """Nearest-neighbour resize + crop of ``(N, H, W)`` masks, computed only for the cropped window.

    Output pixel ``i`` samples source pixel ``floor((i + 0.5) * H / H')``, the half-pixel-centre grid the
    bilinear image resize uses, so masks and image stay aligned. Indexing the window directly avoids building
    the full upscaled masks (at 2x jitter and 1280 px that would be ~6.5 MB per instance).
    """
    (h, w), (new_h, new_w) = src, size
    top, left, crop_h, crop_w = window
    rows = ((torch.arange(top, top + crop_h, dtype=torch.float64) + 0.5) * (h / new_h)).floor().long().clamp_(0, h - 1)
    cols = ((torch.arange(left, left + crop_w, dtype=torch.float64) + 0.5) * (w / new_w)).floor().long()
    cols = cols.clamp_(0, w - 1)
    return masks[:, rows][:, :, cols]
