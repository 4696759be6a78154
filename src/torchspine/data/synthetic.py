"""A small, deterministic COCO-format demo data set of coloured shapes, for smoke runs, tutorials and tests.

Why not random boxes on noise: a demo should show a detector *learning*. Here the category is determined by the
shape alone (circle, square, triangle, cross, star; colours are random), objects range from ~8 px to ~60% of the
image so several pyramid levels matter, backgrounds are textured and noisy, and objects overlap a little. A
SpineNet RetinaNet reaches a useful AP on it after a few minutes of CPU training.

The output is a COCO-layout folder readable by `build_dataset` / `CocoDetection` (and by any COCO tool)::

    DIR/train/000001.jpg ...    DIR/annotations/instances_train.json
    DIR/val/000001.jpg ...      DIR/annotations/instances_val.json

Annotation facts:

* Segmentations are polygons, and the object's pixels are painted from exactly the mask pycocotools decodes
  from the stored polygon, so ``area`` (the mask area) and ``bbox`` (the mask's tight pixel box, xywh) agree
  with the image and with COCO evaluation.
* Masks are *amodal*: objects are drawn largest first, and a smaller object may cover at most a quarter of an
  earlier one, whose polygon still describes its full shape.
* The train split carries the format's rarer cases so loaders get exercised: one annotation with a compressed
  RLE mask (image 1), one with an uncompressed RLE mask (image 2), and one ``iscrowd=1`` cluster of tiny circles
  annotated as a single uncompressed-RLE region (image 3).

Determinism: every image is drawn from its own ``numpy`` generator seeded with ``(seed, split, index)``, so the
same seed gives byte-identical JSON and JPEGs (fixed quality, no timestamps or EXIF) on the same NumPy and
libjpeg versions, and changing ``num_train`` does not change the validation images.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from torchspine.data.coco import encode_mask, polygons_to_mask
from torchspine.errors import UsageError

__all__ = ["DEMO_CATEGORIES", "make_demo_dataset"]

# Category id -> shape name. Ids start at 1: labels are category ids and 0 is the background (see coco.py).
DEMO_CATEGORIES: dict[int, str] = {1: "circle", 2: "square", 3: "triangle", 4: "cross", 5: "star"}

_JPEG_QUALITY = 92
_MIN_OBJECT = 8.0  # smallest object extent (px)
_MAX_OBJECT_FRACTION = 0.6  # largest object extent, as a fraction of the image's short side
_MAX_OCCLUDED = 0.25  # a later object may cover at most this fraction of an earlier one's pixels


def make_demo_dataset(
    out_dir: str | Path,
    *,
    seed: int = 0,
    num_train: int = 200,
    num_val: int = 50,
    image_size: int = 320,
) -> Path:
    """Write the demo data set into ``out_dir`` (created if needed; existing files of the same names are replaced).

    Args:
        out_dir: destination folder (COCO layout, see the module docstring).
        seed: all randomness derives from it.
        num_train: images in the train split.
        num_val: images in the val split.
        image_size: typical image side; each image's height and width are drawn from
            ``[0.625, 1.25] * image_size`` independently (200-400 px at the default 320).

    Returns:
        ``out_dir`` as a ``Path``.
    """
    if num_train < 0 or num_val < 0:
        raise UsageError(f"image counts must be >= 0, got num_train={num_train}, num_val={num_val}")
    if image_size < 32:
        raise UsageError(f"image_size must be at least 32, got {image_size}")
    out = Path(out_dir)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for split_index, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        image_dir = out / split
        image_dir.mkdir(exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            rng = np.random.default_rng([seed, split_index, i])
            image_id = i + 1
            special = _special_case(split, i)
            pixels, anns = _draw_image(rng, image_size, special)
            file_name = f"{image_id:06d}.jpg"
            Image.fromarray(pixels).save(image_dir / file_name, quality=_JPEG_QUALITY, optimize=False)
            height, width = pixels.shape[:2]
            images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
            for ann in anns:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
        doc = {
            "info": {"description": f"torchspine demo shapes, {split} split, seed {seed}", "version": "1.0"},
            "licenses": [],
            "categories": [{"id": k, "name": v, "supercategory": "shape"} for k, v in DEMO_CATEGORIES.items()],
            "images": images,
            "annotations": annotations,
        }
        text = json.dumps(doc, separators=(",", ":"))
        (out / "annotations" / f"instances_{split}.json").write_text(text + "\n", encoding="utf-8")
    return out


def _special_case(split: str, index: int) -> str | None:
    """Which rarer annotation form (if any) train image ``index`` carries."""
    if split != "train":
        return None
    return {0: "rle_compressed", 1: "rle_uncompressed", 2: "crowd"}.get(index)


def _draw_image(rng: np.random.Generator, image_size: int, special: str | None) -> tuple[np.ndarray, list[dict]]:
    """Draw one image and its annotations (without ids)."""
    lo, hi = round(0.625 * image_size), round(1.25 * image_size)
    height, width = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    canvas = _background(rng, height, width)
    owner = np.full((height, width), -1, dtype=np.int32)  # index of the object visible at each pixel
    areas: list[int] = []
    anns: list[dict[str, Any]] = []

    max_extent = _MAX_OBJECT_FRACTION * min(height, width)
    num_objects = int(rng.integers(2, 8))
    # Log-uniform extents cover tiny to large evenly in scale; drawing largest first keeps small objects visible.
    extents = sorted(np.exp(rng.uniform(math.log(_MIN_OBJECT), math.log(max_extent), num_objects)), reverse=True)
    for extent in extents:
        category = int(rng.integers(1, len(DEMO_CATEGORIES) + 1))
        placed = _place(rng, category, float(extent), height, width, owner, areas)
        if placed is None:
            continue
        polygon, mask = placed
        owner[mask.astype(bool)] = len(areas)
        areas.append(int(mask.sum()))
        _paint(rng, canvas, mask.astype(bool), _object_colour(rng))
        anns.append(_annotation(category, mask, [polygon]))

    if special == "crowd":
        crowd = _crowd_cluster(rng, height, width, owner, canvas)
        if crowd is not None:
            anns.append({**_annotation(1, crowd, None), "iscrowd": 1})
    elif special is not None and anns:
        mask = polygons_to_mask(anns[0]["segmentation"], height, width)
        anns[0]["segmentation"] = encode_mask(mask, compressed=special == "rle_compressed")

    noise = 3.0 * rng.standard_normal(canvas.shape, dtype=np.float32)
    return np.clip(canvas + noise, 0, 255).round().astype(np.uint8), anns


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A muted base colour with low-frequency blotches and pixel noise (float32, HxWx3)."""
    base = rng.uniform(70, 190) + rng.uniform(-20, 20, 3)
    coarse = rng.uniform(-35, 35, (int(rng.integers(3, 8)), int(rng.integers(3, 8)), 3)).astype(np.float32)
    blotches = np.stack(
        [
            np.asarray(Image.fromarray(coarse[:, :, c]).resize((width, height), Image.Resampling.BILINEAR))
            for c in range(3)
        ],
        axis=2,
    )
    grain = 8.0 * rng.standard_normal((height, width, 3), dtype=np.float32)
    return (base + blotches + grain).astype(np.float32)


