"""COCO evaluation: conversion to COCO results, and metrics that agree with a direct pycocotools run.

The ground truth is a tiny hand-written COCO file with rectangles (as polygons) in all three area ranges, so
perfect, shifted, empty and mislabelled predictions have known or independently computable scores. Reference
numbers come from ``COCOeval`` called directly in the test, never through ``torchspine.engine.evaluation``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import Dataset, Subset

from torchspine.data.coco import CocoDetection
from torchspine.engine.evaluation import (
    AP_NAMES,
    METRIC_NAMES,
    coco_evaluate,
    encode_masks,
    evaluate_detector,
    format_metrics,
    to_coco_results,
)

# pycocotools 2.0.x decodes RLE through a NumPy-1 style __array__; NumPy 2 warns about it on every call.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# (image id, width, height); boxes are [x, y, w, h].
IMAGES = [(1, 128, 96), (2, 64, 48)]
CATEGORIES = [(1, "circle"), (2, "square")]
BOXES = [
    # id, image, category, bbox: one small (< 32^2), medium and large (> 96^2) instance on image 1.
    (1, 1, 1, [4, 4, 10, 12]),
    (2, 1, 2, [20, 10, 40, 40]),
    (3, 1, 1, [10, 2, 110, 90]),
    (4, 2, 2, [5, 5, 30, 20]),
    (5, 2, 1, [40, 20, 20, 20]),
]


def _polygon(box: list[float]) -> list[list[float]]:
    x, y, w, h = box
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _annotation(ann_id: int, image_id: int, category_id: int, box: list[float], iscrowd: int) -> dict:
    area = box[2] * box[3]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": box,
        "area": area,
        "iscrowd": iscrowd,
        "segmentation": _polygon(box),
    }


def _gt_dict(crowd: Sequence[tuple[int, int, int, list[float]]] = ()) -> dict:
    annotations = [_annotation(*row, iscrowd=0) for row in BOXES] + [_annotation(*row, iscrowd=1) for row in crowd]
    return {
        "images": [{"id": i, "width": w, "height": h, "file_name": f"{i}.png"} for i, w, h in IMAGES],
        "categories": [{"id": i, "name": n} for i, n in CATEGORIES],
        "annotations": annotations,
    }


def _load_gt(path: Path, data: dict) -> COCO:
    path.write_text(json.dumps(data))
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


@pytest.fixture
def coco_gt(tmp_path: Path) -> COCO:
    return _load_gt(tmp_path / "gt.json", _gt_dict())


def _reference_stats(coco_gt: COCO, results: list[dict], iou_type: str, img_ids: list[int] | None = None) -> list:
    """What pycocotools computes for ``results`` when called directly."""
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), iou_type)
        if img_ids is not None:
            evaluator.params.imgIds = img_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats]


def _perfect_outputs(coco_gt: COCO) -> tuple[list[dict], list[int]]:
    """Detector outputs that reproduce the ground truth exactly (boxes xyxy, masks at image size)."""
    outputs, ids = [], []
    for image_id, _, _ in IMAGES:
        anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[image_id], iscrowd=False))
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32)
        boxes[:, 2:] += boxes[:, :2]
        masks = torch.stack([torch.from_numpy(coco_gt.annToMask(a)).float() for a in anns])[:, None]
        outputs.append(
            {
                "boxes": boxes,
                "labels": torch.tensor([a["category_id"] for a in anns]),
                "scores": torch.ones(len(anns)),
                "masks": masks,
            }
        )
        ids.append(image_id)
    return outputs, ids


# --- to_coco_results / encode_masks -----------------------------------------------------------------------------


def test_to_coco_results_converts_xyxy_to_xywh_and_plain_types():
    output = {
        "boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0], [0.5, 0.5, 3.5, 4.5]]),
        "labels": torch.tensor([3, 7]),
        "scores": torch.tensor([0.9, 0.25]),
    }
    results = to_coco_results([output], [42])
    assert results == [
        {"image_id": 42, "category_id": 3, "bbox": [1.0, 2.0, 10.0, 20.0], "score": pytest.approx(0.9)},
        {"image_id": 42, "category_id": 7, "bbox": [0.5, 0.5, 3.0, 4.0], "score": pytest.approx(0.25)},
    ]
    assert all(type(r["image_id"]) is int and type(r["category_id"]) is int for r in results)
    assert "segmentation" not in results[0]
    json.dumps(results)


def test_to_coco_results_masks_are_json_rle_that_decode_to_the_thresholded_mask():
    probs = torch.zeros(2, 1, 6, 5)
    probs[0, 0, 1:4, 2:5] = 0.9
    probs[1, 0, 0, 0] = 0.5  # not above the threshold: empty mask
    probs[1, 0, 5, 4] = 0.51
    output = {"boxes": torch.zeros(2, 4), "labels": torch.tensor([1, 2]), "scores": torch.tensor([0.8, 0.7])}
    results = to_coco_results([{**output, "masks": probs}], [1], with_masks=True)
    for result, prob in zip(results, probs, strict=True):
        rle = result["segmentation"]
        assert isinstance(rle["counts"], str) and rle["size"] == [6, 5]
        np.testing.assert_array_equal(mask_utils.decode(rle), (prob[0] > 0.5).numpy().astype(np.uint8))
    json.dumps(results)


def test_to_coco_results_with_zero_detections_and_errors():
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}
    assert to_coco_results([empty], [1]) == []
    assert to_coco_results([{**empty, "masks": torch.zeros(0, 1, 4, 4)}], [1], with_masks=True) == []
    with pytest.raises(ValueError, match="no 'masks'"):
        to_coco_results([empty], [1], with_masks=True)
    with pytest.raises(ValueError, match="image ids"):
        to_coco_results([empty, empty], [1])
    assert encode_masks(torch.zeros(0, 1, 3, 3)) == []


# --- coco_evaluate against pycocotools --------------------------------------------------------------------------


def test_perfect_predictions_score_one_for_bbox_and_segm(coco_gt: COCO):
    outputs, ids = _perfect_outputs(coco_gt)
    metrics = coco_evaluate(coco_gt, to_coco_results(outputs, ids, with_masks=True), ("bbox", "segm"))
    assert set(metrics) == {"bbox", "segm"}
    for iou_type in ("bbox", "segm"):
        assert list(metrics[iou_type]) == list(METRIC_NAMES)
        for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
            assert metrics[iou_type][name] == pytest.approx(1.0), (iou_type, name)


def _shifted_results() -> list[dict]:
    """Hand-written detections: shifted boxes at several IoUs, a false positive, and a missed instance."""
    return [
        {"image_id": 1, "category_id": 1, "bbox": [5.0, 5.0, 10.0, 12.0], "score": 0.9},  # IoU ~0.71
        {"image_id": 1, "category_id": 2, "bbox": [24.0, 10.0, 40.0, 40.0], "score": 0.8},  # IoU 0.82
        {"image_id": 1, "category_id": 1, "bbox": [10.0, 2.0, 110.0, 90.0], "score": 0.3},  # exact
        {"image_id": 1, "category_id": 2, "bbox": [80.0, 60.0, 20.0, 20.0], "score": 0.95},  # false positive
        {"image_id": 2, "category_id": 2, "bbox": [12.0, 9.0, 30.0, 20.0], "score": 0.6},  # IoU ~0.45
        # instance 5 (image 2, circle) is missed
    ]


def test_shifted_boxes_match_direct_cocoeval(coco_gt: COCO):
    results = _shifted_results()
    reference = _reference_stats(coco_gt, results, "bbox")
    metrics = coco_evaluate(coco_gt, results)
    assert [metrics["bbox"][name] for name in METRIC_NAMES] == reference
    assert 0.0 < metrics["bbox"]["AP"] < metrics["bbox"]["AP50"] < 1.0  # a non-trivial case
    assert results == _shifted_results()  # pycocotools' loadRes did not write into the caller's dicts


def test_shifted_masks_match_direct_cocoeval_on_mask_areas(coco_gt: COCO):
    results = _shifted_results()
    for result in results:
        h, w = coco_gt.imgs[result["image_id"]]["height"], coco_gt.imgs[result["image_id"]]["width"]
        rle = mask_utils.frPyObjects(_polygon(result["bbox"]), h, w)[0]
        result["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    # The reference has no 'bbox' so that pycocotools sorts by mask area, as coco_evaluate does on purpose.
    reference = _reference_stats(coco_gt, [{k: v for k, v in r.items() if k != "bbox"} for r in results], "segm")
    metrics = coco_evaluate(coco_gt, results, ("segm",))
    assert [metrics["segm"][name] for name in METRIC_NAMES] == reference
    assert 0.0 < metrics["segm"]["AP"] < 1.0


def test_results_file_gives_the_same_metrics(coco_gt: COCO, tmp_path: Path):
    results = _shifted_results()
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert coco_evaluate(coco_gt, path) == coco_evaluate(coco_gt, results)
    assert coco_evaluate(coco_gt, str(path)) == coco_evaluate(coco_gt, results)
    with pytest.raises(FileNotFoundError):
        coco_evaluate(coco_gt, tmp_path / "missing.json")


def test_empty_predictions_score_zero_with_a_warning(coco_gt: COCO):
    with pytest.warns(UserWarning, match="no detections"):
        metrics = coco_evaluate(coco_gt, [], ("bbox", "segm"))
    for iou_type in ("bbox", "segm"):
        assert all(metrics[iou_type][name] == 0.0 for name in METRIC_NAMES), metrics[iou_type]


def test_wrong_categories_score_zero(coco_gt: COCO):
    outputs, ids = _perfect_outputs(coco_gt)
    results = to_coco_results(outputs, ids)
    for result in results:
        result["category_id"] = 3 - result["category_id"]  # swap circle and square
    metrics = coco_evaluate(coco_gt, results)
    assert metrics["bbox"]["AP"] == 0.0 and metrics["bbox"]["AR100"] == 0.0
    assert [metrics["bbox"][name] for name in METRIC_NAMES] == _reference_stats(coco_gt, results, "bbox")


def test_category_ids_unknown_to_the_ground_truth_warn(coco_gt: COCO):
    results = [{"image_id": 1, "category_id": 91, "bbox": [4.0, 4.0, 10.0, 12.0], "score": 1.0}]
    with pytest.warns(UserWarning, match="category ids missing"):
        metrics = coco_evaluate(coco_gt, results)
    assert metrics["bbox"]["AP"] == 0.0


def test_unknown_image_ids_raise_a_clear_error(coco_gt: COCO):
    results = [{"image_id": 7, "category_id": 1, "bbox": [4.0, 4.0, 10.0, 12.0], "score": 1.0}]
    with pytest.raises(ValueError, match=r"image id\(s\) missing from the ground truth: 7"):
        coco_evaluate(coco_gt, results)
    with pytest.raises(ValueError, match="missing from the ground truth: 9"):
        coco_evaluate(coco_gt, _shifted_results(), image_ids=[1, 9])


def test_bad_arguments_raise(coco_gt: COCO):
    with pytest.raises(ValueError, match="iou_types"):
        coco_evaluate(coco_gt, _shifted_results(), ("keypoints",))
    with pytest.raises(ValueError, match="no 'segmentation'"):
        coco_evaluate(coco_gt, _shifted_results(), ("segm",))


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_crowd_ground_truth_is_handled_as_pycocotools_does(tmp_path: Path, iou_type: str):
    # A crowd region on image 2: detections inside it are neither true nor false positives.
    coco_gt = _load_gt(tmp_path / "gt.json", _gt_dict(crowd=[(6, 2, 1, [0, 30, 64, 18])]))
    outputs, ids = _perfect_outputs(coco_gt)
    results = to_coco_results(outputs, ids, with_masks=True)
    crowd_hits = [([2.0, 32.0, 20.0, 14.0], 0.99), ([30.0, 31.0, 30.0, 16.0], 0.97)]
    for box, score in crowd_hits:
        rle = mask_utils.frPyObjects(_polygon(box), 48, 64)[0]
        rle["counts"] = rle["counts"].decode("ascii")
        results.append({"image_id": 2, "category_id": 1, "bbox": box, "score": score, "segmentation": rle})
    reference_results = (
        results if iou_type == "bbox" else [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    )
    metrics = coco_evaluate(coco_gt, results, (iou_type,))[iou_type]
    assert [metrics[name] for name in METRIC_NAMES] == _reference_stats(coco_gt, reference_results, iou_type)
    # The high-scoring detections on the crowd region are ignored, so the perfect ones still give AP 1.
    assert metrics["AP"] == pytest.approx(1.0)


def test_image_ids_restrict_the_evaluation(coco_gt: COCO):
    outputs, ids = _perfect_outputs(coco_gt)
    only_first = to_coco_results(outputs[:1], ids[:1])
    assert coco_evaluate(coco_gt, only_first)["bbox"]["AP"] < 1.0  # image 2's instances count as missed
    restricted = coco_evaluate(coco_gt, only_first, image_ids=[1])["bbox"]
    assert restricted["AP"] == pytest.approx(1.0)
    assert [restricted[name] for name in METRIC_NAMES] == _reference_stats(coco_gt, only_first, "bbox", [1])


# --- evaluate_detector ------------------------------------------------------------------------------------------


class _TinyCoco(Dataset):
    """Images whose pixels encode their COCO id, so a stub detector can answer with that image's ground truth."""

    def __init__(self, coco: COCO) -> None:
        self.coco = coco
        self.ids = sorted(coco.getImgIds())

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        info = self.coco.imgs[self.ids[index]]
        image = torch.full((3, info["height"], info["width"]), info["id"] / 255.0)
        return image, {"image_id": info["id"]}


