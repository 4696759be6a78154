"""RetinaNet with a SpineNet (or ResNet-FPN) backbone, composed from torchvision's ``RetinaNet``.

Du et al., 2020, §4.1; official code: tensorflow/tpu ``retinanet_model.py`` / Model Garden ``retinanet_model.py``.
torchvision supplies matching, the training/inference loop and NMS; the parts where the paper differs are injected:
the head (shared convs, per-level BN, official losses), the anchors and box coding (`anchors`), the square-padding
transform, and the official matcher and post-processing settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import RetinaNet
from torchvision.ops import batched_nms, clip_boxes_to_image

from torchspine.models.detection.anchors import ASPECT_RATIOS, TFAnchorGenerator, TFBoxCoder
from torchspine.models.detection.heads import RetinaNetHead
from torchspine.models.detection.matching import match_anchors
from torchspine.models.detection.resnet_fpn import RESNET_FPN_BACKBONES, ResNetFPN
from torchspine.models.detection.transform import SquarePadTransform
from torchspine.registry import create_model, variant_info


@dataclass(frozen=True)
class RetinaNetDefaults:
    """The paper's per-backbone RetinaNet settings (reference spinenet.md §4.1)."""

    image_size: int
    num_convs: int = 4
    num_filters: int = 256
    anchor_size: float = 3.0
    separable: bool = False


