"""Region proposals as tensorflow/tpu's Mask R-CNN makes them, in torchvision's ``RegionProposalNetwork``.

tensorflow/tpu ``ops/roi_ops.py`` ``multilevel_propose_rois`` (Apache-2.0), per image and level: sigmoid scores,
boxes decoded from the anchors (the model's box coder) and clipped to ``[0, W - 1] x [0, H - 1]``, the top
``pre_nms_top_n`` by score, greedy NMS keeping at most ``post_nms_top_n``; then the best ``post_nms_top_n`` of all
levels by score. torchvision's ``filter_proposals`` differs in three points that move the proposals: it clips to
``[0, W] x [0, H]``, it drops boxes smaller than 1e-3 and it keeps levels apart only inside one batched NMS. Matching
and the losses are torchvision's, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import nms

from torchspine.models.detection.rcnn_loss_heads import TPULossRPN, rebuild_rpn

__all__ = ["TPULossTPUProposalRPN", "TPUProposalSelection", "TPURegionProposalNetwork", "with_tpu_proposals"]


class TPUProposalSelection:
    """Mixin for a torchvision ``RegionProposalNetwork``: tensorflow/tpu's proposal selection (module docstring)."""

    pre_nms_top_n: Callable[[], int]
    post_nms_top_n: Callable[[], int]
    nms_thresh: float

    def filter_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Proposals ``(N, sum_l A_l, 4)`` xyxy and objectness logits -> per image ``boxes (K, 4)`` and sigmoid
        ``scores (K,)``, best first."""
        num_images = proposals.shape[0]
        logits = objectness.detach().reshape(num_images, -1)
        pre_nms, post_nms = self.pre_nms_top_n(), self.post_nms_top_n()
        final_boxes, final_scores = [], []
        for boxes_i, logits_i, (height, width) in zip(proposals.detach(), logits, image_shapes, strict=True):
            limits = boxes_i.new_tensor([width - 1.0, height - 1.0, width - 1.0, height - 1.0])
            kept_boxes, kept_scores = [], []
            for boxes, level_logits in zip(
                boxes_i.split(num_anchors_per_level), logits_i.split(num_anchors_per_level), strict=True
            ):
                boxes = torch.minimum(boxes.clamp(min=0.0), limits)
                scores, top = _top(torch.sigmoid(level_logits), pre_nms)
                boxes = boxes[top]
                keep = nms(boxes, scores, self.nms_thresh)[:post_nms]
                kept_boxes.append(boxes[keep])
                kept_scores.append(scores[keep])
            scores, order = _top(torch.cat(kept_scores), post_nms)
            final_boxes.append(torch.cat(kept_boxes)[order])
            final_scores.append(scores)
        return final_boxes, final_scores


class TPURegionProposalNetwork(TPUProposalSelection, RegionProposalNetwork):
    """torchvision's RPN (losses included) with tensorflow/tpu's proposal selection; same constructor."""


class TPULossTPUProposalRPN(TPUProposalSelection, TPULossRPN):
    """The RPN with tensorflow/tpu's losses (`TPULossRPN`) and its proposal selection."""


def with_tpu_proposals(rpn: RegionProposalNetwork) -> RegionProposalNetwork:
    """The same RPN (head, anchors, matching, sampling, thresholds, losses) with tensorflow/tpu's proposals."""
    return rebuild_rpn(TPULossTPUProposalRPN if isinstance(rpn, TPULossRPN) else TPURegionProposalNetwork, rpn)


def _top(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The `k` best scores and their indices; equal scores keep their order (TF ``top_k``'s rule; sigmoid scores of
    a confident RPN are often exactly 1.0)."""
    values, order = torch.sort(scores, descending=True, stable=True)
    return values[:k], order[:k]
