"""tensorflow/tpu SpineNet Mask R-CNN checkpoints: conversion and numerical parity with the official code.

The fixture ``tpu_spinenet49_maskrcnn_tiny`` holds a checkpoint and outputs written by the official tensorflow/tpu
code (``tf_reference/write_tf1_maskrcnn.py``); no TensorFlow is needed here. The checkpoint goes through
``torchspine convert`` and `torchspine.load_model`, and every stage of the converted model is compared with the
official one on the same input: backbone endpoints, raw RPN outputs per level, RoIAlign features of fixed RoIs, the
Fast R-CNN head's class and box outputs and their decoded boxes, the mask logits, and the RPN proposals.

Criterion (per output): ``max |ours - official| <= 1e-4 * max |official|``, fp32, eval mode, CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers

import torchspine
from conftest import OFFICIAL
from torchspine.cli.main import main
from torchspine.modelfile import read_model_file
from torchspine.models.detection.roi import TPUMultiLevelRoIAlign

TOLERANCE = 1e-4
FIXTURE = OFFICIAL / "tpu_spinenet49_maskrcnn_tiny"
LEVELS = range(3, 8)
CANONICAL = (0.5, 1.0, 2.0)  # torchspine's anchor order
TPU_ORDER = (1.0, 2.0, 0.5)  # tensorflow/tpu's, the fixture's channel order


def relative_error(ours: np.ndarray, official: np.ndarray) -> float:
    assert ours.shape == official.shape, (ours.shape, official.shape)
    return float(np.abs(ours - official).max() / np.abs(official).max())


def nhwc_in_tpu_anchor_order(t: torch.Tensor, per_anchor: int) -> np.ndarray:
    """NCHW predictor output in torchspine's anchor order -> NHWC in tensorflow/tpu's aspect-ratio order."""
    x = t.permute(0, 2, 3, 1).numpy()
    n, h, w, c = x.shape
    x = x.reshape(n, h, w, c // (3 * per_anchor), 3, per_anchor)[:, :, :, :, [CANONICAL.index(r) for r in TPU_ORDER]]
    return x.reshape(n, h, w, c)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("maskrcnn") / "maskrcnn.safetensors"
    report = out.with_suffix(".json")
    args = ["convert", "--tf-checkpoint", str(FIXTURE), "--act", "swish", "--out", str(out), "--report", str(report)]
    assert main(args) == 0
    return out, json.loads(report.read_text())


@pytest.fixture(scope="module")
def official() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURE / "outputs.npz"))


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    image = torch.from_numpy(np.load(FIXTURE / "input.npy")).permute(0, 3, 1, 2)
    rois = np.load(FIXTURE / "rois.npz")
    boxes = torch.from_numpy(rois["boxes"][0][:, [1, 0, 3, 2]].copy())  # yxyx -> xyxy
    return image, [boxes], torch.from_numpy(rois["classes"][0]).long()


@pytest.fixture(scope="module")
def model(converted):
    return torchspine.load_model(converted[0])


def _stages(model, image, boxes, classes) -> dict[str, np.ndarray]:
    """Every compared stage of `model` on the fixture's input and RoIs, in the fixture's layouts."""
    out: dict[str, np.ndarray] = {}
    roi_heads = model.roi_heads
    image_shapes = [tuple(image.shape[-2:])]
    with torch.no_grad():
        feats = model.backbone(image)
        out.update({k: v.permute(0, 2, 3, 1).numpy() for k, v in feats.items()})
        scores, deltas = model.rpn.head(list(feats.values()))
        for level, s, d in zip(LEVELS, scores, deltas, strict=True):
            out[f"rpn_score_p{level}"] = nhwc_in_tpu_anchor_order(s, 1)
            out[f"rpn_box_p{level}"] = nhwc_in_tpu_anchor_order(d, 4)
        pooled = roi_heads.box_roi_pool(feats, boxes, image_shapes)
        out["roi_features_7"] = pooled.permute(0, 2, 3, 1).numpy()[None]
        class_logits, box_regression = roi_heads.box_predictor(roi_heads.box_head(pooled))
        out["class_outputs"] = class_logits.numpy()[None]
        out["box_outputs"] = box_regression.numpy()[None]
        decoded = roi_heads.box_coder.decode(box_regression, boxes)  # (R, K, 4) xyxy
        out["decoded_boxes"] = decoded[..., [1, 0, 3, 2]].numpy()[None]
        mask_pooled = roi_heads.mask_roi_pool(feats, boxes, image_shapes)
        out["roi_features_14"] = mask_pooled.permute(0, 2, 3, 1).numpy()[None]
        logits = roi_heads.mask_predictor(roi_heads.mask_head(mask_pooled))  # (R, K, 28, 28)
        out["mask_logits"] = logits.permute(0, 2, 3, 1).numpy()[None]
        out["mask_outputs"] = logits[torch.arange(len(classes)), classes].numpy()[None]
    return out


def test_converted_file_describes_the_checkpoint(converted):
    path, report = converted
    meta = read_model_file(path)
    assert meta.task == "maskrcnn" and meta.num_classes == 5
    assert meta.backbone.numerics.semantics == "tpu" and meta.backbone.numerics.norm_eps == 1e-3
    assert meta.backbone.numerics.act == "swish" and meta.backbone.cfg.filter_size_scale == 0.14
    h = meta.head
    assert (h.head_dim, h.num_convs, h.fc_dim, h.rpn_num_convs, h.num_fcs) == (16, 4, 32, 1, 1)
    assert meta.provenance.implementation == "tpu"
    listed = json.loads((FIXTURE / "meta.json").read_text())["checkpoint"]
    names = [v["name"] for v in listed["variables (tf.train.list_variables; dtype float32 unless given)"]]
    assert report["missing"] == [] and report["skipped"] == [
        {"tf_name": "global_step", "reason": "training step counter"}
    ]
    assert sorted(m["tf_name"] for m in report["mapped"]) == sorted(n for n in names if n != "global_step")


STAGES = [
    *(f"p{level}" for level in LEVELS),
    *(f"rpn_{kind}_p{level}" for level in LEVELS for kind in ("score", "box")),
    "roi_features_7",
    "class_outputs",
    "box_outputs",
    "decoded_boxes",
    "roi_features_14",
    "mask_logits",
    "mask_outputs",
]


@pytest.fixture(scope="module")
def ours(model, inputs) -> dict[str, np.ndarray]:
    return _stages(model, *inputs)


def test_every_fixture_output_is_compared(ours, official):
    assert set(official) == {*STAGES, "proposals", "proposal_scores"} and set(ours) == set(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_matches_official(ours, official, stage):
    assert relative_error(ours[stage], official[stage]) <= TOLERANCE


def _proposals_match(model, image: torch.Tensor, official: dict[str, np.ndarray]) -> bool:
    with torch.no_grad():
        boxes, _ = model.rpn(ImageList(image, [tuple(image.shape[-2:])]), model.backbone(image))
    ref = official["proposals"][0][: len(boxes[0])]
    ours = boxes[0][:, [1, 0, 3, 2]].numpy()
    close = np.abs(ours[:, None, :] - ref[None, :, :]).max(-1) <= TOLERANCE * np.abs(ref).max()
    return bool(close.any(axis=1).all() and close.any(axis=0).all())


@pytest.mark.parametrize("change", ["torchvision_rpn", "no_plus_one"])
def test_proposals_need_the_official_selection_and_decoding(converted, inputs, official, change):
    model = torchspine.load_model(converted[0])
    assert _proposals_match(model, inputs[0], official)
    if change == "torchvision_rpn":
        model.rpn.__class__ = RegionProposalNetwork  # clips to W, not W - 1, and drops tiny boxes
    else:
        model.rpn.box_coder.decode_offset = 0.0
    assert not _proposals_match(model, inputs[0], official)


def test_rpn_proposals_match_official(model, inputs, official):
    """The proposals (decode, clip, per-level top-k and NMS, overall top-k) are the official ones.

    Compared as sets: scores of different boxes can lie closer together (3e-7 here) than float32 rounding moves them
    (1e-5), so the order of near-ties is not reproducible; the scores, sorted, are compared in order. The official
    NMS pads with score -1 after its boxes.
    """
    image = inputs[0]
    images = ImageList(image, [tuple(image.shape[-2:])])
    rpn = model.rpn
    with torch.no_grad():
        feats = list(model.backbone(image).values())
        objectness, deltas = rpn.head(feats)
        anchors = rpn.anchor_generator(images, feats)
        per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        decoded = rpn.box_coder.decode(deltas, anchors).view(1, -1, 4)
        boxes, scores = rpn.filter_proposals(decoded, objectness, images.image_sizes, per_level)
        forward_boxes, _ = rpn(images, model.backbone(image))
    torch.testing.assert_close(forward_boxes[0], boxes[0], rtol=0, atol=0)
    ref_boxes, ref_scores = official["proposals"][0], official["proposal_scores"][0]
    kept = int((ref_scores >= 0).sum())
    assert np.all(ref_scores[kept:] == -1) and kept == len(boxes[0]) == 1000
    ours, ref = boxes[0][:, [1, 0, 3, 2]].numpy(), ref_boxes[:kept]
    assert len(np.unique(ref.round(2), axis=0)) > 900  # real, distinct boxes
    close = np.abs(ours[:, None, :] - ref[None, :, :]).max(-1) <= TOLERANCE * np.abs(ref).max()
    assert close.any(axis=1).all() and close.any(axis=0).all()
    assert relative_error(scores[0].numpy(), ref_scores[:kept]) <= TOLERANCE


def test_torchvision_roi_align_is_not_the_official_one(inputs, official, converted):
    # The same weights with torchvision's RoIAlign (2x2 samples per bin) miss the official RoI features: the
    # parity test above can fail, and ``box_ops="tpu"`` is what makes it pass.
    model = torchspine.load_model(converted[0])
    pool = model.roi_heads.box_roi_pool
    assert isinstance(pool, TPUMultiLevelRoIAlign)
    from torchspine.models.detection.roi import multiscale_roi_align

    model.roi_heads.box_roi_pool = multiscale_roi_align(model.backbone, output_size=7)
    ours = _stages(model, *inputs)
    assert relative_error(ours["roi_features_7"], official["roi_features_7"]) > 100 * TOLERANCE


def test_box_ops_selects_the_implementation():
    from torchvision.ops import MultiScaleRoIAlign

    from torchspine.errors import UsageError
    from torchspine.models.detection.mask_rcnn import build_mask_rcnn
    from torchspine.models.detection.rpn import TPUProposalSelection

    tpu = build_mask_rcnn("test_spinenet", num_classes=3, image_size=128)
    assert isinstance(tpu.rpn, TPUProposalSelection) and isinstance(tpu.roi_heads.mask_roi_pool, TPUMultiLevelRoIAlign)
    assert tpu.rpn.box_coder.decode_offset == 1 and tpu.roi_heads.box_coder.encode_offset == 1
    tv = build_mask_rcnn("test_spinenet", num_classes=3, image_size=128, box_ops="torchvision")
    assert not isinstance(tv.rpn, TPUProposalSelection) and type(tv.roi_heads.box_roi_pool) is MultiScaleRoIAlign
    assert tv.roi_heads.box_coder.decode_offset == 0
    with pytest.raises(UsageError, match="box_ops"):
        build_mask_rcnn("test_spinenet", num_classes=3, image_size=128, box_ops="detectron2")


def test_legacy_box_coding_round_trips():
    from torchspine.models.detection.anchors import TFBoxCoder

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(20, 2, generator=g) * 100
    anchors = torch.cat([xy, xy + 5 + torch.rand(20, 2, generator=g) * 50], 1)
    xy = torch.rand(20, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(20, 2, generator=g) * 50], 1)
    coder = TFBoxCoder((10.0, 10.0, 5.0, 5.0), encode_offset=1.0, decode_offset=1.0)
    codes = coder.encode_single(boxes, anchors)
    # (ty, tx, th, tw) with the "+1" sizes of tensorflow/tpu box_utils.encode_boxes
    h, ha = boxes[:, 3] - boxes[:, 1] + 1, anchors[:, 3] - anchors[:, 1] + 1
    ty = 10 * ((boxes[:, 1] + 0.5 * h) - (anchors[:, 1] + 0.5 * ha)) / ha
    torch.testing.assert_close(codes[:, 0], ty)
    torch.testing.assert_close(codes[:, 2], 5 * torch.log(h / ha))
    torch.testing.assert_close(coder.decode_single(codes, anchors), boxes, rtol=0, atol=1e-4)
    plain = TFBoxCoder((10.0, 10.0, 5.0, 5.0))
    assert not torch.allclose(plain.decode_single(codes, anchors), boxes, atol=1e-2)
