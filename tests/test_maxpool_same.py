"""`MaxPool2dSame` equals TF ``'SAME'`` pooling (explicit -inf padding) exactly, on its fast path too."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchspine.layers.padding import MaxPool2dSame, pad_same


def _reference(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    return F.max_pool2d(pad_same(x, kernel, stride, value=-torch.inf), kernel, stride)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("kernel, stride", [(3, 2), (5, 4), (3, 1), (5, 8)])
@pytest.mark.parametrize("size", [(32, 32), (31, 33), (40, 24), (7, 9), (1, 1)])
def test_equals_the_padded_pool(size, kernel, stride, channels_last):
    x = torch.randn(2, 5, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    pool = MaxPool2dSame(kernel, stride)
    expected = _reference(x, kernel, stride)
    actual = pool(x)
    assert actual.shape == expected.shape and torch.equal(actual, expected)
    assert actual.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    # gradients flow to the same input positions (max-pool's argmax)
    xg = x.clone().requires_grad_()
    pool(xg).sum().backward()
    xr = x.clone().requires_grad_()
    _reference(xr, kernel, stride).sum().backward()
    assert torch.equal(xg.grad, xr.grad)


def test_symbolic_export_keeps_the_explicit_padding():
    pool = MaxPool2dSame(3, 2)
    x = torch.randn(1, 4, 32, 32)
    dim = torch.export.Dim("side", min=2, max=512)
    exported = torch.export.export(pool, (x,), dynamic_shapes={"x": {2: 2 * dim, 3: 2 * dim}})
    targets = [str(n.target) for n in exported.graph.nodes if n.op == "call_function"]
    assert any("pad" in t for t in targets), targets
    for side in (32, 64):
        y = torch.randn(1, 4, side, side)
        assert torch.equal(exported.module()(y), _reference(y, 3, 2))
