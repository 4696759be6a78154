"""ResNet-FPN baselines on the same detection heads, for the paper's SpineNet-vs-ResNet-FPN comparison.

torchvision's ResNet and FPN, with P6/P7 from P5 by stride-2 convs (``LastLevelP6P7``, as the official RetinaNet
baselines) and outputs renamed to ``p3..p7`` so the backbone meets the same contract as `SpineNet`.

The ResNet uses trainable BatchNorm: the paper trains its baselines from scratch with the same recipe as SpineNet
(synchronized BN). torchvision's ``resnet_fpn_backbone`` defaults to ``FrozenBatchNorm2d``, meant for fine-tuning
ImageNet weights; with random weights frozen BN is an identity and the ResNet would train without normalisation.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from torchspine.errors import UsageError
from torchspine.models.spinenet import FeatureInfo

RESNET_FPN_BACKBONES = {"resnet50_fpn": "resnet50", "resnet101_fpn": "resnet101", "resnet152_fpn": "resnet152"}


class ResNetFPN(nn.Module):
    """ResNet + FPN with 256-channel P3-P7, returning ``OrderedDict(p3..p7)`` and describing itself statically.

    Args:
        name: one of `RESNET_FPN_BACKBONES`.
        out_channels: FPN width.
    """

    def __init__(self, name: str, out_channels: int = 256) -> None:
        super().__init__()
        if name not in RESNET_FPN_BACKBONES:
            raise UsageError(f"unknown ResNet-FPN backbone {name!r}; expected one of {sorted(RESNET_FPN_BACKBONES)}")
        self.body = resnet_fpn_backbone(
            backbone_name=RESNET_FPN_BACKBONES[name],
            weights=None,
            trainable_layers=5,
            returned_layers=[2, 3, 4],
            norm_layer=nn.BatchNorm2d,
            extra_blocks=LastLevelP6P7(out_channels, out_channels),
        )
        self.out_channels = out_channels
        self.feature_info = tuple(FeatureInfo(f"p{lv}", lv, 2**lv, out_channels) for lv in range(3, 8))
        self.max_block_level = 7

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        feats = self.body(x)  # keys '0', '1', '2', 'p6', 'p7' for C3-C5 and the extra levels
        return OrderedDict((info.key, value) for info, value in zip(self.feature_info, feats.values(), strict=True))
