"""``torchspine.load_model(path)``: the ready model of whatever task a weights file holds (timm/torchvision style).

The file's `torchspine.modelfile.ModelFile` says what to build; this module turns it into the builders' explicit
arguments (the builders never read metadata) and loads the tensors strictly. Precedence: explicit arguments over
the file. Arguments that only change how the model runs (input size, numerics, post-processing) simply win; an
argument that contradicts what the tensors are (another task, backbone, class count, head or architecture) cannot
work and is an error that says so, never a silent choice. Plain state dicts (``.pt``, or ``.safetensors`` without
a description) are built from the arguments alone: `task`, `backbone` and, for heads, `num_classes`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from torchspine.modelfile import (
    TASKS,
    BackboneInfo,
    ClassifierHeadInfo,
    MaskRCNNHeadInfo,
    ModelFile,
    ModelFileError,
    Numerics,
    RetinaNetHeadInfo,
    load_state,
    read_model_file,
    read_tensors,
)
from torchspine.models.classifier import ImageClassifier
from torchspine.models.detection.mask_rcnn import build_mask_rcnn
from torchspine.models.detection.resnet_fpn import RESNET_FPN_BACKBONES, ResNetFPN
from torchspine.models.detection.retinanet import build_retinanet
from torchspine.models.spinenet import SEMANTICS
from torchspine.registry import spinenet_from_file, variant_info
from torchspine.variants import backbone_defaults

__all__ = ["load_model", "model_file_for"]

# Head settings a file fixes (its tensors have these shapes or were trained with them).
_HEAD_FIELDS = {
    "retinanet": {f.name for f in dataclasses.fields(RetinaNetHeadInfo)},
    "maskrcnn": {f.name for f in dataclasses.fields(MaskRCNNHeadInfo)},
    "classification": set(),
    "backbone": set(),
}
# Arguments of `build_retinanet` that only change post-processing.
_RETINANET_RUNTIME = {"score_thresh", "nms_thresh", "detections_per_img", "topk_candidates"}


def model_file_for(task: str, backbone: str, num_classes: int | None, head: dict[str, Any] | None = None) -> ModelFile:
    """The description of a plain state dict: `task` on the registered `backbone` with the paper's defaults."""
    if task not in TASKS:
        raise ModelFileError(f"task {task!r}: expected one of {', '.join(TASKS)}")
    if task != "backbone" and num_classes is None:
        raise ModelFileError(f"a {task} state dict without torchspine metadata needs num_classes (--num-classes)")
    d = backbone_defaults(backbone)
    if backbone in RESNET_FPN_BACKBONES:
        info = BackboneInfo(backbone)
    else:
        v = variant_info(backbone)
        defaults = SEMANTICS[v.semantics]
        numerics = Numerics(v.semantics, v.act, defaults.norm_eps, defaults.norm_momentum)
        info = BackboneInfo(backbone, v.cfg, numerics)
    head = dict(head or {})
    head_info: Any = None
    if task == "retinanet":
        r = d.retinanet
        head_info = RetinaNetHeadInfo(
            num_convs=head.pop("num_convs", r.num_convs),
            num_filters=head.pop("num_filters", r.num_filters),
            separable=head.pop("separable", r.separable),
            anchor_size=head.pop("anchor_size", r.anchor_size),
            **head,
        )
    elif task == "maskrcnn":
        m = d.mask_rcnn
        head_info = MaskRCNNHeadInfo(
            head_dim=head.pop("head_dim", m.head_dim),
            num_convs=head.pop("num_convs", m.num_convs),
            fc_dim=head.pop("fc_dim", m.fc_dim),
            anchor_size=head.pop("anchor_size", m.anchor_size),
            rpn_num_convs=head.pop("rpn_num_convs", m.rpn_num_convs),
            **head,
        )
    elif task == "classification":
        head_info = ClassifierHeadInfo()
    return ModelFile(task=task, backbone=info, num_classes=num_classes, head=head_info)  # type: ignore[arg-type]


