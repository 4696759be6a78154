"""RetinaNet post-processing as batched tensor code that exports (``torch.export``, ONNX ``NonMaxSuppression``).

The same steps as the eager `SpineNetRetinaNet.postprocess_detections` (Model Garden ``DetectionGenerator`` v2):
per image and class the ``topk_candidates`` best anchors over all levels, those above ``score_thresh``, decoded
``(ty, tx, th, tw)`` boxes clipped to the image, boxes clipped to all zeros dropped, NMS per class, and the
``detections_per_img`` best per image. The eager code loops over images and torchvision's ``batched_nms`` over
classes; here one NMS call covers the whole batch, with the boxes of each (image, class) group moved apart by
coordinate offsets (torchvision's own "coordinate trick"), so the graph has no Python loop over data-dependent
counts and the batch size stays dynamic.

Use `retinanet_detections` on the raw outputs of a graph exported with ``raw=True`` (boxes and scores), e.g. from
ONNX Runtime, to get what the full graph would return.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import nms

from torchspine.models.detection.anchors import TFBoxCoder

__all__ = ["decode_retinanet", "retinanet_detections", "split_detections"]

_BOX_CODER = TFBoxCoder()


def decode_retinanet(
    cls_logits: Tensor, bbox_regression: Tensor, anchors: Tensor, image_size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Boxes and class probabilities of every anchor.

    Args:
        cls_logits: ``(N, M, K)`` head logits, class 0 the background.
        bbox_regression: ``(N, M, 4)`` ``(ty, tx, th, tw)`` deltas.
        anchors: ``(M, 4)`` anchors ``[x1, y1, x2, y2]``.
        image_size: ``(H, W)`` the boxes are clipped to.

    Returns:
        ``boxes (N, M, 4)`` ``[x1, y1, x2, y2]`` clipped to the image, ``scores (N, M, K - 1)`` sigmoid
        probabilities of the foreground classes (ids 1..K-1).
    """
    n, m = bbox_regression.shape[:2]
    deltas = bbox_regression.reshape(-1, 4)
    boxes = _BOX_CODER.decode_single(deltas, anchors.expand(n, m, 4).reshape(-1, 4)).reshape(n, m, 4)
    height, width = image_size
    # torchvision's clip_boxes_to_image: x to [0, W], y to [0, H].
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    boxes = torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)
    return boxes, torch.sigmoid(cls_logits[..., 1:])


def retinanet_detections(
    boxes: Tensor,
    scores: Tensor,
    *,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    topk_candidates: int = 5000,
    detections_per_img: int = 100,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The official RetinaNet post-processing of a batch (`decode_retinanet`'s outputs).

    Args:
        boxes: ``(N, M, 4)`` decoded, clipped boxes of all anchors.
        scores: ``(N, M, C)`` foreground class probabilities (label = column + 1).
        score_thresh: lowest probability kept.
        nms_thresh: IoU above which the lower-scored box of a class is suppressed.
        topk_candidates: best anchors per image and class considered.
        detections_per_img: detections kept per image.

    Returns:
        ``boxes (D, 4)``, ``scores (D,)``, ``labels (D,)`` and ``batch_index (D,)`` of all images' detections,
        sorted by image, then by decreasing score (`split_detections` makes per-image dicts of them).
    """
    n, m, c = scores.shape
    # Offsets of the (image, class) groups for the single NMS below: more than the largest x2 and y2 (boxes are
    # clipped to [0, W] x [0, H] and are not negative), from all anchors so that no candidate can be empty.
    extent = boxes[..., 2:].reshape(-1, 2).amax(dim=0) + 1.0
    top_scores, top_index = scores.topk(torch.sym_min(topk_candidates, m), dim=1)  # (N, k, C)
    labels = torch.arange(1, c + 1, device=scores.device).expand_as(top_scores)
    image = torch.arange(n, device=scores.device).view(n, 1, 1).expand_as(top_scores)
    keep = top_scores > score_thresh
    top_scores, top_index, labels, image = top_scores[keep], top_index[keep], labels[keep], image[keep]
    boxes = boxes[image, top_index]
    # Model Garden's padded NMS treats all-zero boxes as padding: a box clipped to the top-left corner is dropped.
    real = boxes.abs().sum(dim=1) > 0
    boxes, top_scores, labels, image = boxes[real], top_scores[real], labels[real], image[real]
    # One NMS for all (image, class) groups: x moved by class, y by image, so groups never overlap.
    shift = torch.stack((labels.to(boxes.dtype), image.to(boxes.dtype)), dim=1) * extent
    kept = nms(boxes + torch.cat((shift, shift), dim=1), top_scores, nms_thresh)  # decreasing score
    order = torch.sort(image[kept], stable=True).indices  # by image; still by decreasing score within one
    kept = kept[order]
    image = image[kept]
    # Rank within its image: running count of its image index (one-hot cumulative sum, no data-dependent loop).
    onehot = (image[:, None] == torch.arange(n, device=image.device)[None, :]).to(torch.int64)
    rank = onehot.cumsum(dim=0).gather(1, image[:, None]).squeeze(1)
    kept = kept[rank <= detections_per_img]
    return boxes[kept], top_scores[kept], labels[kept], image[rank <= detections_per_img]


def split_detections(
    boxes: Tensor, scores: Tensor, labels: Tensor, batch_index: Tensor, batch_size: int
) -> list[dict[str, Tensor]]:
    """torchvision's per-image ``[{"boxes", "scores", "labels"}]`` from `retinanet_detections`' flat outputs."""
    return [
        {"boxes": boxes[batch_index == i], "scores": scores[batch_index == i], "labels": labels[batch_index == i]}
        for i in range(batch_size)
    ]
