"""Image classification data in the ImageFolder layout, with the ImageNet training and evaluation crops.

Layout (the one torchvision's ``ImageFolder`` and most ImageNet copies use)::

    ROOT/train/<class name>/*.jpg
    ROOT/val/<class name>/*.jpg

Class indices are the **sorted** class-folder names of the split, so the same folders give the same labels on every
machine; every split must have the same class folders (a missing or extra class would shift the indices silently).

Preprocessing follows the official SpineNet classification recipe (tensorflow/tpu ``models/official/resnet/
resnet_preprocessing.py``, used by ``spinenet*_classification.yaml``; Du et al. 2020 §5.2 "scale and aspect-ratio
jitter"):

* training: an Inception-style random crop covering ``area_range`` of the image (``[0.08, 1]`` for ImageNet) with
  aspect ratio in ``[3/4, 4/3]``, resized to ``image_size``, and a random horizontal flip;
* evaluation: the shorter side is resized to ``image_size / 0.875`` and the central ``image_size`` square is kept
  (TF crops ``image_size / (image_size + 32)`` of the shorter side and resizes; 224/256 = 0.875 at 224 px).

Images are served as float32 ``(3, H, W)`` in ``[0, 1]``, **not** mean/std normalised: as for the detectors, the
model normalises (`torchspine.models.classifier_train.TrainableClassifier`), so a data set can be shared by models
with different normalisations and never gets normalised twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from torchspine.data.batching import list_collate
from torchspine.data.image_io import load_skipping_bad, read_image
from torchspine.errors import UsageError

__all__ = [
    "EVAL_CROP_FRACTION",
    "IMAGE_EXTENSIONS",
    "ImageFolderClassification",
    "build_classification_dataset",
    "eval_transform",
    "train_transform",
]

logger = logging.getLogger(__name__)

Target = dict[str, Any]
ImageTransform = Callable[[torch.Tensor], torch.Tensor]

# File suffixes taken for images (lower-cased); other files in a class folder (READMEs, .DS_Store) are ignored.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
# Fraction of the resized shorter side kept by the evaluation centre crop (224 / 256, the standard ImageNet eval).
EVAL_CROP_FRACTION = 0.875


def train_transform(image_size: int, area_range: tuple[float, float], *, hflip: bool = True) -> ImageTransform:
    """Inception-style random-resized crop (+ flip) of a uint8 ``(3, H, W)`` image to float ``[0, 1]``.

    Args:
        image_size: output side (square).
        area_range: the crop's fraction of the image area, ``(min, max)`` with ``0 < min <= max <= 1``.
        hflip: random horizontal flip with probability 0.5.
    """
    lo, hi = area_range
    if not 0 < lo <= hi <= 1:
        raise UsageError(f"area_range={area_range}: expected 0 < min <= max <= 1 (fractions of the image area)")
    steps: list[Any] = [v2.RandomResizedCrop(image_size, scale=(lo, hi), ratio=(3 / 4, 4 / 3), antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)


def eval_transform(image_size: int) -> ImageTransform:
    """Resize the shorter side to ``image_size / 0.875``, centre-crop ``image_size``, to float ``[0, 1]``."""
    return v2.Compose(
        [
            v2.Resize(round(image_size / EVAL_CROP_FRACTION), antialias=True),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir())


class ImageFolderClassification(Dataset):
    """``split_dir/<class>/<image>`` as ``(image, {"labels": class index, "index": i})`` pairs.

    ``image`` is what `transform` returns for the decoded uint8 ``(3, H, W)`` RGB image (float ``[0, 1]`` with
    `train_transform` / `eval_transform`; without a transform the uint8 tensor is converted to float ``[0, 1]``).
    ``labels`` is a 0-d int64 tensor, so a batch's labels stack to ``(N,)``.

    Bad images (undecodable, truncated, not an image): with ``skip_bad=False`` ``__getitem__`` raises
    :class:`~torchspine.data.image_io.ImageError` naming the file; with ``skip_bad=True`` the file is logged once
    with the reason and the next readable sample (index + 1, wrapping) is served instead, as `CocoDetection` does,
    so batch sizes and epoch lengths stay fixed.

    Args:
        split_dir: the split folder holding one sub-folder per class.
        transform: applied to the uint8 image; None converts to float ``[0, 1]`` only.
        skip_bad: skip unreadable images instead of raising.
        classes: the expected class names in index order (e.g. the training split's `classes`, so that the
            validation labels are guaranteed to mean the same); None takes the sorted sub-folder names.

    Raises:
        FileNotFoundError: `split_dir` does not exist, has no class folders, a class in `classes` has no folder,
            or a class folder holds no image files.
        ValueError: the split's class folders differ from `classes`.
    """

    def __init__(
        self,
        split_dir: str | Path,
        *,
        transform: ImageTransform | None = None,
        skip_bad: bool = False,
        classes: Iterable[str] | None = None,
    ) -> None:
        self.root = Path(split_dir)
        self.transform = transform
        self.skip_bad = skip_bad
        if not self.root.is_dir():
            raise FileNotFoundError(f"split folder {self.root} does not exist (expected ROOT/<split>/<class>/*.jpg)")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not found:
            raise FileNotFoundError(f"{self.root}: no class folders (expected {self.root}/<class>/*.jpg)")
        self.classes: list[str] = list(classes) if classes is not None else found
        if found != self.classes:
            missing, extra = sorted(set(self.classes) - set(found)), sorted(set(found) - set(self.classes))
            raise UsageError(
                f"{self.root}: class folders differ from the expected classes (missing: {missing or 'none'}, "
                f"extra: {extra or 'none'}); every split needs the same class folders"
            )
        self.samples: list[tuple[Path, int]] = []
        empty = []
        for label, name in enumerate(self.classes):
            files = _list_images(self.root / name)
            if not files:
                empty.append(name)
            self.samples.extend((f, label) for f in files)
        if empty:
            shown = ", ".join(str(self.root / n) for n in empty[:5]) + (", ..." if len(empty) > 5 else "")
            raise FileNotFoundError(
                f"{self.root}: {len(empty)} class folder(s) without image files ({', '.join(sorted(IMAGE_EXTENSIONS))}"
                f"): {shown}"
            )
        self._bad: set[int] = set()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    collate_fn = staticmethod(list_collate)  # (images, targets) lists, the trainer's batch contract

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        if not self.skip_bad:
            return self._load(index)
        return load_skipping_bad(
            self._load, index, len(self.samples), self._bad, name=lambda i: "", where=str(self.root)
        )

    def _load(self, index: int) -> tuple[torch.Tensor, Target]:
        path, label = self.samples[index]
        image = read_image(path)
        image = self.transform(image) if self.transform is not None else image.to(torch.float32).div_(255.0)
        return image, {"labels": torch.tensor(label, dtype=torch.int64), "index": index}


def build_classification_dataset(
    data: str | Path,
    split: str,
    *,
    transform: ImageTransform | None = None,
    skip_bad: bool = False,
    classes: Iterable[str] | None = None,
) -> ImageFolderClassification:
    """The `ImageFolderClassification` of ``data/split`` (a missing split names both paths in the error)."""
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"classification data folder {data} does not exist (expected {data}/{split}/<class>/)")
    return ImageFolderClassification(data / split, transform=transform, skip_bad=skip_bad, classes=classes)
