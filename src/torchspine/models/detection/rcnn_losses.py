"""The Mask R-CNN losses of tensorflow/tpu (``modeling/losses.py``), as pure functions of flattened tensors.

Du et al., 2020, §4.2 train Mask R-CNN with the tensorflow/tpu detection code; its losses (``RpnScoreLoss``,
``RpnBoxLoss``, ``FastrcnnClassLoss``, ``FastrcnnBoxLoss``, ``MaskrcnnLoss``, deltas from ``maskrcnn_config.py``)
differ from torchvision's in their normalisation:

================  ==========================================  =============================================
loss              tensorflow/tpu                              torchvision
================  ==========================================  =============================================
RPN score         sigmoid CE summed over the sampled anchors  mean over the sampled anchors
                  / (images x 256), per level, then summed
RPN box           Huber delta 1/9 over **all** matched         smooth-L1 beta 1/9 (= Huber / delta) over the
                  anchors' non-zero target coordinates,        *sampled* positives / (all sampled anchors)
                  / that count **per level**, summed
box head class    softmax CE, mean over the sampled RoIs      same
box head box      Huber delta 1 on the ground-truth class's    smooth-L1 beta 1/9 / (all sampled RoIs)
                  box of each foreground RoI / (4 x fg RoIs)
mask              sigmoid CE of the ground-truth class's       same
                  mask, mean over foreground masks' pixels
================  ==========================================  =============================================

Huber is TF's ``tf.losses.huber_loss`` (``0.5 x**2`` for ``|x| <= delta``, else ``delta * (|x| - delta / 2)``),
which is ``torch.nn.functional.huber_loss``. ``SUM_BY_NONZERO_WEIGHTS`` divides by the number of non-zero weights
and gives 0 where there is none; the functions here do the same, keeping the graph connected so that
``backward()`` always reaches every head parameter.

Model Garden's Mask R-CNN (``official/vision/losses/maskrcnn_losses.py``) has the same structure but normalises by
the cross-replica mean of those counts plus 0.01, and counts an RPN anchor as valid when any of its four targets
is non-zero; those variants are not implemented here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "fastrcnn_box_loss",
    "fastrcnn_class_loss",
    "mask_loss",
    "rpn_box_loss",
    "rpn_score_loss",
]

RPN_HUBER_DELTA = 1.0 / 9.0  # tensorflow/tpu maskrcnn_config.py: rpn_box_loss.huber_loss_delta
FRCNN_HUBER_DELTA = 1.0  # tensorflow/tpu maskrcnn_config.py: frcnn_box_loss.huber_loss_delta


def _huber_by_nonzero_weights(predictions: Tensor, targets: Tensor, weights: Tensor, delta: float) -> Tensor:
    """``sum(huber * weights) / count(weights != 0)``, 0 when every weight is 0 (TF ``SUM_BY_NONZERO_WEIGHTS``).

    Targets under a zero weight are replaced by 0 first: torchvision encodes unmatched anchors / RoIs of an image
    without boxes against an empty box, i.e. to ``-inf``, and ``inf * 0`` would be NaN.
    """
    targets = torch.where(weights != 0, targets, torch.zeros_like(targets))
    huber = F.huber_loss(predictions, targets, reduction="none", delta=delta)
    total = (huber * weights).sum()
    return total / (weights != 0).sum().clamp(min=1).to(total.dtype)


def rpn_score_loss(objectness: Tensor, labels: Tensor, *, batch_size_per_image: int) -> Tensor:
    """Objectness loss: sigmoid cross-entropy summed over the sampled anchors / (images x `batch_size_per_image`).

    Args:
        objectness: ``(N, A)`` logits of every anchor of N images (all levels).
        labels: ``(N, A)``: 1 for a sampled positive, 0 for a sampled negative, -1 for an anchor not sampled.
        batch_size_per_image: anchors sampled per image (256): the official normaliser, fixed even when an image
            has fewer candidates.

    The official code normalises each level by the same ``N x 256`` and sums over levels, which equals one sum over
    all levels.
    """
    sampled = (labels >= 0).to(objectness.dtype)
    ce = F.binary_cross_entropy_with_logits(objectness, labels.clamp(min=0).to(objectness.dtype), reduction="none")
    return (ce * sampled).sum() / (objectness.shape[0] * batch_size_per_image)


def rpn_box_loss(
    deltas: Tensor,
    targets: Tensor,
    positive: Tensor,
    num_anchors_per_level: Sequence[int],
    *,
    delta: float = RPN_HUBER_DELTA,
) -> Tensor:
    """RPN box loss: per level, Huber over the non-zero targets of the matched anchors / their count; summed.

    Args:
        deltas: ``(N, A, 4)`` predicted box codes of every anchor (levels concatenated in order).
        targets: ``(N, A, 4)`` target codes (only read where `positive`).
        positive: ``(N, A)`` anchors matched to a ground-truth box (IoU >= 0.7 or a box's best anchor), sampled or
            not: the official labeler gives every matched anchor a box target and zeros to all others, and the
            loss weights are ``box_targets != 0``.
        num_anchors_per_level: anchors per image of each level, in the order of the second dimension.
        delta: Huber delta (tensorflow/tpu: 1/9).
    """
    weights = (positive[..., None] & (targets != 0)).to(deltas.dtype)
    sizes = list(num_anchors_per_level)
    per_level = [
        _huber_by_nonzero_weights(d, t, w, delta)
        for d, t, w in zip(deltas.split(sizes, 1), targets.split(sizes, 1), weights.split(sizes, 1), strict=True)
    ]
    return torch.stack(per_level).sum()


def fastrcnn_class_loss(class_logits: Tensor, labels: Tensor) -> Tensor:
    """Box-head classification: softmax cross-entropy, mean over the sampled RoIs (``(R, K)`` logits, ``(R,)``
    labels with 0 = background)."""
    return F.cross_entropy(class_logits, labels)


def fastrcnn_box_loss(box_regression: Tensor, labels: Tensor, targets: Tensor, *, delta: float = FRCNN_HUBER_DELTA):
    """Box-head regression: Huber on the foreground RoIs' codes / (4 x foreground RoIs); 0 without foreground.

    Args:
        box_regression: ``(R, 4 K)`` class-specific codes (the official head, ``class_agnostic_bbox_pred: False``;
            each foreground RoI's codes for its ground-truth class are used) or ``(R, 4)`` class-agnostic ones.
        labels: ``(R,)`` ground-truth class per RoI, 0 = background.
        targets: ``(R, 4)`` target codes (weights 10, 10, 5, 5).
        delta: Huber delta (tensorflow/tpu: 1.0).
    """
    rois = torch.arange(labels.shape[0], device=labels.device)
    if box_regression.shape[-1] == 4:
        selected = box_regression
    else:
        selected = box_regression.reshape(labels.shape[0], -1, 4)[rois, labels]
    weights = (labels > 0)[:, None].expand_as(targets).to(selected.dtype)
    return _huber_by_nonzero_weights(selected, targets, weights, delta)


def mask_loss(mask_logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """Mask loss: sigmoid cross-entropy of each foreground RoI's ground-truth-class mask, mean over all its pixels;
    0 without foreground RoIs.

    Args:
        mask_logits: ``(R, K, M, M)`` class-specific mask logits of R foreground RoIs.
        labels: ``(R,)`` their ground-truth classes (> 0).
        targets: ``(R, M, M)`` mask targets in [0, 1].
    """
    if labels.numel() == 0:
        return mask_logits.sum() * 0.0
    selected = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(selected, targets.to(selected.dtype), reduction="mean")
