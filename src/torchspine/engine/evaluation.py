"""COCO evaluation of torchvision-style detectors with pycocotools.

Detectors follow torchvision's detection API: in eval mode ``model(list_of_images)`` returns one dict per image with
``boxes`` ``(N, 4)`` as ``[x1, y1, x2, y2]`` in input-image pixels, ``labels`` ``(N,)`` holding COCO category ids,
``scores`` ``(N,)`` and, for Mask R-CNN, ``masks`` ``(N, 1, H, W)`` probabilities at input-image size. This module
converts those dicts to the COCO results format (``bbox`` as ``[x, y, w, h]``, masks as compressed RLE) and scores
them with ``pycocotools.cocoeval.COCOeval``, the reference implementation every published COCO number comes from.

Metrics are reported exactly as pycocotools computes them, as fractions in ``[0, 1]``; ``-1.0`` is pycocotools'
marker for "no ground truth in this area range" (e.g. ``APs`` on a data set without small objects). Two places
depart from calling pycocotools naively, both on purpose:

* An empty results list crashes ``COCO.loadRes`` (it reads ``anns[0]``). We warn and evaluate an empty detection
  set instead, which gives 0.0 wherever ground truth exists, the same numbers one useless detection would give.
* For mask AP the ``bbox`` field is dropped from the results, because ``loadRes`` otherwise takes the box area as
  the instance area and sorts detections into small/medium/large by their boxes instead of their masks (the same
  choice detectron2's COCO evaluator makes).

By the package layering this module and ``data/coco.py`` are the only importers of pycocotools;
``encode_masks`` is public so that ``engine/predict.py`` can write RLE without importing pycocotools itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from torchspine.data.batching import list_collate
from torchspine.data.image_io import SkipUnreadable, collate_readable
from torchspine.engine.distributed import gather_to_all, is_main_process, shard_dataset
from torchspine.errors import UsageError

__all__ = [
    "AP_NAMES",
    "METRIC_NAMES",
    "coco_evaluate",
    "encode_masks",
    "evaluate_detector",
    "format_metrics",
    "has_ground_truth",
    "to_coco_results",
]

logger = logging.getLogger(__name__)

IouType = Literal["bbox", "segm"]

# Order of ``COCOeval.stats`` for bbox/segm evaluation (``COCOeval.summarize._summarizeDets``).
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
AP_NAMES = METRIC_NAMES[:6]
_IOU_TYPES = ("bbox", "segm")


def encode_masks(masks: torch.Tensor, threshold: float = 0.5) -> list[dict[str, Any]]:
    """Binarise instance masks and encode each as COCO compressed RLE.

    Args:
        masks: ``(N, 1, H, W)`` or ``(N, H, W)`` mask probabilities (or booleans), any device.
        threshold: a pixel belongs to the instance when its probability is strictly greater than this, as in
            torchvision's reference evaluation.

    Returns:
        One ``{"size": [H, W], "counts": str}`` per mask. ``counts`` is decoded to ``str`` because pycocotools
        returns bytes, which ``json`` cannot write; pycocotools reads both forms back.
    """
    if masks.dim() == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"masks: expected (N, 1, H, W), got {tuple(masks.shape)}")
        masks = masks[:, 0]
    if masks.dim() != 3:
        raise ValueError(f"masks: expected (N, 1, H, W) or (N, H, W), got {tuple(masks.shape)}")
    binary = masks if masks.dtype == torch.bool else masks > threshold
    if binary.shape[0] == 0:
        return []
    # pycocotools wants a column-major (H, W, N) uint8 array.
    array = np.asfortranarray(binary.to("cpu", torch.uint8).permute(1, 2, 0).numpy())
    rles = mask_utils.encode(array)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def to_coco_results(
    outputs: Sequence[Mapping[str, torch.Tensor]],
    image_ids: Sequence[int],
    *,
    with_masks: bool = False,
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Convert detector outputs to the COCO results format.

    Args:
        outputs: one torchvision-style output dict per image (``boxes`` xyxy, ``labels``, ``scores``, optionally
            ``masks``); tensors may live on any device.
        image_ids: the COCO image id of each output, in the same order.
        with_masks: also write ``segmentation`` (compressed RLE) from ``masks``.
        mask_threshold: probability above which a mask pixel is foreground.
        distributed: share the images out among the processes of the default process group (no effect without
            one).

    Returns:
        One dict per detection: ``image_id``, ``category_id``, ``bbox`` as ``[x, y, w, h]`` floats, ``score`` and,
        with masks, ``segmentation``. Images without detections contribute nothing, as COCO expects.
    """
    if len(outputs) != len(image_ids):
        raise ValueError(f"got {len(outputs)} outputs for {len(image_ids)} image ids")
    results: list[dict[str, Any]] = []
    for output, image_id in zip(outputs, image_ids, strict=True):
        boxes = output["boxes"].detach().to("cpu", torch.float64)
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes: expected (N, 4), got {tuple(boxes.shape)}")
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        labels = output["labels"].detach().cpu().tolist()
        scores = output["scores"].detach().to("cpu", torch.float64).tolist()
        if not len(xywh) == len(labels) == len(scores):
            raise ValueError(f"image {image_id}: {len(xywh)} boxes, {len(labels)} labels, {len(scores)} scores")
        rles: list[dict[str, Any]] | None = None
        if with_masks:
            if "masks" not in output:
                raise ValueError(f"image {image_id}: with_masks=True but the output has no 'masks'")
            rles = encode_masks(output["masks"].detach(), mask_threshold)
            if len(rles) != len(xywh):
                raise ValueError(f"image {image_id}: {len(rles)} masks for {len(xywh)} boxes")
        for i, (box, label, score) in enumerate(zip(xywh, labels, scores, strict=True)):
            result = {"image_id": int(image_id), "category_id": int(label), "bbox": box, "score": score}
            if rles is not None:
                result["segmentation"] = rles[i]
            results.append(result)
    return results