class _OracleDetector(torch.nn.Module):
    def __init__(self, coco: COCO, with_masks: bool) -> None:
        super().__init__()
        outputs, ids = _perfect_outputs(coco)
        if not with_masks:
            outputs = [{k: v for k, v in o.items() if k != "masks"} for o in outputs]
        self.answers = dict(zip(ids, outputs, strict=True))
        self.calls = 0

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        assert not self.training and torch.is_inference_mode_enabled()
        self.calls += 1
        return [self.answers[round(float(image[0, 0, 0]) * 255)] for image in images]


@pytest.mark.parametrize("with_masks", [True, False], ids=["masks", "boxes"])
def test_evaluate_detector_with_an_oracle_scores_one(coco_gt: COCO, tmp_path: Path, with_masks: bool):
    model = _OracleDetector(coco_gt, with_masks).train()
    results_file = tmp_path / "out" / "results.json"
    metrics = evaluate_detector(model, _TinyCoco(coco_gt), batch_size=1, results_file=results_file, progress=False)
    assert set(metrics) == ({"bbox", "segm"} if with_masks else {"bbox"})
    assert all(values["AP"] == pytest.approx(1.0) for values in metrics.values())
    assert model.training and model.calls == 2
    written = json.loads(results_file.read_text())
    assert len(written) == len(BOXES) and ("segmentation" in written[0]) == with_masks
    assert coco_evaluate(coco_gt, results_file, tuple(metrics)) == metrics


