"""A small, deterministic ImageFolder demo data set for classification: one coloured shape per image.

The classification counterpart of `torchspine.data.synthetic` (whose shapes it reuses): the class is the shape alone
(circle, cross, square, star, triangle), while colour, size (60-85% of the shorter side), position, rotation and
background tint vary at random, so a network has to learn shape (chance: 20% top-1). Unlike the detection demo, the
background is a flat dark colour with pixel grain (no blotchy texture), the shape is always lighter than it, and
shapes are large: with the detection demo's textures, saturated colours and 35-85% sizes a tiny SpineNet (and a
plain 5-layer CNN) stayed near chance for hundreds of CPU steps, so the demo could not show learning in minutes.
Classes are balanced (image ``i`` shows class ``i % 5``). Image sides vary in ``[1, 1.25] * image_size`` so the
evaluation resize-and-centre-crop is exercised.

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

# The detection demo's shapes, so both demos show the same five classes.
from torchspine.data.synthetic import DEMO_CATEGORIES, _paint, _shape_polygon
from torchspine.errors import UsageError

__all__ = ["DEMO_CLASSES", "DEMO_CLASSIFICATION_VERSION", "make_demo_classification_dataset"]

# Class names; their sorted order is the label order (circle=0, cross=1, square=2, star=3, triangle=4).
DEMO_CLASSES: tuple[str, ...] = tuple(sorted(DEMO_CATEGORIES.values()))
_CATEGORY_OF = {name: cat for cat, name in DEMO_CATEGORIES.items()}
# Bumped whenever the images change, so caches of the data set (`torchspine.engine.build`) are regenerated.
DEMO_CLASSIFICATION_VERSION = 2
_JPEG_QUALITY = 92
_EXTENT = (0.6, 0.85)  # the shape's extent as a fraction of the image's shorter side


def make_demo_classification_dataset(
    out_dir: str | Path, *, seed: int = 0, num_train: int = 2000, num_val: int = 100, image_size: int = 128
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


def _flat_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A dark base colour with a random tint and pixel grain (float32, HxWx3): nothing shape-like to mislead."""
    base = rng.uniform(20, 60) + rng.uniform(-10, 10, 3)
    return (base + 4.0 * rng.standard_normal((height, width, 3), dtype=np.float32)).astype(np.float32)


def _bright_colour(rng: np.random.Generator) -> np.ndarray:
    """A light colour of random hue (every channel >= 0.3 * value >= 57), always brighter than the background.

    With the detection demo's saturated colours (a channel may be 0) a blue shape can be darker than a grey
    background and a yellow one brighter, so edge polarity is random and a network must first learn many
    colour-specific edge filters; a constant brightness polarity makes the outline the easy cue.
    """
    value, saturation = rng.uniform(190, 255), rng.uniform(0.3, 0.7)
    weights = rng.uniform(0, 1, 3)
    weights = (weights - weights.min()) / max(float(np.ptp(weights)), 1e-6)  # the hue: 0 and 1 among the channels
    return (value * (1 - saturation * (1 - weights))).astype(np.float32)


def _draw(rng: np.random.Generator, category: int, image_size: int) -> np.ndarray:
    """One ``(H, W, 3)`` uint8 image showing one shape of `category` on a textured background."""
    height, width = (int(rng.integers(image_size, round(1.25 * image_size) + 1)) for _ in range(2))
    canvas = _flat_background(rng, height, width)
    radius = rng.uniform(*_EXTENT) * min(height, width) / 2
    cx = rng.uniform(radius + 1, width - radius - 1)
    cy = rng.uniform(radius + 1, height - radius - 1)
    vertices = _shape_polygon(category, cx, cy, radius, rng.uniform(0, 2 * np.pi))
    mask = polygons_to_mask([vertices.reshape(-1).tolist()], height, width).astype(bool)
    _paint(rng, canvas, mask, _bright_colour(rng))
    noise = 3.0 * rng.standard_normal(canvas.shape, dtype=np.float32)
    return np.clip(canvas + noise, 0, 255).round().astype(np.uint8)