def _load_results(results: list[dict[str, Any]] | str | Path) -> list[dict[str, Any]]:
    if isinstance(results, (str, Path)):
        path = Path(results)
        if not path.is_file():
            raise FileNotFoundError(f"results file {path} does not exist")
        with path.open() as f:
            results = json.load(f)
        if not isinstance(results, list):
            raise ValueError(f"{path}: expected a JSON list of COCO results, got {type(results).__name__}")
    return results


def _check_ids(coco_gt: COCO, results: list[dict[str, Any]], image_ids: Iterable[int] | None) -> None:
    """Fail on image ids the ground truth lacks; warn on category ids it lacks.

    pycocotools only asserts 'Results do not correspond to current coco set' for unknown images, and silently
    ignores unknown categories; the latter usually means the model's labels are contiguous class indices rather
    than COCO category ids, which scores a perfectly good model as 0 AP without any hint why.
    """
    known_images = set(coco_gt.getImgIds())
    for name, ids in (("results", (r["image_id"] for r in results)), ("image_ids", image_ids or ())):
        unknown = sorted({int(i) for i in ids} - known_images)
        if unknown:
            shown = ", ".join(map(str, unknown[:10])) + (", ..." if len(unknown) > 10 else "")
            raise ValueError(
                f"{name} reference {len(unknown)} image id(s) missing from the ground truth: {shown}; "
                "evaluate against the annotation file the images came from"
            )
    known_cats = set(coco_gt.getCatIds())
    stray = [r["category_id"] for r in results if r["category_id"] not in known_cats]
    if stray:
        warnings.warn(
            f"{len(stray)} of {len(results)} detections have category ids missing from the ground truth "
            f"(e.g. {sorted(set(stray))[:10]}); pycocotools ignores them. Are the model's labels COCO category ids?",
            stacklevel=3,
        )


