"""Anchor matching with bounded memory: torchvision's ``Matcher`` decisions without the full IoU matrix.

torchvision's RetinaNet builds one ``(num_boxes, num_anchors)`` IoU matrix per image, plus several temporaries of
the same size inside ``box_iou`` and the matcher. A crowded image (an annotation file with 20,000 boxes on one
image) then costs gigabytes at 640 px. `match_anchors` gives exactly the matches ``Matcher`` gives (same
thresholds, same low-quality rule, same tie-breaking) while only holding ``max_pairs`` IoU values at a time, by
walking the ground-truth boxes in chunks twice: once for each anchor's best box and each box's best IoU, once for
the anchors that tie a box's best IoU (the low-quality matches). Small images take torchvision's path unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection._utils import Matcher
from torchvision.ops import box_iou

# 1M IoU values (4 MiB in float32) per chunk; box_iou's temporaries are a small multiple of it.
DEFAULT_MAX_PAIRS = 1 << 20


def match_anchors(boxes: Tensor, anchors: Tensor, matcher: Matcher, *, max_pairs: int = DEFAULT_MAX_PAIRS) -> Tensor:
    """For every anchor, the index of its ground-truth box, or ``Matcher.BELOW_LOW_THRESHOLD`` (-1) /
    ``Matcher.BETWEEN_THRESHOLDS`` (-2), exactly as ``matcher(box_iou(boxes, anchors))``.

    Args:
        boxes: ``(M, 4)`` ground-truth boxes, ``x1, y1, x2, y2``; M may be 0 (every anchor is then -1).
        anchors: ``(N, 4)`` anchors.
        matcher: thresholds and ``allow_low_quality_matches`` are read from it.
        max_pairs: largest number of box-anchor IoUs computed at once.
    """
    num_boxes, num_anchors = boxes.shape[0], anchors.shape[0]
    if num_boxes == 0:
        return torch.full((num_anchors,), Matcher.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=anchors.device)
    if num_boxes * num_anchors <= max_pairs:
        return matcher(box_iou(boxes, anchors))
    chunk = max(1, max_pairs // max(num_anchors, 1))
    best_iou = torch.full((num_anchors,), -1.0, dtype=anchors.dtype, device=anchors.device)
    best_box = torch.zeros(num_anchors, dtype=torch.int64, device=anchors.device)
    best_per_box = []
    for start in range(0, num_boxes, chunk):
        iou = box_iou(boxes[start : start + chunk], anchors)
        values, index = iou.max(dim=0)  # the first maximum within the chunk, as max(dim=0) over all boxes
        better = values > best_iou  # strict: an earlier chunk keeps its tie, so the overall first maximum wins
        best_iou = torch.where(better, values, best_iou)
        best_box = torch.where(better, index + start, best_box)
        best_per_box.append(iou.max(dim=1).values)
    matches = best_box.clone()
    matches[best_iou < matcher.low_threshold] = Matcher.BELOW_LOW_THRESHOLD
    between = (best_iou >= matcher.low_threshold) & (best_iou < matcher.high_threshold)
    matches[between] = Matcher.BETWEEN_THRESHOLDS
    if matcher.allow_low_quality_matches:
        # Anchors that reach some box's best IoU (ties included) get back their best box, whatever its IoU.
        highest = torch.cat(best_per_box)
        ties = torch.zeros(num_anchors, dtype=torch.bool, device=anchors.device)
        for start in range(0, num_boxes, chunk):
            iou = box_iou(boxes[start : start + chunk], anchors)
            ties |= (iou == highest[start : start + chunk, None]).any(dim=0)
        matches[ties] = best_box[ties]
    return matches
