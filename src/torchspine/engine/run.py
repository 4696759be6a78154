"""One training run from a resolved `ExperimentCfg`: data, model, optimizer, hooks, resume, export.

Shared by ``torchspine train`` and ``torchspine demo``; the CLI only resolves the config. Run folder layout::

    OUTPUT_DIR/config.yaml           the resolved config (also inside every checkpoint)
    OUTPUT_DIR/holdout_ids.json      with data.holdout_images: the training images held out for evaluation
    OUTPUT_DIR/metrics.jsonl         one JSON line per log step and per evaluation
    OUTPUT_DIR/tensorboard/          the same numbers as TensorBoard scalars
    OUTPUT_DIR/checkpoints/          ckpt-<step>.pt (last N) and best.pt (by box AP, or top-1 for classifiers)
    OUTPUT_DIR/detections.json       detectors: the latest evaluation's detections, COCO results format
    OUTPUT_DIR/model.safetensors     RetinaNet: the final model with metadata (torchspine eval/predict --weights ...)

Multi-process runs (``torchrun``) train with DDP; every process evaluates its share of the validation images and
only the main process writes files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from torchspine.config import ExperimentCfg, dump_config, validate_world_size
from torchspine.engine.build import build_datasets, build_model, build_optimizer, build_schedule, num_classes_for
from torchspine.engine.checkpoint import CheckpointManager, build_checkpoint, restore_rng_state
from torchspine.engine.classification_eval import evaluate_classifier
from torchspine.engine.distributed import DistInfo, init_distributed, wrap_model
from torchspine.engine.evaluation import evaluate_detector
from torchspine.engine.export import export_retinanet
from torchspine.engine.hooks import CheckpointHook, EvalHook, ProgressHook
from torchspine.engine.metrics import MetricsLog, rewind_jsonl
from torchspine.engine.signals import GracefulExit
from torchspine.engine.trainer import ResumableSampler, Trainer
from torchspine.utils.allocator import keep_freed_memory

logger = logging.getLogger(__name__)

CACHE_DIR = Path.home() / ".cache" / "torchspine"


@dataclass
class TrainingResult:
    """What a finished (or stopped) run leaves behind.

    Attributes:
        model: the trained model (unwrapped from DDP), in train mode.
        val_set: the validation data set it was evaluated on.
        step: optimisation steps done.
        max_steps: steps the run was asked for.
        metrics: the last evaluation, flattened (``{"bbox/AP": ...}``); empty if none ran.
        output_dir: the run folder.
        weights: the exported ``model.safetensors`` (None when the model type has no exporter, or off the main
            process).
        dist: the process's place in the process group.
    """

    model: nn.Module
    val_set: Dataset
    step: int
    max_steps: int
    metrics: dict[str, float]
    output_dir: Path
    weights: Path | None
    dist: DistInfo

    @property
    def nested_metrics(self) -> dict[str, dict[str, float]]:
        """``metrics`` as ``{"bbox": {"AP": ...}}``, the shape `format_metrics` prints."""
        nested: dict[str, dict[str, float]] = {}
        for key, value in self.metrics.items():
            kind, name = key.split("/", 1)
            nested.setdefault(kind, {})[name] = value
        return nested


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_enough_samples(num_samples: int, micro_batch: int, world_size: int, cfg: ExperimentCfg) -> None:
    """Fail at once when the training split cannot fill one batch per process.

    The loader drops the last partial batch (every step must see the configured batch, and every rank the same
    number of batches under DDP), so such a split would give empty epochs and a loop that never reaches a step.
    """
    per_rank = num_samples // world_size
    if per_rank >= micro_batch:
        return
    source = cfg.data.data or "the built-in demo data"
    skipped = " after skipping bad images (data.skip_bad=true)" if cfg.data.skip_bad else ""
    raise ValueError(
        f"training split {cfg.data.train_split!r} of {source} has {num_samples} usable image(s){skipped}, fewer "
        f"than one batch: global batch {cfg.train.global_batch_size} = {micro_batch} per process x {world_size} "
        f"process(es) x {cfg.train.grad_accum_steps} accumulation step(s). Add images or lower "
        f"train.global_batch_size (e.g. --set train.global_batch_size={max(1, num_samples)})"
    )


def train_experiment(
    cfg: ExperimentCfg, output_dir: Path, *, resume: bool = False, device: str | torch.device = "cpu"
) -> TrainingResult:
    """Train `cfg` into `output_dir` (resuming from its newest valid checkpoint with `resume`).

    SIGTERM/SIGINT stop the run cleanly after the current step, with a checkpoint; the result then has
    ``step < max_steps``.
    """
    device = torch.device(device)
    if device.type == "cpu":
        keep_freed_memory()  # ~1.3x faster CPU steps: activations stop being mmapped and unmapped every step
    dist_info = init_distributed(device.type)
    micro_batch = validate_world_size(cfg, dist_info.world_size)
    _seed_everything(cfg.train.seed + dist_info.rank)
    train_set, val_set = build_datasets(cfg.data, cfg.model, CACHE_DIR)
    model = build_model(cfg.model, num_classes_for(cfg, train_set), label_smoothing=cfg.schedule.label_smoothing)
    output_dir.mkdir(parents=True, exist_ok=True)
    if dist_info.is_main:
        (output_dir / "config.yaml").write_text(dump_config(cfg))
        if cfg.data.holdout_images > 0:  # the images that give the reward, for audits and later evaluations
            held = {"train_split": cfg.data.train_split, "seed": cfg.data.holdout_seed, "image_ids": val_set.ids}
            (output_dir / "holdout_ids.json").write_text(json.dumps(held) + "\n")

    sampler = ResumableSampler(
        len(train_set), seed=cfg.train.seed, rank=dist_info.rank, world_size=dist_info.world_size
    )
    _check_enough_samples(len(train_set), micro_batch, dist_info.world_size, cfg)
    loader = DataLoader(
        train_set,
        batch_size=micro_batch,
        sampler=sampler,
        collate_fn=train_set.collate_fn,
        num_workers=cfg.data.num_workers,
        drop_last=True,
        generator=torch.Generator(),
        persistent_workers=False,
    )
    steps_per_epoch = max(1, len(sampler) // micro_batch // cfg.train.grad_accum_steps)
    optimizer = build_optimizer(cfg.optim, model, cfg.train.global_batch_size)
    scheduler, total_steps = build_schedule(cfg.schedule, optimizer, steps_per_epoch)
    max_steps = min(total_steps, cfg.train.max_steps) if cfg.train.max_steps else total_steps
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)  # convolutions then run NHWC on their inputs too
    model = wrap_model(model, dist_info, device)
    inner = getattr(model, "module", model)
    stop = GracefulExit()
    classifying = cfg.model.task == "classification"
    best_metric = "cls/top1" if classifying else "bbox/AP"
    manager = CheckpointManager(output_dir / "checkpoints", keep_last=cfg.train.keep_last, best_metric=best_metric)
    checkpoint = None
    if resume:
        try:
            checkpoint = manager.load()  # the newest checkpoint that loads and validates, read once
        except FileNotFoundError:
            logger.warning("--resume: no valid checkpoint in %s; starting from scratch", manager.directory)
    resume_step = int(checkpoint["loop"]["step"]) if checkpoint is not None else None
    if resume and dist_info.is_main:  # the records of steps this run repeats (and a torn last line) go
        rewind_jsonl(output_dir / "metrics.jsonl", resume_step or 0)
    log = MetricsLog(
        output_dir / "metrics.jsonl",
        output_dir / "tensorboard" if cfg.train.tensorboard and dist_info.is_main else None,
        purge_step=resume_step,
    )

    distributed = dist_info.world_size > 1

    def evaluate() -> dict[str, dict[str, float]]:
        subset = val_set
        if cfg.eval.max_images is not None:
            subset = Subset(val_set, range(min(cfg.eval.max_images, len(val_set))))
        if classifying:
            return evaluate_classifier(
                inner, subset, batch_size=cfg.eval.batch_size, device=device, progress=False, distributed=distributed
            )
        return evaluate_detector(
            inner,
            subset,
            batch_size=cfg.eval.batch_size,
            device=device,
            progress=False,
            distributed=distributed,
            results_file=output_dir / "detections.json",
        )

    trainer = Trainer(
        model,
        optimizer,
        loader,
        max_steps=max_steps,
        scheduler=scheduler,
        grad_accum_steps=cfg.train.grad_accum_steps,
        clip_grad_norm=cfg.optim.clip_grad_norm,
        amp=cfg.train.amp,
        device=device,
    )

    def state(t: Trainer) -> dict:
        return build_checkpoint(
            model=t.model,
            optimizer=t.optimizer,
            step=t.step,
            epoch=t.epoch,
            data_position=t.position * micro_batch,
            scheduler=t.scheduler,
            scaler=t.scaler if t.scaler.is_enabled() else None,
            config=dataclasses.asdict(cfg),
            metrics=getattr(t, "metrics", None),
            **t.progress_state(),
        )

    eval_every = max(1, math.ceil(cfg.train.eval_every_epochs * steps_per_epoch))
    trainer.hooks = [
        ProgressHook(log, cfg.train.global_batch_size, cfg.train.log_every, enabled=dist_info.is_main),
        EvalHook(evaluate, eval_every, log, enabled=dist_info.is_main),
        CheckpointHook(manager, cfg.train.checkpoint_every_steps, state, stop, enabled=dist_info.is_main),
    ]
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint)  # model, optimizer, scheduler, scaler, loop and hooks
        restore_rng_state(checkpoint["rng"])
        logger.info("resumed from step %d in %s", trainer.step, manager.directory)
        del checkpoint
    try:
        with stop:
            trainer.train()
    finally:
        log.close()
    weights = None
    if dist_info.is_main and cfg.model.task == "retinanet":
        weights = export_retinanet(
            inner, output_dir / "model.safetensors", variant=cfg.model.backbone, image_size=cfg.model.image_size
        )
    return TrainingResult(
        model=inner,
        val_set=val_set,
        step=trainer.step,
        max_steps=max_steps,
        metrics=dict(getattr(trainer, "metrics", {})),
        output_dir=output_dir,
        weights=weights,
        dist=dist_info,
    )
