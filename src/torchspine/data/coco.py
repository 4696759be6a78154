"""COCO-format detection datasets: validated up front, served as tensors in the torchvision detection layout.

The annotation file is checked completely when the dataset is built, so a broken data set fails before the first
training step instead of hours into a run. Problems fall into two groups:

* **Errors** (raised together in one :class:`CocoFormatError` that lists each one with its annotation or image
  id): malformed JSON, missing sections, duplicate image / annotation / category ids, unknown category or image
  ids, boxes with NaN/inf, negative sizes or fewer than 4 numbers, images without width/height, malformed or
  wrongly sized RLE masks, and images listed but missing on disk (unless ``skip_bad``).
* **Repairs** (counted and logged once as summary lines): zero-area boxes are dropped; boxes partly outside their
  image are clipped; boxes entirely outside are dropped; polygons with fewer than 3 points are dropped, and an
  annotation left with no polygon is dropped with its box, so the box and mask sets never disagree.

Conventions (as the official input parsers):

* ``labels`` are the category ids **as written** in the JSON, not remapped to 0..K-1: the official SpineNet COCO
  detectors have 91 class outputs indexed by COCO category id, with 0 (background) never used. Category id 0 is
  therefore rejected. ``num_classes`` is ``max(category id) + 1``.
* Crowd annotations (``iscrowd=1``) are left out of the targets unless ``include_crowd``, as the official training
  pipeline skips them. They stay in :attr:`CocoDetection.coco`, where COCO evaluation uses them as ignore regions.
* Images without annotations are kept; they contribute negatives, as in the official pipeline.
* Repairs apply to the served targets only: :attr:`CocoDetection.coco` (the evaluation ground truth) keeps the
  file's boxes as written, so AP is comparable with the official COCO evaluation.

This is the only module besides the evaluation engine that imports ``pycocotools``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from torchspine.data.batching import list_collate
from torchspine.data.image_io import ImageError, load_skipping_bad, read_image
from torchspine.errors import TorchspineError

__all__ = ["CocoDetection", "CocoFormatError", "build_dataset", "encode_mask", "polygons_to_mask"]

logger = logging.getLogger(__name__)

Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]

# How many individual problems an error message lists before summarising the rest.
_MAX_LISTED = 20


class CocoFormatError(TorchspineError, ValueError):
    """An annotation file that cannot be used; the message names the file and every problem found."""


@dataclass
class _ImageRecord:
    """What `__getitem__` needs for one image, precomputed and validated at construction."""

    image_id: int
    file_name: str
    height: int
    width: int
    boxes: np.ndarray  # (N, 4) float32 xyxy, clipped to the image
    labels: np.ndarray  # (N,) int64 category ids
    iscrowd: np.ndarray  # (N,) int64
    segmentations: list[Any]  # N cleaned polygon lists / RLE dicts (None when the annotation has none)


class _Report:
    """Collects errors and counted repairs while an annotation file is checked."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.errors: list[str] = []
        self.repairs: dict[str, list[Any]] = defaultdict(list)

    def error(self, message: str) -> None:
        self.errors.append(message)

    def repair(self, what: str, ann_id: Any) -> None:
        self.repairs[what].append(ann_id)

    def raise_errors(self) -> None:
        if not self.errors:
            return
        listed = "\n  ".join(self.errors[:_MAX_LISTED])
        more = f"\n  ... and {len(self.errors) - _MAX_LISTED} more" if len(self.errors) > _MAX_LISTED else ""
        raise CocoFormatError(f"{self.source}: {len(self.errors)} problem(s) in the annotation file:\n  {listed}{more}")

    def log_repairs(self) -> None:
        for what, ids in self.repairs.items():
            examples = ", ".join(str(i) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
            logger.warning("%s: %s: %d annotation(s) (annotation ids %s)", self.source, what, len(ids), examples)


class CocoDetection(Dataset):
    """A COCO-format instances file and its images, as ``(image, target)`` pairs for torchvision detectors.

    ``image`` is float32 ``(3, H, W)`` RGB in ``[0, 1]``. ``target`` holds:

    * ``boxes``: float32 ``(N, 4)``, ``[x1, y1, x2, y2]`` in pixels of the returned image;
    * ``labels``: int64 ``(N,)``, COCO category ids as written in the file (see the module docstring);
    * ``iscrowd``: int64 ``(N,)`` (all zero unless ``include_crowd``);
    * ``image_id``: int, the COCO image id;
    * ``masks``: uint8 ``(N, H, W)``, only when ``with_masks``.

    Bad images: with ``skip_bad=False`` a listed image missing on disk is an error at construction, and an
    unreadable image raises :class:`~torchspine.data.image_io.ImageError` (naming the file) from ``__getitem__``.
    With ``skip_bad=True`` missing images are logged and left out of :attr:`ids`, and an image that fails to
    decode is logged once and replaced by the next readable sample (index + 1, wrapping around). The replacement
    keeps batch sizes and epoch lengths fixed, at the cost of serving that neighbour twice in the epoch.

    Args:
        image_dir: folder the images' ``file_name`` entries are relative to.
        annotation_file: COCO instances JSON.
        transforms: ``(image, target) -> (image, target)`` callable applied last, e.g. from
            ``torchspine.data.transforms``.
        with_masks: decode instance masks (polygons, compressed and uncompressed RLE) into ``target["masks"]``;
            every kept annotation must then have a segmentation.
        skip_bad: log and skip missing or unreadable images instead of raising.
        include_crowd: keep ``iscrowd=1`` annotations in the targets.
        replace_unreadable: with `skip_bad`, serve the next readable image in place of an unreadable one (training);
            False raises its `ImageError` as without `skip_bad`, for evaluation, which must leave the image out
            rather than score its neighbour twice (`torchspine.data.image_io.SkipUnreadable`).
    """

    def __init__(
        self,
        image_dir: str | Path,
        annotation_file: str | Path,
        *,
        transforms: Transform | None = None,
        with_masks: bool = False,
        skip_bad: bool = False,
        include_crowd: bool = False,
        replace_unreadable: bool = True,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.annotation_file = Path(annotation_file)
        self.transforms = transforms
        self.with_masks = with_masks
        self.skip_bad = skip_bad
        self.replace_unreadable = replace_unreadable
        self.include_crowd = include_crowd
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder {self.image_dir} does not exist (annotations: {annotation_file})")

        data = _load_json(self.annotation_file)
        report = _Report(self.annotation_file)
        categories = _check_categories(data, report)
        images = _check_images(data, report)
        report.raise_errors()
        ground_truth, per_image = _check_annotations(data, images, categories, with_masks, include_crowd, report)
        report.raise_errors()
        report.log_repairs()

        missing = [i for i, img in images.items() if not (self.image_dir / img["file_name"]).is_file()]
        if missing:
            examples = ", ".join(f"{images[i]['file_name']!r} (image id {i})" for i in missing[:5])
            more = ", ..." if len(missing) > 5 else ""
            message = (
                f"{self.annotation_file}: {len(missing)} of {len(images)} listed image(s) not found in "
                f"{self.image_dir}: {examples}{more}"
            )
            if not skip_bad:
                raise FileNotFoundError(
                    message + "; to go on without them pass --skip-bad (eval), --set data.skip_bad=true (train) or "
                    "skip_bad=True"
                )
            logger.warning("%s; skipping them", message)
        missing_set = set(missing)

        self._categories = categories
        self.ids: list[int] = [i for i in images if i not in missing_set]
        self._records: dict[int, _ImageRecord] = {}
        num_crowd = 0
        for image_id in self.ids:
            img = images[image_id]
            anns = [a for a in per_image.get(image_id, []) if include_crowd or not a["iscrowd"]]
            num_crowd += len(per_image.get(image_id, [])) - len(anns)
            self._records[image_id] = _ImageRecord(
                image_id=image_id,
                file_name=img["file_name"],
                height=img["height"],
                width=img["width"],
                boxes=np.array([a["xyxy"] for a in anns], dtype=np.float32).reshape(-1, 4),
                labels=np.array([a["category_id"] for a in anns], dtype=np.int64),
                iscrowd=np.array([a["iscrowd"] for a in anns], dtype=np.int64),
                segmentations=[a.get("segmentation") for a in anns],
            )
        if num_crowd:
            logger.info("%s: %d crowd annotation(s) left out of the targets", self.annotation_file, num_crowd)

        # The evaluation ground truth is the file restricted to the served images, so COCOeval's default imgIds
        # match `ids`. It keeps the file's boxes unclipped and crowd regions (ignore regions in COCOeval), so
        # scores match the official evaluation; only polygons with < 3 points are removed, which pycocotools
        # would otherwise misread (a 4-number polygon is taken for a box) or fail on.
        kept = set(self.ids)
        gt = {k: v for k, v in data.items() if k not in ("images", "annotations")}
        gt["images"] = [images[i] for i in self.ids]
        gt["annotations"] = [a for a in ground_truth if a["image_id"] in kept]
        self._coco_dataset = gt
        self._coco: COCO | None = None
        self._bad: set[int] = set()

    def restricted(self, image_ids: Sequence[int], *, transforms: Transform | None) -> CocoDetection:
        """A copy serving only `image_ids` (in that order), with its own `transforms` and evaluation ground truth.

        Shares the parsed annotations with `self` (COCO train2017's JSON is parsed once, not once per split), which
        is how a held-out split of the training images is made (`torchspine.data.holdout`).

        Raises:
            ValueError: an id that this data set does not serve.
        """
        unknown = sorted(set(image_ids) - set(self._records))
        if unknown:
            raise ValueError(
                f"{self.annotation_file}: image id(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''} are not "
                f"among the {len(self.ids)} images served from it"
            )
        subset = copy.copy(self)
        subset.ids = list(image_ids)
        subset.transforms = transforms
        kept = set(subset.ids)
        gt = dict(self._coco_dataset)
        by_id = {img["id"]: img for img in self._coco_dataset["images"]}
        gt["images"] = [by_id[i] for i in subset.ids]
        gt["annotations"] = [a for a in self._coco_dataset["annotations"] if a["image_id"] in kept]
        subset._coco_dataset = gt
        subset._coco = None
        subset._bad = set()
        return subset

    # ------------------------------------------------------------------ properties

    @property
    def num_classes(self) -> int:
        """Number of classifier outputs when labels are category ids: ``max(category id) + 1``."""
        return max(self._categories) + 1

    @property
    def category_names(self) -> dict[int, str]:
        """Category id → name, as in the file."""
        return dict(self._categories)

    @property
    def coco(self) -> COCO:
        """The pycocotools ``COCO`` ground truth for ``COCOeval`` over :attr:`ids` (built on first use).

        It holds the file's annotations as written (boxes unclipped, zero-area and crowd ones included), so AP
        matches the official evaluation; only annotations with errors and polygons with < 3 points are left out.
        """
        if self._coco is None:
            coco = COCO()
            coco.dataset = self._coco_dataset
            with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
                coco.createIndex()
            self._coco = coco
        return self._coco

    collate_fn = staticmethod(list_collate)  # (images, targets) lists, the trainer's batch contract

    # ------------------------------------------------------------------ serving

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        if self.skip_bad and not self.replace_unreadable:
            return self._load(index)
        if not self.skip_bad:
            try:
                return self._load(index)
            except ImageError as err:
                if "--skip-bad" in str(err):
                    raise
                raise ImageError(
                    f"{err} (image id {self.ids[index]}); to leave unreadable images out pass --skip-bad (eval, "
                    "predict), --set data.skip_bad=true (train) or skip_bad=True"
                ) from None
        return load_skipping_bad(
            self._load,
            index,
            len(self.ids),
            self._bad,
            name=lambda i: f" (image id {self.ids[i]})",
            where=f"{self.annotation_file} ({self.image_dir})",
        )

    def _load(self, index: int) -> tuple[torch.Tensor, Target]:
        record = self._records[self.ids[index]]
        image = self._read(record)
        h, w = record.height, record.width
        target: Target = {
            "boxes": torch.from_numpy(record.boxes.copy()),
            "labels": torch.from_numpy(record.labels.copy()),
            "image_id": record.image_id,
            "iscrowd": torch.from_numpy(record.iscrowd.copy()),
        }
        if self.with_masks:
            masks = [_decode_mask(s, h, w) for s in record.segmentations]
            target["masks"] = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.uint8)
        image = image.to(torch.float32).div_(255.0)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _read(self, record: _ImageRecord) -> torch.Tensor:
        """Decode the image and check it against the size the annotation file states."""
        path = self.image_dir / record.file_name
        image = read_image(path)
        expected = (record.height, record.width)
        if tuple(image.shape[1:]) == expected:
            return image
        if tuple(image.shape[1:]) == expected[::-1]:
            # The file carries an EXIF rotation but its annotations were made on the stored pixels (as with
            # tf.io.decode_jpeg or torchvision's CocoDetection): the annotation frame wins.
            raw = read_image(path, exif_transpose=False)
            if tuple(raw.shape[1:]) == expected:
                logger.debug("%s: EXIF orientation ignored to match the annotation size %dx%d", path, *expected)
                return raw
        raise ImageError(_size_mismatch(path, (image.shape[1], image.shape[2]), record, self.annotation_file))


def _size_mismatch(path: Path, decoded: tuple[int, int], record: _ImageRecord, annotation_file: Path) -> str:
    """The error for an image whose pixels differ from its JSON ``height x width``, saying which of the two to fix.

    The boxes were drawn on one of the two frames. Boxes reaching past the file's pixels, or a file with the JSON's
    aspect ratio (a resized copy), show they belong to the JSON's size, so the image file is the one to replace;
    otherwise both are possible and the message says how to tell.
    """
    (h, w), (jh, jw) = decoded, (record.height, record.width)
    where = f"image id {record.image_id} in {annotation_file}"
    head = f"{path}: decoded size {h}x{w} (HxW) differs from the annotation file's height x width {jh}x{jw} ({where})"
    reach = record.boxes.max(axis=0) if len(record.boxes) else None
    if reach is not None and (reach[2] > w + 0.5 or reach[3] > h + 0.5):
        advice = (
            f"its boxes reach x={reach[2]:.0f}, y={reach[3]:.0f}, beyond the file's pixels, so they were drawn on the "
            f"{jh}x{jw} image: replace the image file with the original the annotations were made on"
        )
    elif abs(jh * w / jw - h) <= 1:
        advice = (
            f"the file has the JSON's aspect ratio, so it is a resized copy (x{w / jw:.3g}) and the boxes are in the "
            f"original's pixels: replace it with the original {jh}x{jw} image"
        )
    else:
        advice = (
            "the boxes are in the JSON's pixels: if the image file was replaced after annotating, restore the "
            f'original; if only the JSON is wrong, set "height": {h}, "width": {w} for image id {record.image_id} there'
        )
    skip = "or leave the image out: --skip-bad (eval, predict), --set data.skip_bad=true (train)"
    return f"{head}: {advice}; {skip}"


def build_dataset(
    data: str | Path,
    split: str,
    *,
    transforms: Transform | None = None,
    with_masks: bool = False,
    skip_bad: bool = False,
    include_crowd: bool = False,
    replace_unreadable: bool = True,
) -> CocoDetection:
    """Find a split's annotation file and images from one path, and build its `CocoDetection`.

    Layouts accepted:

    * a **COCO-layout folder** ``DIR``: the annotations are the first existing of
      ``DIR/annotations/instances_{split}.json`` and ``DIR/annotations/instances_{split}2017.json``; the images the
      first existing folder of ``DIR/{split}``, ``DIR/{split}2017``, ``DIR/images/{split}`` and
      ``DIR/images/{split}2017``. This covers both the official COCO download and `make_demo_dataset`.
    * a **JSON file**: its ``file_name`` entries are relative to an ``images/`` folder next to the JSON when that
      folder exists, otherwise to the JSON's own folder. ``split`` is not used to find anything then.

    Args:
        data: COCO-layout folder or instances JSON file.
        split: split name, e.g. ``"train"`` or ``"val"``.
        transforms: passed to `CocoDetection`.
        with_masks: passed to `CocoDetection`.
        skip_bad: passed to `CocoDetection`.
        include_crowd: passed to `CocoDetection`.
        replace_unreadable: passed to `CocoDetection`.

    Raises:
        FileNotFoundError: nothing usable was found; the message lists every path looked for.
    """
    data = Path(data)
    if data.is_file():
        image_dir = data.parent / "images" if (data.parent / "images").is_dir() else data.parent
        annotation_file = data
    elif data.is_dir():
        ann_candidates = [data / "annotations" / f"instances_{split}{suffix}.json" for suffix in ("", "2017")]
        dir_candidates = [base / f"{split}{suffix}" for base in (data, data / "images") for suffix in ("", "2017")]
        annotation_file = next((p for p in ann_candidates if p.is_file()), None)
        image_dir = next((p for p in dir_candidates if p.is_dir()), None)
        if annotation_file is None or image_dir is None:
            looked = [str(p) for p in (ann_candidates if annotation_file is None else [])]
            looked += [f"{p}/" for p in (dir_candidates if image_dir is None else [])]
            raise FileNotFoundError(
                f"{data} is not a COCO-layout folder for split {split!r}: none of " + ", ".join(looked) + " exists"
            )
    else:
        raise FileNotFoundError(f"{data}: no such file or folder (expected a COCO-layout folder or a JSON file)")
    return CocoDetection(
        image_dir,
        annotation_file,
        transforms=transforms,
        with_masks=with_masks,
        skip_bad=skip_bad,
        include_crowd=include_crowd,
        replace_unreadable=replace_unreadable,
    )


# ---------------------------------------------------------------------- validation helpers


def _load_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file {path} does not exist") from None
    except UnicodeDecodeError as err:
        raise CocoFormatError(f"{path}: annotation file is not UTF-8 text ({err})") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CocoFormatError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
    if not isinstance(data, dict):
        raise CocoFormatError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise CocoFormatError(f"{path}: missing or non-list {key!r} section (is this a COCO instances file?)")
    if not isinstance(data.setdefault("annotations", []), list):
        raise CocoFormatError(f"{path}: 'annotations' must be a list")
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_categories(data: dict[str, Any], report: _Report) -> dict[int, str]:
    categories: dict[int, str] = {}
    for cat in data["categories"]:
        cat_id = cat.get("id") if isinstance(cat, dict) else None
        if not _is_int(cat_id):
            report.error(f"category {cat!r}: 'id' must be an integer")
        elif cat_id <= 0:
            report.error(
                f"category id {cat_id}: ids must be >= 1 (labels are category ids and 0 is the background class)"
            )
        elif cat_id in categories:
            report.error(f"category id {cat_id}: duplicate category id")
        else:
            categories[cat_id] = str(cat.get("name", cat_id))
    if not categories and not report.errors:
        report.error("no categories defined")
    return categories


def _check_images(data: dict[str, Any], report: _Report) -> dict[int, dict[str, Any]]:
    images: dict[int, dict[str, Any]] = {}
    for img in data["images"]:
        image_id = img.get("id") if isinstance(img, dict) else None
        if not _is_int(image_id):
            report.error(f"image entry {str(img)[:80]}: 'id' must be an integer")
            continue
        if image_id in images:
            report.error(f"image id {image_id}: duplicate image id")
            continue
        problems = []
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            problems.append("missing 'file_name'")
        for key in ("width", "height"):
            value = img.get(key)
            if value is None:
                problems.append(f"missing {key!r}")
            elif not (isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()):
                problems.append(f"{key!r} must be an integer, got {value!r}")
            elif value <= 0:
                problems.append(f"{key!r} must be positive, got {value}")
        if problems:
            report.error(f"image id {image_id}: " + "; ".join(problems))
            continue
        images[image_id] = {**img, "width": int(img["width"]), "height": int(img["height"])}
    return images


def _check_annotations(
    data: dict[str, Any],
    images: dict[int, dict[str, Any]],
    categories: dict[int, str],
    with_masks: bool,
    include_crowd: bool,
    report: _Report,
) -> tuple[list[dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    """Validate every annotation.

    Returns:
        The annotations for the evaluation ground truth (as in the file, minus errors and degenerate polygons),
        and the cleaned annotations to serve (boxes clipped, degenerate boxes dropped), grouped by image id.
    """
    seen: set[int] = set()
    ground_truth: list[dict[str, Any]] = []
    per_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in data["annotations"]:
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        if not _is_int(ann_id):
            report.error(f"annotation {str(ann)[:80]}: 'id' must be an integer")
            continue
        if ann_id in seen:
            report.error(f"annotation id {ann_id}: duplicate annotation id")
            continue
        seen.add(ann_id)
        where = f"annotation id {ann_id} (image id {ann.get('image_id')})"
        image = images.get(ann.get("image_id"))
        if image is None:
            report.error(f"{where}: image id not in 'images'")
            continue
        if ann.get("category_id") not in categories:
            report.error(f"{where}: unknown category id {ann.get('category_id')!r}")
            continue
        box = _check_box(ann.get("bbox"), where, report)
        if box is None:
            continue
        w, h = image["width"], image["height"]
        segm, ok = _check_segmentation(ann.get("segmentation"), h, w, where, ann_id, with_masks, report)
        if not ok:
            continue
        iscrowd = int(bool(ann.get("iscrowd", 0)))
        if segm is None and with_masks and (include_crowd or not iscrowd):
            report.error(f"{where}: no segmentation, but masks were requested (with_masks=True)")
            continue

        # Evaluation keeps the file's own boxes (zero-area and out-of-image ones included), as the official COCO
        # evaluation sees them; only polygons pycocotools cannot read are removed.
        x, y, bw, bh = box
        gt_ann = {**ann, "bbox": [x, y, bw, bh], "iscrowd": iscrowd}
        if segm is not None:
            gt_ann["segmentation"] = segm
        else:
            gt_ann.pop("segmentation", None)
        gt_ann.setdefault("area", bw * bh)
        ground_truth.append(gt_ann)

        if bw == 0 or bh == 0:
            report.repair("zero-area box, dropped", ann_id)
            continue
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + bw, float(w)), min(y + bh, float(h))
        if x2 <= x1 or y2 <= y1:
            report.repair("box entirely outside its image, dropped", ann_id)
            continue
        if (x1, y1, x2, y2) != (x, y, x + bw, y + bh):
            report.repair("box partly outside its image, clipped", ann_id)
        per_image[ann["image_id"]].append(
            {"category_id": ann["category_id"], "iscrowd": iscrowd, "xyxy": (x1, y1, x2, y2), "segmentation": segm}
        )
    return ground_truth, per_image


def _check_box(bbox: Any, where: str, report: _Report) -> tuple[float, float, float, float] | None:
    if not isinstance(bbox, (list, tuple)) or len(bbox) < 4:
        report.error(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox[:4]):
        report.error(f"{where}: bbox values must be numbers, got {bbox!r}")
        return None
    x, y, bw, bh = (float(v) for v in bbox[:4])
    if not all(math.isfinite(v) for v in (x, y, bw, bh)):
        report.error(f"{where}: bbox has a NaN or infinite value: {bbox!r}")
        return None
    if bw < 0 or bh < 0:
        report.error(f"{where}: bbox has a negative width or height: {bbox!r}")
        return None
    return x, y, bw, bh


def _check_segmentation(
    segm: Any, height: int, width: int, where: str, ann_id: int, with_masks: bool, report: _Report
) -> tuple[Any, bool]:
    """Return ``(cleaned segmentation or None, keep annotation)``; record errors and repairs.

    An annotation whose polygons are all degenerate loses its box only when masks are trained: a box-only
    detector still learns from the (valid) box.
    """
    if segm is None or (isinstance(segm, list) and not segm):
        return None, True
    if isinstance(segm, list):
        polygons = []
        for poly in segm:
            if not isinstance(poly, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in poly
            ):
                report.error(f"{where}: a polygon must be a list of numbers [x1, y1, x2, y2, ...]")
                return None, False
            if not all(math.isfinite(v) for v in poly):
                report.error(f"{where}: polygon has a NaN or infinite coordinate")
                return None, False
            if len(poly) >= 6 and len(poly) % 2 == 0:
                polygons.append(poly)
        if len(polygons) < len(segm):
            report.repair("polygon with fewer than 3 points (or an odd number of coordinates), dropped", ann_id)
        if not polygons:
            if with_masks:
                report.repair("no valid polygon left, annotation dropped with its box", ann_id)
                return None, False
            report.repair("no valid polygon left, mask dropped and box kept (masks are not trained)", ann_id)
            return None, True
        return polygons, True
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
            report.error(f"{where}: RLE 'size' must be [height, width], got {size!r}")
            return None, False
        if size != [height, width]:
            report.error(f"{where}: RLE mask size {size} does not match the image's [height, width] {[height, width]}")
            return None, False
        if isinstance(counts, list):
            if not all(_is_int(v) and v >= 0 for v in counts) or sum(counts) != height * width:
                report.error(
                    f"{where}: uncompressed RLE counts must be non-negative integers summing to height*width "
                    f"= {height * width}"
                )
                return None, False
        elif not isinstance(counts, str):
            report.error(f"{where}: RLE 'counts' must be a list of integers or a compressed string")
            return None, False
        return segm, True
    report.error(f"{where}: segmentation must be a list of polygons or an RLE dict, got {type(segm).__name__}")
    return None, False


def _decode_mask(segm: Any, height: int, width: int) -> np.ndarray:
    """Decode a validated polygon list / RLE dict into an ``(H, W)`` uint8 0/1 mask."""
    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm["counts"], list):
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        rle = {"size": segm["size"], "counts": segm["counts"].encode("ascii")}
    with warnings.catch_warnings():
        # pycocotools' Cython decoder trips NumPy 2's `__array__(copy=...)` deprecation on every call.
        warnings.filterwarnings("ignore", message=r"__array__ implementation", category=DeprecationWarning)
        mask = mask_utils.decode(rle)
    if mask.shape != (height, width):
        raise ImageError(f"RLE decoded to shape {mask.shape}, expected {(height, width)}")
    return np.ascontiguousarray(mask, dtype=np.uint8)


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` (union of the parts) as pycocotools does.

    Returns:
        ``(height, width)`` uint8 0/1 mask, identical to what COCO evaluation decodes from the same polygons.
    """
    return _decode_mask(polygons, height, width)


def encode_mask(mask: np.ndarray, *, compressed: bool = True) -> dict[str, Any]:
    """Encode an ``(H, W)`` 0/1 mask as a COCO RLE dict, JSON-ready.

    Args:
        mask: binary mask; any non-zero value is foreground.
        compressed: the compact string form (``counts`` is a str, as in results files); otherwise the
            uncompressed form COCO uses for crowd annotations (``counts`` is a list of run lengths over the
            column-major pixels, starting with a background run).
    """
    mask = np.asarray(mask) != 0
    height, width = mask.shape
    if compressed:
        rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
        return {"size": [height, width], "counts": rle["counts"].decode("ascii")}
    flat = mask.flatten(order="F")
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    return {"size": [height, width], "counts": [int(r) for r in runs]}
