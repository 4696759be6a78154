"""ResNet-FPN baselines on the same detection heads, for the paper's SpineNet-vs-ResNet-FPN comparison.

torchvision's ResNet and FPN, with P6/P7 from P5 by stride-2 convs (``LastLevelP6P7``, as the official RetinaNet
baselines) and outputs renamed to ``p3..p7`` so the backbone meets the same contract as `SpineNet`.

The ResNet uses trainable BatchNorm: the paper trains its baselines from scratch with the same recipe as SpineNet
(synchronized BN), with the recipe's epsilon and momentum when given. The FPN convs have no BatchNorm (torchvision's
FPN; tensorflow/tpu's FPN defaults to ``use_batch_norm: True``, ``configs/detection_config.py``), so the baselines are
a derived recipe, not an official one. torchvision's ``resnet_fpn_backbone`` defaults to ``FrozenBatchNorm2d``,
meant for fine-tuning ImageNet weights; with random weights frozen BN is an identity and the ResNet would train
without normalisation.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

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
        norm_eps: BatchNorm epsilon of the ResNet (and, through the ``norm_eps`` attribute, of the detector's
            heads); None keeps PyTorch's default (1e-5) and lets the heads use theirs.
        norm_momentum: BatchNorm momentum (PyTorch convention); None keeps PyTorch's default (0.1).
    """

    def __init__(
        self,
        name: str,
        out_channels: int = 256,
        *,
        norm_eps: float | None = None,
        norm_momentum: float | None = None,
    ) -> None:
        super().__init__()
        if name not in RESNET_FPN_BACKBONES:
            raise UsageError(f"unknown ResNet-FPN backbone {name!r}; expected one of {sorted(RESNET_FPN_BACKBONES)}")
        self.body = resnet_fpn_backbone(
            backbone_name=RESNET_FPN_BACKBONES[name],
            weights=None,
            trainable_layers=5,
            returned_layers=[2, 3, 4],
            norm_layer=partial(
                nn.BatchNorm2d,
                eps=1e-5 if norm_eps is None else norm_eps,
                momentum=0.1 if norm_momentum is None else norm_momentum,
            ),
            extra_blocks=LastLevelP6P7(out_channels, out_channels),
        )
        self.out_channels = out_channels
        # The detector builders read these (as from `SpineNet`) for their heads' BatchNorm; only set when given, so
        # a model file (which records no BN constants) builds as before.
        if norm_eps is not None:
            self.norm_eps = norm_eps
        if norm_momentum is not None:
            self.norm_momentum = norm_momentum
        self.feature_info = tuple(FeatureInfo(f"p{lv}", lv, 2**lv, out_channels) for lv in range(3, 8))
        self.max_block_level = 7

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        feats = self.body(x)  # keys '0', '1', '2', 'p6', 'p7' for C3-C5 and the extra levels
        return OrderedDict((info.key, value) for info, value in zip(self.feature_info, feats.values(), strict=True))
