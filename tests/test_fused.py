"""oneDNN-fused inference layers (`torchspine.layers.fused`) equal the plain operations, are what the fast path
runs on CPU, and stay out of traced and exported graphs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import torchspine
from torchspine.inference import fuse_activations, fuse_batchnorm
from torchspine.layers.blocks import BottleneckBlock, ResidualBlock
from torchspine.layers.conv import ConvNormAct
from torchspine.layers.fused import ConvAct, FusedResidual
from torchspine.layers.padding import PadSame

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


class _OpLog(TorchDispatchMode):
    """Records the name of every operator that runs (``aten.convolution.default``, ``mkldnn._convolution_...``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))

    def count(self, fragment: str) -> int:
        return sum(fragment in op for op in self.ops)


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def _randomize(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize(
    "act", [nn.SiLU(), nn.ReLU(), nn.Sigmoid(), nn.Hardswish(), nn.Identity()], ids=lambda a: type(a).__name__
)
@pytest.mark.parametrize("stride, groups", [(1, 1), (2, 1), (2, 16)], ids=["dense", "strided-same", "depthwise"])
def test_conv_act_runs_one_onednn_call_and_equals_the_plain_ops(act, stride, groups, channels_last):
    conv = nn.Conv2d(16, 16, 3, stride=stride, padding=0 if stride > 1 else 1, groups=groups, bias=True)
    pad = PadSame(3, stride) if stride > 1 else None
    layer = ConvAct(conv, act, pad).eval()
    x = torch.randn(2, 16, 20, 20)
    if channels_last:
        layer, x = layer.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = act(conv(pad(x) if pad is not None else x))
        with _OpLog() as log:
            actual = layer(x)
    assert log.count("_convolution_pointwise") == 1 and log.count("aten.convolution") == 0, log.ops
    assert actual.shape == expected.shape
    assert _relative_error(actual, expected) < 1e-5


@pytest.mark.parametrize("act", [nn.ReLU, nn.SiLU], ids=["relu", "swish"])
@pytest.mark.parametrize("block_type, stride", [(BottleneckBlock, 1), (BottleneckBlock, 2), (ResidualBlock, 1)])
def test_residual_blocks_add_the_shortcut_inside_the_last_convolution(block_type, stride, act):
    norm = nn.BatchNorm2d
    block = block_type(32, 16, norm_layer=norm, act_layer=act, stride=stride, pad_mode="same")
    block = _randomize(block)
    fused = fuse_activations(fuse_batchnorm(nn.Sequential(copy.deepcopy(block)).eval()))[0]
    assert isinstance(fused, FusedResidual)
    x = torch.randn(1, 32, 16, 16)
    with torch.inference_mode():
        expected = block(x)
        with _OpLog() as log:
            actual = fused(x)
    convs = 3 if block_type is BottleneckBlock else 2
    convs += block.shortcut is not None
    assert log.count("_convolution_pointwise") == convs and log.count("aten.convolution") == 0, log.ops
    # ReLU after the addition is fused too; swish runs separately (oneDNN's binary post-op takes only ReLU).
    assert log.count("aten.add") == 0
    assert log.count("aten.silu") == (1 if act is nn.SiLU else 0)
    assert _relative_error(actual, expected) < 1e-5


def test_the_fast_path_runs_every_spinenet_convolution_through_onednn():
    model = torchspine.create_model("spinenet49", filter_size_scale=0.25, endpoints_num_filters=32)
    fast = torchspine.optimize_for_inference(_randomize(model))
    assert not any(isinstance(m, (ConvNormAct, BottleneckBlock, ResidualBlock)) for m in fast.modules())
    num_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        expected = model(x)
        with _OpLog() as log:
            actual = fast(x)
    assert log.count("_convolution_pointwise") == num_convs and log.count("aten.convolution") == 0
    assert log.count("aten.native_batch_norm") == log.count("_native_batch_norm_legit") == 0
    # Each merge adds inside a projection's convolution unless both parents come from below (up-sampled), and
    # every activation after an addition runs in place.
    num_blocks = len(fast.blocks)
    both_up = sum(b.resample0.level_diff < 0 and b.resample1.level_diff < 0 for b in fast.blocks.values())
    num_extra = sum(len(b.merged) for b in fast.blocks.values())
    assert log.count("_convolution_pointwise.binary") > num_blocks
    assert log.count("aten.add.Tensor") == both_up + num_extra
    assert log.count("aten.silu.default") == 0 and log.count("aten.silu_.default") > 0
    for key in expected:
        assert _relative_error(actual[key], expected[key]) < 1e-5, key


def test_traced_and_exported_graphs_hold_the_plain_operations():
    model = torchspine.create_model("test_spinenet")
    fast = torchspine.optimize_for_inference(_randomize(model))
    x = torch.randn(1, 3, 128, 128)
    traced = torch.jit.trace(fast, x, strict=False)
    assert "mkldnn" not in str(traced.inlined_graph) and "aten::_convolution" in str(traced.inlined_graph)
    exported = torch.export.export(fast, (x,))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert not any("mkldnn" in t for t in targets) and "aten.conv2d.default" in targets, targets
    with torch.inference_mode():
        expected = fast(x)
    actual = exported.module()(x)
    for key in expected:
        assert _relative_error(actual[key], expected[key]) < 1e-5, key


def test_the_fast_path_compiles_without_graph_breaks():
    """torch.compile traces the whole fast-path model in one graph (an earlier version graph-broke in every layer on
    the oneDNN availability query, and compiling made inference slower instead of faster)."""
    fast = torchspine.optimize_for_inference(torchspine.create_model("test_spinenet"))
    with torch.inference_mode():
        explained = torch._dynamo.explain(fast)(torch.randn(1, 3, 128, 128))
    assert explained.graph_break_count == 0, explained.break_reasons
