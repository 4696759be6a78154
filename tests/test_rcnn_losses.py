"""Mask R-CNN losses as tensorflow/tpu's ``modeling/losses.py``, on small cases worked out by hand here.

Every expected value is closed-form arithmetic in this file (``math.log``, the Huber formula written out), not a
call into the code under test. Huber(x; d) = x**2 / 2 for |x| <= d, d * (|x| - d / 2) otherwise.
"""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork

from torchspine.config import ConfigError, load_config
from torchspine.engine.build import build_model
from torchspine.models.detection.mask_rcnn import build_mask_rcnn
from torchspine.models.detection.rcnn_loss_heads import TPULossRoIHeads, TPULossRPN
from torchspine.models.detection.rcnn_losses import (
    fastrcnn_box_loss,
    fastrcnn_class_loss,
    mask_loss,
    rpn_box_loss,
    rpn_score_loss,
)

INF = float("inf")


def _huber(x: float, d: float) -> float:
    return x * x / 2 if abs(x) <= d else d * (abs(x) - d / 2)


def test_rpn_score_loss_divides_by_images_times_256_not_by_the_sampled_count():
    # Anchors: sampled positive (logit 0), sampled negative (logit ln 3), not sampled, sampled positive (logit 2).
    logits = torch.tensor([[0.0, math.log(3.0), 123.0, 2.0]])
    labels = torch.tensor([[1, 0, -1, 1]])
    # -log sigmoid(0) = ln 2; -log(1 - sigmoid(ln 3)) = -log(1/4) = ln 4; -log sigmoid(2) = ln(1 + e^-2).
    total = math.log(2) + math.log(4) + math.log(1 + math.exp(-2))
    loss = rpn_score_loss(logits, labels, batch_size_per_image=4)
    assert float(loss) == pytest.approx(total / 4, rel=1e-6)  # / (1 image x 4), although only 3 were sampled
    two = rpn_score_loss(logits.repeat(2, 1), labels.repeat(2, 1), batch_size_per_image=4)
    assert float(two) == pytest.approx(2 * total / 8, rel=1e-6)


def test_rpn_box_loss_normalises_each_level_by_its_nonzero_targets():
    d = 1 / 9
    # Two images; level 1 has 3 anchors per image, level 2 has 2.
    deltas = torch.zeros(2, 5, 4)
    targets = torch.full((2, 5, 4), 7.0)  # large values on anchors that must be ignored
    positive = torch.zeros(2, 5, dtype=torch.bool)
    # Level 1, image 0: anchor 0 with one zero target coordinate (excluded, as TF's `box_targets != 0` weights)...
    positive[0, 0] = True
    targets[0, 0] = torch.tensor([0.5, 0.0, -0.05, 0.2])
    # ... and anchor 2, predicted exactly (loss 0 but 4 counted coordinates).
    positive[0, 2] = True
    targets[0, 2] = deltas[0, 2] = torch.tensor([0.1, 0.1, 0.1, 0.1])
    # Level 2, image 0: anchor 3; image 1: anchor 4 with three zero targets; image 1 anchor 3 unmatched with -inf
    # targets (torchvision's encoding on an image without boxes).
    positive[0, 3] = True
    targets[0, 3] = torch.tensor([1.0, 1.0, 1.0, 1.0])
    deltas[0, 3] = torch.tensor([0.0, 0.0, 0.0, 2.0])
    positive[1, 4] = True
    targets[1, 4] = torch.tensor([0.05, 0.0, 0.0, 0.0])
    targets[1, 3] = -INF
    deltas.requires_grad_(True)
    level1 = (_huber(0.5, d) + _huber(-0.05, d) + _huber(0.2, d)) / (3 + 4)
    level2 = (4 * _huber(1.0, d) + _huber(0.05, d)) / (4 + 1)
    loss = rpn_box_loss(deltas, targets, positive, [3, 2])
    assert float(loss.detach()) == pytest.approx(level1 + level2, rel=1e-6)
    loss.backward()
    assert torch.isfinite(deltas.grad).all() and deltas.grad[1, 3].abs().sum() == 0
    # Pooling the levels (one normaliser of 12) would give another value: the per-level split matters.
    pooled = (_huber(0.5, d) + _huber(-0.05, d) + _huber(0.2, d) + 4 * _huber(1.0, d) + _huber(0.05, d)) / 12
    assert abs(pooled - (level1 + level2)) > 0.01


def test_rpn_box_loss_is_zero_without_matched_anchors():
    deltas = torch.randn(1, 5, 4, requires_grad=True)
    loss = rpn_box_loss(deltas, torch.full((1, 5, 4), -INF), torch.zeros(1, 5, dtype=torch.bool), [3, 2])
    assert loss.item() == 0.0
    loss.backward()
    assert (deltas.grad == 0).all()


def test_fastrcnn_class_loss_is_the_mean_over_all_rois():
    logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]])
    # RoI 0: -log(1/3); RoI 1: -log(2 / (2 + 1 + 1)).
    loss = fastrcnn_class_loss(logits, torch.tensor([0, 0]))
    assert float(loss) == pytest.approx((math.log(3) + math.log(2)) / 2, rel=1e-6)


