"""The batch contract shared by every data set and the trainer: ``(list_of_images, list_of_targets)``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def list_collate(batch: Iterable[tuple[torch.Tensor, T]]) -> tuple[list[torch.Tensor], list[T]]:
    """Keep images and targets as lists: detection images differ in size (the detector batches and pads them), and
    classifiers stack them themselves, so one contract serves every task."""
    images: list[torch.Tensor] = []
    targets: list[Any] = []
    for image, target in batch:
        images.append(image)
        targets.append(target)
    return images, targets