def load_model(
    path: str | Path,
    *,
    task: str | None = None,
    backbone: str | None = None,
    num_classes: int | None = None,
    image_size: int | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build the model `path` holds, load its tensors strictly, and return it in eval mode.

    Args:
        path: a torchspine model file (``torchspine convert``, a training run's ``model.safetensors``), or a plain
            ``.safetensors``/``.pt`` state dict (then `task`, `backbone` and `num_classes` are needed).
        task: ``backbone``, ``classification``, ``retinanet`` or ``maskrcnn``; must match the file's.
        backbone: registered variant or ResNet-FPN name; must match the file's.
        num_classes: class outputs; must match the file's.
        image_size: detector input size (default: the file's, else the variant's).
        **overrides: `SpineNet` arguments (``act``, ``semantics``, ``norm_eps``, ``drop_path_rate``, ...) and
            RetinaNet post-processing (``score_thresh``, ``nms_thresh``, ``detections_per_img``,
            ``topk_candidates``) override the file; `SpineNetCfg` fields and head settings (``num_convs``,
            ``num_filters``, ``separable``, ``anchor_size``, ``head_dim``, ``fc_dim``, ...) must equal it.

    Returns:
        `SpineNet` (backbone), `ImageClassifier` (normalised ``(N, 3, H, W)`` in, logits out), or a torchvision
        ``RetinaNet`` / ``MaskRCNN`` (``[0, 1]`` images in, detections out), in eval mode.

    Raises:
        ModelFileError: an unreadable file, tensors that do not fit, or an argument that contradicts the file.
    """
    info = read_model_file(path)
    head_overrides = {k: overrides.pop(k) for k in list(overrides) if k in set().union(*_HEAD_FIELDS.values())}
    if info is None:
        if task is None or backbone is None:
            raise ModelFileError(
                f"{path}: no torchspine metadata, so the model is unknown: pass task= and backbone= (CLI: --task "
                "and --model), and num_classes= for a head"
            )
        info = model_file_for(task, backbone, num_classes, head_overrides)
    else:
        _check_against_file(info, path, task=task, backbone=backbone, num_classes=num_classes, head=head_overrides)
    model = build_from_file(info, path, image_size=image_size, overrides=overrides)
    if info.task != "backbone":  # a backbone is loaded by `spinenet_from_file`
        load_state(model, read_tensors(path), path)
    return model.eval()


def _check_against_file(
    info: ModelFile,
    path: str | Path,
    *,
    task: str | None,
    backbone: str | None,
    num_classes: int | None,
    head: dict[str, Any],
) -> None:
    problems = []
    if task is not None and task != info.task:
        problems.append(f"task={task!r} but the file holds a {info.task} model")
    if backbone is not None and backbone not in (info.backbone.variant, "custom"):
        problems.append(f"backbone={backbone!r} but the file's backbone is {info.backbone.variant}")
    if num_classes is not None and num_classes != info.num_classes:
        problems.append(
            f"num_classes={num_classes} but the file's {info.task} has {info.num_classes} class outputs "
            "(a different count needs a new head: build the model and load the backbone instead)"
        )
    for key, value in head.items():
        if key not in _HEAD_FIELDS[info.task]:
            problems.append(f"{key}= does not apply to a {info.task} model")
        elif value != getattr(info.head, key):
            problems.append(f"{key}={value!r} but the file's head has {getattr(info.head, key)!r}")
    if problems:
        raise ModelFileError(f"{path}: cannot apply the given arguments: " + "; ".join(problems))


def build_from_file(
    info: ModelFile, path: str | Path, *, image_size: int | None = None, overrides: dict[str, Any] | None = None
) -> nn.Module:
    """The (untrained) model `info` describes, as the builders' explicit arguments; a backbone-only file's tensors
    are loaded here too (by `spinenet_from_file`)."""
    overrides = dict(overrides or {})
    runtime = {k: overrides.pop(k) for k in list(overrides) if k in _RETINANET_RUNTIME}
    if runtime and info.task != "retinanet":
        raise ModelFileError(f"{', '.join(runtime)}: only RetinaNet post-processing takes these arguments")
    b = info.backbone
    if b.cfg is None:
        if info.task == "backbone":
            raise ModelFileError(f"{path}: a backbone-only file must hold a SpineNet, not {b.variant}")
        if overrides:
            raise ModelFileError(f"{path}: {', '.join(overrides)} do not apply to the {b.variant} backbone")
        norm = (
            {} if b.numerics is None else {"norm_eps": b.numerics.norm_eps, "norm_momentum": b.numerics.norm_momentum}
        )
        backbone: nn.Module = ResNetFPN(b.variant, **norm)
    else:
        backbone = spinenet_from_file(info, path, overrides, load=info.task == "backbone")
    if info.task == "backbone":
        return backbone
    assert info.num_classes is not None
    if info.task == "classification":
        return ImageClassifier(backbone, info.num_classes)  # type: ignore[arg-type]
    size = image_size or info.image_size or backbone_defaults(b.variant).image_size
    act = getattr(backbone, "act_name", None)
    if info.task == "retinanet":
        h = info.head
        assert isinstance(h, RetinaNetHeadInfo)
        return build_retinanet(
            backbone,
            num_classes=info.num_classes,
            image_size=size,
            num_convs=h.num_convs,
            num_filters=h.num_filters,
            anchor_size=h.anchor_size,
            num_scales=h.num_scales,
            aspect_ratios=h.aspect_ratios,
            separable=h.separable,
            act=act,
            **runtime,
        )
    h = info.head
    assert isinstance(h, MaskRCNNHeadInfo)
    return build_mask_rcnn(
        backbone,
        num_classes=info.num_classes,
        image_size=size,
        head_dim=h.head_dim,
        num_convs=h.num_convs,
        fc_dim=h.fc_dim,
        anchor_size=h.anchor_size,
        act=act,
        rpn_num_convs=h.rpn_num_convs,
        num_fcs=h.num_fcs,
        anchor_num_scales=h.anchor_num_scales,
    )
