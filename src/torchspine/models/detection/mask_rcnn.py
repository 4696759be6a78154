"""Mask R-CNN with a SpineNet (or ResNet-FPN) backbone, composed from torchvision's ``MaskRCNN``.

Du et al., 2020, §4.2; official code: tensorflow/tpu ``maskrcnn_config.py`` + ``configs/spinenet/*_mrcnn.yaml``,
``modeling/architecture/heads.py``, ``maskrcnn_model.py`` and Model Garden ``maskrcnn_model.py`` (Apache-2.0). The
heads have the structure of tensorflow/tpu ``heads.py``, so its checkpoints convert tensor for tensor:

* RPN: ``rpn_num_convs`` 3x3 convs (1) shared across levels with a BatchNorm per level, then 1x1
  objectness and box predictors; anchors of size 3 (5 for SpineNet-190), one scale (tensorflow/tpu; Model
  Garden's SpineNet recipes use ``anchor_num_scales=3``), aspect ratios 0.5/1/2;
* RoIs from the backbone's levels by ``floor(4 + log2(sqrt(area) / 224))``, 7x7 for boxes and 14x14 for masks;
* box head: 4 x (3x3 conv + BN + act), 1 FC(1024) + BN + act, then class and class-specific box FCs;
* mask head: 4 x (3x3 conv + BN + act), 2x2/2 deconv + BN + act, 1x1 to one 28x28 mask per class;
  every conv and FC has a bias, as the official ``tf.layers`` defaults;
* ``box_ops="tpu"`` (default): tensorflow/tpu's RoIAlign, proposal selection and "+1" box coding (see
  `build_mask_rcnn`); ``"torchvision"``: torchvision's;
* sampling: RPN 256 anchors/image (half positive, IoU 0.7/0.3), proposals 2000 -> 1000 (train) and
  1000 -> 1000 (test) with NMS 0.7; 512 RoIs/image, 25 % foreground at IoU 0.5.

Losses: tensorflow/tpu's by default (``loss_style="tpu"``, `torchspine.models.detection.rcnn_losses`: Huber
delta 1/9 for the RPN normalised per level, Huber delta 1 for the box head over 4 x the foreground RoIs), or
torchvision's (``loss_style="torchvision"``: smooth-L1 beta 1/9 for both, normalised by all sampled anchors / RoIs).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from torchspine.errors import UsageError
from torchspine.layers.activations import get_act_layer
from torchspine.models.detection.anchors import ASPECT_RATIOS, TFAnchorGenerator, TFBoxCoder, feature_levels
from torchspine.models.detection.rcnn_loss_heads import LossStyle, use_loss_style
from torchspine.models.detection.resnet_fpn import RESNET_FPN_BACKBONES, ResNetFPN
from torchspine.models.detection.roi import TPUMultiLevelRoIAlign, multiscale_roi_align
from torchspine.models.detection.rpn import with_tpu_proposals
from torchspine.models.detection.transform import SquarePadTransform
from torchspine.registry import create_model
from torchspine.variants import backbone_defaults


class RPNHead(nn.Module):
    """``num_convs`` 3x3 convs shared across levels, each with a BatchNorm per level and the activation, then 1x1
    objectness (A) and box (4A, ``(ty, tx, th, tw)`` per anchor) predictors (tensorflow/tpu ``heads.RpnHead``).

    The convs have the head width (256; 128 for SpineNet-49S, 384 for 190), which is what reproduces the official
    parameter counts. Every conv has a bias, as the official ``tf.layers.conv2d``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_anchors: int,
        num_levels: int,
        *,
        num_convs: int = 1,
        act: str,
        norm_eps: float,
        norm_momentum: float,
    ) -> None:
        super().__init__()
        widths = [in_channels] + [channels] * num_convs
        self.convs = nn.ModuleList(nn.Conv2d(widths[i], channels, 3, padding=1) for i in range(num_convs))
        self.norms = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(channels, eps=norm_eps, momentum=norm_momentum) for _ in range(num_convs))
            for _ in range(num_levels)
        )
        self.act = get_act_layer(act)()
        self.cls_logits = nn.Conv2d(channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(channels, 4 * num_anchors, 1)
        for conv in (*self.convs, self.cls_logits, self.bbox_pred):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, boxes = [], []
        for x, norms in zip(features, self.norms, strict=True):
            for conv, norm in zip(self.convs, norms, strict=True):
                x = self.act(norm(conv(x)))
            logits.append(self.cls_logits(x))
            boxes.append(self.bbox_pred(x))
        return logits, boxes


def _conv_bn_act(in_channels: int, out_channels: int, act: str, norm: partial) -> nn.Sequential:
    # The official heads' convs keep their bias in front of the BatchNorm (tf.layers.conv2d's default).
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), norm(out_channels), get_act_layer(act)())