def _detections_for(coco_gt: COCO, iou_type: IouType, results: list[dict[str, Any]]) -> COCO:
    """Build the pycocotools detection set for one IoU type without mutating ``results``."""
    if not results:
        # NOTE: COCO.loadRes crashes on an empty list; an empty detection set scores 0 where ground truth exists.
        detections = COCO()
        detections.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": []}
        detections.dataset["categories"] = list(coco_gt.dataset.get("categories", []))
        detections.createIndex()
        return detections
    if iou_type == "segm":
        missing = sum("segmentation" not in r for r in results)
        if missing:
            raise ValueError(f"segm evaluation: {missing} of {len(results)} results have no 'segmentation'")
        # Without 'bbox', loadRes uses the mask area for the small/medium/large split (see the module docstring).
        copies = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    else:
        # loadRes writes 'id', 'area', 'iscrowd' and a polygon 'segmentation' into every dict it gets.
        copies = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    return coco_gt.loadRes(copies)


def coco_evaluate(
    coco_gt: COCO,
    results: list[dict[str, Any]] | str | Path,
    iou_types: Sequence[IouType] = ("bbox",),
    *,
    image_ids: Iterable[int] | None = None,
) -> dict[str, dict[str, float]]:
    """Score COCO-format results against a ground truth with pycocotools' ``COCOeval``.

    Args:
        coco_gt: the ground truth (``pycocotools.coco.COCO``, e.g. ``CocoDetection.coco``).
        results: a list of COCO results (see ``to_coco_results``) or the path of a JSON file holding one.
        iou_types: ``"bbox"`` and/or ``"segm"``; ``"segm"`` needs a ``segmentation`` in every result.
        image_ids: restrict the evaluation to these images (default: every image of the ground truth). Pass the
            images the detector actually ran on when evaluating a subset, otherwise the images it never saw count
            as images without detections.

    Returns:
        ``{iou_type: {name: value}}`` with the names of ``METRIC_NAMES`` (``AP``, ``AP50``, ``AP75``, ``APs``,
        ``APm``, ``APl``, ``AR1``, ``AR10``, ``AR100``, ``ARs``, ``ARm``, ``ARl``) as fractions in ``[0, 1]``, or
        ``-1.0`` where the ground truth has no instance in that area range. pycocotools' console output is logged
        at DEBUG level on this module's logger.

    Raises:
        ValueError: results or ``image_ids`` name images missing from the ground truth, an unknown IoU type, or
            ``segm`` results without segmentation.
    """
    unknown_types = [t for t in iou_types if t not in _IOU_TYPES]
    if unknown_types or not iou_types:
        raise ValueError(f"iou_types {tuple(iou_types)}: expected a non-empty subset of {_IOU_TYPES}")
    results = _load_results(results)
    image_ids = None if image_ids is None else sorted({int(i) for i in image_ids})
    _check_ids(coco_gt, results, image_ids)
    if not has_ground_truth(coco_gt, image_ids):
        scope = "the evaluated images" if image_ids is not None else "its images"
        warnings.warn(
            f"the ground truth is empty: no annotations for {scope}, so AP and AR are undefined (-1, shown as '-'); "
            "evaluate on annotated images",
            stacklevel=2,
        )
    elif not results:
        warnings.warn(
            "no detections to evaluate: every metric is 0 where ground truth exists (-1 where it has none)",
            stacklevel=2,
        )
    metrics: dict[str, dict[str, float]] = {}
    for iou_type in iou_types:
        console = io.StringIO()
        # pycocotools reports through print(); keep it out of the caller's stdout.
        with contextlib.redirect_stdout(console):
            evaluator = COCOeval(coco_gt, _detections_for(coco_gt, iou_type, results), iou_type)
            if image_ids is not None:
                evaluator.params.imgIds = image_ids
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        logger.debug("pycocotools %s evaluation:\n%s", iou_type, console.getvalue().rstrip())
        metrics[iou_type] = {name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats, strict=True)}
    return metrics


def has_ground_truth(coco_gt: COCO, image_ids: Iterable[int] | None) -> bool:
    """Whether any non-crowd annotation belongs to `image_ids` (all images when None); crowd regions only mark
    what to ignore, so a ground truth of crowds alone scores as undefined too."""
    ids = None if image_ids is None else set(image_ids)
    return any(not a.get("iscrowd", 0) and (ids is None or a["image_id"] in ids) for a in coco_gt.anns.values())


