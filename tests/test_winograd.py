"""Winograd head convolutions (`optimize_for_inference(winograd=True)`, NNPACK): the right outputs, and taken only
where they should be (large maps, no autograd, not in exported graphs)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from test_inference import _randomize_norms
from torchspine.inference import optimize_for_inference
from torchspine.layers.fused import ConvAct
from torchspine.layers.winograd import MIN_PIXELS, WinogradConv, nnpack_available, winograd_eligible
from torchspine.models.detection.mask_rcnn import build_mask_rcnn
from torchspine.models.detection.retinanet import build_retinanet

RTOL = 1e-4  # Winograd F(6x6, 3x3) in float32 is ~1.5e-5 relative per convolution; oneDNN's direct ~2e-6
OP = "torchspine::nnpack_conv3x3"


def _calls(fn):
    """``fn()``'s result and how many times it ran the NNPACK convolution."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = fn()
    return out, sum(e.count for e in prof.key_averages() if e.key == OP)


def _rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.to(actual.dtype)
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def test_nnpack_is_available():
    # The x86-64 and ARM Linux wheels CI installs include NNPACK; every test below would otherwise test the fallback.
    assert nnpack_available()


@pytest.mark.parametrize("act", [nn.SiLU(), nn.ReLU(), nn.Identity()], ids=["silu", "relu", "none"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_winograd_conv_matches_float64(act, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(48, 40, 3, padding=1)
    x = torch.randn(2, 48, 33, 40)  # odd sizes, batch 2, 1320 pixels >= MIN_PIXELS
    if channels_last:  # what optimize_for_inference's CPU default hands the layer
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    layer = WinogradConv(ConvAct(conv, act))
    with torch.inference_mode():
        out, calls = _calls(lambda: layer(x))
    expected = act(F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1))
    assert calls == 1
    assert out.shape == expected.shape
    assert _rel_err(out, expected) < RTOL


def test_small_maps_autograd_and_tracing_take_the_plain_convolution():
    torch.manual_seed(0)
    inner = ConvAct(nn.Conv2d(8, 8, 3, padding=1), nn.SiLU())
    layer = WinogradConv(inner)
    small = torch.randn(1, 8, 16, 16)  # 256 pixels < MIN_PIXELS
    assert 16 * 16 < MIN_PIXELS <= 32 * 32
    with torch.inference_mode():
        out, calls = _calls(lambda: layer(small))
        assert calls == 0 and torch.equal(out, inner(small))
    big = torch.randn(1, 8, 32, 32, requires_grad=True)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    out, calls = _calls(lambda: WinogradConv(conv)(big))
    out.sum().backward()  # autograd records: PyTorch has no NNPACK weight gradient, so the plain conv runs
    assert calls == 0 and big.grad is not None and conv.weight.grad is not None
    with torch.no_grad():
        traced = torch.jit.trace(layer, big.detach())
    assert "nnpack" not in str(traced.inlined_graph)


def test_eligibility():
    assert winograd_eligible(nn.Conv2d(4, 4, 3, padding=1))
    assert not winograd_eligible(nn.Conv2d(4, 4, 3, padding=1, stride=2))
    assert not winograd_eligible(nn.Conv2d(4, 4, 3, padding=2, dilation=2))
    assert not winograd_eligible(nn.Conv2d(4, 4, 3, padding=1, groups=2))
    assert not winograd_eligible(nn.Conv2d(4, 4, 1))
    assert not winograd_eligible(nn.Conv2d(4, 4, 3, padding=0))
    with pytest.raises(ValueError, match="3x3, stride-1, padding-1"):
        WinogradConv(nn.Conv2d(4, 4, 1))


def test_retinanet_heads_run_winograd_on_large_levels():
    size = 256  # P3 is 32x32 = MIN_PIXELS: Winograd there; P4-P7 (16x16 and less) stay on the direct convolution
    model = _randomize_norms(build_retinanet("test_spinenet", num_classes=5, image_size=size))
    with torch.no_grad():
        model.head.cls.predict.bias.zero_()  # scores near 0.5, not the prior's 0.01: detections pass the threshold
    fast = optimize_for_inference(model, winograd=True)
    wrapped = [name for name, m in fast.named_modules() if isinstance(m, WinogradConv)]
    assert wrapped and all(name.startswith("head.") for name in wrapped), wrapped  # heads only
    per_level = sum(isinstance(m, WinogradConv) for m in [*fast.head.cls.levels[0], fast.head.cls.predict])
    assert per_level == len(fast.head.cls.levels[0]) + 1  # every tower conv and the predictor
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model.head(list(model.backbone(x).values()))
        actual, calls = _calls(lambda: fast.head(list(fast.backbone(x).values())))
    assert calls == 2 * per_level  # class and box towers, P3 only
    for key in expected:
        assert _rel_err(actual[key], expected[key]) < RTOL, key
    images = [torch.rand(3, size, size, generator=torch.Generator().manual_seed(3))]
    with torch.no_grad():
        det_expected, det_actual = model(images)[0], fast(images)[0]
    assert len(det_expected["scores"]) > 0
    assert _rel_err(det_actual["scores"], det_expected["scores"]) < RTOL
    # A random detector scores many boxes almost alike, so rounding may swap neighbours in the ranking: each of the
    # ten best expected detections must be among the actual ones (same label, box within 1e-3 px).
    for box, label in zip(det_expected["boxes"][:10], det_expected["labels"][:10], strict=False):
        same = (det_actual["labels"] == label) & ((det_actual["boxes"] - box).abs().amax(dim=1) < 1e-3)
        assert same.any(), f"expected detection {label.item()} {box.tolist()} missing"


def test_mask_rcnn_rpn_head_runs_winograd():
    model = _randomize_norms(build_mask_rcnn("test_spinenet", num_classes=4, image_size=256))
    fast = optimize_for_inference(model, winograd=True)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        feats = list(model.backbone(x).values())
        expected = model.rpn.head(feats)
        actual, calls = _calls(lambda: fast.rpn.head(list(fast.backbone(x).values())))
    assert calls >= 1
    for a_list, e_list in zip(actual, expected, strict=True):
        for a, e in zip(a_list, e_list, strict=True):
            assert _rel_err(a, e) < RTOL


@pytest.mark.slow
def test_torch_compile_places_the_nnpack_op():
    torch.manual_seed(0)
    layer = WinogradConv(ConvAct(nn.Conv2d(16, 24, 3, padding=1), nn.SiLU())).eval()
    x = torch.randn(1, 16, 40, 40)
    compiled = torch.compile(layer, fullgraph=True)  # fails without the op's shape function
    with torch.inference_mode():
        eager = layer(x)
        out, calls = _calls(lambda: compiled(x))
    assert calls >= 1  # the profiler lists a compiled custom op under more than one dispatch key
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
