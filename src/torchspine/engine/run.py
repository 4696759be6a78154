"""One training run from a resolved `ExperimentCfg`: data, model, optimizer, hooks, resume, export.

Shared by ``torchspine train`` and ``torchspine demo``; the CLI only resolves the config. Run folder layout::

    OUTPUT_DIR/config.yaml           the resolved config (also inside every checkpoint)
    OUTPUT_DIR/holdout_ids.json      with data.holdout_images: the training images held out for evaluation
    OUTPUT_DIR/metrics.jsonl         one JSON line per log step and per evaluation
    OUTPUT_DIR/tensorboard/          the same numbers as TensorBoard scalars
    OUTPUT_DIR/checkpoints/          ckpt-<step>.pt (last N) and best.pt (by box AP, or top-1 for classifiers)
    OUTPUT_DIR/detections.json       detectors: the latest evaluation's detections, COCO results format
    OUTPUT_DIR/model.safetensors     the final model with its description and category names (every task;
                                     torchspine eval/predict --weights ..., torchspine.load_model)

Multi-process runs (``torchrun``) train with DDP; every process evaluates its share of the validation images and
only the main process writes files.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from torchspine.config import ExperimentCfg, ModelCfg, dump_config, validate_world_size
from torchspine.engine.build import build_datasets, build_model, build_optimizer, build_schedule, num_classes_for
from torchspine.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    build_checkpoint,
    capture_rng_state,
    restore_rng_state,
)
from torchspine.engine.classification_eval import evaluate_classifier
from torchspine.engine.distributed import DistInfo, broadcast_buffers, gather_to_all, init_distributed, wrap_model
from torchspine.engine.evaluation import evaluate_detector
from torchspine.engine.export import export_model
from torchspine.engine.hooks import CheckpointHook, EvalHook, ProgressHook
from torchspine.engine.metrics import MetricsLog, rewind_jsonl
from torchspine.engine.sample_seeds import SeededSampler, SeededSamples
from torchspine.engine.signals import GracefulExit
from torchspine.engine.trainer import Trainer
from torchspine.errors import UsageError
from torchspine.modelfile import Provenance
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
        weights: the exported ``model.safetensors`` (None off the main process).
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


def _category_names(dataset: Dataset) -> dict[int, str]:
    """Label -> name of a training set: COCO category names, or an ImageFolder's class folders by index."""
    names = getattr(dataset, "category_names", None)
    if names is not None:
        return dict(names)
    return dict(enumerate(getattr(dataset, "classes", [])))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


ResumeMode = Literal["never", "auto", "must"]

# Config keys a resumed run may change: how long it runs, how often it logs, evaluates and saves, where the same data
# and spec file now live (another machine's mount point), how data is loaded, and how the unchanged global batch is
# split into accumulation steps (what a resume on fewer processes changes to stay exact: 2 processes x 1 step ==
# 1 process x 2 steps, see `torchspine.engine.sampler`). Anything else (model, optimizer,
# schedule, batch, augmentation, seed) would make the resumed run a different experiment from the one its
# checkpoint belongs to. (A spec file describing another architecture fails the strict weight load instead.)
RESUMABLE_CHANGES = (
    "model.backbone_spec",
    "model.grad_checkpointing",  # memory savers: the same computation
    "model.fused_bn_act",
    "train.max_steps",
    "train.log_every",
    "train.checkpoint_every_steps",
    "train.keep_last",
    "train.tensorboard",
    "train.eval_every_epochs",
    "train.grad_accum_steps",
    "eval.*",
    "data.data",
    "data.num_workers",
)


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def check_resumable_config(saved: Mapping[str, Any], cfg: ExperimentCfg, where: Path) -> None:
    """Raise `UsageError` listing every difference between a checkpoint's config and `cfg` outside
    `RESUMABLE_CHANGES` (``name`` is informational and ignored).

    A setting the checkpoint does not have at all was added to torchspine after the run started; the user cannot
    "restore" it, so it is logged (with the value the resumed run uses) instead of refusing the resume.
    """
    old, new = _flatten(saved), _flatten(dataclasses.asdict(cfg))
    allowed = [*RESUMABLE_CHANGES, "name"]
    added = sorted(set(new) - set(old))
    if added:
        logger.warning(
            "resuming %s: the checkpoint predates these settings, which now take: %s",
            where,
            ", ".join(f"{key}={new[key]!r}" for key in added),
        )
    changed = [
        f"{key}: {old.get(key, '<absent>')!r} in the checkpoint, {new.get(key, '<absent>')!r} now"
        for key in sorted(set(old) | set(new))
        if key in old and old.get(key) != new.get(key) and not any(fnmatch.fnmatch(key, pattern) for pattern in allowed)
    ]
    if changed:
        raise UsageError(
            f"cannot resume the run in {where} with a different config:\n  "
            + "\n  ".join(changed)
            + f"\nA resumed run may only change {', '.join(RESUMABLE_CHANGES)}. Restore those values, or train "
            "into a new --output-dir."
        )


