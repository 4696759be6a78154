"""Cross-scale resampling of a parent feature to a target block's level and input width.

SpineNet (Du et al., 2020, Fig. 5; Model Garden ``_resample_with_alpha`` / ``_resample_with_sepconv``,
tensorflow/tpu ``resample_with_alpha``):

* ResNet family: 1x1 conv to ``alpha * C_parent`` + BN + act; to go down, a 3x3/2 conv + BN + act followed by
  max-pools; to go up, nearest-neighbour repetition; then a 1x1 conv to the target's input width + BN (no act).
* Mobile family: no 1x1 reduction; one depthwise 3x3/2 conv + BN + act per level down; nearest up; 1x1 + BN.

The two official implementations pool differently after the strided conv: Model Garden keeps applying 3x3/2
pools (a level ratio of 8 takes two), tensorflow/tpu applies one pool, 3x3/2 for ratio 4 and 5x5/4 for ratio 8.

Sizes: a level-L feature of an H x W input is ``ceil(H / 2**L) x ceil(W / 2**L)``; that is what strided
``'SAME'``/symmetric convs and pools produce, so inputs that are multiples of ``2**max_level`` follow the official
code exactly. For other inputs, upsampling by an integer factor can overshoot the target (a 600-pixel side has
level 5 of 19 and level 6 of 10 pixels); the result is then resized, nearest-neighbour, to the target block's actual
size, as tensorflow/tpu does with ``resize_nearest_neighbor`` for widths that do not divide.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from torchspine.layers.conv import ConvNormAct, NormLayer
from torchspine.layers.padding import MaxPool2dSame, PadMode

PoolMode = Literal["chain", "single"]
"""Down-sampling beyond the strided conv: ``"chain"`` of 3x3/2 pools (Model Garden) or one ``"single"`` pool
(tensorflow/tpu: 3x3/2 for a level ratio of 4, 5x5 with stride ratio/2 above)."""


def _pools(level_diff: int, pool_mode: PoolMode) -> nn.Module:
    """Max-pools that follow the 3x3/2 conv when going down `level_diff` levels."""
    if level_diff <= 1:
        return nn.Identity()
    if pool_mode == "chain":
        return nn.Sequential(*[MaxPool2dSame(3, 2) for _ in range(level_diff - 1)])
    ratio = 2**level_diff
    return MaxPool2dSame(3 if ratio <= 4 else 5, ratio // 2)


def fit_size(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-resize `x` to `size` when it differs (floor index mapping, as TF1 ``resize_nearest_neighbor``).

    For inputs that are multiples of ``2**max_level`` the sizes are equal expressions even when traced
    symbolically, so export sees no branch.
    """
    if x.shape[-2] != size[0] or x.shape[-1] != size[1]:
        x = F.interpolate(x, size=size, mode="nearest")
    return x


def upsample_nearest(x: Tensor, factor: int) -> Tensor:
    """Repeat every pixel ``factor x factor`` times (TF ``nearest_upsampling``).

    Given as an output size rather than a scale factor: the same kernel and indices (the factor is a power of two,
    so ``in / out`` is exact), but the size stays an integer expression when traced for export.
    """
    if factor == 1:
        return x
    return F.interpolate(x, size=(x.shape[-2] * factor, x.shape[-1] * factor), mode="nearest")


def resize_to(x: Tensor, level_diff: int, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour up-sampling by ``2**-level_diff`` when going up, then `fit_size` to the target's `size`.

    Only selects pixels, so it commutes with any per-pixel layer (the 1x1 projection with BN folded in).
    """
    if level_diff < 0:
        x = upsample_nearest(x, 2**-level_diff)
    return fit_size(x, size)


class Resample(nn.Module):
    """Bring a parent feature to a target block: ``alpha``-reduced 1x1, spatial resampling, 1x1 to the target.

    Args:
        in_channels: parent channels.
        mid_channels: width of the path, ``int(C_parent * alpha)``.
        out_channels: the target block's input width.
        level_diff: target level minus parent level.
        norm_layer: normalisation factory.
        act_layer: activation factory.
        pad_mode: padding of the strided 3x3 conv.
        pool_mode: pooling rule after it.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        level_diff: int,
        *,
        norm_layer: NormLayer,
        act_layer: Callable[[], nn.Module],
        pad_mode: PadMode,
        pool_mode: PoolMode,
    ) -> None:
        super().__init__()
        self.level_diff = level_diff
        self.reduce = ConvNormAct(in_channels, mid_channels, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.downsample: nn.Module = nn.Identity()
        if level_diff > 0:
            self.downsample = nn.Sequential(
                ConvNormAct(
                    mid_channels,
                    mid_channels,
                    3,
                    stride=2,
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                    pad_mode=pad_mode,
                ),
                _pools(level_diff, pool_mode),
            )
        self.project = ConvNormAct(mid_channels, out_channels, 1, norm_layer=norm_layer, act_layer=None)

    def pre_project(self, x: Tensor) -> Tensor:
        """Everything before the spatial resize and the projection: the 1x1 reduction and any down-sampling."""
        return self.downsample(self.reduce(x))

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.project(resize_to(self.pre_project(x), self.level_diff, size))


class ResampleSepConv(nn.Module):
    """SpineNet-Mobile resampling: depthwise 3x3/2 convs (one per level) or nearest up, then 1x1 + BN.

    Args:
        in_channels: parent channels (kept through the depthwise convs).
        out_channels: the target block's input width.
        level_diff: target level minus parent level.
        norm_layer: normalisation factory.
        act_layer: activation factory.
        pad_mode: padding of the strided depthwise convs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        level_diff: int,
        *,
        norm_layer: NormLayer,
        act_layer: Callable[[], nn.Module],
        pad_mode: PadMode,
    ) -> None:
        super().__init__()
        self.level_diff = level_diff
        self.downsample = nn.Sequential(
            *[
                ConvNormAct(
                    in_channels,
                    in_channels,
                    3,
                    stride=2,
                    groups=in_channels,
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                    pad_mode=pad_mode,
                )
                for _ in range(max(level_diff, 0))
            ]
        )
        self.project = ConvNormAct(in_channels, out_channels, 1, norm_layer=norm_layer, act_layer=None)

    def pre_project(self, x: Tensor) -> Tensor:
        """Everything before the spatial resize and the projection: the depthwise down-sampling convs."""
        return self.downsample(x)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.project(resize_to(self.pre_project(x), self.level_diff, size))