def _find_coco(dataset: Dataset) -> COCO:
    """Return the ground truth of ``dataset``, looking through wrappers such as ``torch.utils.data.Subset``."""
    current: Any = dataset
    while current is not None:
        coco = getattr(current, "coco", None)
        if isinstance(coco, COCO):
            return coco
        current = getattr(current, "dataset", None)
    raise ValueError(f"{type(dataset).__name__} has no 'coco' ground truth (expected a CocoDetection or a wrapper)")


def _gt_size(coco_gt: COCO, image_id: int) -> tuple[int, int]:
    info = coco_gt.imgs.get(image_id)
    if info is None:
        raise ValueError(f"the dataset yields image id {image_id}, which its ground truth does not have")
    return int(info["height"]), int(info["width"])


def _to_annotation_frame(
    output: Mapping[str, torch.Tensor], seen_hw: tuple[int, int], gt_hw: tuple[int, int], image_id: int
) -> Mapping[str, torch.Tensor]:
    """Map one output from the pixels of the image the model saw to those of the ground truth.

    A resizing eval transform (e.g. ``ResizeLongSide``) makes the detector answer in resized pixels while the
    annotations stay in the original ones; scoring those boxes as they are would be silently wrong. A pure resize
    is undone per axis (boxes scaled, masks resampled bilinearly); any other size change (crop, pad) is an error.
    """
    if seen_hw == gt_hw:
        return output
    (h, w), (h0, w0) = seen_hw, gt_hw
    # A resize rounds each side to whole pixels, so the aspect ratios may differ by up to a pixel.
    if abs(h0 * w / w0 - h) > 1 and abs(w0 * h / h0 - w) > 1:
        raise UsageError(
            f"image {image_id}: the model saw {h}x{w} pixels but the annotations are for {h0}x{w0}, which is not a "
            "resize; evaluate without cropping or padding transforms"
        )
    rescaled = dict(output)
    scale = torch.tensor([w0 / w, h0 / h, w0 / w, h0 / h], dtype=output["boxes"].dtype, device=output["boxes"].device)
    rescaled["boxes"] = output["boxes"] * scale
    if "masks" in output and output["masks"].shape[0] > 0:
        masks = output["masks"].float()
        masks = masks if masks.dim() == 4 else masks[:, None]
        rescaled["masks"] = torch.nn.functional.interpolate(masks, size=(h0, w0), mode="bilinear", align_corners=False)
    elif "masks" in output:
        rescaled["masks"] = output["masks"].new_zeros((0, 1, h0, w0))
    return rescaled


