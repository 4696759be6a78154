"""Decode one image file into a uint8 RGB tensor, turning every way a file can be bad into one clear error.

Detection data sets collected in the wild contain CMYK JPEGs, 16-bit PNGs, palette GIF-like PNGs, phone photos
with EXIF rotation, truncated downloads and files that are not images at all. PIL handles each of them, but with
a zoo of exception types and silent defaults (e.g. clipping 16-bit values to 255). `read_image` normalises all of
that: it returns ``(3, H, W)`` uint8 RGB or raises :class:`ImageError`, whose message names the file and the
problem, so a data loader can report or skip the file (see ``torchspine.data.coco``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from torchspine.data.batching import list_collate
from torchspine.errors import TorchspineError

__all__ = ["ImageError", "SkipUnreadable", "Unreadable", "collate_readable", "load_skipping_bad", "read_image"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class ImageError(TorchspineError, ValueError):
    """An image file that cannot be decoded into RGB pixels; the message names the file and the problem."""


def read_image(path: str | Path, *, exif_transpose: bool = True) -> torch.Tensor:
    """Read an image file as an RGB uint8 tensor.

    Conversions, chosen so that every supported file yields the pixels a viewer would show:

    * EXIF orientation is applied (``ImageOps.exif_transpose``), so a phone photo tagged "rotate 90°" comes back
      upright with height and width swapped. Pass ``exif_transpose=False`` for the pixels as stored (what
      ``tf.io.decode_jpeg`` returns); `CocoDetection` uses it when an annotation file was made in that frame.
    * Grayscale, bilevel, palette, CMYK, YCbCr and HSV images are converted with PIL's colour conversions.
    * Alpha (RGBA, LA, palette transparency) is **dropped**, not composited: this is what TF's
      ``decode_image(channels=3)`` in the official SpineNet input pipeline does, so converted checkpoints see the
      same pixels.
    * 16-bit images (modes ``I;16*``, and ``I`` from 16-bit PNG/TIFF) are rescaled from their full range
      ``[0, 65535]`` to ``[0, 255]`` rather than clipped (PIL's own ``convert`` saturates everything above 255 to
      white). A 32-bit ``I`` image whose values exceed 16 bits is scaled from ``[0, 2**31 - 1]``; negative values
      become 0. Float images (``F``) are taken as ``[0, 1]`` when their maximum is at most 1, else clipped to
      ``[0, 255]``.
    * PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is kept, and exceeding it is an error even where
      PIL would only warn (between 1x and 2x the limit): a training job should not allocate gigabytes for one
      sample.

    Args:
        path: image file.
        exif_transpose: apply the EXIF orientation tag.

    Returns:
        ``(3, H, W)`` uint8 tensor, RGB, height and width after the EXIF rotation.

    Raises:
        ImageError: the file is missing, empty, not an image, truncated or corrupt, too large, or has a pixel
            format that cannot be converted to RGB. The original exception, if any, is chained.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(f"{path}: image file does not exist") from None
    except OSError as err:
        raise ImageError(f"{path}: cannot access image file ({err})") from err
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image file")
    if size == 0:
        raise ImageError(f"{path}: image file is empty (0 bytes)")

    # NOTE: warnings filters are process-global; this is fine for DataLoader worker processes, and in threads the
    # worst case is that a concurrent reader also turns a bomb warning into an error.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                img.load()
                if exif_transpose:
                    img = ImageOps.exif_transpose(img)
                return _to_rgb_tensor(img, path)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageError(
                f"{path}: image is too large to decode safely ({err}); PIL's limit is Image.MAX_IMAGE_PIXELS="
                f"{Image.MAX_IMAGE_PIXELS} pixels"
            ) from err
        except Image.UnidentifiedImageError as err:
            raise ImageError(f"{path}: not an image file, or an image format PIL cannot identify") from err
        except OSError as err:
            # "image file is truncated", "broken data stream", decoder errors ...
            raise ImageError(f"{path}: corrupt or truncated image file ({err})") from err
        except Exception as err:
            # PIL plugins raise SyntaxError, ValueError, EOFError, struct.error, IndexError ... for malformed
            # headers. At this file boundary they all mean "this file is bad"; the type is kept in the message.
            raise ImageError(f"{path}: cannot decode image file ({type(err).__name__}: {err})") from err


