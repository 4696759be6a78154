"""RetinaNet with a SpineNet (or ResNet-FPN) backbone, composed from torchvision's ``RetinaNet``.

Du et al., 2020, §4.1; official code: tensorflow/tpu ``retinanet_model.py`` / Model Garden ``retinanet_model.py``.
torchvision supplies matching, the training/inference loop and NMS; the parts where the paper differs are injected:
the head (shared convs, per-level BN, official losses), the anchors and box coding (`anchors`), the square-padding
transform, and the official matcher and post-processing settings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import RetinaNet
from torchvision.ops import batched_nms, clip_boxes_to_image

from torchspine.errors import UsageError
from torchspine.models.detection.anchors import ASPECT_RATIOS, TFAnchorGenerator, TFBoxCoder, feature_levels
from torchspine.models.detection.heads import RetinaNetHead
from torchspine.models.detection.matching import match_anchors
from torchspine.models.detection.resnet_fpn import RESNET_FPN_BACKBONES, ResNetFPN
from torchspine.models.detection.transform import SquarePadTransform
from torchspine.registry import create_model
from torchspine.variants import backbone_defaults


class SpineNetRetinaNet(RetinaNet):
    """torchvision's ``RetinaNet`` with the official post-processing (Model Garden ``DetectionGenerator`` v2).

    Per class, the ``topk_candidates`` best anchors over *all* levels are kept (torchvision keeps the best per level
    over all classes), those above ``score_thresh`` are decoded, clipped to the image and NMS'd per class, and the
    ``detections_per_img`` best remain. Class 0 is background, as in the official models: it is never a target
    and never reported. Training matches anchors in bounded memory (`match_anchors`), so an image with tens of
    thousands of boxes needs no gigabyte-sized IoU matrix.
    """

    def compute_loss(
        self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor], anchors: list[Tensor]
    ) -> dict[str, Tensor]:
        # torchvision's matching, with the IoU matrix computed in bounded chunks for crowded images.
        matched_idxs = [
            match_anchors(target["boxes"], anchors_i, self.proposal_matcher)
            for anchors_i, target in zip(anchors, targets, strict=True)
        ]
        return self.head.compute_loss(targets, head_outputs, anchors, matched_idxs)

    def postprocess_detections(
        self, head_outputs: dict[str, list[Tensor]], anchors: list[list[Tensor]], image_shapes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        results = []
        for i, image_shape in enumerate(image_shapes):
            logits = torch.cat([level[i] for level in head_outputs["cls_logits"]])[:, 1:]  # no background class
            deltas = torch.cat([level[i] for level in head_outputs["bbox_regression"]])
            anchors_i = torch.cat(anchors[i])
            index, labels, top_scores = top_candidates(logits, self.topk_candidates, self.score_thresh)
            labels = labels + 1
            boxes = self.box_coder.decode_single(deltas[index], anchors_i[index])
            boxes = clip_boxes_to_image(boxes, image_shape)
            # Model Garden's padded NMS treats all-zero boxes as padding: a box clipped to the image's top-left
            # corner is dropped (other zero-area boxes are kept, as there).
            real = boxes.abs().sum(dim=1) > 0
            boxes, top_scores, labels = boxes[real], top_scores[real], labels[real]
            kept = batched_nms(boxes, top_scores, labels, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": boxes[kept], "scores": top_scores[kept], "labels": labels[kept]})
        return results


def top_candidates(logits: Tensor, k: int, score_thresh: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per class (column of `logits`, ``(anchors, classes)``), the `k` best sigmoid scores, of those the ones above
    `score_thresh`: ``(anchor index, class column, score)`` of each.

    The same set as ``sigmoid(logits).topk(k, dim=0)`` followed by the threshold, found the other way round: the
    threshold first, on the logits (sigmoid is monotonic; a small margin, then the exact test on the sigmoid of the
    few candidates), and a per-class top-k only when some class has more than `k` scores above it. A dense top-k
    over every anchor and class (7M scores at 640 px) cost about 60 ms per image on CPU, more than the NMS.
    """
    if 0.0 < score_thresh < 1.0:
        cut = math.log(score_thresh / (1.0 - score_thresh)) - 0.05  # margin for the rounding of fp16 logits
        candidates = (logits > cut).nonzero()
        scores = torch.sigmoid(logits[candidates[:, 0], candidates[:, 1]])
        keep = scores > score_thresh
        candidates, scores = candidates[keep], scores[keep]
        if candidates.shape[0] <= k or torch.bincount(candidates[:, 1]).max() <= k:
            return candidates[:, 0], candidates[:, 1], scores
    # Some class has more than k scores above the threshold (or the threshold is no probability): the dense top-k.
    top_scores, top_index = torch.sigmoid(logits).topk(min(k, logits.shape[0]), dim=0)
    classes = torch.arange(logits.shape[1], device=logits.device).expand_as(top_scores)
    keep = top_scores > score_thresh
    return top_index[keep], classes[keep], top_scores[keep]


