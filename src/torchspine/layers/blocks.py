"""Residual, bottleneck and MBConv blocks of SpineNet and SpineNet-Mobile.

Follow Model Garden ``official/vision/modeling/layers/nn_blocks.py`` (``ResidualBlock``, ``BottleneckBlock``,
``InvertedBottleneckBlock``) and tensorflow/tpu ``nn_blocks.py``: no conv biases, no squeeze-excitation in the
ResNet blocks, BN gammas initialised to one, stochastic depth on the residual branch before the addition.

The optional DropBlock of the residual and bottleneck blocks sits where tensorflow/tpu's ``residual_block`` /
``bottleneck_block`` apply theirs: after every BatchNorm (+ activation) and on the shortcut (identity or projection);
off by default, as in both official SpineNets (see `torchspine.layers.drop`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from torchspine.layers.bn_act import bn_act, supported
from torchspine.layers.conv import ConvNormAct, NormLayer
from torchspine.layers.drop import DropBlock, DropPath
from torchspine.layers.padding import PadMode

ActLayer = Callable[[], nn.Module]


def _projection(
    in_channels: int, out_channels: int, stride: int, norm_layer: NormLayer, pad_mode: PadMode
) -> ConvNormAct | None:
    """The 1x1 conv + BN (no activation) shortcut, when the identity does not fit; None otherwise."""
    if in_channels == out_channels and stride == 1:
        return None
    return ConvNormAct(
        in_channels, out_channels, 1, stride=stride, norm_layer=norm_layer, act_layer=None, pad_mode=pad_mode
    )


def _fused_residual_end(last: ConvNormAct, y: Tensor, shortcut: Tensor, drop_path: DropPath, act: nn.Module) -> Tensor:
    """``act(drop_path(last(y)) + shortcut)`` through `bn_act`: the block's sum is recomputed in backward, not kept."""
    y = last.conv(last.pad(y))
    return bn_act(y, last.bn, act, residual=shortcut, scale=drop_path.factor(y))


def _dropblock(keep_prob: float | None, size: int) -> DropBlock | None:
    """One stateless DropBlock shared by all positions of a block (fresh masks per call), or None when off."""
    return None if keep_prob is None else DropBlock(keep_prob, size)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 expansion) residual block; outputs ``4 * width`` channels.

    Only the first stem block projects its shortcut (64 -> 4C); every scale-permuted block receives its input
    already at ``4 * width`` from the resampling paths.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        *,
        norm_layer: NormLayer,
        act_layer: ActLayer,
        stride: int = 1,
        drop_path_rate: float = 0.0,
        pad_mode: PadMode = "symmetric",
        dropblock_keep_prob: float | None = None,
        dropblock_size: int = 7,
    ) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.shortcut = _projection(in_channels, out_channels, stride, norm_layer, pad_mode)
        self.conv1 = ConvNormAct(in_channels, width, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.conv2 = ConvNormAct(
            width, width, 3, stride=stride, norm_layer=norm_layer, act_layer=act_layer, pad_mode=pad_mode
        )
        self.conv3 = ConvNormAct(width, out_channels, 1, norm_layer=norm_layer, act_layer=None)
        self.drop_path = DropPath(drop_path_rate)
        self.act = act_layer()
        self.dropblock = _dropblock(dropblock_keep_prob, dropblock_size)
        self.fused_bn_act = False  # training: see `torchspine.layers.bn_act`

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        db = self.dropblock
        if self.fused_bn_act and db is None and supported(self.conv3.bn, self.act):
            return _fused_residual_end(self.conv3, self.conv2(self.conv1(x)), shortcut, self.drop_path, self.act)
        if db is None:
            y = self.conv3(self.conv2(self.conv1(x)))
        else:
            shortcut = db(shortcut)
            y = db(self.conv3(db(self.conv2(db(self.conv1(x))))))
        return self.act(self.drop_path(y) + shortcut)


class ResidualBlock(nn.Module):
    """3x3 -> 3x3 residual block (ResNet "basic" block); outputs ``width`` channels."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        width: int,
        *,
        norm_layer: NormLayer,
        act_layer: ActLayer,
        stride: int = 1,
        drop_path_rate: float = 0.0,
        pad_mode: PadMode = "symmetric",
        dropblock_keep_prob: float | None = None,
        dropblock_size: int = 7,
    ) -> None:
        super().__init__()
        self.shortcut = _projection(in_channels, width, stride, norm_layer, pad_mode)
        self.conv1 = ConvNormAct(
            in_channels, width, 3, stride=stride, norm_layer=norm_layer, act_layer=act_layer, pad_mode=pad_mode
        )
        self.conv2 = ConvNormAct(width, width, 3, norm_layer=norm_layer, act_layer=None)
        self.drop_path = DropPath(drop_path_rate)
        self.act = act_layer()
        self.dropblock = _dropblock(dropblock_keep_prob, dropblock_size)
        self.fused_bn_act = False  # training: see `torchspine.layers.bn_act`

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        db = self.dropblock
        if self.fused_bn_act and db is None and supported(self.conv2.bn, self.act):
            return _fused_residual_end(self.conv2, self.conv1(x), shortcut, self.drop_path, self.act)
        if db is None:
            y = self.conv2(self.conv1(x))
        else:
            shortcut = db(shortcut)
            y = db(self.conv2(db(self.conv1(x))))
        return self.act(self.drop_path(y) + shortcut)


class SqueezeExcite(nn.Module):
    """Squeeze-excitation with biased 1x1 convs: ``x * gate(expand(act(reduce(mean(x)))))``.

    Model Garden's SpineNet-Mobile uses a ReLU inside and its hard-sigmoid (``relu6(x + 3) * 0.16667``) as gate.
    """

    def __init__(self, channels: int, reduced: int, *, act_layer: ActLayer, gate_layer: ActLayer) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = act_layer()
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = gate_layer()

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class MBConvBlock(nn.Module):
    """Inverted bottleneck: 1x1 expand -> 3x3 depthwise -> SE -> 1x1 project, residual when shapes allow.

    As Model Garden's ``InvertedBottleneckBlock``: the SE width is ``max(1, int(in_channels * se_ratio))`` from the
    *un-expanded* input, and there is no activation after the residual addition.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        norm_layer: NormLayer,
        act_layer: ActLayer,
        stride: int = 1,
        expand_ratio: int = 6,
        se_ratio: float = 0.2,
        se_act_layer: ActLayer = nn.ReLU,
        se_gate_layer: ActLayer = nn.Sigmoid,
        drop_path_rate: float = 0.0,
        pad_mode: PadMode = "same",
    ) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        self.expand = (
            ConvNormAct(in_channels, mid, 1, norm_layer=norm_layer, act_layer=act_layer)
            if expand_ratio > 1
            else nn.Identity()
        )
        self.depthwise = ConvNormAct(
            mid, mid, 3, stride=stride, groups=mid, norm_layer=norm_layer, act_layer=act_layer, pad_mode=pad_mode
        )
        self.se = (
            SqueezeExcite(mid, max(1, int(in_channels * se_ratio)), act_layer=se_act_layer, gate_layer=se_gate_layer)
            if 0 < se_ratio <= 1
            else nn.Identity()
        )
        self.project = ConvNormAct(mid, out_channels, 1, norm_layer=norm_layer, act_layer=None)
        self.has_residual = in_channels == out_channels and stride == 1
        self.drop_path = DropPath(drop_path_rate) if self.has_residual else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return self.drop_path(y) + x if self.has_residual else y
