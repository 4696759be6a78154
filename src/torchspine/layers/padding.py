"""TensorFlow ``'SAME'`` padding for strided convolutions and max-pools.

TF pads ``'SAME'`` layers by ``max((ceil(n / s) - 1) * s + k - n, 0)`` pixels per dimension, the smaller half
*before*. For a stride-2 layer on an even input that is asymmetric (3x3: 0 before, 1 after; 7x7: 2 before,
3 after), which no static PyTorch ``padding=`` reproduces, so the padding is computed from the input size at run
time, as timm's ``padding.py`` does for its ``tf_*`` models. Max-pools pad with -inf, as TF does.

The amounts are written so that ``torch.export`` / ONNX export can trace them symbolically: no ``max`` and no
branch on the input size when ``kernel >= stride`` (every SpineNet conv and pool but tensorflow/tpu's 5x5 pools of
stride 8 and more), and for inputs that are multiples of the stride they simplify to constants, so one exported
graph serves every input size that is a multiple of ``2**max_level``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PadMode = Literal["same", "symmetric"]
"""How strided convolutions pad: ``"same"`` is TF ``'SAME'`` (Model Garden); ``"symmetric"`` pads ``(k - 1) // 2``
on both sides, i.e. PyTorch's usual ``padding=k // 2`` (tensorflow/tpu's ``conv2d_fixed_padding``)."""


def same_pad_amount(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TF ``'SAME'`` for one spatial dimension of length `size` (an int or a SymInt).

    TF's ``max((ceil(size / stride) - 1) * stride + kernel - size, 0)`` equals ``(-size) mod stride + kernel -
    stride`` clamped at 0, and the clamp is needed only when ``kernel < stride``.
    """
    total = (-size) % stride + kernel - stride
    if kernel < stride:
        total = torch.sym_max(total, 0)
    return total // 2, total - total // 2


def pad_same(x: Tensor, kernel: int, stride: int, value: float = 0.0) -> Tensor:
    """Pad an NCHW tensor as TF ``'SAME'`` would before a `kernel` x `kernel` window with `stride`."""
    top, bottom = same_pad_amount(x.shape[-2], kernel, stride)
    left, right = same_pad_amount(x.shape[-1], kernel, stride)
    pads = (left, right, top, bottom)
    # Skip the copy when nothing is padded; symbolic amounts (export) always pad, which is exact for zero too.
    if any(not isinstance(p, int) or p for p in pads):
        x = F.pad(x, pads, value=value)
    return x


class PadSame(nn.Module):
    """Zero-padding module for a TF-``'SAME'`` convolution that follows it with ``padding=0``."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return pad_same(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class MaxPool2dSame(nn.Module):
    """Max-pool with TF ``'SAME'`` padding (-inf padding, asymmetric on even inputs).

    ``nn.MaxPool2d(3, 2, padding=1)`` pads both sides and so shifts the sampling grid by one pixel against TF on
    even inputs; both official SpineNet implementations use ``'SAME'`` pools.

    When TF pads only after (every SpineNet pool on an input that is a multiple of the stride), a ``ceil_mode``
    pool visits the same windows, clipped at the border, without the -inf copy; on CPU it also runs channels-last,
    where PyTorch's max-pool is vectorised over channels (the NCHW kernel is several times slower on the stem's
    64 x 320 x 320 map). Both give exactly the padded pool's values. Symbolic shapes (export, ``torch.compile``)
    and tracing keep the explicit padding, which traces for every input size.
    """

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.kernel_size, self.stride
        h, w = x.shape[-2], x.shape[-1]
        if (
            isinstance(h, int)
            and isinstance(w, int)
            and same_pad_amount(h, k, s)[0] == same_pad_amount(w, k, s)[0] == 0
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
        ):
            if x.device.type == "cpu" and x.dim() == 4 and not x.is_contiguous(memory_format=torch.channels_last):
                nhwc = x.contiguous(memory_format=torch.channels_last)
                return F.max_pool2d(nhwc, k, s, ceil_mode=True).contiguous()
            return F.max_pool2d(x, k, s, ceil_mode=True)
        x = pad_same(x, k, s, value=-torch.inf)
        return F.max_pool2d(x, k, s)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"
