"""Predicting on image files: input collection, the JSON layout, drawn PNGs, skipped files, a real detector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch import nn

from torchspine.data.image_io import ImageError, read_image
from torchspine.engine.predict import PREDICTIONS_FILE, collect_images, predict_images
from torchspine.visualize import draw_detections

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

NAMES = {1: "circle", 2: "square"}


class StubDetector(nn.Module):
    """Deterministic detector: three detections per image, placed relative to the image size, with masks."""

    def __init__(self, with_masks: bool = True) -> None:
        super().__init__()
        self.with_masks = with_masks
        self.batches: list[int] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        assert not self.training and torch.is_inference_mode_enabled()
        assert all(img.dtype == torch.float32 and img.min() >= 0.0 and img.max() <= 1.0 for img in images)
        self.batches.append(len(images))
        return [self.detections(img.shape[-2], img.shape[-1]) for img in images]

    def detections(self, height: int, width: int) -> dict[str, torch.Tensor]:
        boxes = torch.tensor(
            [[2, 3, width // 2, height // 2], [width // 2, height // 2, width - 1, height - 1], [0, 0, 4, 4]],
            dtype=torch.float32,
        )
        output = {"boxes": boxes, "labels": torch.tensor([1, 2, 1]), "scores": torch.tensor([0.9, 0.6, 0.1])}
        if self.with_masks:
            masks = torch.zeros(3, 1, height, width)
            for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist(), strict=True):
                mask[0, y1:y2, x1:x2] = 0.8
            output["masks"] = masks
        return output


def _write_image(path: Path, width: int, height: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    _write_image(folder / "b.png", 40, 30, 0)
    _write_image(folder / "a.jpg", 24, 36, 1)
    _write_image(folder / "c.PNG", 20, 20, 2)
    (folder / "bad.jpg").write_text("not a jpeg")
    (folder / "notes.txt").write_text("ignored")
    _write_image(folder / ".hidden.png", 8, 8, 3)
    _write_image(folder / "sub" / "nested.png", 8, 8, 4)
    return folder


# --- collect_images ---------------------------------------------------------------------------------------------


def test_collect_images_expands_folders_sorted_by_name(image_dir: Path):
    assert [p.name for p in collect_images([image_dir])] == ["a.jpg", "b.png", "bad.jpg", "c.PNG"]


def test_collect_images_keeps_explicit_files_in_order_once(image_dir: Path):
    paths = collect_images([image_dir / "notes.txt", str(image_dir / "b.png"), image_dir])
    assert [p.name for p in paths] == ["notes.txt", "b.png", "a.jpg", "bad.jpg", "c.PNG"]


def test_collect_images_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"missing\.jpg"):
        collect_images([tmp_path / "missing.jpg"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(ValueError, match="holds no image files"):
        collect_images([tmp_path / "empty"])
    with pytest.raises(ValueError, match="no input"):
        collect_images([])


# --- predict_images ---------------------------------------------------------------------------------------------


def test_predict_images_writes_json_and_pngs(image_dir: Path, tmp_path: Path):
    model = StubDetector().train()
    out = tmp_path / "out"
    json_path = predict_images(
        model, collect_images([image_dir]), out, category_names=NAMES, batch_size=2, progress=False, skip_bad=True
    )
    assert json_path == out / PREDICTIONS_FILE
    doc = json.loads(json_path.read_text())
    assert model.training and model.batches == [2, 1]  # bad.jpg leaves one image in the second batch

    assert doc["images"] == [
        {"id": 1, "file_name": str(image_dir / "a.jpg"), "width": 24, "height": 36, "visualization": "a.png"},
        {"id": 2, "file_name": str(image_dir / "b.png"), "width": 40, "height": 30, "visualization": "b.png"},
        {"id": 3, "file_name": str(image_dir / "c.PNG"), "width": 20, "height": 20, "visualization": "c.png"},
    ]
    assert doc["categories"] == [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]
    assert doc["score_threshold"] == 0.3
    [skipped] = doc["skipped"]
    assert skipped["file_name"] == str(image_dir / "bad.jpg") and "bad.jpg" in skipped["reason"]

    # Two detections per image pass the 0.3 threshold; the 0.1 one is dropped.
    assert [(r["image_id"], r["category_id"], r["category_name"]) for r in doc["results"]] == [
        (i, c, NAMES[c]) for i in (1, 2, 3) for c in (1, 2)
    ]
    first = doc["results"][0]
    assert first["bbox"] == [2.0, 3.0, 10.0, 15.0] and first["score"] == pytest.approx(0.9)  # a.jpg: 24x36
    decoded = mask_utils.decode(first["segmentation"])
    assert decoded.shape == (36, 24) and decoded.sum() == 10 * 15 and decoded[3:18, 2:12].all()

    # Each PNG is exactly what draw_detections makes of the decoded image and the kept detections.
    for entry in doc["images"]:
        image = read_image(entry["file_name"])
        raw = StubDetector().detections(entry["height"], entry["width"])
        keep = raw["scores"] >= 0.3
        expected = draw_detections(image, {k: v[keep] for k, v in raw.items()}, category_names=NAMES)
        assert torch.equal(read_image(out / entry["visualization"]), expected)


def test_an_unreadable_image_stops_predict_images_unless_skip_bad(image_dir: Path, tmp_path: Path):
    with pytest.raises(ImageError, match=r"bad\.jpg.*pass --skip-bad"):
        predict_images(StubDetector(), collect_images([image_dir]), tmp_path / "out", progress=False)


def test_predict_images_without_masks_or_names(image_dir: Path, tmp_path: Path):
    json_path = predict_images(
        StubDetector(with_masks=False), [image_dir / "b.png"], tmp_path / "out", score_threshold=0.0, progress=False
    )
    doc = json.loads(json_path.read_text())
    assert "categories" not in doc and doc["skipped"] == []
    assert len(doc["results"]) == 3 and all("segmentation" not in r for r in doc["results"])
    assert {r["category_name"] for r in doc["results"]} == {None}


def test_same_stems_get_distinct_pngs_and_inputs_are_never_overwritten(tmp_path: Path):
    first = _write_image(tmp_path / "x" / "img.png", 16, 16, 0)
    second = _write_image(tmp_path / "y" / "img.jpg", 16, 16, 1)
    json_path = predict_images(StubDetector(), [first, second], tmp_path / "out", progress=False)
    names = [entry["visualization"] for entry in json.loads(json_path.read_text())["images"]]
    assert names == ["img.png", "img-2.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img-2.png", "img.png", PREDICTIONS_FILE]
    with pytest.raises(ValueError, match="would overwrite an input image"):
        predict_images(StubDetector(), [first], tmp_path / "x", progress=False)


def test_real_torchvision_mask_rcnn_smoke(image_dir: Path, tmp_path: Path):
    """A tiny randomly initialised torchvision Mask R-CNN runs end to end through predict_images."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
    backbone.out_channels = 8
    model = MaskRCNN(
        backbone,
        num_classes=3,
        min_size=64,
        max_size=96,
        rpn_anchor_generator=AnchorGenerator(sizes=((8, 16, 32),), aspect_ratios=((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
        mask_roi_pool=MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=2),
        representation_size=32,
        box_score_thresh=0.0,
        box_detections_per_img=5,
    )
    json_path = predict_images(
        model,
        collect_images([image_dir]),
        tmp_path / "out",
        category_names=NAMES,
        score_threshold=0.0,
        progress=False,
        skip_bad=True,
    )
    doc = json.loads(json_path.read_text())
    assert len(doc["images"]) == 3 and len(doc["skipped"]) == 1
    assert doc["results"], "box_score_thresh=0 should leave detections"
    by_id = {entry["id"]: entry for entry in doc["images"]}
    for result in doc["results"]:
        entry = by_id[result["image_id"]]
        assert result["segmentation"]["size"] == [entry["height"], entry["width"]]
        assert result["category_id"] in (1, 2)
    for entry in doc["images"]:
        assert read_image(tmp_path / "out" / entry["visualization"]).shape == (3, entry["height"], entry["width"])