def evaluate_detector(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 2,
    device: str | torch.device = "cpu",
    with_masks: bool | None = None,
    results_file: str | Path | None = None,
    progress: bool = True,
    num_workers: int = 0,
    mask_threshold: float = 0.5,
    distributed: bool = False,
    skip_bad: bool = False,
) -> dict[str, dict[str, float]]:
    """Run a detector over a COCO data set and score it with pycocotools.

    With ``distributed=True`` inside a ``torch.distributed`` process group, each process runs every
    ``world_size``-th image, the COCO results are gathered, and every process scores the whole set (so all return
    the same metrics and each can act on them, e.g. the main process picking the best checkpoint).

    Args:
        model: a torchvision-style detector whose ``labels`` are the data set's COCO category ids. It is moved to
            ``device``, run in eval mode under ``torch.inference_mode()`` and put back in its previous mode.
        dataset: yields ``(image, target)`` with ``image`` a float ``(3, H, W)`` tensor in ``[0, 1]`` and
            ``target["image_id"]`` its COCO image id (the ``CocoDetection`` contract); it, or a dataset it wraps
            (``Subset``), has a ``coco`` attribute with the ground truth. Only the images it yields are evaluated.
            If its transforms resize the images (``ResizeLongSide``), outputs are scaled back to the annotations'
            pixels; transforms that crop or pad are rejected, since their outputs cannot be mapped back.
        batch_size: images per forward pass.
        device: where the model runs.
        with_masks: evaluate mask AP too; ``None`` decides from whether the model's outputs have ``masks``.
        results_file: also write the COCO results as JSON here, from the main process (loadable by
            ``coco_evaluate`` and pycocotools).
        progress: show a tqdm progress bar.
        num_workers: ``DataLoader`` worker processes for image decoding.
        mask_threshold: probability above which a mask pixel is foreground.
        distributed: share the images out among the processes of the default process group (no effect without
            one).
        skip_bad: leave out images that cannot be read (the dataset raises
            `torchspine.data.image_io.ImageError` for them), each logged with its reason, instead of stopping; they
            are left out of the scores too, not counted as images without detections.

    Returns:
        The ``coco_evaluate`` metrics for ``bbox`` and, with masks, ``segm``.
    """
    coco_gt = _find_coco(dataset)
    num_images = total = len(dataset)  # type: ignore[arg-type]
    if num_images == 0:
        raise UsageError("the dataset is empty: nothing to evaluate")
    if distributed:
        dataset = shard_dataset(dataset)
        num_images = len(dataset)  # type: ignore[arg-type]
    loader = DataLoader(
        SkipUnreadable(dataset) if skip_bad else dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_readable if skip_bad else _collate_all,
    )
    results: list[dict[str, Any]] = []
    image_ids: list[int] = []
    skipped = 0
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.inference_mode(), tqdm(total=num_images, desc="eval", unit="img", disable=not progress) as bar:
            for images, targets, unreadable in loader:
                for reason in unreadable:
                    logger.warning("skipping unreadable image (left out of the evaluation): %s", reason)
                skipped += len(unreadable)
                bar.update(len(unreadable))
                if not images:
                    continue
                outputs = model([image.to(device) for image in images])
                ids = [int(target["image_id"]) for target in targets]
                outputs = [
                    _to_annotation_frame(o, tuple(im.shape[-2:]), _gt_size(coco_gt, i), i)
                    for o, im, i in zip(outputs, images, ids, strict=True)
                ]
                if with_masks is None:
                    with_masks = "masks" in outputs[0]
                # Encode per batch: full-size float masks of a whole data set would not fit in memory.
                results.extend(to_coco_results(outputs, ids, with_masks=with_masks, mask_threshold=mask_threshold))
                image_ids.extend(ids)
                bar.update(len(ids))
    finally:
        model.train(was_training)
    if distributed:
        shards = gather_to_all((results, image_ids, with_masks))
        results = [r for shard_results, _, _ in shards for r in shard_results]
        image_ids = [i for _, shard_ids, _ in shards for i in shard_ids]
        with_masks = any(shard_masks for _, _, shard_masks in shards)
    if skipped:
        logger.warning("%d unreadable image(s) left out of the evaluation", skipped)
    if not image_ids:
        raise UsageError(f"none of the {total} image(s) could be read: nothing to evaluate")
    if results_file is not None and is_main_process():
        path = Path(results_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results))
        logger.info("wrote %d COCO results to %s", len(results), path)
    iou_types: tuple[IouType, ...] = ("bbox", "segm") if with_masks else ("bbox",)
    return coco_evaluate(coco_gt, results, iou_types, image_ids=image_ids)


def _collate_all(batch: Sequence[tuple[torch.Tensor, Any]]) -> tuple[list[torch.Tensor], list[Any], list[str]]:
    """`list_collate` with the (empty) list of unreadable images `collate_readable` adds."""
    images, targets = list_collate(batch)
    return images, targets, []


def format_metrics(metrics: Mapping[str, Mapping[str, float]], columns: Sequence[str] = AP_NAMES) -> str:
    """Render metrics as a small aligned table, one row per IoU type, values in percent.

    Args:
        metrics: the output of ``coco_evaluate`` or ``evaluate_detector``.
        columns: metric names to show (default: the six AP numbers; ``METRIC_NAMES`` adds the recalls).

    Returns:
        A multi-line string without a trailing newline. ``-`` marks a metric pycocotools could not compute
        (``-1``: no ground truth in that area range) or one missing from ``metrics``.
    """
    rows = [["", *columns]]
    for iou_type, values in metrics.items():
        cells = [iou_type]
        for name in columns:
            value = values.get(name)
            cells.append("-" if value is None or value < 0 else f"{100 * value:.1f}")
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)
