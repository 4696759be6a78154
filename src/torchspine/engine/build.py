"""From a resolved `ExperimentCfg` to training objects: the only place that reads the config.

Modules below this never see a config object (STYLE rule 5): the builders here turn its fields into the explicit
arguments of `build_retinanet`, `create_model`, the datasets, the optimizer and the LR schedule.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from torchspine.config.backbone import spinenet_cfg
from torchspine.config.schema import DataCfg, ExperimentCfg, ModelCfg, OptimCfg, ScheduleCfg
from torchspine.data.classification import build_classification_dataset, eval_transform, train_transform
from torchspine.data.coco import build_dataset
from torchspine.data.holdout import holdout_split
from torchspine.data.synthetic import make_demo_dataset
from torchspine.data.synthetic_classification import DEMO_CLASSIFICATION_VERSION, make_demo_classification_dataset
from torchspine.data.transforms import Compose, RandomHorizontalFlip, RandomResizeCrop
from torchspine.engine.trainer import warmup_step_schedule
from torchspine.layers.bn_act import set_fused_bn_act
from torchspine.modelfile import load_backbone_state
from torchspine.models.classifier import create_classifier
from torchspine.models.classifier_train import TrainableClassifier
from torchspine.models.detection.mask_rcnn import build_mask_rcnn
from torchspine.models.detection.resnet_fpn import RESNET_FPN_BACKBONES
from torchspine.models.detection.retinanet import build_retinanet


def demo_data_dir(cache: Path) -> Path:
    """The built-in demo data set, generated once into `cache` (deterministic, so the cache is safe to reuse)."""
    root = cache / "demo_data"
    if not (root / "annotations" / "instances_val.json").is_file():
        make_demo_dataset(root)
    return root


def demo_classification_data_dir(cache: Path) -> Path:
    """The built-in ImageFolder demo data set, generated once into `cache` (a marker file records completion and
    the generator version, so a cache written by an older generator is regenerated rather than silently reused)."""
    root = cache / "demo_classification_data"
    marker = root / ".complete"
    stamp = f"torchspine demo classification data, seed 0, generator v{DEMO_CLASSIFICATION_VERSION}\n"
    if not marker.is_file() or marker.read_text() != stamp:
        if root.is_dir():
            shutil.rmtree(root)  # an older generator's images would otherwise stay next to the new ones
        make_demo_classification_dataset(root)
        marker.write_text(stamp)
    return root


def build_classification_datasets(data: DataCfg, model: ModelCfg, cache: Path) -> tuple[Dataset, Dataset]:
    """ImageFolder training (random-resized crop over ``[scale_min, scale_max]`` of the area, flip) and validation
    (resize and centre crop) datasets; validation labels are tied to the training split's class folders."""
    root = Path(data.data) if data.data is not None else demo_classification_data_dir(cache)
    train = build_classification_dataset(
        root,
        data.train_split,
        transform=train_transform(model.image_size, (data.scale_min, data.scale_max), hflip=data.hflip),
        skip_bad=data.skip_bad,
    )
    val = build_classification_dataset(
        root, data.val_split, transform=eval_transform(model.image_size), skip_bad=data.skip_bad, classes=train.classes
    )
    return train, val


def build_datasets(data: DataCfg, model: ModelCfg, cache: Path) -> tuple[Dataset, Dataset]:
    """Training (official scale-jitter pipeline) and validation (untransformed) COCO-format datasets, or the
    ImageFolder datasets of `build_classification_datasets` for ``task: classification``."""
    if model.task == "classification":
        return build_classification_datasets(data, model, cache)
    root = Path(data.data) if data.data is not None else demo_data_dir(cache)
    with_masks = model.task == "maskrcnn"
    steps = [RandomResizeCrop(model.image_size, (data.scale_min, data.scale_max))]
    if data.hflip:
        steps.append(RandomHorizontalFlip())
    if data.holdout_images > 0:
        # The validation set is a seeded part of the training split (the search proxy's reward images); the
        # annotation file is parsed once and both splits are views of it.
        full = build_dataset(root, data.train_split, with_masks=with_masks, skip_bad=data.skip_bad)
        train_ids, held_ids = holdout_split(full.ids, data.holdout_images, data.holdout_seed)
        return full.restricted(train_ids, transforms=Compose(steps)), full.restricted(held_ids, transforms=None)
    train = build_dataset(
        root, data.train_split, transforms=Compose(steps), with_masks=with_masks, skip_bad=data.skip_bad
    )
    val = build_dataset(root, data.val_split, with_masks=with_masks, skip_bad=data.skip_bad)
    return train, val


