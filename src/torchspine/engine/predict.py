"""Run a detector over image files: one JSON file with every detection, and one annotated PNG per image.

This is the library side of ``torchspine predict``. Inputs are plain files or folders (``collect_images``); every
file is decoded by ``torchspine.data.image_io.read_image``, so the pixels match what the data sets feed the model
(EXIF rotation applied, alpha dropped, 16-bit rescaled). A file that cannot be decoded stops the run with an error
naming it, as in training and evaluation; with ``skip_bad`` (``--skip-bad``) it is logged and listed under
``skipped`` in the JSON instead, so a run over thousands of images of unknown quality goes on.

The JSON (``predictions.json``) is COCO-flavoured so that pycocotools-based tools can read it:

.. code-block:: text

    {"images":     [{"id", "file_name", "width", "height", "visualization"}],  # ids from 1, in input order
     "categories": [{"id", "name"}],                    # only when category names were given
     "score_threshold": float,
     "results":    [{"image_id", "category_id", "category_name", "bbox": [x, y, w, h], "score",
                     "segmentation": RLE}],             # segmentation only for models that predict masks
     "skipped":    [{"file_name", "reason"}]}

``results`` holds the same detections the PNGs show: those scoring at least ``score_threshold``. Pass 0 to keep
every detection the model returns.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torchvision.utils import make_grid
from tqdm.auto import tqdm

from torchspine.data.image_io import ImageError, read_image
from torchspine.engine.evaluation import to_coco_results
from torchspine.errors import UsageError
from torchspine.visualize import draw_detections, save_png

__all__ = [
    "IMAGE_EXTENSIONS",
    "PREDICTIONS_FILE",
    "classify_images",
    "collect_images",
    "predict_images",
    "save_prediction_grid",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
PREDICTIONS_FILE = "predictions.json"


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders into the list of images to predict on.

    Args:
        inputs: image files and/or folders. A folder contributes its own image files (not those of sub-folders),
            recognised by extension (``IMAGE_EXTENSIONS``, any case) and sorted by name; hidden files such as
            macOS ``._name.jpg`` forks are left out. A file named explicitly is kept whatever its extension.

    Returns:
        The image paths in input order, each listed once.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: no inputs were given, or a folder holds no image file.
    """
    if not inputs:
        raise UsageError("no input images or folders given")
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise UsageError(f"{path}: folder holds no image files (looked for {', '.join(IMAGE_EXTENSIONS)})")
            paths.extend(found)
        elif path.exists():
            paths.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such image file or folder")
    unique: dict[Path, Path] = {}
    for path in paths:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _png_names(paths: Sequence[Path], out_dir: Path) -> list[str]:
    """Choose ``<stem>.png`` per input, numbering repeats (``a/x.jpg``, ``b/x.jpg`` → ``x.png``, ``x-2.png``).

    Refuses to overwrite an input image, which would happen when ``out_dir`` is an input folder holding PNGs.
    """
    inputs = {p.resolve() for p in paths}
    used: set[str] = set()
    names = []
    for path in paths:
        name, k = f"{path.stem}.png", 1
        # Compare case-insensitively: on macOS and Windows "X.png" and "x.png" are the same file.
        while name.lower() in used:
            k += 1
            name = f"{path.stem}-{k}.png"
        used.add(name.lower())
        if (out_dir / name).resolve() in inputs:
            raise UsageError(f"writing {out_dir / name} would overwrite an input image; choose another output folder")
        names.append(name)
    return names


def _read_batch(
    jobs: Sequence[tuple[Path, str]], skipped: list[dict[str, str]], skip_bad: bool
) -> list[tuple[Path, str, torch.Tensor]]:
    """Decode the images of one batch; with `skip_bad`, undecodable files are logged and appended to ``skipped``."""
    batch = []
    for path, png_name in jobs:
        try:
            batch.append((path, png_name, read_image(path)))
        except ImageError as err:
            if not skip_bad:
                raise ImageError(f"{err}; pass --skip-bad (skip_bad=True) to skip unreadable images") from None
            logger.warning("skipping unreadable image: %s", err)
            skipped.append({"file_name": str(path), "reason": str(err)})
    return batch