def test_evaluate_detector_on_a_subset_evaluates_only_its_images(coco_gt: COCO):
    model = _OracleDetector(coco_gt, with_masks=False)
    metrics = evaluate_detector(model, Subset(_TinyCoco(coco_gt), [1]), with_masks=False, progress=False)
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    assert metrics["bbox"]["APl"] == -1.0  # image 2 has no large instance; image 1's do not count


class _Resized(Dataset):
    """Serve ``_TinyCoco`` images resized by ``factor`` per axis (a resizing eval transform), or cropped."""

    def __init__(self, base: _TinyCoco, factor: float, crop: bool = False) -> None:
        self.base, self.factor, self.crop = base, factor, crop
        self.coco = base.coco

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image, target = self.base[index]
        size = [round(s * self.factor) for s in image.shape[-2:]]
        image = torch.nn.functional.interpolate(image[None], size=size, mode="nearest")[0]
        return (image[:, : size[0] // 2] if self.crop else image), target


class _ResizedOracle(_OracleDetector):
    """Answers in the pixels of the resized image, as a detector fed a resized image would."""

    def __init__(self, coco: COCO, factor: float) -> None:
        super().__init__(coco, with_masks=True)
        for output in self.answers.values():
            output["boxes"] = output["boxes"] * factor
            size = [round(s * factor) for s in output["masks"].shape[-2:]]
            output["masks"] = torch.nn.functional.interpolate(output["masks"], size=size, mode="bilinear")


def test_evaluate_detector_maps_resized_outputs_back_to_the_annotation_pixels(coco_gt: COCO):
    metrics = evaluate_detector(_ResizedOracle(coco_gt, 0.5), _Resized(_TinyCoco(coco_gt), 0.5), progress=False)
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    assert metrics["segm"]["AP50"] == pytest.approx(1.0) and metrics["segm"]["AP"] > 0.9  # masks were resampled


def test_evaluate_detector_rejects_cropped_images(coco_gt: COCO):
    with pytest.raises(ValueError, match="not a resize"):
        evaluate_detector(_ResizedOracle(coco_gt, 0.5), _Resized(_TinyCoco(coco_gt), 0.5, crop=True), progress=False)


def test_evaluate_detector_on_torchspine_coco_detection(coco_gt: COCO, tmp_path: Path):
    """The CocoDetection contract (float images, int image_id, cleaned ``coco``) works end to end."""
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for image_id, width, height in IMAGES:  # constant colour = image id, so the oracle can recognise it
        Image.new("RGB", (width, height), (image_id,) * 3).save(image_dir / f"{image_id}.png")
    annotation_file = tmp_path / "instances.json"
    annotation_file.write_text(json.dumps(_gt_dict(crowd=[(6, 2, 1, [0, 30, 64, 18])])))
    dataset = CocoDetection(image_dir, annotation_file)
    metrics = evaluate_detector(_OracleDetector(coco_gt, with_masks=True), dataset, progress=False)
    assert metrics["bbox"]["AP"] == pytest.approx(1.0) and metrics["segm"]["AP"] == pytest.approx(1.0)


def test_evaluate_detector_needs_a_coco_ground_truth(coco_gt: COCO):
    with pytest.raises(ValueError, match="no 'coco' ground truth"):
        evaluate_detector(_OracleDetector(coco_gt, False), [(torch.zeros(3, 4, 4), {"image_id": 1})], progress=False)


# --- format_metrics ---------------------------------------------------------------------------------------------


def test_format_metrics_is_an_aligned_percent_table():
    metrics = {
        "bbox": dict.fromkeys(METRIC_NAMES, 0.5) | {"APs": -1.0},
        "segm": dict.fromkeys(METRIC_NAMES, 0.123456),
    }
    table = format_metrics(metrics)
    lines = table.splitlines()
    assert lines[0].split() == list(AP_NAMES)
    assert lines[1].split() == ["bbox", "50.0", "50.0", "50.0", "-", "50.0", "50.0"]
    assert lines[2].split() == ["segm", *["12.3"] * 6]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert "AR100" in format_metrics(metrics, METRIC_NAMES)


def _coco_folder(tmp_path: Path, data: dict) -> CocoDetection:
    """`data` as a CocoDetection over PNGs of constant colour = image id (what `_OracleDetector` recognises)."""
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for image_id, width, height in IMAGES:
        Image.new("RGB", (width, height), (image_id,) * 3).save(image_dir / f"{image_id}.png")
    annotation_file = tmp_path / "instances.json"
    annotation_file.write_text(json.dumps(data))
    return CocoDetection(image_dir, annotation_file, skip_bad=True, replace_unreadable=False)


def test_skip_bad_leaves_unreadable_images_out_of_the_scores(coco_gt: COCO, tmp_path: Path, caplog):
    """An unreadable image is dropped, not replaced by its neighbour: the neighbour is not scored twice (which
    would add duplicate detections, i.e. false positives) and the dropped image's ground truth does not count."""
    dataset = _coco_folder(tmp_path, _gt_dict())
    (tmp_path / "images" / "2.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"2\.png"):
        evaluate_detector(_OracleDetector(coco_gt, with_masks=False), dataset, progress=False)
    results_file = tmp_path / "results.json"
    with caplog.at_level("WARNING", logger="torchspine.engine.evaluation"):
        metrics = evaluate_detector(
            _OracleDetector(coco_gt, with_masks=False),
            dataset,
            batch_size=2,
            progress=False,
            skip_bad=True,
            results_file=results_file,
        )
    assert {r["image_id"] for r in json.loads(results_file.read_text())} == {1}
    assert metrics["bbox"] == coco_evaluate(coco_gt, str(results_file), image_ids=[1])["bbox"]
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)  # image 2's boxes would make recall 3/5 if it counted
    assert any("2.png" in r.getMessage() and "skipping unreadable image" in r.getMessage() for r in caplog.records)
    (tmp_path / "images" / "1.png").write_bytes(b"not a png either")
    with pytest.raises(ValueError, match="none of the 2 image"):
        evaluate_detector(_OracleDetector(coco_gt, False), dataset, progress=False, skip_bad=True)


def test_an_empty_ground_truth_is_named_as_such(tmp_path: Path):
    empty = _load_gt(tmp_path / "empty.json", {**_gt_dict(), "annotations": []})
    with pytest.warns(UserWarning, match="the ground truth is empty") as caught:
        metrics = coco_evaluate(empty, [])
    assert not any("no detections" in str(w.message) for w in caught)  # the generic warning is not given too
    assert set(metrics["bbox"].values()) == {-1.0}
