"""Convolution + BatchNorm + activation, with either TF padding rule for strided convolutions."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from torchspine.layers.bn_act import bn_act, supported
from torchspine.layers.padding import PadMode, PadSame

NormLayer = Callable[[int], nn.Module]
"""Builds a normalisation layer for a channel count, e.g. ``partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)``."""


class ConvNormAct(nn.Module):
    """``act(norm(conv(x)))`` with a bias-free convolution, as every SpineNet backbone conv is.

    Stride-1 convolutions with odd kernels pad ``k // 2`` on both sides, which is what TF ``'SAME'`` does too.
    Strided ones follow `pad_mode` (see `PadMode`): the two official implementations differ only there.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square, odd kernel size.
        norm_layer: normalisation factory.
        act_layer: activation factory, or None for a linear output (the last BN of a block or resampling path).
        stride: convolution stride.
        groups: 1 for a dense conv, ``in_channels`` for a depthwise one.
        pad_mode: padding rule for ``stride > 1``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        norm_layer: NormLayer,
        act_layer: Callable[[], nn.Module] | None,
        stride: int = 1,
        groups: int = 1,
        pad_mode: PadMode = "symmetric",
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        dynamic = stride > 1 and pad_mode == "same" and kernel_size > 1
        self.pad = PadSame(kernel_size, stride) if dynamic else nn.Identity()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=0 if dynamic else kernel_size // 2,
            groups=groups,
            bias=False,
        )
        self.bn = norm_layer(out_channels)
        self.act = act_layer() if act_layer is not None else nn.Identity()
        self.fused_bn_act = False  # training: keep one map for backward (`torchspine.layers.bn_act`)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(self.pad(x))
        if self.fused_bn_act and supported(self.bn, self.act):
            return bn_act(x, self.bn, self.act)
        return self.act(self.bn(x))