def build_retinanet(
    backbone: str | nn.Module = "spinenet49",
    *,
    backbone_args: Mapping[str, Any] | None = None,
    num_classes: int = 91,
    image_size: int | None = None,
    num_convs: int | None = None,
    num_filters: int | None = None,
    anchor_size: float | None = None,
    num_scales: int = 3,
    aspect_ratios: Sequence[float] = ASPECT_RATIOS,
    separable: bool | None = None,
    act: str | None = None,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    topk_candidates: int = 5000,
) -> RetinaNet:
    """A RetinaNet as in the paper, following torchvision's detection API (images in, ``list[dict]`` out).

    The head levels, the anchors and the padding (to a multiple of ``2**max_level``) follow the backbone's
    ``feature_info``, so P3-P7, P2-P6 or P4-P7 backbones all work. Weights files are loaded by
    `torchspine.load_model`, which passes what the file records as these arguments.

    Args:
        backbone: a registered SpineNet name, ``"resnet50_fpn"``/``"resnet101_fpn"``/``"resnet152_fpn"``, or a
            backbone module with ``out_channels`` and ``feature_info`` (consecutive levels). A name also selects
            the paper's head defaults (`torchspine.variants`); a module gets SpineNet-49's.
        backbone_args: `torchspine.create_model` overrides for a named SpineNet (e.g. ``drop_path_rate``,
            ``norm_momentum``, ``act``, ``min_level``).
        num_classes: class outputs (the official COCO models: 91, indexed by COCO category id).
        image_size: square input size (default: the paper's for the backbone); a multiple of ``2**max_level``.
        num_convs: head tower depth (default: 4; 7 for SpineNet-190).
        num_filters: head width (default: 128 for 49S, 256, 512 for 190, 48/40/24 for the mobile models).
        anchor_size: anchor base size in strides (default: 3; 4 for SpineNet-143/190).
        num_scales: anchor scales per octave.
        aspect_ratios: anchor width/height ratios, in the head's channel order.
        separable: separable head convs (default: for the mobile models).
        act: head activation (default: the backbone's).
        score_thresh: minimum class probability kept before NMS.
        nms_thresh: NMS IoU threshold (per class).
        detections_per_img: detections kept per image.
        topk_candidates: best candidates per class kept before NMS.

    Returns:
        torchvision ``RetinaNet`` (`SpineNetRetinaNet`) with the official anchors, box coding, head, losses and
        post-processing.
    """
    d = backbone_defaults(backbone if isinstance(backbone, str) else "custom")
    if isinstance(backbone, str):
        if backbone in RESNET_FPN_BACKBONES:
            extra = sorted(set(backbone_args or {}) - {"norm_eps", "norm_momentum"})
            if extra:
                raise UsageError(f"backbone_args {extra} do not apply to {backbone} (only norm_eps, norm_momentum)")
            backbone = ResNetFPN(backbone, **(backbone_args or {}))
        else:
            backbone = create_model(backbone, **(backbone_args or {}))
    levels = feature_levels(backbone)
    r = d.retinanet
    act = act or getattr(backbone, "act_name", "relu")
    anchors = TFAnchorGenerator(
        levels[0],
        levels[-1],
        r.anchor_size if anchor_size is None else anchor_size,
        num_scales=num_scales,
        aspect_ratios=aspect_ratios,
    )
    head = RetinaNetHead(
        backbone.out_channels,
        anchors.num_anchors_per_location()[0],
        num_classes,
        num_levels=len(levels),
        num_convs=num_convs or r.num_convs,
        num_filters=num_filters or r.num_filters,
        act=act,
        norm_eps=getattr(backbone, "norm_eps", 1e-4),
        norm_momentum=getattr(backbone, "norm_momentum", 1 - 0.997),
        separable=r.separable if separable is None else separable,
    )
    model = SpineNetRetinaNet(
        backbone,
        num_classes,
        anchor_generator=anchors,
        head=head,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        topk_candidates=topk_candidates,
    )
    model.transform = SquarePadTransform(image_size or d.image_size, size_divisible=2 ** levels[-1])
    model.box_coder = TFBoxCoder()
    return model
