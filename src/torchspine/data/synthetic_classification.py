"""A small, deterministic ImageFolder demo data set for classification: one coloured shape per image.

The classification counterpart of `torchspine.data.synthetic` (whose shapes, colours and textured backgrounds it
reuses): the class is the shape alone (circle, cross, square, star, triangle), while colour, size (35-85% of the
shorter side), position, rotation and background vary at random, so a network has to learn shape and a tiny
SpineNet learns it in a few CPU minutes (chance: 20% top-1). Classes are balanced (image ``i`` shows class
``i % 5``). Image sides vary in ``[1, 1.25] * image_size`` so the evaluation resize-and-centre-crop is exercised.

Layout (`torchspine.data.classification.ImageFolderClassification`; class index = sorted folder name)::

    DIR/train/circle/000000.jpg ...    DIR/val/circle/000000.jpg ...

Determinism: image ``i`` of a split is drawn from a ``numpy`` generator seeded with ``(seed, split, i)``, so the
same seed gives byte-identical JPEGs on the same NumPy and libjpeg versions, and changing ``num_train`` does not
change the validation images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from torchspine.data.coco import polygons_to_mask

# The detection demo's drawing helpers: same shapes and colours, so both demos look alike.
from torchspine.data.synthetic import DEMO_CATEGORIES, _background, _object_colour, _paint, _shape_polygon
from torchspine.errors import UsageError

__all__ = ["DEMO_CLASSES", "make_demo_classification_dataset"]

# Class names; their sorted order is the label order (circle=0, cross=1, square=2, star=3, triangle=4).
DEMO_CLASSES: tuple[str, ...] = tuple(sorted(DEMO_CATEGORIES.values()))
_CATEGORY_OF = {name: cat for cat, name in DEMO_CATEGORIES.items()}
_JPEG_QUALITY = 92
_EXTENT = (0.35, 0.85)  # the shape's extent as a fraction of the image's shorter side


def make_demo_classification_dataset(
    out_dir: str | Path, *, seed: int = 0, num_train: int = 400, num_val: int = 100, image_size: int = 128
) -> Path:
    """Write the demo classification data set into `out_dir` (created if needed; same-named files are replaced).

    Args:
        out_dir: destination folder (``out_dir/{train,val}/<class>/NNNNNN.jpg``).
        seed: all randomness derives from it.
        num_train: images in the train split (at least one per class).
        num_val: images in the val split (at least one per class).
        image_size: smallest image side; each side is drawn from ``[1, 1.25] * image_size``.

    Returns:
        `out_dir` as a ``Path``.
    """
    if min(num_train, num_val) < len(DEMO_CLASSES):
        raise UsageError(
            f"num_train={num_train}, num_val={num_val}: each split needs at least one image per class "
            f"({len(DEMO_CLASSES)})"
        )
    if image_size < 32:
        raise UsageError(f"image_size must be at least 32, got {image_size}")
    out = Path(out_dir)
    for split_index, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        for name in DEMO_CLASSES:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([seed, split_index, i])
            name = DEMO_CLASSES[i % len(DEMO_CLASSES)]
            pixels = _draw(rng, _CATEGORY_OF[name], image_size)
            Image.fromarray(pixels).save(out / split / name / f"{i:06d}.jpg", quality=_JPEG_QUALITY, optimize=False)
    return out


def _draw(rng: np.random.Generator, category: int, image_size: int) -> np.ndarray:
    """One ``(H, W, 3)`` uint8 image showing one shape of `category` on a textured background."""
    height, width = (int(rng.integers(image_size, round(1.25 * image_size) + 1)) for _ in range(2))
    canvas = _background(rng, height, width)
    radius = rng.uniform(*_EXTENT) * min(height, width) / 2
    cx = rng.uniform(radius + 1, width - radius - 1)
    cy = rng.uniform(radius + 1, height - radius - 1)
    vertices = _shape_polygon(category, cx, cy, radius, rng.uniform(0, 2 * np.pi))
    mask = polygons_to_mask([vertices.reshape(-1).tolist()], height, width).astype(bool)
    _paint(rng, canvas, mask, _object_colour(rng))
    noise = 3.0 * rng.standard_normal(canvas.shape, dtype=np.float32)
    return np.clip(canvas + noise, 0, 255).round().astype(np.uint8)
