"""Image classification on a SpineNet backbone with the paper's multi-level head.

Du et al., 2020, §4.2: ``P = 1/5 * sum_l U(P_l)`` with U nearest upsampling to P3's size, then global average
pooling and a linear classifier. tensorflow/tpu ``heads.ClassificationHead(aggregation='all')`` computes it top-down:
starting from the highest level, nearest-resize to the next lower level and add, then divide by the number of
levels. (Model Garden's generic classifier uses the top level only, which is not the paper's head.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchspine.models.spinenet import SpineNet
from torchspine.registry import create_model


def aggregate_levels(feats: dict[str, Tensor]) -> Tensor:
    """Average of all levels at the lowest level's size (nearest-neighbour resize, top-down as tensorflow/tpu)."""
    levels = list(feats.values())  # ascending level, as SpineNet returns them
    x = levels[-1]
    for lower in reversed(levels[:-1]):
        x = F.interpolate(x, size=lower.shape[-2:], mode="nearest") + lower
    return x / len(levels)


class ImageClassifier(nn.Module):
    """Backbone + multi-level average + global pool + dropout + linear, with timm's head methods.

    Args:
        backbone: a SpineNet (any module returning an ordered dict of equal-width features works).
        num_classes: classifier outputs; 0 for a feature extractor (``forward`` returns pooled features).
        drop_rate: dropout before the classifier (training only).
    """

    def __init__(self, backbone: SpineNet, num_classes: int, *, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features = backbone.out_channels
        self.drop_rate = drop_rate
        self.dropout = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.fc: nn.Module = nn.Identity()
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (N(0, 0.01) weights and zero bias, as tensorflow/tpu's dense layer)."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(self.fc, nn.Linear):
            with torch.no_grad():
                nn.init.normal_(self.fc.weight, std=0.01)
                nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        return self.backbone(x)

    def forward_head(self, feats: dict[str, Tensor], pre_logits: bool = False) -> Tensor:
        x = aggregate_levels(feats).mean((2, 3))
        x = self.dropout(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def create_classifier(
    name: str, num_classes: int = 1000, *, drop_rate: float = 0.0, **overrides: Any
) -> ImageClassifier:
    """A classifier on the registered backbone `name`; `overrides` go to `torchspine.create_model`.

    The official ImageNet models count 1001 classes (class 0 is background). Weights files are loaded by
    `torchspine.load_model`.
    """
    return ImageClassifier(create_model(name, **overrides), num_classes, drop_rate=drop_rate)
