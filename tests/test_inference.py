"""The inference fast path (`torchspine.optimize_for_inference`) keeps every model's outputs within 1e-5 relative.

Every variant family (ResNet-block SpineNets 49S/49/96/143/190 in both official numerics, the mobile ones) at a
small width, the classifier, the RetinaNet head and every Mask R-CNN part with a BatchNorm. BatchNorm statistics
and affine parameters are randomised first, so an unfolded or wrongly folded BN would show (fresh BNs are
identities and would hide a missed fold).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchspine
from torchspine.inference import FusedRPNHead, FusedScalePermutedBlock, FusedTower, optimize_for_inference
from torchspine.models.detection.mask_rcnn import build_mask_rcnn
from torchspine.models.detection.retinanet import build_retinanet

RTOL = 1e-5
SMALL = {"filter_size_scale": 0.25, "endpoints_num_filters": 32}
# Block repeats of 2-4 (96/143/190) make the graph several times longer: those run in the slow suite.
_REPEATED = ("spinenet96", "spinenet143", "spinenet190")
VARIANTS = [
    pytest.param(name, semantics, id=f"{name}-{semantics}", marks=[pytest.mark.slow] if name in _REPEATED else [])
    for name in ("spinenet49s", "spinenet49", *_REPEATED)
    for semantics in ("model_garden", "tpu")
] + [
    pytest.param(name, "model_garden", id=name)
    for name in ("spinenet49_mobile", "spinenet49s_mobile", "spinenet49xs_mobile")
]


def _randomize_norms(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max().clamp_min(1e-12)
    err = ((actual - expected).abs().max() / scale).item()
    assert err < RTOL, f"relative error {err:.2e}"


def _num_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize(("name", "semantics"), VARIANTS)
def test_fused_backbone_matches(name, semantics):
    model = _randomize_norms(torchspine.create_model(name, semantics=semantics, **SMALL))
    fast = optimize_for_inference(model)
    assert _num_bn(model) > 0 and _num_bn(fast) == 0
    assert model.training is False and not any(p.requires_grad for p in fast.parameters())
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        expected, actual = model(x), fast(x)
    assert list(actual) == list(expected)
    for key in expected:
        _assert_close(actual[key], expected[key])


@pytest.mark.parametrize(
    ("name", "semantics"),
    [("spinenet49", "tpu"), ("spinenet49", "model_garden"), ("spinenet49_mobile", "model_garden")],
)
def test_fused_merges_project_upsampled_parents_at_their_own_resolution(name, semantics):
    """The fast path projects an up-sampled parent before up-sampling it (exact: a 1x1 conv commutes with pixel
    repetition), also for sizes that are not multiples of 128, where the up-sampled map is cropped to the target."""
    model = _randomize_norms(torchspine.create_model(name, semantics=semantics, **SMALL))
    fast = optimize_for_inference(model)
    plain = optimize_for_inference(model, fuse_activations=False)  # every projection a module call (hookable)
    blocks = list(plain.blocks.values())
    assert all(isinstance(b, FusedScalePermutedBlock) for b in (*blocks, *fast.blocks.values()))
    project_rows: list[tuple[int, int]] = []  # (rows seen by a projection, rows of the level it should run at)
    height = 150
    for block in blocks:
        for resample in (block.resample0, block.resample1):
            level = block.level - min(resample.level_diff, 0)  # the parent's level when going up
            expected_rows = -(-height // 2**level)
            resample.project.register_forward_pre_hook(
                lambda module, args, rows=expected_rows: project_rows.append((args[0].shape[-2], rows))
            )
    x = torch.randn(1, 3, height, 190)
    with torch.no_grad():
        expected, actual, actual_plain = model(x), fast(x), plain(x)
    assert len(project_rows) == 2 * len(blocks)
    assert any(b.resample0.level_diff < 0 or b.resample1.level_diff < 0 for b in blocks)
    assert all(seen == rows for seen, rows in project_rows), project_rows
    for key in expected:
        _assert_close(actual[key], expected[key])
        _assert_close(actual_plain[key], expected[key])


def test_channels_last_and_inplace():
    model = _randomize_norms(torchspine.create_model("test_spinenet"))
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        expected = model(x)
        fast = optimize_for_inference(model, channels_last=True, inplace=True)
        assert fast is model and _num_bn(model) == 0
        assert fast.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
        actual = fast(x.contiguous(memory_format=torch.channels_last))
    for key in expected:
        _assert_close(actual[key], expected[key])


def test_fused_classifier_matches():
    model = _randomize_norms(torchspine.create_classifier("test_spinenet", num_classes=7))
    fast = optimize_for_inference(model)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        _assert_close(fast(x), model(x))


@pytest.mark.parametrize("backbone", ["test_spinenet", "test_spinenet_mobile"])
def test_fused_retinanet_matches(backbone):
    model = _randomize_norms(build_retinanet(backbone, num_classes=5, image_size=128))
    fast = optimize_for_inference(model)
    assert isinstance(fast.head.cls, FusedTower) and _num_bn(fast) == 0
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        expected = model.head(list(model.backbone(x).values()))
        actual = fast.head(list(fast.backbone(x).values()))
    for key in expected:
        _assert_close(actual[key], expected[key])


def test_fused_mask_rcnn_matches():
    model = _randomize_norms(build_mask_rcnn("test_spinenet", num_classes=4, image_size=128))
    fast = optimize_for_inference(model)
    assert isinstance(fast.rpn.head, FusedRPNHead) and _num_bn(fast) == 0
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 3, 128, 128, generator=g)
    box_feats = torch.randn(6, 32, 7, 7, generator=g)
    mask_feats = torch.randn(3, 32, 14, 14, generator=g)
    with torch.no_grad():
        for m, out in ((model, []), (fast, [])):
            feats = list(m.backbone(x).values())
            logits, deltas = m.rpn.head(feats)
            out += [*feats, *logits, *deltas]
            out += list(m.roi_heads.box_predictor(m.roi_heads.box_head(box_feats)))
            out.append(m.roi_heads.mask_predictor(m.roi_heads.mask_head(mask_feats)))
            if m is model:
                expected = out
            else:
                actual = out
        images = [torch.rand(3, 128, 128, generator=g)]
        dets_expected, dets_actual = model(images)[0], fast(images)[0]
    for a, e in zip(actual, expected, strict=True):
        _assert_close(a, e)
    _assert_same_detections(dets_actual, dets_expected)


def _assert_same_detections(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """The same scores, and each of the first half of the expected detections found among the actual ones (same
    label, box within 1e-3 px). A random-weight detector scores many boxes almost alike (0.2820, 0.2819, ...), so
    float rounding may swap neighbours in the ranking; the first half stays clear of the 100-detection cut."""
    assert len(expected["scores"]) > 0
    _assert_close(actual["scores"], expected["scores"])
    for box, label in zip(expected["boxes"][: len(expected["boxes"]) // 2], expected["labels"], strict=False):
        same = (actual["labels"] == label) & ((actual["boxes"] - box).abs().amax(dim=1) < 1e-3)
        assert same.any(), f"expected detection {label.item()} {box.tolist()} missing"


def test_fuse_needs_eval_mode():
    from torchspine.inference import fuse_batchnorm

    with pytest.raises(ValueError, match="eval mode"):
        fuse_batchnorm(torchspine.create_model("test_spinenet"))
