"""Tensor-in, tensors-out modules of every task, for ``torch.export``, ONNX and TorchScript.

torchvision's detectors take a list of images and return a list of dicts, and their transform resizes on the
host; none of that exports with dynamic shapes. These wrappers take one batch tensor ``(N, 3, H, W)`` with H and W
multiples of ``2**max_level`` (the detector's ``size_divisible``) and return a fixed tuple of tensors, with the same
weights and the same arithmetic as the eager model:

* `BackboneGraph`: the feature maps ``p{min_level}..p{max_level}``.
* `ClassifierGraph`: logits ``(N, num_classes)`` of normalised images.
* `RetinaNetGraph`: detections of ``[0, 1]`` RGB images, normalised in the graph, with the official
  post-processing (`torchspine.deploy.postprocess.retinanet_detections`: per-class top-k, score threshold,
  decoding, clipping, per-class NMS, per-image cap) in the graph, or its raw decoded boxes and class
  probabilities with ``raw=True``.
* `MaskRCNNGraph`: the dense part of Mask R-CNN (features, RPN objectness and box deltas per level); the RoI
  stages are data-dependent loops over torchvision's ``roi_heads`` and stay in PyTorch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN

from torchspine.deploy.postprocess import decode_retinanet, retinanet_detections
from torchspine.models.detection.retinanet import SpineNetRetinaNet


class BackboneGraph(nn.Module):
    """A SpineNet returning its features as a tuple, ascending level (names in `output_names`)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.output_names = [f.key for f in backbone.feature_info]

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.backbone(images).values())


class ClassifierGraph(nn.Module):
    """An `ImageClassifier`: normalised ``(N, 3, H, W)`` in, logits out."""

    output_names = ["logits"]

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(images)


class _Normalize(nn.Module):
    """The detectors' input normalisation (their transform's mean and std) as a graph op."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class RetinaNetGraph(nn.Module):
    """A `SpineNetRetinaNet` from ``[0, 1]`` RGB images ``(N, 3, H, W)`` to detections.

    Outputs, with ``raw=False``: ``boxes (D, 4)`` ``[x1, y1, x2, y2]`` in input pixels, ``scores (D,)``,
    ``labels (D,)`` (int64 class ids) and ``batch_index (D,)`` (int64 image of each detection), sorted by image and,
    within an image, by decreasing score: exactly the eager model's per-image lists, concatenated. With
    ``raw=True``: ``boxes (N, M, 4)`` decoded and clipped for all M anchors and ``scores (N, M, K - 1)`` class
    probabilities without background, to post-process with `retinanet_detections`.
    """

    def __init__(self, model: SpineNetRetinaNet, *, raw: bool = False) -> None:
        super().__init__()
        if not isinstance(model, SpineNetRetinaNet):
            raise TypeError(f"RetinaNetGraph needs a SpineNetRetinaNet, got {type(model).__name__}")
        self.normalize = _Normalize(model.transform.image_mean, model.transform.image_std)
        self.backbone = model.backbone
        self.head = model.head
        self.anchor_generator = model.anchor_generator
        self.raw = raw
        self.score_thresh, self.nms_thresh = model.score_thresh, model.nms_thresh
        self.topk_candidates, self.detections_per_img = model.topk_candidates, model.detections_per_img
        self.output_names = ["boxes", "scores"] if raw else ["boxes", "scores", "labels", "batch_index"]

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        feats = list(self.backbone(self.normalize(images)).values())
        out = self.head(feats)
        anchors = self.anchor_generator.grid_anchors([f.shape[-2:] for f in feats], images.device, images.dtype)
        boxes, scores = decode_retinanet(out["cls_logits"], out["bbox_regression"], anchors, images.shape[-2:])
        if self.raw:
            return boxes, scores
        return retinanet_detections(
            boxes,
            scores,
            score_thresh=self.score_thresh,
            nms_thresh=self.nms_thresh,
            topk_candidates=self.topk_candidates,
            detections_per_img=self.detections_per_img,
        )


class MaskRCNNGraph(nn.Module):
    """The dense part of a Mask R-CNN: features and per-level RPN objectness ``(N, A, H_l, W_l)`` and box deltas
    ``(N, 4A, H_l, W_l)`` of ``[0, 1]`` RGB images, normalised in the graph."""

    def __init__(self, model: MaskRCNN) -> None:
        super().__init__()
        self.normalize = _Normalize(model.transform.image_mean, model.transform.image_std)
        self.backbone = model.backbone
        self.rpn_head = model.rpn.head
        keys = [f.key for f in model.backbone.feature_info]
        self.output_names = keys + [f"objectness_{k}" for k in keys] + [f"rpn_deltas_{k}" for k in keys]

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        feats = list(self.backbone(self.normalize(images)).values())
        objectness, deltas = self.rpn_head(feats)
        return (*feats, *objectness, *deltas)
