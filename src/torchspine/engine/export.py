"""A trained model as a torchspine model file (`torchspine.modelfile`), the same format ``torchspine convert`` writes.

Every task exports: a run leaves ``OUTPUT_DIR/model.safetensors`` whose description (read off the built model, so
it cannot disagree with the tensors) records the backbone's architecture and numerics, the head, the training input
size, the category names of the data set and the run's provenance. ``torchspine eval/predict --weights`` and
`torchspine.load_model` rebuild the model with no further flags. The file holds tensors only (no pickle).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import nn
from torchvision.models.detection import MaskRCNN

from torchspine.modelfile import (
    BackboneInfo,
    ClassifierHeadInfo,
    MaskRCNNHeadInfo,
    ModelFile,
    Numerics,
    Provenance,
    RetinaNetHeadInfo,
    categories_from,
    save_model_file,
)
from torchspine.models.classifier import ImageClassifier
from torchspine.models.classifier_train import TrainableClassifier
from torchspine.models.detection.retinanet import SpineNetRetinaNet
from torchspine.models.spinenet import SpineNet

__all__ = ["describe_model", "export_model"]


def _backbone_info(backbone: nn.Module, variant: str) -> BackboneInfo:
    if isinstance(backbone, SpineNet):
        numerics = Numerics(backbone.semantics, backbone.act_name, backbone.norm_eps, backbone.norm_momentum)
        return BackboneInfo(variant, backbone.cfg, numerics)
    # A ResNet-FPN baseline: torchvision builds it from the name; its BatchNorm constants are recorded when a recipe
    # set them (`ResNetFPN`), so a reloaded model computes as the trained one (semantics is unused for ResNets).
    eps, momentum = getattr(backbone, "norm_eps", None), getattr(backbone, "norm_momentum", None)
    if eps is None or momentum is None:
        return BackboneInfo(variant)
    return BackboneInfo(variant, numerics=Numerics("tpu", "relu", eps, momentum))


def describe_model(
    model: nn.Module,
    *,
    variant: str,
    categories: Mapping[int, str] | None = None,
    provenance: Provenance | None = None,
    image_size: int | None = None,
) -> tuple[ModelFile, nn.Module]:
    """The `ModelFile` of a model built by `torchspine.engine.build.build_model` (or the builders), and the module
    whose state dict the file holds (a `TrainableClassifier` is unwrapped to its `ImageClassifier`).

    Args:
        model: a SpineNet, an `ImageClassifier` (or `TrainableClassifier`), or a RetinaNet / Mask R-CNN from
            `build_retinanet` / `build_mask_rcnn`.
        variant: the registered backbone name it was built from (``"custom"`` for an unregistered config).
        categories: id -> name of the classes (detectors: category ids; classifiers: output indices).
        provenance: where the weights come from (default: ``saved``).
        image_size: a classifier's input size (detectors record their transform's).
    """
    cats = categories_from(categories or {})
    prov = provenance or Provenance()
    if isinstance(model, TrainableClassifier):
        model = model.classifier
    if isinstance(model, SpineNet):
        return ModelFile("backbone", _backbone_info(model, variant), provenance=prov), model
    if isinstance(model, ImageClassifier):
        info = ModelFile(
            "classification",
            _backbone_info(model.backbone, variant),
            num_classes=model.num_classes,
            head=ClassifierHeadInfo(),
            image_size=image_size,
            categories=cats,
            provenance=prov,
        )
        return info, model
    backbone = model.backbone
    image_size = int(model.transform.image_size)
    if isinstance(model, SpineNetRetinaNet):
        head, anchors = model.head, model.anchor_generator
        retinanet = RetinaNetHeadInfo(
            num_convs=head.num_convs,
            num_filters=head.num_filters,
            separable=head.separable,
            anchor_size=float(anchors.anchor_size),
            num_scales=anchors.num_scales,
            aspect_ratios=tuple(anchors.aspect_ratios),
        )
        info = ModelFile(
            "retinanet",
            _backbone_info(backbone, variant),
            num_classes=head.num_classes,
            head=retinanet,
            image_size=image_size,
            categories=cats,
            provenance=prov,
        )
        return info, model
    if isinstance(model, MaskRCNN):
        roi = model.roi_heads
        mask_rcnn = MaskRCNNHeadInfo(
            head_dim=model.rpn.head.cls_logits.in_channels,
            num_convs=len(roi.box_head.convs),
            fc_dim=roi.box_head.fcs[0][0].out_features,
            anchor_size=float(model.rpn.anchor_generator.anchor_size),
            rpn_num_convs=len(model.rpn.head.convs),
            num_fcs=len(roi.box_head.fcs),
            anchor_num_scales=int(model.rpn.anchor_generator.num_scales),
        )
        info = ModelFile(
            "maskrcnn",
            _backbone_info(backbone, variant),
            num_classes=roi.box_predictor.cls_score.out_features,
            head=mask_rcnn,
            image_size=image_size,
            categories=cats,
            provenance=prov,
        )
        return info, model
    raise TypeError(f"cannot describe a {type(model).__name__}: not a torchspine backbone, classifier or detector")


def export_model(
    model: nn.Module,
    path: str | Path,
    *,
    variant: str,
    categories: Mapping[int, str] | None = None,
    provenance: Provenance | None = None,
    image_size: int | None = None,
) -> Path:
    """Write `model`'s weights (float tensors as trained, BN statistics included) and description to `path`
    (arguments as `describe_model`)."""
    info, module = describe_model(
        model, variant=variant, categories=categories, provenance=provenance, image_size=image_size
    )
    return save_model_file(module.state_dict(), info, path)
