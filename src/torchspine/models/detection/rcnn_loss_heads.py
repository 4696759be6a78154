"""torchvision's RPN and RoI heads with the tensorflow/tpu Mask R-CNN losses (`rcnn_losses`).

torchvision computes its losses inside ``RegionProposalNetwork.forward`` and ``RoIHeads.forward`` (the latter
through module-level functions), so the official losses need these two subclasses. Everything except the loss
is torchvision's own: anchor matching and sampling (``assign_targets_to_anchors``, ``fg_bg_sampler``,
``select_training_samples``), box coding, proposal filtering, RoI pooling, mask targets
(``project_masks_on_boxes``) and the whole inference path (evaluation calls the parent's ``forward`` unchanged).
The one input the official RPN box loss needs that torchvision's ``compute_loss`` does not get is the number of
anchors per level (it normalises each level separately), hence the training ``forward`` here.

`use_loss_style` swaps them into a freshly built ``MaskRCNN`` for ``"tpu"`` (the paper's code); ``"torchvision"``
keeps torchvision's losses.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import torch
from torch import Tensor
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads, project_masks_on_boxes
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers

from torchspine.models.detection.rcnn_losses import (
    fastrcnn_box_loss,
    fastrcnn_class_loss,
    mask_loss,
    rpn_box_loss,
    rpn_score_loss,
)

__all__ = ["LossStyle", "TPULossRPN", "TPULossRoIHeads", "use_loss_style"]

LossStyle = Literal["tpu", "torchvision"]


_RPN = TypeVar("_RPN", bound=RegionProposalNetwork)


def rebuild_rpn(cls: type[_RPN], rpn: RegionProposalNetwork) -> _RPN:
    """`rpn` as an instance of `cls` (a ``RegionProposalNetwork`` subclass with the same constructor): the same head,
    anchors, matcher thresholds, sampler, box coder and proposal settings (the same objects and values)."""
    new = cls(
        rpn.anchor_generator,
        rpn.head,
        rpn.proposal_matcher.high_threshold,
        rpn.proposal_matcher.low_threshold,
        rpn.fg_bg_sampler.batch_size_per_image,
        rpn.fg_bg_sampler.positive_fraction,
        dict(rpn._pre_nms_top_n),
        dict(rpn._post_nms_top_n),
        rpn.nms_thresh,
        rpn.score_thresh,
    )
    new.proposal_matcher.allow_low_quality_matches = rpn.proposal_matcher.allow_low_quality_matches
    new.box_coder, new.min_size = rpn.box_coder, rpn.min_size
    return new


class TPULossRPN(RegionProposalNetwork):
    """torchvision's ``RegionProposalNetwork`` whose training losses are tensorflow/tpu's ``RpnScoreLoss`` and
    ``RpnBoxLoss`` (keys ``loss_objectness`` and ``loss_rpn_box_reg``, as torchvision's)."""

    @classmethod
    def from_torchvision(cls, rpn: RegionProposalNetwork) -> TPULossRPN:
        """The same RPN (head, anchors, matcher thresholds, sampler, box coder, proposal settings)."""
        return rebuild_rpn(cls, rpn)

    def forward(
        self, images: ImageList, features: dict[str, Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        if not self.training:
            return super().forward(images, features, targets)
        if targets is None:
            raise ValueError("targets are required in training mode")
        maps = list(features.values())
        objectness, deltas = self.head(maps)
        anchors = self.anchor_generator(images, maps)
        num_images = len(anchors)
        num_anchors_per_level = [int(o[0].numel()) for o in objectness]  # A * H * W per level
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        # Proposals do not backpropagate into the RPN (Faster R-CNN's approximate joint training).
        proposals = self.box_coder.decode(deltas.detach(), anchors).view(num_images, -1, 4)
        boxes, _ = self.filter_proposals(proposals, objectness, images.image_sizes, num_anchors_per_level)

        labels, matched_gt_boxes = self.assign_targets_to_anchors(anchors, targets)
        regression_targets = self.box_coder.encode(matched_gt_boxes, anchors)
        sampled_pos, sampled_neg = self.fg_bg_sampler(labels)
        # 1 sampled positive, 0 sampled negative, -1 not sampled (the official score targets).
        score_targets = torch.stack(
            [
                torch.where(pos.bool(), 1, torch.where(neg.bool(), 0, -1))
                for pos, neg in zip(sampled_pos, sampled_neg, strict=True)
            ]
        )
        losses = {
            "loss_objectness": rpn_score_loss(
                objectness.view(num_images, -1),
                score_targets,
                batch_size_per_image=self.fg_bg_sampler.batch_size_per_image,
            ),
            "loss_rpn_box_reg": rpn_box_loss(
                deltas.view(num_images, -1, 4),
                torch.stack(regression_targets),
                torch.stack(labels) == 1,  # every matched anchor, sampled or not
                num_anchors_per_level,
            ),
        }
        return boxes, losses


class TPULossRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` (boxes and masks) whose training losses are tensorflow/tpu's
    ``FastrcnnClassLoss``, ``FastrcnnBoxLoss`` and ``MaskrcnnLoss`` (keys ``loss_classifier``, ``loss_box_reg``,
    ``loss_mask``, as torchvision's). Keypoint heads are not supported."""

    @classmethod
    def from_torchvision(cls, heads: RoIHeads) -> TPULossRoIHeads:
        """The same heads, poolers, sampler, box coder and post-processing settings."""
        if heads.keypoint_predictor is not None:
            raise ValueError("the tensorflow/tpu losses cover boxes and masks, not keypoints")
        new = cls(
            heads.box_roi_pool,
            heads.box_head,
            heads.box_predictor,
            heads.proposal_matcher.high_threshold,
            heads.proposal_matcher.low_threshold,
            heads.fg_bg_sampler.batch_size_per_image,
            heads.fg_bg_sampler.positive_fraction,
            heads.box_coder.weights,
            heads.score_thresh,
            heads.nms_thresh,
            heads.detections_per_img,
            mask_roi_pool=heads.mask_roi_pool,
            mask_head=heads.mask_head,
            mask_predictor=heads.mask_predictor,
        )
        new.box_coder = heads.box_coder  # the same object (a subclass with other conventions stays one)
        return new

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        all_labels = torch.cat(labels)
        losses = {
            "loss_classifier": fastrcnn_class_loss(class_logits, all_labels),
            "loss_box_reg": fastrcnn_box_loss(box_regression, all_labels, torch.cat(regression_targets)),
        }
        if self.has_mask():
            # Masks are trained on the foreground RoIs only (the official code samples up to 128 per image, which
            # is all of them at 512 RoIs with 25 % foreground).
            fg = [torch.where(image_labels > 0)[0] for image_labels in labels]
            mask_rois = [p[i] for p, i in zip(proposals, fg, strict=True)]
            gt_index = [m[i] for m, i in zip(matched_idxs, fg, strict=True)]
            mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_rois, image_shapes)))
            size = mask_logits.shape[-1]
            mask_targets = [
                project_masks_on_boxes(t["masks"], rois, index, size)
                for t, rois, index in zip(targets, mask_rois, gt_index, strict=True)
            ]
            mask_labels = [t["labels"][index] for t, index in zip(targets, gt_index, strict=True)]
            losses["loss_mask"] = mask_loss(mask_logits, torch.cat(mask_labels), torch.cat(mask_targets))
        return [], losses


def use_loss_style(model: MaskRCNN, style: LossStyle) -> MaskRCNN:
    """Give a torchvision-built `model` the tensorflow/tpu losses (``"tpu"``) or keep torchvision's
    (``"torchvision"``); returns `model`. The heads' modules are shared, not copied."""
    if style == "tpu":
        model.rpn = TPULossRPN.from_torchvision(model.rpn)
        model.roi_heads = TPULossRoIHeads.from_torchvision(model.roi_heads)
    elif style != "torchvision":
        raise ValueError(f"loss style {style!r}: expected 'tpu' or 'torchvision'")
    return model
