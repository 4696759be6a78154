"""The built-in demo data set: deterministic, valid COCO, readable through `build_dataset`, and the CLI."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from torchspine.cli import data as data_cli
from torchspine.data import DEMO_CATEGORIES, build_dataset, make_demo_dataset, polygons_to_mask
from torchspine.data.transforms import Compose, RandomHorizontalFlip, RandomResizeCrop

SMALL = {"num_train": 6, "num_val": 3, "image_size": 96}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), seed=0, **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout(demo: Path):
    assert sorted(p.name for p in (demo / "annotations").iterdir()) == ["instances_train.json", "instances_val.json"]
    assert len(list((demo / "train").glob("*.jpg"))) == 6 and len(list((demo / "val").glob("*.jpg"))) == 3


def test_deterministic_for_a_seed(demo: Path, tmp_path: Path):
    again = make_demo_dataset(tmp_path / "again", seed=0, **SMALL)
    assert _files(again) == _files(demo)  # identical JSON and JPEG bytes
    other = make_demo_dataset(tmp_path / "other", seed=1, **SMALL)
    a, b = _files(demo), _files(other)
    assert a.keys() == b.keys()
    assert a["annotations/instances_train.json"] != b["annotations/instances_train.json"]
    assert a["train/000001.jpg"] != b["train/000001.jpg"]


def test_val_split_independent_of_train_count(demo: Path, tmp_path: Path):
    more = make_demo_dataset(tmp_path / "more", seed=0, num_train=2, num_val=3, image_size=96)
    assert _files(more)["annotations/instances_val.json"] == _files(demo)["annotations/instances_val.json"]


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on NumPy 2
def test_annotations_consistent(demo: Path):
    doc = json.loads((demo / "annotations" / "instances_train.json").read_text())
    assert {c["id"]: c["name"] for c in doc["categories"]} == DEMO_CATEGORIES
    sizes = {img["id"]: (img["height"], img["width"]) for img in doc["images"]}
    assert all(60 <= h <= 120 and 60 <= w <= 120 for h, w in sizes.values())
    kinds = {
        "polygon" if isinstance(a["segmentation"], list) else type(a["segmentation"]["counts"]).__name__
        for a in doc["annotations"]
    }
    assert kinds == {"polygon", "str", "list"}  # polygons, compressed and uncompressed RLE
    assert sum(a["iscrowd"] for a in doc["annotations"]) == 1
    # area is the mask area and bbox the mask's tight box, as pycocotools itself decodes the segmentation.
    coco = build_dataset(demo, "train").coco
    assert len(coco.dataset["annotations"]) == len(doc["annotations"])
    for ann in doc["annotations"]:
        h, w = sizes[ann["image_id"]]
        mask = coco.annToMask(ann)
        if isinstance(ann["segmentation"], list):
            assert np.array_equal(mask, polygons_to_mask(ann["segmentation"], h, w))
        ys, xs = np.nonzero(mask)
        assert ann["area"] == mask.sum()
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]


def test_round_trip_through_build_dataset(demo: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="torchspine.data.coco"):
        train = build_dataset(demo, "train", with_masks=True, include_crowd=True)
        val = build_dataset(demo, "val")
    assert caplog.text == ""  # nothing to clip, drop or skip
    assert train.num_classes == 6 and train.category_names == DEMO_CATEGORIES and len(val) == 3
    crowd = 0
    for i in range(len(train)):
        image, target = train[i]
        assert image.dtype == torch.float32 and image.shape[0] == 3
        masks = target["masks"]
        assert masks.shape == (len(target["boxes"]), *image.shape[1:])
        assert set(target["labels"].tolist()) <= set(DEMO_CATEGORIES)
        for box, mask in zip(target["boxes"], masks, strict=True):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        crowd += int(target["iscrowd"].sum())
    assert crowd == 1


def test_with_training_transforms(demo: Path):
    t = Compose([RandomResizeCrop(64, (0.5, 2.0)), RandomHorizontalFlip()])
    ds = build_dataset(demo, "train", transforms=t, with_masks=True)
    images, targets = ds.collate_fn([ds[i] for i in range(len(ds))])
    for image, target in zip(images, targets, strict=True):
        assert max(image.shape[1:]) <= 64 and target["masks"].shape[1:] == image.shape[1:]


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on NumPy 2
def test_ground_truth_scores_perfect_coco_ap(demo: Path):
    from pycocotools.cocoeval import COCOeval

    ds = build_dataset(demo, "train")
    gt = ds.coco
    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in gt.dataset["annotations"]
        if not a["iscrowd"]
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(detections), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_objects_span_scales(tmp_path: Path):
    out = make_demo_dataset(tmp_path, seed=3, num_train=30, num_val=0, image_size=320)
    doc = json.loads((out / "annotations" / "instances_train.json").read_text())
    extents = [max(a["bbox"][2:]) for a in doc["annotations"] if not a["iscrowd"]]
    assert min(extents) < 16 and max(extents) > 120
    assert len(doc["annotations"]) / len(doc["images"]) >= 3
    assert {a["category_id"] for a in doc["annotations"]} == set(DEMO_CATEGORIES)


def test_make_demo_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    parser = argparse.ArgumentParser(prog="torchspine")
    data_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    out = str(tmp_path / "d")
    args = parser.parse_args(
        ["data", "make-demo", "--out", out, "--seed", "2", "--num-train", "3", "--num-val", "1", "--image-size", "64"]
    )
    assert args.run(args) == 0
    assert "wrote 3 train + 1 val images" in capsys.readouterr().out
    assert len(build_dataset(tmp_path / "d", "train")) == 3 and len(build_dataset(tmp_path / "d", "val")) == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["data"])  # an action is required


def test_bad_arguments(tmp_path: Path):
    with pytest.raises(ValueError, match="image_size"):
        make_demo_dataset(tmp_path, image_size=8)
    with pytest.raises(ValueError, match="counts"):
        make_demo_dataset(tmp_path, num_train=-1)