def _object_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated colour (random hue), so objects stand out from the muted background by colour, not by class."""
    hue = rng.uniform(0, 6)
    value, saturation = rng.uniform(150, 255), rng.uniform(0.6, 1.0)
    chroma = value * saturation
    x = chroma * (1 - abs(hue % 2 - 1))
    sector = int(hue) % 6
    r, g, b = [(chroma, x, 0), (x, chroma, 0), (0, chroma, x), (0, x, chroma), (x, 0, chroma), (chroma, 0, x)][sector]
    m = value - chroma
    return np.array([r + m, g + m, b + m], dtype=np.float32)


def _paint(rng: np.random.Generator, canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    """Fill ``mask`` with ``colour`` plus a faint texture, so objects are not perfectly flat."""
    n = int(mask.sum())
    canvas[mask] = colour + rng.normal(0.0, 6.0, (n, 1)).astype(np.float32)


def _shape_polygon(category: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Vertices ``(K, 2)`` of a shape inscribed in the circle ``(cx, cy, radius)``, rotated by ``angle``."""
    name = DEMO_CATEGORIES[category]
    if name == "circle":
        k = int(np.clip(radius, 12, 48))
        t = np.linspace(0, 2 * np.pi, k, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif name == "square":
        t = np.pi / 4 + np.arange(4) * np.pi / 2
        pts = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif name == "triangle":
        t = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        pts = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif name == "cross":
        a = 0.32  # half-width of an arm, relative to the arm length
        pts = np.array(
            [
                (a, -1),
                (a, -a),
                (1, -a),
                (1, a),
                (a, a),
                (a, 1),
                (-a, 1),
                (-a, a),
                (-1, a),
                (-1, -a),
                (-a, -a),
                (-a, -1),
            ],
            dtype=np.float64,
        ) / math.hypot(1, a)
    else:  # star: five points, inner radius 0.45
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return pts @ rot.T * radius + np.array([cx, cy])


def _place(
    rng: np.random.Generator,
    category: int,
    extent: float,
    height: int,
    width: int,
    owner: np.ndarray,
    areas: list[int],
    tries: int = 20,
) -> tuple[list[float], np.ndarray] | None:
    """Find a position where the shape lies inside the image and hides at most a quarter of any earlier object."""
    radius = extent / 2
    for _ in range(tries):
        cx = rng.uniform(radius + 1, width - radius - 1)
        cy = rng.uniform(radius + 1, height - radius - 1)
        vertices = _shape_polygon(category, cx, cy, radius, rng.uniform(0, 2 * np.pi))
        # Round as stored in the JSON, then rasterise the stored numbers: image, mask, area and bbox agree exactly.
        polygon = [round(float(v), 2) for v in vertices.reshape(-1)]
        mask = polygons_to_mask([polygon], height, width)
        if not mask.any():
            continue
        covered = owner[mask.astype(bool)]
        covered = covered[covered >= 0]
        if covered.size:
            hidden = np.bincount(covered, minlength=len(areas))
            if np.any(hidden > _MAX_OCCLUDED * np.asarray(areas)):
                continue
        return polygon, mask
    return None


def _crowd_cluster(
    rng: np.random.Generator, height: int, width: int, owner: np.ndarray, canvas: np.ndarray
) -> np.ndarray | None:
    """Paint a cluster of tiny circles in a free area and return their union mask (a COCO crowd region)."""
    for _ in range(20):
        size = 48
        x0, y0 = int(rng.integers(0, width - size)), int(rng.integers(0, height - size))
        if (owner[y0 : y0 + size, x0 : x0 + size] >= 0).any():
            continue
        union = np.zeros((height, width), dtype=np.uint8)
        colour = _object_colour(rng)
        for _ in range(8):
            cx, cy = x0 + rng.uniform(6, size - 6), y0 + rng.uniform(6, size - 6)
            polygon = [round(float(v), 2) for v in _shape_polygon(1, cx, cy, 4.0, 0.0).reshape(-1)]
            union |= polygons_to_mask([polygon], height, width)
        _paint(rng, canvas, union.astype(bool), colour)
        return union
    return None


def _annotation(category: int, mask: np.ndarray, segmentation: list[list[float]] | None) -> dict[str, Any]:
    """COCO fields of one object: ``area`` is the mask's pixel count, ``bbox`` its tight pixel box (xywh)."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    bbox = [float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)]
    segm: Any = segmentation if segmentation is not None else encode_mask(mask, compressed=False)
    return {"category_id": category, "segmentation": segm, "area": float(mask.sum()), "bbox": bbox, "iscrowd": 0}
