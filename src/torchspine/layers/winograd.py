"""Inference-only 3x3 convolutions as Winograd transforms (NNPACK) on CPU, for the large maps of detection heads.

A RetinaNet head is two thirds of the detector's multiply-adds, almost all of them in 3x3, stride-1, 256-channel
convolutions on the P3 and P4 maps, which oneDNN and TF's Eigen both run as direct or GEMM convolutions near the
CPU's peak. Winograd's minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR
2016) computes a 3x3 convolution with fewer multiplications; NNPACK, built into PyTorch's x86 and ARM wheels,
implements F(6x6, 3x3) (``torch._nnpack_spatial_convolution``; without NNPACK the layers run the plain ops).
Measured on a 2-core AVX2 CPU, 256 -> 256 channels: 0.5x oneDNN's time on an 80x80 map, 0.6x on 40x40; 256 -> 810
(the class predictor) 0.4x on 80x80. NNPACK transforms the filters on every call (about 5 ms for 256 x 256 x 3 x 3
here), so small maps stay on oneDNN: 2x slower at 20x20, 12x at 5x5. `WinogradConv` therefore picks per call by
the map's size (`min_pixels`).

The price is accuracy: Winograd's transforms lose about a decimal digit in float32, ~1.5e-5 relative per
convolution (max error over max output) against oneDNN's ~2e-6. That is why `optimize_for_inference` applies it
only on request (``winograd=True``); its default stays within 1e-5 of the unfused model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from torchspine.layers.fused import ConvAct, FusedResidual, activate_

__all__ = ["WinogradConv", "apply_winograd", "nnpack_available", "nnpack_conv3x3", "winograd_eligible"]

MIN_PIXELS = 32 * 32  # below this NNPACK's per-call filter transform outweighs its savings (see the module doc)


def nnpack_available() -> bool:
    """Whether this PyTorch build has NNPACK on this CPU."""
    return _NNPACK


# Read once, at import: torch.compile cannot trace the query, and the query also initialises NNPACK, which its
# convolution needs before the first call (it fails with "SpatialConvolution_updateOutput failed" otherwise).
_NNPACK = torch._nnpack_available()


def winograd_eligible(conv: nn.Module) -> bool:
    """Whether `conv` is what NNPACK computes: a plain 3x3 ``nn.Conv2d``, stride 1, no dilation or groups, zero
    padding 1 on every side (TF ``'SAME'`` at stride 1)."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding == (1, 1)
        and conv.padding_mode == "zeros"
    )


def _use_nnpack(x: Tensor) -> bool:
    if torch.jit.is_tracing() or torch.compiler.is_exporting():
        return False  # exported graphs get the standard convolution
    if x.requires_grad and torch.is_grad_enabled():
        return False  # PyTorch has no NNPACK weight gradient
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and _NNPACK


@torch.library.custom_op("torchspine::nnpack_conv3x3", mutates_args=())
def nnpack_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """A 3x3, stride-1, padding-1 convolution by NNPACK, as an operator ``torch.compile`` can place in its graphs
    (``torch._nnpack_spatial_convolution`` has no shape function of its own)."""
    # NNPACK reads NCHW-contiguous tensors only (weights are channels-last after optimize_for_inference on CPU).
    return torch._nnpack_spatial_convolution(x.contiguous(), weight.contiguous(), bias, [1, 1])


@nnpack_conv3x3.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty((x.shape[0], weight.shape[0], x.shape[2], x.shape[3]))


class WinogradConv(nn.Module):
    """``act(conv(x))`` through NNPACK's Winograd convolution when the map has at least `min_pixels` pixels, through
    `layer` (the module it replaces) otherwise.

    Args:
        layer: a `ConvAct` (with no explicit padding) or a plain ``nn.Conv2d``, whose convolution is
            `winograd_eligible`.
        min_pixels: smallest ``H * W`` that takes the Winograd path.
    """

    def __init__(self, layer: nn.Module, min_pixels: int = MIN_PIXELS) -> None:
        super().__init__()
        conv, act = (layer.conv, layer.act) if isinstance(layer, ConvAct) else (layer, nn.Identity())
        if not winograd_eligible(conv):
            raise ValueError(f"WinogradConv needs a 3x3, stride-1, padding-1 nn.Conv2d, got {conv}")
        self.layer = layer
        self.act = act
        self.min_pixels = min_pixels

    def forward(self, x: Tensor) -> Tensor:
        if not _use_nnpack(x) or x.shape[-2] * x.shape[-1] < self.min_pixels:  # no size guard in traced graphs
            return self.layer(x)
        conv = self.layer.conv if isinstance(self.layer, ConvAct) else self.layer
        return activate_(self.act, nnpack_conv3x3(x, conv.weight, conv.bias))

    def extra_repr(self) -> str:
        return f"min_pixels={self.min_pixels}"


def _wrappable(module: nn.Module) -> bool:
    if isinstance(module, ConvAct):
        return type(module.pad) is nn.Identity and winograd_eligible(module.conv)
    return winograd_eligible(module)


def apply_winograd(model: nn.Module, min_pixels: int = MIN_PIXELS) -> nn.Module:
    """Wrap every eligible 3x3 convolution of an inference model (after `torchspine.optimize_for_inference`) in
    `WinogradConv`, in place; returns `model`. A residual block's last convolution, which adds the shortcut inside
    oneDNN (`FusedResidual`), is left as it is."""
    for name, child in model.named_children():
        if isinstance(model, FusedResidual) and name == "last":
            continue
        if _wrappable(child):
            setattr(model, name, WinogradConv(child, min_pixels))
        else:
            apply_winograd(child, min_pixels)
    return model
