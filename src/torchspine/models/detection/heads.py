"""RetinaNet head as in the official SpineNet detectors: tower convs shared across levels, one BatchNorm per level.

tensorflow/tpu ``heads.RetinanetHead`` and Model Garden ``dense_prediction_heads.RetinaNetHead`` (Apache-2.0) apply,
per level, ``num_convs`` x (3x3 conv with bias -> BN of that level -> activation) and a 3x3 predictor, separately
for classes and boxes. Conv weights are shared by all levels but every (conv, level) pair has its own BN, which
torchvision's ``RetinaNetHead`` cannot express. SpineNet-Mobile heads use separable convolutions.

Output channel layout: ``anchor * num_classes + class`` and ``anchor * 4 + coord`` with coords ``(ty, tx, th, tw)``,
anchors scale-major then aspect ratio, as both official implementations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from torchspine.layers.activations import get_act_layer
from torchspine.layers.bn_act import bn_act, supported
from torchspine.layers.checkpoint import checkpointed
from torchspine.models.detection.anchors import TFBoxCoder


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 (no bias) then pointwise 1x1 (with bias), as Keras ``SeparableConv2D``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


def _conv(in_channels: int, out_channels: int, separable: bool) -> nn.Module:
    return (
        SeparableConv2d(in_channels, out_channels) if separable else nn.Conv2d(in_channels, out_channels, 3, padding=1)
    )


class _Tower(nn.Module):
    """``num_convs`` shared convs with per-level BN and activation, then a shared predictor."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_convs: int,
        num_filters: int,
        num_levels: int,
        act: str,
        norm_eps: float,
        norm_momentum: float,
        separable: bool,
    ) -> None:
        super().__init__()
        norm = partial(nn.BatchNorm2d, eps=norm_eps, momentum=norm_momentum)
        widths = [in_channels] + [num_filters] * num_convs
        self.convs = nn.ModuleList(_conv(widths[i], widths[i + 1], separable) for i in range(num_convs))
        self.norms = nn.ModuleList(
            nn.ModuleList(norm(num_filters) for _ in range(num_convs)) for _ in range(num_levels)
        )
        self.act = get_act_layer(act)()
        self.predict = _conv(widths[-1], out_channels, separable)
        self.grad_checkpointing = False
        self.fused_bn_act = False  # training: see `torchspine.layers.bn_act`

    def forward(self, x: Tensor, level_index: int) -> Tensor:
        if self.grad_checkpointing and self.training:
            # Only this level's BatchNorms run in the recomputation.
            return checkpointed(self.norms[level_index], self._forward, x, level_index)
        return self._forward(x, level_index)

    def _forward(self, x: Tensor, level_index: int) -> Tensor:
        norms = self.norms[level_index]
        for conv, bn in zip(self.convs, norms, strict=True):
            x = conv(x)
            x = bn_act(x, bn, self.act) if self.fused_bn_act and supported(bn, self.act) else self.act(bn(x))
        return self.predict(x)


