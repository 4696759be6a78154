"""`CocoDetection` / `build_dataset`: the tensor contract, and a clear error or a logged repair for bad data."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from torchspine.data.coco import CocoDetection, CocoFormatError, build_dataset, encode_mask, polygons_to_mask
from torchspine.data.image_io import ImageError

H, W = 30, 40


def _doc() -> dict[str, Any]:
    """Two 40x30 images; non-contiguous category ids 3 and 7; one crowd annotation."""
    return {
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        "images": [
            {"id": 10, "file_name": "a.png", "width": W, "height": H},
            {"id": 20, "file_name": "b.png", "width": W, "height": H},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [2, 3, 10, 5], "iscrowd": 0, "area": 50},
            {"id": 2, "image_id": 10, "category_id": 7, "bbox": [20.5, 10, 4, 8], "iscrowd": 0, "area": 32},
            {"id": 3, "image_id": 20, "category_id": 7, "bbox": [0, 0, 5, 5], "iscrowd": 0, "area": 25},
            {"id": 4, "image_id": 20, "category_id": 3, "bbox": [10, 10, 6, 6], "iscrowd": 1, "area": 36},
        ],
    }


def _write(root: Path, doc: dict[str, Any], images: tuple[str, ...] = ("a.png", "b.png")) -> Path:
    (root / "img").mkdir(exist_ok=True)
    for i, name in enumerate(images):
        Image.new("RGB", (W, H), (50 * i, 100, 200)).save(root / "img" / name)
    ann = root / "instances.json"
    ann.write_text(json.dumps(doc))
    return ann


def _build(root: Path, doc: dict[str, Any], **kwargs: Any) -> CocoDetection:
    return CocoDetection(root / "img", _write(root, doc), **kwargs)


def _error(root: Path, doc: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(CocoFormatError) as info:
        _build(root, doc, **kwargs)
    message = str(info.value)
    assert "instances.json" in message  # every problem report names the annotation file
    return message


def test_contract(tmp_path: Path):
    ds = _build(tmp_path, _doc())
    assert len(ds) == 2 and ds.ids == [10, 20]
    assert ds.num_classes == 8 and ds.category_names == {3: "cat", 7: "dog"}
    image, target = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, H, W)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert torch.allclose(image[:, 0, 0], torch.tensor([0, 100, 200]) / 255.0)
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[2, 3, 12, 8], [20.5, 10, 24.5, 18]]  # xywh -> xyxy
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [3, 7]  # category ids as written
    assert target["iscrowd"].tolist() == [0, 0] and target["image_id"] == 10
    assert "masks" not in target


def test_crowd_dropped_by_default_and_kept_on_request(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO, logger="torchspine.data.coco"):
        ds = _build(tmp_path, _doc())
    assert "1 crowd annotation(s) left out" in caplog.text
    assert ds[1][1]["labels"].tolist() == [7]
    # The crowd region stays in the evaluation ground truth (COCOeval ignores detections on it).
    assert len(ds.coco.getAnnIds(imgIds=[20])) == 2
    crowd = _build(tmp_path, _doc(), include_crowd=True)
    assert crowd[1][1]["iscrowd"].tolist() == [0, 1]


def test_collate_fn(tmp_path: Path):
    ds = _build(tmp_path, _doc())
    images, targets = CocoDetection.collate_fn([ds[0], ds[1]])
    assert len(images) == 2 and [t["image_id"] for t in targets] == [10, 20]


def test_image_without_annotations_is_kept(tmp_path: Path):
    doc = _doc()
    doc["annotations"] = doc["annotations"][:2]
    ds = _build(tmp_path, doc)
    _, target = ds[1]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_malformed_json(tmp_path: Path):
    ann = _write(tmp_path, _doc())
    ann.write_text('{\n  "images": [],\n  "categories": [,]\n}')
    with pytest.raises(CocoFormatError, match=r"instances\.json: malformed JSON at line 3, column 18"):
        CocoDetection(tmp_path / "img", ann)


def test_missing_annotation_file(tmp_path: Path):
    (tmp_path / "img").mkdir()
    with pytest.raises(FileNotFoundError, match=r"nothing\.json does not exist"):
        CocoDetection(tmp_path / "img", tmp_path / "nothing.json")


def test_not_an_instances_file(tmp_path: Path):
    ann = _write(tmp_path, _doc())
    ann.write_text(json.dumps({"categories": [{"id": 1, "name": "x"}]}))
    with pytest.raises(CocoFormatError, match="missing or non-list 'images'"):
        CocoDetection(tmp_path / "img", ann)


def test_unknown_category(tmp_path: Path):
    doc = _doc()
    doc["annotations"][1]["category_id"] = 99
    assert "annotation id 2 (image id 10): unknown category id 99" in _error(tmp_path, doc)


def test_category_id_zero_rejected(tmp_path: Path):
    doc = _doc()
    doc["categories"][0]["id"] = 0
    assert "category id 0: ids must be >= 1" in _error(tmp_path, doc)


def test_duplicate_image_ids(tmp_path: Path):
    doc = _doc()
    doc["images"][1]["id"] = 10
    assert "image id 10: duplicate image id" in _error(tmp_path, doc)


def test_duplicate_annotation_ids(tmp_path: Path):
    doc = _doc()
    doc["annotations"][2]["id"] = 1
    assert "annotation id 1: duplicate annotation id" in _error(tmp_path, doc)


def test_annotation_for_unknown_image(tmp_path: Path):
    doc = _doc()
    doc["annotations"][0]["image_id"] = 555
    assert "annotation id 1 (image id 555): image id not in 'images'" in _error(tmp_path, doc)


@pytest.mark.parametrize(
    ("bbox", "expected"),
    [
        ([1, 2, float("nan"), 3], "NaN or infinite"),
        ([1, 2, float("inf"), 3], "NaN or infinite"),
        ([1, 2, -4, 3], "negative width or height"),
        ([1, 2, 3], "must be [x, y, width, height]"),
        (None, "must be [x, y, width, height]"),
        ([1, "2", 3, 4], "must be numbers"),
    ],
    ids=["nan", "inf", "negative", "three-numbers", "missing", "string"],
)
def test_bad_bbox(tmp_path: Path, bbox: Any, expected: str):
    doc = _doc()
    doc["annotations"][0]["bbox"] = bbox
    message = _error(tmp_path, doc)
    assert "annotation id 1 (image id 10): bbox" in message and expected in message


def test_all_problems_reported_together(tmp_path: Path):
    doc = _doc()
    doc["annotations"][0]["bbox"] = [0, 0, -1, 1]
    doc["annotations"][1]["category_id"] = 42
    message = _error(tmp_path, doc)
    assert "2 problem(s)" in message and "annotation id 1" in message and "annotation id 2" in message


@pytest.mark.parametrize("missing", ["width", "height"])
def test_image_without_size(tmp_path: Path, missing: str):
    doc = _doc()
    del doc["images"][1][missing]
    assert f"image id 20: missing '{missing}'" in _error(tmp_path, doc)


def test_zero_area_boxes_dropped_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    doc = _doc()
    doc["annotations"][0]["bbox"] = [5, 5, 0, 4]
    with caplog.at_level(logging.WARNING, logger="torchspine.data.coco"):
        ds = _build(tmp_path, doc)
    assert ds[0][1]["labels"].tolist() == [7]
    assert "zero-area box, dropped: 1 annotation(s) (annotation ids 1)" in caplog.text
    assert "instances.json" in caplog.text
    assert ds.coco.anns[1]["bbox"] == [5, 5, 0, 4]


def test_boxes_outside_image_clipped_or_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    doc = _doc()
    doc["annotations"][0]["bbox"] = [-5, 25, 20, 10]  # partly outside: x < 0 and y2 > 30
    doc["annotations"][1]["bbox"] = [45, 0, 5, 5]  # entirely right of the 40 px image
    with caplog.at_level(logging.WARNING, logger="torchspine.data.coco"):
        ds = _build(tmp_path, doc)
    assert ds[0][1]["boxes"].tolist() == [[0, 25, 15, 30]]
    # The evaluation ground truth keeps the file's boxes, as the official COCO evaluation sees them.
    assert ds.coco.anns[1]["bbox"] == [-5, 25, 20, 10] and 2 in ds.coco.anns
    assert "box partly outside its image, clipped: 1 annotation(s) (annotation ids 1)" in caplog.text
    assert "box entirely outside its image, dropped: 1 annotation(s) (annotation ids 2)" in caplog.text
    # Logged once, at construction, not per sample.
    caplog.clear()
    ds[0]
    assert "clipped" not in caplog.text


def _square(x: float, y: float, s: float) -> list[float]:
    return [x, y, x + s, y, x + s, y + s, x, y + s]


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on NumPy 2
def test_masks_polygons_and_rle(tmp_path: Path):
    doc = _doc()
    doc["annotations"][0]["segmentation"] = [_square(2, 3, 10)]
    ref = np.zeros((H, W), dtype=np.uint8)
    ref[10:18, 20:25] = 1
    doc["annotations"][1]["segmentation"] = encode_mask(ref, compressed=True)
    doc["annotations"][2]["segmentation"] = encode_mask(ref, compressed=False)
    doc["annotations"][3]["segmentation"] = encode_mask(ref, compressed=False)
    ds = _build(tmp_path, doc, with_masks=True)
    _, t0 = ds[0]
    assert t0["masks"].dtype == torch.uint8 and t0["masks"].shape == (2, H, W)
    assert np.array_equal(t0["masks"][0].numpy(), polygons_to_mask([_square(2, 3, 10)], H, W))
    assert np.array_equal(t0["masks"][1].numpy(), ref)
    assert np.array_equal(ds[1][1]["masks"][0].numpy(), ref)  # uncompressed RLE
    assert ds.coco.annToMask(ds.coco.anns[2]).sum() == ref.sum()  # pycocotools reads the same masks


def test_uncompressed_rle_round_trip_starting_with_foreground():
    mask = np.zeros((4, 3), dtype=np.uint8)
    mask[0, 0] = mask[3, 2] = 1
    rle = encode_mask(mask, compressed=False)
    assert rle["counts"][0] == 0 and sum(rle["counts"]) == 12


def test_rle_of_wrong_size(tmp_path: Path):
    doc = _doc()
    doc["annotations"][1]["segmentation"] = encode_mask(np.ones((H + 1, W), dtype=np.uint8))
    message = _error(tmp_path, doc)
    assert "annotation id 2 (image id 10): RLE mask size [31, 40] does not match" in message


def test_uncompressed_rle_with_bad_counts(tmp_path: Path):
    doc = _doc()
    doc["annotations"][1]["segmentation"] = {"size": [H, W], "counts": [5, 7]}
    assert "summing to height*width" in _error(tmp_path, doc)


def test_short_polygons_dropped_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    doc = _doc()
    doc["annotations"][0]["segmentation"] = [[1, 1, 5, 5]]  # 2 points only: no mask left -> dropped
    doc["annotations"][1]["segmentation"] = [[20, 10, 24, 10, 24, 18], [1, 2, 3, 4]]  # one good polygon remains
    doc["annotations"][2]["segmentation"] = [_square(0, 0, 5)]  # (the crowd annotation needs none: not served)
    with caplog.at_level(logging.WARNING, logger="torchspine.data.coco"):
        ds = _build(tmp_path, doc, with_masks=True)
    _, target = ds[0]
    assert target["labels"].tolist() == [7] and target["masks"].shape == (1, H, W)
    assert "polygon with fewer than 3 points" in caplog.text and "annotation ids 1, 2" in caplog.text
    assert "no valid polygon left, annotation dropped with its box: 1 annotation(s) (annotation ids 1)" in caplog.text
    # The evaluation ground truth never sees the degenerate polygon either.
    assert ds.coco.anns[2]["segmentation"] == [[20, 10, 24, 10, 24, 18]] and 1 not in ds.coco.anns


def test_short_polygons_keep_their_box_without_masks(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    # Box-only training (RetinaNet): a degenerate polygon must not cost the annotation its valid box.
    doc = _doc()
    doc["annotations"][0]["segmentation"] = [[1, 1, 5, 5]]  # 2 points only
    doc["annotations"][1]["segmentation"] = [[20, 10, 24, 10, 24, 18]]
    doc["annotations"][2]["segmentation"] = [_square(0, 0, 5)]
    with caplog.at_level(logging.WARNING, logger="torchspine.data.coco"):
        ds = _build(tmp_path, doc, with_masks=False)
    with_masks = _build(tmp_path, doc, with_masks=True)
    assert len(ds[0][1]["boxes"]) == len(with_masks[0][1]["boxes"]) + 1
    assert "mask dropped and box kept (masks are not trained): 1 annotation(s) (annotation ids 1)" in caplog.text
    assert 1 in ds.coco.anns and "segmentation" not in ds.coco.anns[1]


def test_masks_requested_but_missing(tmp_path: Path):
    assert "no segmentation, but masks were requested" in _error(tmp_path, _doc(), with_masks=True)


def test_listed_image_missing_on_disk(tmp_path: Path):
    ann = _write(tmp_path, _doc(), images=("a.png",))
    with pytest.raises(FileNotFoundError, match=r"1 of 2 listed image\(s\) not found .*'b.png' \(image id 20\)"):
        CocoDetection(tmp_path / "img", ann)


def test_listed_image_missing_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    ann = _write(tmp_path, _doc(), images=("a.png",))
    with caplog.at_level(logging.WARNING, logger="torchspine.data.coco"):
        ds = CocoDetection(tmp_path / "img", ann, skip_bad=True)
    assert ds.ids == [10] and len(ds) == 1
    assert "'b.png' (image id 20)" in caplog.text and "skipping them" in caplog.text
    assert ds.coco.getImgIds() == [10]  # evaluation covers the served images only


def test_unreadable_image_raises_with_name(tmp_path: Path):
    ds = _build(tmp_path, _doc())
    (tmp_path / "img" / "a.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ImageError, match=r"a\.png"):
        ds[0]


def test_unreadable_image_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    ds = _build(tmp_path, _doc(), skip_bad=True)
    (tmp_path / "img" / "a.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="torchspine.data.coco"):
        _, target = ds[0]
    assert target["image_id"] == 20  # the next readable sample
    assert "skipping unreadable image (image id 10)" in caplog.text and "a.png: image file is empty" in caplog.text
    caplog.clear()
    assert ds[0][1]["image_id"] == 20 and caplog.text == ""  # remembered: logged once
    (tmp_path / "img" / "b.png").write_bytes(b"")
    with pytest.raises(ImageError, match="no readable image left"):
        ds[1]


def test_image_size_differs_from_annotation(tmp_path: Path):
    ds = _build(tmp_path, _doc())
    Image.new("RGB", (W + 2, H)).save(tmp_path / "img" / "a.png")
    with pytest.raises(ImageError, match=r"decoded size 30x42 \(HxW\) differs .* 30x40 \(image id 10 in "):
        ds[0]


def test_exif_rotated_image_annotated_in_stored_frame(tmp_path: Path):
    ds = _build(tmp_path, _doc())
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (W, H), (9, 9, 9)).save(tmp_path / "img" / "a.png", exif=exif)
    image, _ = ds[0]
    assert image.shape == (3, H, W)  # the frame the boxes refer to wins over the EXIF tag


def test_image_folder_missing(tmp_path: Path):
    ann = _write(tmp_path, _doc())
    with pytest.raises(FileNotFoundError, match=r"image folder .* does not exist"):
        CocoDetection(tmp_path / "elsewhere", ann)


def test_transforms_applied(tmp_path: Path):
    def halve(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        return image * 0.5, {**target, "boxes": target["boxes"] / 2}

    ds = _build(tmp_path, _doc(), transforms=halve)
    image, target = ds[0]
    assert float(image.max()) <= 0.5 and target["boxes"][0].tolist() == [1, 1.5, 6, 4]


@pytest.mark.parametrize(
    ("images", "ann"),
    [("train", "instances_train.json"), ("train2017", "instances_train2017.json"), ("images/train", None)],
    ids=["plain", "coco2017", "images-subfolder"],
)
def test_build_dataset_folder_layouts(tmp_path: Path, images: str, ann: str | None):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / (ann or "instances_train.json")).write_text(json.dumps(_doc()))
    (root / images).mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (W, H)).save(root / images / name)
    ds = build_dataset(root, "train")
    assert ds.ids == [10, 20] and ds.image_dir == root / images


def test_build_dataset_json_file(tmp_path: Path):
    ann = _write(tmp_path, _doc())
    (tmp_path / "img").rename(tmp_path / "images")
    ds = build_dataset(ann, "ignored")
    assert ds.image_dir == tmp_path / "images" and len(ds) == 2
    # Without an images/ folder the file names are relative to the JSON's folder.
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "images" / name).rename(flat / name)
    (flat / "x.json").write_text(json.dumps(_doc()))
    assert build_dataset(flat / "x.json", "val").image_dir == flat


def test_build_dataset_lists_what_it_looked_for(tmp_path: Path):
    (tmp_path / "annotations").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        build_dataset(tmp_path, "val")
    message = str(info.value)
    for expected in ("instances_val.json", "instances_val2017.json", "val/", "val2017/", "images/val/"):
        assert expected in message
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        build_dataset(tmp_path / "absent", "val")


def test_build_dataset_passes_options(tmp_path: Path):
    doc = copy.deepcopy(_doc())
    ann = _write(tmp_path, doc)
    (tmp_path / "img").rename(tmp_path / "images")
    ds = build_dataset(ann, "train", include_crowd=True)
    assert ds[1][1]["iscrowd"].tolist() == [0, 1]
