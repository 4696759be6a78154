"""From a resolved `ExperimentCfg` to training objects: the only place that reads the config.

Modules below this never see a config object (STYLE rule 5): the builders here turn its fields into the explicit
arguments of `build_retinanet`, `create_model`, the datasets, the optimizer and the LR schedule.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from torchspine.config.schema import DataCfg, ExperimentCfg, ModelCfg, OptimCfg, ScheduleCfg
from torchspine.data.coco import CocoDetection, build_dataset
from torchspine.data.synthetic import make_demo_dataset
from torchspine.data.transforms import Compose, RandomHorizontalFlip, RandomResizeCrop
from torchspine.engine.trainer import warmup_step_schedule
from torchspine.models.detection.mask_rcnn import build_mask_rcnn
from torchspine.models.detection.resnet_fpn import RESNET_FPN_BACKBONES
from torchspine.models.detection.retinanet import build_retinanet


def demo_data_dir(cache: Path) -> Path:
    """The built-in demo data set, generated once into `cache` (deterministic, so the cache is safe to reuse)."""
    root = cache / "demo_data"
    if not (root / "annotations" / "instances_val.json").is_file():
        make_demo_dataset(root)
    return root


def build_datasets(data: DataCfg, model: ModelCfg, cache: Path) -> tuple[CocoDetection, CocoDetection]:
    """Training (official scale-jitter pipeline) and validation (untransformed) COCO-format datasets."""
    root = Path(data.data) if data.data is not None else demo_data_dir(cache)
    with_masks = model.task == "maskrcnn"
    steps = [RandomResizeCrop(model.image_size, (data.scale_min, data.scale_max))]
    if data.hflip:
        steps.append(RandomHorizontalFlip())
    train = build_dataset(
        root, data.train_split, transforms=Compose(steps), with_masks=with_masks, skip_bad=data.skip_bad
    )
    val = build_dataset(root, data.val_split, with_masks=with_masks, skip_bad=data.skip_bad)
    return train, val


def build_model(model: ModelCfg, num_classes: int) -> nn.Module:
    """The detector the config describes, with its backbone overrides."""
    backbone_args: dict = {}
    if model.backbone not in RESNET_FPN_BACKBONES:
        backbone_args = {
            "drop_path_rate": model.drop_path_rate,
            "norm_momentum": model.norm_momentum,
            "semantics": model.semantics,
            "min_level": model.min_level,
            "max_level": model.max_level,
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
    if model.task == "retinanet":
        return build_retinanet(
            model.backbone, backbone_args=backbone_args, num_classes=num_classes, image_size=model.image_size
        )
    if model.task == "maskrcnn":
        return build_mask_rcnn(
            model.backbone, backbone_args=backbone_args, num_classes=num_classes, image_size=model.image_size
        )
    raise ValueError(f"model.task={model.task!r}: `torchspine train` supports retinanet and maskrcnn so far")


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
    schedule: ScheduleCfg, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> tuple[torch.optim.lr_scheduler.LambdaLR, int]:
    """The per-step LR schedule and the run's total steps, from the epoch-based config."""
    total = max(1, math.ceil(schedule.epochs * steps_per_epoch))
    milestones = [round(e * steps_per_epoch) for e in schedule.decay_epochs]
    scheduler = warmup_step_schedule(
        optimizer,
        total_steps=total,
        warmup_steps=round(schedule.warmup_epochs * steps_per_epoch),
        warmup_init_ratio=schedule.warmup_init_lr_ratio,
        milestones=milestones,
        gamma=schedule.decay_factor,
        cosine=schedule.type == "cosine",
    )
    return scheduler, total


def num_classes_for(cfg: ExperimentCfg, dataset: Dataset) -> int:
    """The config's class count, or the dataset's (largest category id + 1)."""
    return cfg.model.num_classes if cfg.model.num_classes is not None else int(dataset.num_classes)