def build_model(model: ModelCfg, num_classes: int, *, label_smoothing: float = 0.0) -> nn.Module:
    """The detector or classifier the config describes, with its backbone overrides; a classifier comes wrapped in
    `TrainableClassifier` (``model(images, targets)`` -> losses), with `label_smoothing` in its loss. With
    ``init_from``, the backbone starts from that file's backbone tensors (transfer between tasks)."""
    backbone_args: dict = {}
    if model.backbone in RESNET_FPN_BACKBONES:
        # The ResNet's BatchNorm constants are the recipe's too (the FPN itself has none: see `ResNetFPN`).
        backbone_args = {"norm_momentum": model.norm_momentum}
        if model.norm_eps is not None:
            backbone_args["norm_eps"] = model.norm_eps
    else:
        # The architecture (variant, spec file, width fields, levels) as `SpineNetCfg` fields.
        arch = spinenet_cfg(model)
        backbone_args = {
            **{f.name: getattr(arch, f.name) for f in dataclasses.fields(arch)},
            "drop_path_rate": model.drop_path_rate,
            "norm_momentum": model.norm_momentum,
            "semantics": model.semantics,
        }
        if model.act is not None:
            backbone_args["act"] = model.act
        if model.norm_eps is not None:
            backbone_args["norm_eps"] = model.norm_eps
        if model.dropblock_keep_prob is not None:
            backbone_args.update(
                dropblock_keep_prob=model.dropblock_keep_prob,
                dropblock_size=model.dropblock_size,
                dropblock_min_level=model.dropblock_min_level,
            )
    built = _build_task(model, num_classes, backbone_args, label_smoothing)
    if model.grad_checkpointing:
        for module in built.modules():  # the SpineNet backbone and the RetinaNet head
            if hasattr(module, "set_grad_checkpointing"):
                module.set_grad_checkpointing(True)
    if model.fused_bn_act:
        set_fused_bn_act(built)
    if model.init_from is not None:
        backbone = built.classifier.backbone if isinstance(built, TrainableClassifier) else built.backbone
        load_backbone_state(backbone, model.init_from)
    return built


def _build_task(model: ModelCfg, num_classes: int, backbone_args: dict, label_smoothing: float) -> nn.Module:
    if model.task == "retinanet":
        return build_retinanet(
            model.backbone,
            backbone_args=backbone_args,
            num_classes=num_classes,
            image_size=model.image_size,
            num_convs=model.head_num_convs,
            num_filters=model.head_num_filters,
        )
    if model.task == "maskrcnn":
        return build_mask_rcnn(
            model.backbone,
            backbone_args=backbone_args,
            num_classes=num_classes,
            image_size=model.image_size,
            loss_style=model.loss_style,
            rpn_num_convs=model.rpn_num_convs,
            anchor_size=model.anchor_size,
            anchor_num_scales=model.anchor_num_scales or 1,
        )
    if model.task == "classification":
        classifier = create_classifier(model.backbone, num_classes, **backbone_args)
        return TrainableClassifier(classifier, label_smoothing=label_smoothing)
    raise ValueError(f"model.task={model.task!r}: expected retinanet, maskrcnn or classification")


def build_optimizer(optim: OptimCfg, model: nn.Module, global_batch_size: int) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW at ``lr_per_256 * global_batch / 256``.

    Weight decay applies to conv and linear kernels only, as TF's L2 regulariser on ``kernel`` variables (both
    official implementations): BatchNorm parameters and biases are not decayed.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    lr = optim.lr_per_256 * global_batch_size / 256
    if optim.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=optim.momentum)
    return torch.optim.AdamW(groups, lr=lr, betas=(optim.momentum, 0.999))


def build_schedule(
    schedule: ScheduleCfg, optimizer: torch.optim.Optimizer, steps_per_epoch: int, global_batch_size: int | None = None
) -> tuple[torch.optim.lr_scheduler.LambdaLR, int]:
    """The per-step LR schedule and the run's total steps.

    The step view (``schedule.total_steps``) uses the official configs' counts as written, scaled by
    ``steps_batch_size / global_batch_size`` when the batch differs from the one they were written for (the
    identity for the official recipes); the epoch view converts with the run's real `steps_per_epoch`.
    """
    if schedule.total_steps is not None:
        ratio = schedule.steps_batch_size / (global_batch_size or schedule.steps_batch_size)
        total = max(1, round(schedule.total_steps * ratio))
        warmup = round((schedule.warmup_steps or 0) * ratio)
        milestones = [round(s * ratio) for s in schedule.decay_steps]
    else:
        if schedule.epochs is None:
            raise ValueError("schedule: neither epochs nor total_steps is set")
        total = max(1, math.ceil(schedule.epochs * steps_per_epoch))
        warmup = round((schedule.warmup_epochs or 0.0) * steps_per_epoch)
        milestones = [round(e * steps_per_epoch) for e in schedule.decay_epochs]
    scheduler = warmup_step_schedule(
        optimizer,
        total_steps=total,
        warmup_steps=warmup,
        warmup_init_ratio=schedule.warmup_init_lr_ratio,
        milestones=milestones,
        gamma=schedule.decay_factor,
        cosine=schedule.type == "cosine",
    )
    return scheduler, total


def num_classes_for(cfg: ExperimentCfg, dataset: Dataset) -> int:
    """The config's class count, or the dataset's (COCO: largest category id + 1; ImageFolder: class folders)."""
    return cfg.model.num_classes if cfg.model.num_classes is not None else int(dataset.num_classes)