class BoxHead(nn.Module):
    """``num_convs`` x (3x3 conv + BN + act) on the 7x7 RoI features, then ``num_fcs`` x (FC + BN + act):
    ``(R, fc_dim)`` (tensorflow/tpu ``heads.FastrcnnHead`` up to its predictors).

    The features are flattened channel-major (PyTorch's NCHW); the official head flattens NHWC, so converted FC
    kernels have their input rows permuted (``torchspine.convert``).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        num_convs: int,
        conv_dim: int,
        fc_dim: int,
        roi_size: int,
        act: str,
        norm_eps: float,
        norm_momentum: float,
        num_fcs: int = 1,
    ) -> None:
        super().__init__()
        norm = partial(nn.BatchNorm2d, eps=norm_eps, momentum=norm_momentum)
        widths = [in_channels] + [conv_dim] * num_convs
        self.convs = nn.Sequential(*[_conv_bn_act(widths[i], widths[i + 1], act, norm) for i in range(num_convs)])
        fc_widths = [widths[-1] * roi_size * roi_size] + [fc_dim] * num_fcs
        self.fcs = nn.Sequential(
            *[
                nn.Sequential(
                    nn.Linear(fc_widths[i], fc_dim),
                    nn.BatchNorm1d(fc_dim, eps=norm_eps, momentum=norm_momentum),
                    get_act_layer(act)(),
                )
                for i in range(num_fcs)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fcs(self.convs(x).flatten(1))


class MaskHead(nn.Sequential):
    """``num_convs`` x (3x3 conv + BN + act) on the 14x14 RoI features (tensorflow/tpu ``heads.MaskrcnnHead``)."""

    def __init__(
        self, in_channels: int, *, num_convs: int, conv_dim: int, act: str, norm_eps: float, norm_momentum: float
    ) -> None:
        norm = partial(nn.BatchNorm2d, eps=norm_eps, momentum=norm_momentum)
        widths = [in_channels] + [conv_dim] * num_convs
        super().__init__(*[_conv_bn_act(widths[i], widths[i + 1], act, norm) for i in range(num_convs)])


class MaskPredictor(nn.Module):
    """2x2/2 deconv + BN + act, then a 1x1 conv to one mask logit map per class (28x28 from 14x14 RoIs); both with
    biases, as the official ``conv5-mask`` / ``mask_fcn_logits``."""

    def __init__(self, in_channels: int, num_classes: int, *, act: str, norm_eps: float, norm_momentum: float) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(in_channels, in_channels, 2, stride=2)
        self.norm = nn.BatchNorm2d(in_channels, eps=norm_eps, momentum=norm_momentum)
        self.act = get_act_layer(act)()
        self.logits = nn.Conv2d(in_channels, num_classes, 1)
        nn.init.normal_(self.logits.weight, std=0.001)
        nn.init.zeros_(self.logits.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(self.act(self.norm(self.upsample(x))))


def build_mask_rcnn(
    backbone: str | nn.Module = "spinenet49",
    *,
    backbone_args: Mapping[str, Any] | None = None,
    num_classes: int = 91,
    image_size: int | None = None,
    head_dim: int | None = None,
    num_convs: int | None = None,
    fc_dim: int | None = None,
    anchor_size: float | None = None,
    act: str | None = None,
    rpn_num_convs: int | None = None,
    num_fcs: int = 1,
    anchor_num_scales: int = 1,
    box_ops: Literal["tpu", "torchvision"] = "tpu",
    loss_style: LossStyle = "tpu",
) -> MaskRCNN:
    """A Mask R-CNN as in the paper, following torchvision's detection API.

    Args:
        backbone: a registered SpineNet name, a ``resnet*_fpn`` name, or a backbone module (``p3..p7``).
        backbone_args: `torchspine.create_model` overrides for a named SpineNet.
        num_classes: class outputs including background (the official COCO models: 91).
        image_size: square input size (default: the paper's for the backbone).
        head_dim: width of the RPN, box-head and mask-head convs (default: 256; 128 for 49S, 384 for 190).
        num_convs: convs in the box and mask heads (default: 4; 7 for 190).
        fc_dim: width of the box head's FC (default: 1024; 512 for 49S).
        anchor_size: RPN anchor size in strides (default: 3; 5 for 190).
        act: head activation (default: the backbone's).
        rpn_num_convs: convs of the RPN head (default: the backbone's ``MaskRCNNDefaults``, 1; the official
            ``spinenet190_mrcnn.yaml`` sets 7, but the zoo's 168.2M parameters count 1).
        num_fcs: FC layers of the box head (the SpineNet recipes: 1).
        anchor_num_scales: intermediate anchor scales per octave: 1 in tensorflow/tpu's ``spinenet*_mrcnn.yaml``
            (3 anchors per location), 3 in Model Garden's ``coco_spinenet*_mrcnn_tpu.yaml`` (``anchor: num_scales:
            3``, 9 anchors per location; the RPN head's predictors grow accordingly).
        box_ops: ``"tpu"``: RoIAlign and box coding as the official tensorflow/tpu Mask R-CNN
            (`TPUMultiLevelRoIAlign`, one sample per bin; the legacy "+1" box sizes of its ``box_utils``; its
            proposal selection, `TPURegionProposalNetwork`), which converted checkpoints need to reproduce the
            official outputs. ``"torchvision"``: torchvision's
            ``MultiScaleRoIAlign`` (2x2 samples per bin) and box coding without the offset.
        loss_style: training losses: ``"tpu"`` (tensorflow/tpu ``modeling/losses.py``, the paper's) or
            ``"torchvision"`` (torchvision's ``MaskRCNN`` losses). Inference is the same.

    The RPN levels, anchors, RoI pooling levels and padding follow the backbone's ``feature_info``. Weights files
    are loaded by `torchspine.load_model`.
    """
    d = backbone_defaults(backbone if isinstance(backbone, str) else "custom").mask_rcnn
    if isinstance(backbone, str):
        if backbone in RESNET_FPN_BACKBONES:
            extra = sorted(set(backbone_args or {}) - {"norm_eps", "norm_momentum"})
            if extra:
                raise UsageError(f"backbone_args {extra} do not apply to {backbone} (only norm_eps, norm_momentum)")
            backbone = ResNetFPN(backbone, **(backbone_args or {}))
        else:
            backbone = create_model(backbone, **(backbone_args or {}))
    act = act or getattr(backbone, "act_name", "relu")
    eps, momentum = getattr(backbone, "norm_eps", 1e-3), getattr(backbone, "norm_momentum", 0.01)
    head_dim, num_convs = head_dim or d.head_dim, num_convs or d.num_convs
    levels = feature_levels(backbone)
    if anchor_num_scales < 1:
        raise UsageError(f"anchor_num_scales must be >= 1, got {anchor_num_scales}")
    anchors = TFAnchorGenerator(
        levels[0], levels[-1], anchor_size or d.anchor_size, num_scales=anchor_num_scales, aspect_ratios=ASPECT_RATIOS
    )
    if box_ops not in ("tpu", "torchvision"):
        raise UsageError(f"box_ops {box_ops!r}: expected 'tpu' or 'torchvision'")
    rpn_head = RPNHead(
        backbone.out_channels,
        head_dim,
        anchors.num_anchors_per_location()[0],
        len(levels),
        num_convs=rpn_num_convs or d.rpn_num_convs,
        act=act,
        norm_eps=eps,
        norm_momentum=momentum,
    )
    box_head = BoxHead(
        backbone.out_channels,
        num_convs=num_convs,
        conv_dim=head_dim,
        fc_dim=fc_dim or d.fc_dim,
        roi_size=7,
        act=act,
        norm_eps=eps,
        norm_momentum=momentum,
        num_fcs=num_fcs,
    )
    mask_head = MaskHead(
        backbone.out_channels, num_convs=num_convs, conv_dim=head_dim, act=act, norm_eps=eps, norm_momentum=momentum
    )
    model = MaskRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        rpn_pre_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=1000,
        rpn_post_nms_top_n_train=1000,
        rpn_post_nms_top_n_test=1000,
        rpn_nms_thresh=0.7,
        rpn_fg_iou_thresh=0.7,
        rpn_bg_iou_thresh=0.3,
        rpn_batch_size_per_image=256,
        rpn_positive_fraction=0.5,
        box_roi_pool=_roi_pool(backbone, 7, box_ops),
        box_head=box_head,
        box_predictor=FastRCNNPredictor(fc_dim or d.fc_dim, num_classes),
        box_score_thresh=0.05,
        box_nms_thresh=0.5,
        box_detections_per_img=100,
        box_fg_iou_thresh=0.5,
        box_bg_iou_thresh=0.5,
        box_batch_size_per_image=512,
        box_positive_fraction=0.25,
        mask_roi_pool=_roi_pool(backbone, 14, box_ops),
        mask_head=mask_head,
        mask_predictor=MaskPredictor(head_dim, num_classes, act=act, norm_eps=eps, norm_momentum=momentum),
    )
    use_loss_style(model, loss_style)  # replaces model.rpn / model.roi_heads: set their parts after this line
    model.transform = SquarePadTransform(image_size or d.image_size, size_divisible=2 ** levels[-1])
    tpu = 1.0 if box_ops == "tpu" else 0.0
    if box_ops == "tpu":
        model.rpn = with_tpu_proposals(model.rpn)
    model.rpn.box_coder = TFBoxCoder(decode_offset=tpu)  # tensorflow/tpu: RPN targets without, proposals with +1
    model.roi_heads.box_coder = TFBoxCoder((10.0, 10.0, 5.0, 5.0), encode_offset=tpu, decode_offset=tpu)
    return model


def _roi_pool(backbone: nn.Module, output_size: int, box_ops: str) -> nn.Module:
    if box_ops == "tpu":
        info = backbone.feature_info
        return TPUMultiLevelRoIAlign([f.key for f in info], [int(f.level) for f in info], output_size)
    return multiscale_roi_align(backbone, output_size=output_size)


class MaskRCNNCost(nn.Module):
    """The network parts of a Mask R-CNN with a fixed number of RoIs, to count what the model zoo counts.

    The zoo's "FLOPs" (e.g. 215.7B for SpineNet-49 at 640) are backbone + RPN over all levels + the box head on
    1000 proposals + the mask head on 100 detections (RoIAlign, NMS and sampling are not multiply-adds).
    """

    def __init__(self, model: MaskRCNN, num_proposals: int = 1000, num_detections: int = 100) -> None:
        super().__init__()
        self.model = model
        self.num_proposals, self.num_detections = num_proposals, num_detections

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        m = self.model
        feats = m.backbone(x)
        objectness, _ = m.rpn.head(list(feats.values()))
        channels = m.backbone.out_channels
        box_feats = m.roi_heads.box_head(x.new_zeros(self.num_proposals, channels, 7, 7))
        scores, boxes = m.roi_heads.box_predictor(box_feats)
        masks = m.roi_heads.mask_predictor(m.roi_heads.mask_head(x.new_zeros(self.num_detections, channels, 14, 14)))
        return OrderedDict(
            objectness=torch.cat([o.flatten() for o in objectness]), scores=scores, boxes=boxes, masks=masks
        )