class RetinaNetHead(nn.Module):
    """Class and box subnets of the SpineNet RetinaNet.

    Args:
        in_channels: endpoint channels of the backbone.
        num_anchors: anchors per location (3 scales x 3 aspect ratios = 9).
        num_classes: class outputs per anchor (the official COCO models use 91, background included).
        num_levels: number of pyramid levels (5 for P3-P7); each gets its own BatchNorms.
        num_convs: tower depth (4; 7 for SpineNet-190).
        num_filters: tower width (128 for 49S, 256 for 49/96/143, 512 for 190; 48/40/24 for the mobile models).
        act: tower activation (TF name).
        norm_eps: BatchNorm epsilon.
        norm_momentum: BatchNorm momentum (PyTorch convention).
        separable: separable convolutions (SpineNet-Mobile).
        prior_probability: initial foreground probability of the class predictor (bias ``-log((1 - p) / p)``).
        focal_alpha: focal-loss alpha (0.25 in the official configs).
        focal_gamma: focal-loss gamma (1.5 in the official configs, not the focal-loss paper's 2).
        huber_delta: Huber delta of the box loss (0.1).
        box_loss_weight: weight of the box loss against the class loss (50).
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        *,
        num_levels: int = 5,
        num_convs: int = 4,
        num_filters: int = 256,
        act: str = "swish",
        norm_eps: float = 1e-4,
        norm_momentum: float = 1 - 0.997,
        separable: bool = False,
        prior_probability: float = 0.01,
        focal_alpha: float = 0.25,
        focal_gamma: float = 1.5,
        huber_delta: float = 0.1,
        box_loss_weight: float = 50.0,
    ) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.num_classes = num_classes
        self.num_levels = num_levels
        self.num_convs, self.num_filters, self.separable = num_convs, num_filters, separable  # for export metadata
        tower = dict(
            num_convs=num_convs,
            num_filters=num_filters,
            num_levels=num_levels,
            act=act,
            norm_eps=norm_eps,
            norm_momentum=norm_momentum,
            separable=separable,
        )
        self.cls = _Tower(in_channels, num_anchors * num_classes, **tower)
        self.box = _Tower(in_channels, num_anchors * 4, **tower)
        self.prior_probability = prior_probability
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.huber_delta, self.box_loss_weight = huber_delta, box_loss_weight
        self.box_coder = TFBoxCoder()
        self.reset_parameters()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each tower's activations, level by level, in the backward pass instead of keeping them
        (`torchspine.layers.checkpoint`: same gradients and BatchNorm statistics)."""
        self.cls.grad_checkpointing = self.box.grad_checkpointing = enable

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Official initialisation: tower kernels N(0, 0.01) with zero bias, predictors N(0, 1e-5), class bias
        ``-log((1 - p) / p)``; separable (mobile) convs N(0, 0.03)."""
        for tower in (self.cls, self.box):
            for module in tower.modules():
                if isinstance(module, nn.Conv2d):
                    std = 0.03 if isinstance(tower.predict, SeparableConv2d) else 0.01
                    nn.init.normal_(module.weight, std=std)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
            if isinstance(tower.predict, nn.Conv2d):
                nn.init.normal_(tower.predict.weight, std=1e-5)
        bias = self.cls.predict.bias if isinstance(self.cls.predict, nn.Conv2d) else self.cls.predict.pointwise.bias
        nn.init.constant_(bias, -math.log((1 - self.prior_probability) / self.prior_probability))

    def forward_levels(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Raw per-level outputs: class logits ``(N, A * K, H, W)`` and box regressions ``(N, A * 4, H, W)``."""
        if len(features) != self.num_levels:
            raise ValueError(f"RetinaNetHead was built for {self.num_levels} levels, got {len(features)} features")
        classes = [self.cls(x, i) for i, x in enumerate(features)]
        boxes = [self.box(x, i) for i, x in enumerate(features)]
        return classes, boxes

    def forward(self, features: Sequence[Tensor]) -> dict[str, Tensor]:
        """torchvision's head protocol: ``cls_logits (N, HWA, K)`` and ``bbox_regression (N, HWA, 4)``,
        levels concatenated in order, locations row-major, anchors innermost."""
        classes, boxes = self.forward_levels(features)
        return {
            "cls_logits": torch.cat([_flatten(c, self.num_classes) for c in classes], dim=1),
            "bbox_regression": torch.cat([_flatten(b, 4) for b in boxes], dim=1),
        }

    def compute_loss(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        matched_idxs: list[Tensor],
    ) -> dict[str, Tensor]:
        """The official RetinaNet losses (Model Garden ``tasks/retinanet.py``, tensorflow/tpu ``losses.py``).

        Sigmoid focal loss summed over all anchors and classes, and the Huber loss of the ``(ty, tx, th, tw)``
        targets of positive anchors averaged over the 4 coordinates; both divided by the number of positive
        anchors in the *batch* plus one. ``box_loss`` is returned already multiplied by `box_loss_weight`, so the
        total loss is the sum of the dict, as torchvision's training loops expect. Anchors the matcher leaves
        between thresholds (index -2) are ignored by both losses.
        """
        cls_logits, box_regression = head_outputs["cls_logits"], head_outputs["bbox_regression"]
        for target in targets:
            labels = target["labels"]
            if labels.numel() and (labels.min() < 1 or labels.max() >= self.num_classes):
                raise ValueError(
                    f"target labels must be category ids in 1..{self.num_classes - 1} (0 is the "
                    f"background class), got {labels.unique().tolist()}"
                )
        cls_loss = cls_logits.new_zeros(())
        box_loss = cls_logits.new_zeros(())
        num_positives = cls_logits.new_zeros(())
        for i, (target, anchors_i, matched) in enumerate(zip(targets, anchors, matched_idxs, strict=True)):
            positive = matched >= 0
            valid = matched != -2  # torchvision's Matcher.BETWEEN_THRESHOLDS
            num_positives = num_positives + positive.sum()
            gt_classes = torch.zeros_like(cls_logits[i])
            if positive.any():
                labels = target["labels"][matched[positive]]
                gt_classes[positive, labels] = 1.0
                encoded = self.box_coder.encode_single(target["boxes"][matched[positive]], anchors_i[positive])
                box_loss = (
                    box_loss
                    + F.huber_loss(box_regression[i][positive], encoded, delta=self.huber_delta, reduction="sum") / 4.0
                )
            cls_loss = cls_loss + sigmoid_focal_loss(
                cls_logits[i][valid], gt_classes[valid], alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
            )
        normalizer = num_positives + 1.0
        return {
            "classification": cls_loss / normalizer,
            "bbox_regression": self.box_loss_weight * box_loss / normalizer,
        }


def _flatten(x: Tensor, per_anchor: int) -> Tensor:
    n, _, h, w = x.shape
    return x.view(n, -1, per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, per_anchor)