def _variant_label(model: ModelCfg) -> str:
    """The variant name a model file records: ``"custom"`` once a spec file or width override changed the
    architecture (the file stores the full `SpineNetCfg` either way; the name must not claim a registered one)."""
    overrides = (model.backbone_spec, model.filter_size_scale, model.resample_alpha, model.endpoints_num_filters)
    return "custom" if any(value is not None for value in overrides) else model.backbone


def _check_enough_samples(num_samples: int, micro_batch: int, world_size: int, cfg: ExperimentCfg) -> None:
    """Fail at once when the training split cannot fill one global batch.

    The sampler drops the last partial global batch (every step must see the configured batch, and every rank the
    same number of batches under DDP), so such a split would give empty epochs and a loop that never reaches a step.
    """
    if num_samples >= cfg.train.global_batch_size:
        return
    source = cfg.data.data or "the built-in demo data"
    skipped = " after skipping bad images (data.skip_bad=true)" if cfg.data.skip_bad else ""
    raise UsageError(
        f"training split {cfg.data.train_split!r} of {source} has {num_samples} usable image(s){skipped}, fewer "
        f"than one batch: global batch {cfg.train.global_batch_size} = {micro_batch} per process x {world_size} "
        f"process(es) x {cfg.train.grad_accum_steps} accumulation step(s). Add images or lower "
        f"train.global_batch_size (e.g. --set train.global_batch_size={max(1, num_samples)})"
    )


def _set_score_thresh(model: nn.Module, value: float) -> None:
    """``eval.score_thresh`` on a detector's post-processing (the run's evaluations; classifiers have none)."""
    if hasattr(model, "roi_heads"):  # Mask R-CNN: the box head's threshold
        model.roi_heads.score_thresh = value
    elif hasattr(model, "score_thresh"):  # RetinaNet
        model.score_thresh = value


def _check_same_start(steps: list[Any], directory: Path) -> None:
    """Every process must resume from the same step (or all start fresh), or DDP would pair different steps."""
    if len(set(steps)) > 1:
        found = ", ".join(f"rank {r}: {'none' if s is None else f'step {s}'}" for r, s in enumerate(steps))
        raise UsageError(
            f"the processes found different checkpoints to resume from in {directory} ({found}). Every node must "
            "see the same --output-dir: put it on a filesystem shared by all nodes"
        )


def _resume_position(checkpoint: Mapping[str, Any], micro_batch: int, world_size: int, directory: Path) -> int:
    """This process's micro-batches already consumed in the checkpoint's epoch, for the current world size.

    The checkpoint records the samples all processes consumed together (``data_position``); the sampler lays out
    the same global batches for every world size, so that count divided by one round of micro-batches over all
    processes is the position, whatever world size wrote the checkpoint.
    """
    consumed, per_round = int(checkpoint["data_position"]), micro_batch * world_size
    if consumed % per_round:
        raise CheckpointError(
            f"cannot resume from {directory} on {world_size} process(es): the checkpoint is {consumed} samples into "
            f"its epoch, not a whole number of rounds of {world_size} x {micro_batch} samples (train.grad_accum_steps "
            "changed after a skipped step?). Resume with the checkpoint's world size and train.grad_accum_steps"
        )
    saved_world = int(checkpoint.get("world_size", 1))
    if saved_world != world_size:
        logger.warning(
            "resuming a run of %d process(es) on %d: the same global batches follow in the same order, each process "
            "now taking %d image(s) per micro-batch; BatchNorm statistics and the loss normaliser are per micro-batch, "
            "so the run equals the original only if train.grad_accum_steps keeps processes x accumulation steps",
            saved_world,
            world_size,
            micro_batch,
        )
    return consumed // per_round


