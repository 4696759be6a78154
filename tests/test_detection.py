"""RetinaNet and Mask R-CNN: official anchors, box coding and losses; torchvision API behaviour."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.image_list import ImageList

from torchspine.models.detection.anchors import TFAnchorGenerator, TFBoxCoder
from torchspine.models.detection.heads import RetinaNetHead
from torchspine.models.detection.mask_rcnn import build_mask_rcnn
from torchspine.models.detection.retinanet import build_retinanet, top_candidates


def test_anchors_follow_the_official_formula():
    gen = TFAnchorGenerator(3, 7, anchor_size=3.0, num_scales=3, aspect_ratios=(0.5, 1.0, 2.0))
    sizes = [(4, 6), (2, 3), (1, 2), (1, 1), (1, 1)]
    anchors = gen.grid_anchors(sizes, torch.device("cpu"), torch.float64)
    assert anchors.shape == (sum(h * w for h, w in sizes) * 9, 4)
    # Level 3, location (y=1, x=2), scale index 1, aspect ratio 2.0 -> anchor index 1 * 3 + 2.
    index = (1 * 6 + 2) * 9 + 1 * 3 + 2
    base = 3.0 * 8 * 2 ** (1 / 3)
    cx, cy, half_w, half_h = 8 * 2 + 4, 8 * 1 + 4, base * math.sqrt(2.0) / 2, base / math.sqrt(2.0) / 2
    torch.testing.assert_close(
        anchors[index], torch.tensor([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dtype=torch.float64)
    )
    # First anchor of level 4 comes right after all of level 3.
    first_p4 = anchors[4 * 6 * 9]
    torch.testing.assert_close((first_p4[0] + first_p4[2]) / 2, torch.tensor(8.0, dtype=torch.float64))


def test_box_coder_uses_ty_tx_th_tw():
    coder = TFBoxCoder()
    anchor = torch.tensor([[10.0, 20.0, 50.0, 100.0]])  # x1 y1 x2 y2: w 40, h 80, centre (30, 60)
    gt = torch.tensor([[14.0, 28.0, 54.0, 188.0]])  # w 40, h 160, centre (34, 108)
    codes = coder.encode_single(gt, anchor)
    torch.testing.assert_close(codes, torch.tensor([[(108 - 60) / 80, (34 - 30) / 40, math.log(2.0), 0.0]]))
    torch.testing.assert_close(coder.decode_single(codes, anchor), gt)


def test_head_loss_matches_the_official_formula():
    torch.manual_seed(0)
    head = RetinaNetHead(8, 9, 3, num_convs=1, num_filters=8)
    n = 30
    logits, deltas = torch.randn(1, n, 3), torch.randn(1, n, 4)
    anchors = torch.rand(n, 2) * 50
    anchors = torch.cat([anchors, anchors + 10 + torch.rand(n, 2) * 20], dim=1)
    targets = [
        {"boxes": torch.tensor([[5.0, 5.0, 30.0, 40.0], [20.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([2, 1])}
    ]
    matched = torch.full((n,), -1)
    matched[[3, 7, 11]] = torch.tensor([0, 1, 0])
    losses = head.compute_loss(targets, {"cls_logits": logits, "bbox_regression": deltas}, [anchors], [matched])
    # Reference, written out as Model Garden's retinanet task does it.
    pos = matched >= 0
    onehot = torch.zeros(n, 3)
    onehot[pos, targets[0]["labels"][matched[pos]]] = 1
    p = torch.sigmoid(logits[0])
    ce = F.binary_cross_entropy_with_logits(logits[0], onehot, reduction="none")
    p_t = torch.where(onehot == 1, p, 1 - p)
    focal = torch.where(onehot == 1, 0.25, 0.75) * (1 - p_t) ** 1.5 * ce
    enc = TFBoxCoder().encode_single(targets[0]["boxes"][matched[pos]], anchors[pos])
    err = (deltas[0][pos] - enc).abs()
    huber = torch.where(err <= 0.1, 0.5 * err**2, 0.1 * (err - 0.05)).mean(dim=1)
    normalizer = pos.sum() + 1
    torch.testing.assert_close(losses["classification"], focal.sum() / normalizer)
    torch.testing.assert_close(losses["bbox_regression"], 50 * huber.sum() / normalizer)


def _targets(with_masks: bool = False, size: tuple[int, int] = (128, 128)) -> list[dict]:
    full = {
        "boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [80.0, 20.0, 120.0, 40.0]]),
        "labels": torch.tensor([1, 3]),
    }
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    if with_masks:
        masks = torch.zeros(2, *size, dtype=torch.uint8)
        masks[0, 12:70, 10:60] = 1
        masks[1, 20:40, 80:120] = 1
        full["masks"], empty["masks"] = masks, torch.zeros(0, *size, dtype=torch.uint8)
    return [full, empty]


@pytest.mark.parametrize("builder", [build_retinanet, build_mask_rcnn], ids=["retinanet", "mask_rcnn"])
def test_train_losses_finite_with_and_without_objects(builder):
    model = builder("test_spinenet", num_classes=4).train()
    images = [torch.rand(3, 128, 128), torch.rand(3, 128, 128)]
    losses = model(images, _targets(with_masks=builder is build_mask_rcnn))
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "backbone" in n)


def test_mask_rcnn_with_model_garden_anchor_scales_trains_and_reloads(tmp_path):
    """Model Garden's Mask R-CNN anchors (3 scales x 3 ratios): the RPN head predicts 9 anchors per location, one SGD
    step runs and moves the RPN predictors, and a model file rebuilds the same anchors (older files default to 1)."""
    import torchspine
    from torchspine.engine.export import export_model

    torch.manual_seed(0)
    model = build_mask_rcnn("test_spinenet", num_classes=4, anchor_num_scales=3, anchor_size=4.0).train()
    gen = model.rpn.anchor_generator
    assert gen.num_anchors_per_location() == [9] * 5 and gen.num_scales == 3 and gen.anchor_size == 4.0
    assert model.rpn.head.cls_logits.out_channels == 9 and model.rpn.head.bbox_pred.out_channels == 36
    images = [torch.rand(3, 128, 128), torch.rand(3, 128, 128)]
    before = model.rpn.head.cls_logits.weight.detach().clone()
    losses = model(images, _targets(with_masks=True))
    assert all(torch.isfinite(v) for v in losses.values()), losses
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sum(losses.values()).backward()
    optimizer.step()
    assert not torch.equal(before, model.rpn.head.cls_logits.weight)
    # the anchors of one 128-px image: 9 per location at every level (16x16 ... 1x1 maps)
    maps = [torch.zeros(1, 1, 2**k, 2**k) for k in (4, 3, 2, 1, 0)]
    anchors = gen(ImageList(images[0][None], [(128, 128)]), maps)
    assert anchors[0].shape == (9 * sum(4**k for k in range(5)), 4)
    path = export_model(model.eval(), tmp_path / "m.safetensors", variant="test_spinenet")
    loaded = torchspine.load_model(path)
    assert loaded.rpn.anchor_generator.num_scales == 3 and loaded.rpn.anchor_generator.anchor_size == 4.0
    assert loaded.rpn.head.cls_logits.out_channels == 9


def test_mask_rcnn_rejects_zero_anchor_scales():
    with pytest.raises(ValueError, match="anchor_num_scales"):
        build_mask_rcnn("test_spinenet", num_classes=4, anchor_num_scales=0)


def test_eval_boxes_are_in_input_coordinates_for_any_size():
    model = build_retinanet("test_spinenet", num_classes=4, score_thresh=0.0).eval()
    images = [torch.rand(3, 300, 500), torch.rand(3, 97, 61)]
    with torch.no_grad():
        outputs = model(images)
    for image, out in zip(images, outputs, strict=True):
        h, w = image.shape[-2:]
        assert out["boxes"].shape[0] > 0
        assert (out["boxes"][:, [0, 2]] <= w + 1e-3).all() and (out["boxes"][:, [1, 3]] <= h + 1e-3).all()
        assert out["boxes"][:, 2].max() > 0.5 * w  # spread over the whole image, not the resized one


def test_detections_do_not_depend_on_batch_padding():
    torch.manual_seed(0)
    model = build_retinanet("test_spinenet", num_classes=4, score_thresh=0.0).eval()
    image = torch.rand(3, 128, 96)
    with torch.no_grad():
        alone = model([image])[0]
        batched = model([image, torch.rand(3, 128, 128)])[0]
    torch.testing.assert_close(alone["boxes"], batched["boxes"])
    torch.testing.assert_close(alone["scores"], batched["scores"])


def test_mask_rcnn_eval_outputs_masks_at_input_size():
    model = build_mask_rcnn("test_spinenet", num_classes=4).eval()
    model.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        out = model([torch.rand(3, 150, 200)])[0]
    assert out["masks"].shape[1:] == (1, 150, 200)
    assert model.roi_heads.box_roi_pool.featmap_names == ["p3", "p4", "p5", "p6", "p7"]


def test_resnet_fpn_baseline_has_the_same_contract():
    model = build_retinanet("resnet50_fpn", num_classes=4)
    assert [f.key for f in model.backbone.feature_info] == ["p3", "p4", "p5", "p6", "p7"]
    with torch.device("meta"):
        feats = build_retinanet("resnet50_fpn", num_classes=4).backbone(torch.empty(1, 3, 256, 256))
    assert list(feats) == ["p3", "p4", "p5", "p6", "p7"] and feats["p7"].shape[-1] == 2
    # Trained from scratch like SpineNet: real BatchNorm (torchvision's default FrozenBatchNorm2d is an identity
    # on random weights), every parameter trainable.
    norms = [m for m in model.backbone.modules() if "BatchNorm" in type(m).__name__]
    assert len(norms) == 53 and all(type(m) is torch.nn.BatchNorm2d for m in norms)
    assert all(p.requires_grad for p in model.parameters())


def test_image_size_must_fit_the_levels():
    with pytest.raises(ValueError, match="multiple of 128"):
        build_retinanet("test_spinenet", image_size=200)


def _dense_top_candidates(logits: torch.Tensor, k: int, thresh: float) -> set[tuple[int, int, float]]:
    """The definition: per class the k best sigmoid scores over all anchors, then those above the threshold."""
    top_scores, top_index = torch.sigmoid(logits).topk(min(k, logits.shape[0]), dim=0)
    classes = torch.arange(logits.shape[1]).expand_as(top_scores)
    keep = top_scores > thresh
    return set(zip(top_index[keep].tolist(), classes[keep].tolist(), top_scores[keep].tolist(), strict=True))


@pytest.mark.parametrize(
    ("k", "thresh", "hot_class", "dtype"),
    [
        (50, 0.05, None, torch.float32),
        (50, 0.05, 2, torch.float32),
        (5000, 0.05, None, torch.float32),
        (50, 0.0, None, torch.float32),
        (50, 0.5, 1, torch.float32),
        (50, 0.05, None, torch.float16),
    ],
    ids=["few", "one-class-over-k", "k-above-all", "no-threshold", "high-threshold", "fp16"],
)
def test_top_candidates_equal_the_dense_top_k_then_threshold(k, thresh, hot_class, dtype):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 6, generator=g) * 2 - 4  # about 8 % above 0.05
    logits[::7, 3] = math.log(0.05 / 0.95)  # exactly at the threshold's logit: must be decided by the sigmoid
    logits[1::7, 3] = math.log(0.05 / 0.95) + torch.linspace(-0.01, 0.01, len(logits[1::7, 3]))  # around it
    if hot_class is not None:
        logits[:, hot_class] += 6  # nearly all anchors above the threshold for this class: more than k
    logits = logits.to(dtype)
    index, classes, scores = top_candidates(logits, k, thresh)
    found = set(zip(index.tolist(), classes.tolist(), scores.tolist(), strict=True))
    assert len(found) == index.shape[0] > 0
    assert found == _dense_top_candidates(logits, k, thresh)