RETINANET_DEFAULTS: dict[str, RetinaNetDefaults] = {
    "spinenet49s": RetinaNetDefaults(640, num_filters=128),
    "spinenet49": RetinaNetDefaults(640),
    "spinenet96": RetinaNetDefaults(1024),
    "spinenet143": RetinaNetDefaults(1280, anchor_size=4.0),
    "spinenet143l": RetinaNetDefaults(1280, anchor_size=4.0),
    "spinenet190": RetinaNetDefaults(1280, num_convs=7, num_filters=512, anchor_size=4.0),
    "spinenet49_mobile": RetinaNetDefaults(384, num_filters=48, separable=True),
    "spinenet49s_mobile": RetinaNetDefaults(384, num_filters=40, separable=True),
    "spinenet49xs_mobile": RetinaNetDefaults(256, num_filters=24, separable=True),
    "test_spinenet": RetinaNetDefaults(128, num_convs=2, num_filters=32),
    "test_spinenet_mobile": RetinaNetDefaults(128, num_convs=2, num_filters=16, separable=True),
    "resnet50_fpn": RetinaNetDefaults(640),
    "resnet101_fpn": RetinaNetDefaults(1024),
    "resnet152_fpn": RetinaNetDefaults(1280, anchor_size=4.0),
}


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
            scores = torch.sigmoid(torch.cat([level[i] for level in head_outputs["cls_logits"]]))
            deltas = torch.cat([level[i] for level in head_outputs["bbox_regression"]])
            anchors_i = torch.cat(anchors[i])
            scores = scores[:, 1:]  # drop the background class
            top_scores, top_index = scores.topk(min(self.topk_candidates, scores.shape[0]), dim=0)
            labels = torch.arange(1, scores.shape[1] + 1, device=scores.device).expand_as(top_scores)
            keep = top_scores > self.score_thresh
            index, top_scores, labels = top_index[keep], top_scores[keep], labels[keep]
            boxes = self.box_coder.decode_single(deltas[index], anchors_i[index])
            boxes = clip_boxes_to_image(boxes, image_shape)
            # Model Garden's padded NMS treats all-zero boxes as padding: a box clipped to the image's top-left
            # corner is dropped (other zero-area boxes are kept, as there).
            real = boxes.abs().sum(dim=1) > 0
            boxes, top_scores, labels = boxes[real], top_scores[real], labels[real]
            kept = batched_nms(boxes, top_scores, labels, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": boxes[kept], "scores": top_scores[kept], "labels": labels[kept]})
        return results


def build_retinanet(
    backbone: str | nn.Module | None = None,
    *,
    backbone_args: Mapping[str, Any] | None = None,
    num_classes: int = 91,
    image_size: int | None = None,
    num_convs: int | None = None,
    num_filters: int | None = None,
    anchor_size: float | None = None,
    separable: bool | None = None,
    act: str | None = None,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    topk_candidates: int = 5000,
    weights: str | Path | None = None,
) -> RetinaNet:
    """A RetinaNet as in the paper, following torchvision's detection API (images in, ``list[dict]`` out).

    Args:
        backbone: a registered SpineNet name, ``"resnet50_fpn"``/``"resnet101_fpn"``/``"resnet152_fpn"``, or a
            backbone module with ``out_channels`` and ``feature_info`` returning ``p3..p7`` (default: the variant
            recorded in `weights`, else ``"spinenet49"``). A name also selects the paper's head defaults.
        backbone_args: `torchspine.create_model` overrides for a named SpineNet (e.g. ``drop_path_rate``,
            ``norm_momentum``, ``act``).
        num_classes: class outputs (the official COCO models: 91, indexed by COCO category id).
        image_size: square input size (default: the one recorded in `weights`, else the paper's for the backbone); a
            multiple of 128.
        num_convs: head tower depth (default: 4; 7 for SpineNet-190).
        num_filters: head width (default: 128 for 49S, 256, 512 for 190, 48/40/24 for the mobile models).
        anchor_size: anchor base size in strides (default: 3; 4 for SpineNet-143/190).
        separable: separable head convs (default: for the mobile models).
        act: head activation (default: the backbone's).
        score_thresh: minimum class probability kept before NMS.
        nms_thresh: NMS IoU threshold (per class).
        detections_per_img: detections kept per image.
        topk_candidates: best candidates per level kept before NMS.
        weights: a converted or trained ``.safetensors`` file with ``backbone.*`` and ``head.*`` weights; its
            metadata (architecture, numerics, head) overrides the defaults.

    Returns:
        torchvision ``RetinaNet`` (`SpineNetRetinaNet`) with the official anchors, box coding, head, losses and
        post-processing.
    """
    meta = None
    if weights is not None:
        from torchspine.weights import read_metadata

        meta = read_metadata(weights)
        if meta is not None and meta.get("task") != "retinanet":
            raise ValueError(f"{weights} holds a {meta.get('task')} model, not a RetinaNet")
    recorded = (meta or {}).get("variant")
    if backbone is None:
        backbone = recorded if recorded not in (None, "custom") else "spinenet49"
    elif isinstance(backbone, str) and recorded not in (None, "custom", backbone):
        raise ValueError(f"{weights} holds a {recorded} RetinaNet, not {backbone}")
    name = backbone if isinstance(backbone, str) else None
    defaults = RETINANET_DEFAULTS.get(name or "", RetinaNetDefaults(640))
    if isinstance(backbone, str):
        if backbone in RESNET_FPN_BACKBONES:
            backbone = ResNetFPN(backbone)
        elif meta is not None:
            from torchspine.weights import backbone_kwargs

            backbone = create_model(backbone, **{**backbone_kwargs(meta), **(backbone_args or {})})
        else:
            variant_info(backbone)  # a clear error for unknown names
            backbone = create_model(backbone, **(backbone_args or {}))
    head_meta = (meta or {}).get("head", {})
    image_size = image_size or (meta or {}).get("image_size") or defaults.image_size  # trained files record it
    num_convs = head_meta.get("num_convs", num_convs or defaults.num_convs)
    num_filters = head_meta.get("num_filters", num_filters or defaults.num_filters)
    separable = head_meta.get("separable", defaults.separable if separable is None else separable)
    num_classes = head_meta.get("num_classes", num_classes)
    act = act or getattr(backbone, "act_name", "relu")
    anchors = TFAnchorGenerator(
        3,
        7,
        anchor_size or defaults.anchor_size,
        num_scales=3,
        aspect_ratios=head_meta.get("anchor_aspect_ratios", ASPECT_RATIOS),
    )
    num_levels = len(backbone.feature_info)
    head = RetinaNetHead(
        backbone.out_channels,
        anchors.num_anchors_per_location()[0],
        num_classes,
        num_levels=num_levels,
        num_convs=num_convs,
        num_filters=num_filters,
        act=act,
        norm_eps=getattr(backbone, "norm_eps", 1e-4),
        norm_momentum=getattr(backbone, "norm_momentum", 1 - 0.997),
        separable=separable,
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
    model.transform = SquarePadTransform(image_size, size_divisible=2**7)
    model.box_coder = TFBoxCoder()
    if weights is not None:
        from torchspine.weights import load_weights

        load_weights(model, weights)
    return model