def test_fastrcnn_box_loss_is_huber_1_over_4_times_foreground_rois():
    # 3 RoIs, 3 classes (0 = background): labels 2, 0 (background), 1. Codes of the other classes are 100.
    regression = torch.full((3, 12), 100.0)
    regression[0, 8:12] = torch.tensor([0.5, -2.0, 0.0, 0.0])  # RoI 0, class 2
    regression[2, 4:8] = torch.tensor([1.0, 1.0, 1.0, 1.0])  # RoI 2, class 1: exact
    targets = torch.tensor([[0.0, 0.0, 0.0, 0.3], [-INF, -INF, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    labels = torch.tensor([2, 0, 1])
    # RoI 0: 0.5**2 / 2 + 1 * (2 - 0.5) + 0 + 0.3**2 / 2 = 0.125 + 1.5 + 0.045; RoI 2: 0. Normaliser 4 x 2.
    expected = (0.125 + 1.5 + 0.045) / 8
    assert float(fastrcnn_box_loss(regression, labels, targets)) == pytest.approx(expected, rel=1e-6)
    # Class-agnostic codes (R, 4) are used as they are.
    agnostic = torch.stack([regression[0, 8:12], regression[1, 0:4], regression[2, 4:8]])
    assert float(fastrcnn_box_loss(agnostic, labels, targets)) == pytest.approx(expected, rel=1e-6)
    # torchvision's smooth-L1 (beta 1/9, / all 3 RoIs) is another number.
    torchvision_value = sum(_huber(x, 1 / 9) * 9 for x in (0.5, -2.0, 0.0, -0.3)) / 3
    assert abs(torchvision_value - expected) > 0.5


def test_fastrcnn_box_loss_without_foreground_is_zero_and_differentiable():
    regression = torch.randn(2, 8, requires_grad=True)
    loss = fastrcnn_box_loss(regression, torch.tensor([0, 0]), torch.full((2, 4), -INF))
    assert loss.item() == 0.0
    loss.backward()
    assert (regression.grad == 0).all()


def test_mask_loss_is_the_mean_over_foreground_mask_pixels():
    logits = torch.full((2, 3, 2, 2), 50.0)  # other classes' masks would add a large loss if they were used
    logits[0, 1] = 0.0
    logits[1, 2] = math.log(3.0)
    targets = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    # RoI 0 (class 1): 4 x ln 2. RoI 1 (class 2, sigmoid = 3/4): 2 x -ln(3/4) + 2 x -ln(1/4). Mean over 8 pixels.
    expected = (4 * math.log(2) + 2 * math.log(4 / 3) + 2 * math.log(4)) / 8
    assert float(mask_loss(logits, torch.tensor([1, 2]), targets)) == pytest.approx(expected, rel=1e-6)
    empty = torch.zeros(0, 3, 2, 2, requires_grad=True)
    assert mask_loss(empty, torch.zeros(0, dtype=torch.long), torch.zeros(0, 2, 2)).item() == 0.0


def _targets() -> list[dict]:
    masks = torch.zeros(2, 128, 128, dtype=torch.uint8)
    masks[0, 12:70, 10:60] = 1
    masks[1, 20:40, 80:120] = 1
    return [
        {
            "boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [80.0, 20.0, 120.0, 40.0]]),
            "labels": torch.tensor([1, 3]),
            "masks": masks,
        },
        {
            "boxes": torch.tensor([[30.0, 30.0, 90.0, 100.0]]),
            "labels": torch.tensor([2]),
            "masks": masks[:1].roll(20, dims=1),
        },
    ]


def _losses(style: str) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_mask_rcnn("test_spinenet", num_classes=4, loss_style=style).train()
    images = [torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    torch.manual_seed(1)  # the same anchor and RoI samples in both runs
    losses = model(images, _targets())
    sum(losses.values()).backward()
    return {k: v.item() for k, v in losses.items()}


def test_mask_rcnn_uses_the_official_losses_by_default():
    model = build_mask_rcnn("test_spinenet", num_classes=4)
    assert isinstance(model.rpn, TPULossRPN) and isinstance(model.roi_heads, TPULossRoIHeads)
    official, torchvision = _losses("tpu"), _losses("torchvision")
    assert official.keys() == torchvision.keys()
    # Same formula in both (256 anchors sampled per image; RoI-mean class loss; fg-pixel-mean mask loss).
    for key in ("loss_objectness", "loss_classifier", "loss_mask"):
        assert official[key] == pytest.approx(torchvision[key], rel=1e-5), key
    # Different normalisation and Huber delta.
    for key in ("loss_rpn_box_reg", "loss_box_reg"):
        assert official[key] != pytest.approx(torchvision[key], rel=1e-2), key


def test_loss_style_is_a_config_switch_for_mask_rcnn_only():
    cfg = load_config("maskrcnn_spinenet49", overrides=["model.backbone=test_spinenet", "model.image_size=128"])
    assert cfg.model.loss_style == "tpu"
    plain = load_config(
        "maskrcnn_spinenet49",
        overrides=["model.backbone=test_spinenet", "model.image_size=128", "model.loss_style=torchvision"],
    )
    model = build_model(plain.model, num_classes=4)
    # box_ops="tpu" (default) makes the RPN a subclass with tensorflow/tpu's proposal selection, losses unchanged
    assert not isinstance(model.rpn, TPULossRPN) and isinstance(model.rpn, RegionProposalNetwork)
    assert type(model.roi_heads) is RoIHeads
    assert isinstance(build_model(cfg.model, num_classes=4).roi_heads, TPULossRoIHeads)
    with pytest.raises(ConfigError, match=r"model\.loss_style: only applies to task=maskrcnn"):
        load_config("retinanet_spinenet49_protocol_c", overrides=["model.loss_style=torchvision"])
