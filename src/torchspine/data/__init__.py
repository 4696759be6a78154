"""Detection data: robust image decoding, COCO-format datasets, the SpineNet input pipeline, a demo data set."""

from __future__ import annotations

from torchspine.data.coco import CocoDetection, CocoFormatError, build_dataset, encode_mask, polygons_to_mask
from torchspine.data.image_io import ImageError, read_image
from torchspine.data.synthetic import DEMO_CATEGORIES, make_demo_dataset
from torchspine.data.transforms import Compose, RandomHorizontalFlip, RandomResizeCrop, ResizeLongSide

__all__ = [
    "DEMO_CATEGORIES",
    "CocoDetection",
    "CocoFormatError",
    "Compose",
    "ImageError",
    "RandomHorizontalFlip",
    "RandomResizeCrop",
    "ResizeLongSide",
    "build_dataset",
    "encode_mask",
    "make_demo_dataset",
    "polygons_to_mask",
    "read_image",
]
