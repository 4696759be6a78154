"""Finish a Mask R-CNN whose dense part was exported: proposals, RoI box and mask heads in PyTorch.

`torchspine export` writes a Mask R-CNN's dense part only (`torchspine.deploy.graphs.MaskRCNNGraph`: features and
per-level RPN outputs), the part that holds nearly all of its multiply-adds. The rest (proposal selection, RoIAlign,
the box and mask heads, per-class NMS, mask pasting) is data-dependent control flow that ONNX expresses poorly;
`mask_rcnn_detections` runs it with the model's own eager modules on the dense part's outputs, e.g. from ONNX
Runtime, so a deployment gets exactly what ``model(images)`` returns.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.image_list import ImageList

__all__ = ["mask_rcnn_detections"]


class _GivenRPNOutputs(nn.Module):
    """Stands in for an RPN head: returns the objectness and box deltas computed elsewhere."""

    def __init__(self, objectness: list[Tensor], deltas: list[Tensor]) -> None:
        super().__init__()
        self.objectness, self.deltas = objectness, deltas

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        del features
        return self.objectness, self.deltas


def mask_rcnn_detections(model: MaskRCNN, outputs: Sequence[Tensor | np.ndarray]) -> list[dict[str, Tensor]]:
    """The detections of `model` from the outputs of its exported dense part.

    Args:
        model: the Mask R-CNN the file was exported from (`torchspine.load_model` of the same model file), in eval
            mode; its RPN, RoI heads and score/NMS settings finish the job.
        outputs: the exported graph's outputs in order (``p3..p7``, ``objectness_p3..``, ``rpn_deltas_p3..``), as
            tensors or NumPy arrays (ONNX Runtime's ``session.run(None, ...)``).

    Returns:
        torchvision's per-image ``[{"boxes", "labels", "scores", "masks"}]`` in the pixels of the images given to
        the exported graph (its input size is taken from the first level's feature size and stride).
    """
    if model.training:
        raise ValueError("mask_rcnn_detections needs the model in eval mode, call .eval() first")
    info = model.backbone.feature_info
    if len(outputs) != 3 * len(info):
        raise ValueError(
            f"expected {3 * len(info)} outputs (features, objectness, RPN deltas for levels "
            f"{', '.join(f.key for f in info)}), got {len(outputs)}"
        )
    tensors = [torch.as_tensor(o) for o in outputs]
    n = len(info)
    features = OrderedDict((f.key, t) for f, t in zip(info, tensors[:n], strict=True))
    first = tensors[0]
    # The export takes H, W multiples of the coarsest stride, so every level's size times its stride is the input's.
    height, width = first.shape[-2] * info[0].stride, first.shape[-1] * info[0].stride
    sizes = [(height, width)] * first.shape[0]
    images = ImageList(first.new_empty(first.shape[0], 0, height, width), sizes)  # only its shape is read
    rpn = copy.copy(model.rpn)  # the model's own RPN settings, with the exported head outputs
    rpn._modules = dict(rpn._modules)
    rpn._modules["head"] = _GivenRPNOutputs(tensors[n : 2 * n], tensors[2 * n :])
    with torch.no_grad():
        proposals, _ = rpn(images, features)
        detections, _ = model.roi_heads(features, proposals, sizes)
        return model.transform.postprocess(detections, sizes, sizes)