def _to_rgb_tensor(img: Image.Image, path: Path) -> torch.Tensor:
    """Convert a loaded PIL image of any mode into ``(3, H, W)`` uint8 RGB (policy in `read_image`)."""
    mode = img.mode
    if mode == "RGB":
        rgb = np.asarray(img, dtype=np.uint8)
    elif mode.startswith("I;16") or mode in ("I", "F"):
        gray = _high_depth_to_uint8(np.asarray(img), mode, img.format)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
    else:
        if mode == "P" and "transparency" in img.info:
            # Going through RGBA takes the palette's transparency into account (and avoids PIL's warning); the
            # alpha channel is then dropped like any other.
            img = img.convert("RGBA")
        try:
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except (ValueError, OSError) as err:
            raise ImageError(f"{path}: cannot convert image mode {mode!r} to RGB ({err})") from err
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"{path}: decoded to an unexpected array shape {rgb.shape} (mode {mode!r})")
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def _high_depth_to_uint8(values: np.ndarray, mode: str, fmt: str | None) -> np.ndarray:
    """Map a single-channel 16/32-bit integer or float image to uint8 by its bit depth (not by clipping)."""
    if mode == "F":
        values = values.astype(np.float64)
        values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.max() <= 1.0:
            values = values * 255.0
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    values = values.astype(np.int64)
    if mode.startswith("I;16") or fmt == "PNG" or (values.size and values.max() <= 65535):
        # PNG and 16-bit TIFF never exceed 16 bits; an "I" image with values in 16-bit range is the same data
        # held in a wider mode (older Pillow opened 16-bit PNGs as "I").
        full_scale = 65535
    else:
        full_scale = 2**31 - 1
    values = np.clip(values, 0, full_scale)
    # Round to nearest: 65535 -> 255, 32768 -> 128, 257 -> 1.
    return ((values * 255 + full_scale // 2) // full_scale).astype(np.uint8)


def load_skipping_bad(
    load: Callable[[int], T], index: int, count: int, bad: set[int], name: Callable[[int], str], where: str
) -> T:
    """``load(index)``, or, if that image cannot be decoded, the next readable one (wrapping around).

    Training with ``skip_bad`` serves another sample rather than dying hours in: each unreadable sample is logged
    once (with ``name(i)``) and remembered in `bad`; `where` names the data set in the error raised when no
    readable image is left.
    """
    for attempt in range(count):
        i = (index + attempt) % count
        if i in bad:
            continue
        try:
            return load(i)
        except ImageError as err:
            bad.add(i)
            logger.warning("skipping unreadable image%s: %s", name(i), err)
    raise ImageError(f"{where}: no readable image left")


@dataclass(frozen=True)
class Unreadable:
    """Stands in for a sample whose image could not be read (`SkipUnreadable`); `reason` is the `ImageError`."""

    reason: str


class SkipUnreadable(Dataset):
    """`dataset` with each unreadable sample served as an `Unreadable` marker instead of raising `ImageError`.

    For evaluation and prediction with ``--skip-bad``. Training replaces an unreadable sample by its neighbour to
    keep batch sizes fixed (`load_skipping_bad`); evaluation must not do that, since the neighbour would be scored
    twice and the unreadable image scored as if the model had found nothing in it. `collate_readable` separates
    the markers from the samples so the caller can leave those images out and report them.

    Args:
        dataset: a map-style data set that raises `ImageError` for an unreadable image (built with
            ``skip_bad=False``, or ``replace_unreadable=False`` for `torchspine.data.coco.CocoDetection`).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except ImageError as err:
            return Unreadable(str(err))


def collate_readable(batch: Iterable[Any]) -> tuple[list[torch.Tensor], list[Any], list[str]]:
    """`list_collate` of the readable samples of `batch`, plus the reasons of its `Unreadable` ones."""
    batch = list(batch)
    images, targets = list_collate(b for b in batch if not isinstance(b, Unreadable))
    return images, targets, [b.reason for b in batch if isinstance(b, Unreadable)]