def _save_one(
    path: Path,
    image: torch.Tensor,
    output: Mapping[str, torch.Tensor],
    image_id: int,
    png_path: Path,
    names: Mapping[int, str],
    score_threshold: float,
    mask_threshold: float,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Draw and save one image's detections; return its ``images`` entry and its ``results``."""
    keep = output["scores"] >= score_threshold
    detections = {k: v[keep].cpu() for k, v in output.items() if k in ("boxes", "labels", "scores", "masks")}
    results = to_coco_results([detections], [image_id], with_masks="masks" in detections, mask_threshold=mask_threshold)
    for result in results:
        result["category_name"] = names.get(result["category_id"])
    drawn = draw_detections(
        image, detections, category_names=names, score_threshold=score_threshold, mask_threshold=mask_threshold
    )
    save_png(drawn, png_path)
    height, width = image.shape[-2:]
    entry = {
        "id": image_id,
        "file_name": str(path),
        "width": int(width),
        "height": int(height),
        "visualization": png_path.name,
    }
    return entry, results


def predict_images(
    model: nn.Module,
    paths: Sequence[Path],
    out_dir: Path,
    *,
    category_names: Mapping[int, str] | None = None,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    score_threshold: float = 0.3,
    mask_threshold: float = 0.5,
    progress: bool = True,
    skip_bad: bool = False,
) -> Path:
    """Predict on image files; write ``out_dir/predictions.json`` and one drawn ``out_dir/<stem>.png`` per image.

    Args:
        model: a torchvision-style detector taking float ``(3, H, W)`` images in ``[0, 1]``. It is moved to
            ``device``, run in eval mode under ``torch.inference_mode()`` and put back in its previous mode.
        paths: image files, e.g. from ``collect_images``.
        out_dir: output folder, created if missing; existing files of the same names are overwritten.
        category_names: category id → name, for the labels drawn and ``category_name`` in the JSON.
        batch_size: images per forward pass.
        device: where the model runs.
        score_threshold: detections scoring below this are neither drawn nor written.
        mask_threshold: probability above which a mask pixel belongs to the instance.
        progress: show a tqdm progress bar.
        skip_bad: log and list unreadable files under ``skipped`` instead of raising their `ImageError`.

    Returns:
        The path of the JSON file (layout in the module docstring).
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    out_dir = Path(out_dir)
    paths = [Path(p) for p in paths]
    png_names = _png_names(paths, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = dict(category_names or {})
    images: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []

    jobs = list(zip(paths, png_names, strict=True))
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.inference_mode(), tqdm(total=len(paths), desc="predict", unit="img", disable=not progress) as bar:
            for start in range(0, len(jobs), batch_size):
                batch = _read_batch(jobs[start : start + batch_size], skipped, skip_bad)
                outputs = model([image.to(device, torch.float32) / 255 for _, _, image in batch]) if batch else []
                for (path, png_name, image), output in zip(batch, outputs, strict=True):
                    entry, detections = _save_one(
                        path, image, output, len(images) + 1, out_dir / png_name, names, score_threshold, mask_threshold
                    )
                    images.append(entry)
                    results.extend(detections)
                bar.update(len(jobs[start : start + batch_size]))
    finally:
        model.train(was_training)

    document: dict[str, Any] = {"images": images}
    if names:
        document["categories"] = [{"id": cid, "name": name} for cid, name in sorted(names.items())]
    document.update(score_threshold=score_threshold, results=results, skipped=skipped)
    json_path = out_dir / PREDICTIONS_FILE
    json_path.write_text(json.dumps(document, indent=1))
    logger.info(
        "%d detections on %d images written to %s (%d skipped)", len(results), len(images), out_dir, len(skipped)
    )
    return json_path


def save_prediction_grid(
    model: nn.Module,
    dataset: Dataset,
    path: str | Path,
    *,
    category_names: Mapping[int, str] | None = None,
    num_images: int = 8,
    columns: int = 4,
    score_threshold: float = 0.4,
    device: str | torch.device = "cpu",
) -> Path:
    """One PNG with the detections on the first `num_images` images of `dataset`, tiled `columns` wide.

    For a quick look at what a detector learned (``torchspine demo`` writes one after training). Images of different
    sizes are padded (black) to the largest before tiling.

    Args:
        model: a torchvision-style detector; run in eval mode under ``torch.inference_mode()``.
        dataset: yields ``(image, target)`` with float ``(3, H, W)`` images in ``[0, 1]`` (the `CocoDetection`
            contract).
        path: the PNG to write.
        category_names: category id -> name for the labels.
        num_images: images shown (fewer if the data set is smaller).
        columns: images per row.
        score_threshold: detections below this score are not drawn.
        device: where the model runs.
    """
    count = min(num_images, len(dataset))  # type: ignore[arg-type]
    if count == 0:
        raise ValueError("the dataset is empty: no images to draw")
    images = [dataset[i][0] for i in range(count)]
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.inference_mode():
            outputs = model([image.to(device) for image in images])
    finally:
        model.train(was_training)
    drawn = []
    for image, output in zip(images, outputs, strict=True):
        pixels = (image * 255).round().clamp(0, 255).to(torch.uint8)
        detections = {k: v.cpu() for k, v in output.items()}
        drawn.append(
            draw_detections(pixels, detections, category_names=category_names, score_threshold=score_threshold)
        )
    height, width = max(d.shape[1] for d in drawn), max(d.shape[2] for d in drawn)
    padded = [F.pad(d, (0, width - d.shape[2], 0, height - d.shape[1])) for d in drawn]
    grid = make_grid(torch.stack(padded), nrow=columns, padding=4, pad_value=255)
    return save_png(grid, path)


def classify_images(
    model: nn.Module,
    paths: Sequence[Path],
    out_dir: Path,
    *,
    image_size: int,
    class_names: Mapping[int, str] | None = None,
    top_k: int = 5,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    skip_bad: bool = False,
) -> tuple[Path, list[dict[str, Any]]]:
    """Classify image files; write ``out_dir/predictions.json`` with the `top_k` classes of each image.

    Args:
        model: ``model(images)`` -> logits for ``[0, 1]`` float images of one size (a `TrainableClassifier`,
            which normalises them); run in eval mode under ``torch.inference_mode()``.
        paths: image files, e.g. from ``collect_images``.
        out_dir: output folder, created if missing.
        image_size: the evaluation crop (`torchspine.data.classification.eval_transform`).
        class_names: class index -> name.
        top_k: classes reported per image.
        batch_size: images per forward pass.
        device: where the model runs.
        skip_bad: log and list unreadable files under ``skipped`` instead of raising their `ImageError`.

    Returns:
        The JSON path and its ``results``: ``{"file_name", "top": [{"class", "name", "probability"}]}`` per image.
    """
    from torchspine.data.classification import eval_transform

    transform = eval_transform(image_size)
    names = dict(class_names or {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    jobs = [(Path(p), "") for p in paths]
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(jobs), batch_size):
                batch = _read_batch(jobs[start : start + batch_size], skipped, skip_bad)
                if not batch:
                    continue
                probs = model([transform(image).to(device) for _, _, image in batch]).softmax(dim=1)
                top = probs.topk(min(top_k, probs.shape[1]), dim=1)
                for (path, _, _), p, idx in zip(batch, top.values.tolist(), top.indices.tolist(), strict=True):
                    ranked = [{"class": i, "name": names.get(i), "probability": q} for i, q in zip(idx, p, strict=True)]
                    results.append({"file_name": str(path), "top": ranked})
    finally:
        model.train(was_training)
    json_path = out_dir / PREDICTIONS_FILE
    json_path.write_text(json.dumps({"results": results, "skipped": skipped}, indent=1))
    return json_path, results