def _restore_rng(checkpoint: Mapping[str, Any], dist_info: DistInfo) -> None:
    """Continue each process's own random streams; a process the checkpoint has none for keeps its fresh seed."""
    states = checkpoint.get("rng_per_rank") or [checkpoint["rng"]]
    if dist_info.rank < len(states):
        restore_rng_state(states[dist_info.rank])
    else:
        logger.info(
            "rank %d: no RNG state in the checkpoint (written by fewer processes); fresh streams", dist_info.rank
        )


def train_experiment(
    cfg: ExperimentCfg,
    output_dir: Path,
    *,
    resume: ResumeMode | bool = "never",
    device: str | torch.device = "cpu",
) -> TrainingResult:
    """Train `cfg` into `output_dir`.

    `resume`: ``"never"`` (False) starts from scratch; ``"must"`` continues from the newest valid checkpoint in
    ``output_dir/checkpoints`` and fails if there is none; ``"auto"`` (True) continues when there is one and starts
    from scratch otherwise (preemptible jobs, elastic restarts, retried search trials). A resumed run must have
    the checkpoint's config, except for `RESUMABLE_CHANGES`.

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
    _set_score_thresh(model, cfg.eval.score_thresh)
    if dist_info.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(dump_config(cfg))
        if cfg.data.holdout_images > 0:  # the images that give the reward, for audits and later evaluations
            held = {"train_split": cfg.data.train_split, "seed": cfg.data.holdout_seed, "image_ids": val_set.ids}
            (output_dir / "holdout_ids.json").write_text(json.dumps(held) + "\n")

    _check_enough_samples(len(train_set), micro_batch, dist_info.world_size, cfg)
    # Per-sample augmentation seeds (engine/sample_seeds.py) over the global-batch layout (engine/sampler.py): exact
    # resume with data-loading workers and on another world size.
    sampler = SeededSampler(
        len(train_set),
        seed=cfg.train.seed,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
        micro_batch=micro_batch,
        accum_steps=cfg.train.grad_accum_steps,
    )
    loader = DataLoader(
        SeededSamples(train_set),
        batch_size=micro_batch,
        sampler=sampler,
        collate_fn=train_set.collate_fn,
        num_workers=cfg.data.num_workers,
        drop_last=True,
        generator=torch.Generator(),
        persistent_workers=False,
    )
    steps_per_epoch = sampler.steps_per_epoch  # whole global batches: the same for every world size
    optimizer = build_optimizer(cfg.optim, model, cfg.train.global_batch_size)
    scheduler, total_steps = build_schedule(cfg.schedule, optimizer, steps_per_epoch, cfg.train.global_batch_size)
    max_steps = min(total_steps, cfg.train.max_steps) if cfg.train.max_steps else total_steps
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)  # convolutions then run NHWC on their inputs too
    model = wrap_model(model, dist_info, device, sync_bn=cfg.train.sync_bn)
    inner = getattr(model, "module", model)
    stop = GracefulExit()
    classifying = cfg.model.task == "classification"
    best_metric = "cls/top1" if classifying else "bbox/AP"
    manager = CheckpointManager(output_dir / "checkpoints", keep_last=cfg.train.keep_last, best_metric=best_metric)
    mode: ResumeMode = {True: "auto", False: "never"}.get(resume, resume)  # type: ignore[arg-type]
    if mode not in ("never", "auto", "must"):
        raise UsageError(f"resume={resume!r}: expected 'never', 'auto' or 'must'")
    checkpoint = None
    if mode != "never":
        try:
            # The newest checkpoint that loads and validates, read once; only the main process repairs best.pt.
            checkpoint = manager.load(update_best=dist_info.is_main)
        except FileNotFoundError:
            if mode == "must":
                raise FileNotFoundError(
                    f"--resume: no valid checkpoint in {manager.directory}; use --resume auto to start from "
                    "scratch when there is none"
                ) from None
            logger.warning("--resume auto: no valid checkpoint in %s; starting from scratch", manager.directory)
    if checkpoint is not None:
        check_resumable_config(checkpoint.get("config", {}), cfg, output_dir)
    resume_step = int(checkpoint["loop"]["step"]) if checkpoint is not None else None
    if dist_info.world_size > 1:
        _check_same_start(gather_to_all(resume_step), manager.directory)
    if mode != "never" and dist_info.is_main:  # the records of steps this run repeats (and a torn last line) go
        rewind_jsonl(output_dir / "metrics.jsonl", resume_step or 0)
    log = MetricsLog(
        output_dir / "metrics.jsonl",
        output_dir / "tensorboard" if cfg.train.tensorboard and dist_info.is_main else None,
        purge_step=resume_step,
    )

    distributed = dist_info.world_size > 1

    def evaluate() -> dict[str, dict[str, float]]:
        broadcast_buffers(inner)  # every process scores with the model the main process saves
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
        clip_mode=cfg.optim.clip_mode,
        amp=cfg.train.amp,
        device=device,
        stop_requested=lambda: stop.should_stop,
    )

    def state(t: Trainer) -> dict:
        return build_checkpoint(
            model=t.model,
            optimizer=t.optimizer,
            step=t.step,
            epoch=t.epoch,
            # All processes together: the sampler's layout is the same for every world size, so this is where a
            # resume on any number of processes continues (`_resume_position`).
            data_position=t.position * micro_batch * dist_info.world_size,
            scheduler=t.scheduler,
            scaler=t.scaler if t.scaler.is_enabled() else None,
            config=dataclasses.asdict(cfg),
            metrics=getattr(t, "metrics", None),
            world_size=dist_info.world_size,
            **t.progress_state(),
        )

    def rank_states() -> dict[str, Any]:
        # Every process's RNG streams (augmentation, drop-path draw per process): a collective at agreed saves.
        states = gather_to_all(capture_rng_state())
        return {"rng_per_rank": states} if distributed else {}

    eval_every = max(1, math.ceil(cfg.train.eval_every_epochs * steps_per_epoch))
    trainer.hooks = [
        ProgressHook(log, cfg.train.global_batch_size, cfg.train.log_every, enabled=dist_info.is_main),
        EvalHook(evaluate, eval_every, log, enabled=dist_info.is_main),
        CheckpointHook(
            manager, cfg.train.checkpoint_every_steps, state, stop, enabled=dist_info.is_main, collect=rank_states
        ),
    ]
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint)  # model, optimizer, scheduler, scaler, loop and hooks
        trainer.position = _resume_position(checkpoint, micro_batch, dist_info.world_size, manager.directory)
        _restore_rng(checkpoint, dist_info)
        logger.info("resumed from step %d in %s", trainer.step, manager.directory)
        del checkpoint
    try:
        with stop:
            trainer.train()
    finally:
        log.close()
    weights = None
    metrics = dict(getattr(trainer, "metrics", {}))
    if dist_info.is_main:
        weights = export_model(
            inner,
            output_dir / "model.safetensors",
            variant=_variant_label(cfg.model),
            categories=_category_names(train_set),
            image_size=cfg.model.image_size,
            provenance=Provenance(
                "trained", experiment=cfg.name or None, step=trainer.step, metrics=tuple(sorted(metrics.items()))
            ),
        )
    return TrainingResult(
        model=inner,
        val_set=val_set,
        step=trainer.step,
        max_steps=max_steps,
        metrics=metrics,
        output_dir=output_dir,
        weights=weights,
        dist=dist_info,
    )
