"""``torchspine train``: a registered experiment, YAML deltas and ``--set`` overrides, trained with crash-safe resume.

Config precedence: registered experiment -> each ``--config`` YAML (strict) -> ``--set key=value`` (type-checked)
-> validation. The resolved config is written to ``OUTPUT_DIR/config.yaml`` and into every checkpoint. Multi-process
training: launch with ``torchrun --nproc-per-node N -m torchspine.cli.main train ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from torchspine.config import dump_config, list_experiments, load_config, validate_world_size
from torchspine.engine.build import build_datasets, build_model, build_optimizer, build_schedule, num_classes_for
from torchspine.engine.checkpoint import CheckpointManager, build_checkpoint, restore_rng_state
from torchspine.engine.distributed import init_distributed, wrap_model
from torchspine.engine.evaluation import evaluate_detector, format_metrics
from torchspine.engine.hooks import CheckpointHook, EvalHook, ProgressHook
from torchspine.engine.metrics_log import rewind_jsonl
from torchspine.engine.signals import GracefulExit
from torchspine.engine.trainer import ResumableSampler, Trainer

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a detector (paper recipes, resume, DDP via torchrun)", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--experiment", help="registered experiment (see --list)")
    p.add_argument("--data", help="COCO-layout folder or instances JSON (default: the built-in demo data)")
    p.add_argument("--config", action="append", default=[], type=Path, help="YAML deltas, applied in order")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. --set optim.lr_per_256=0.08 --set train.max_steps=100",
    )
    p.add_argument("--output-dir", type=Path, help="run folder: config, checkpoints, metrics")
    p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in the folder")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--list", action="store_true", help="list the registered experiments")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the model, then exit")
    p.set_defaults(run=run)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run(args: argparse.Namespace) -> int:
    if args.list:
        print("\n".join(list_experiments()))
        return 0
    if not args.experiment:
        raise ValueError("--experiment is required (see `torchspine train --list`)")
    overrides = list(args.overrides) + ([f"data.data={args.data}"] if args.data else [])
    cfg = load_config(args.experiment, args.config, overrides)
    device = torch.device(args.device)
    dist_info = init_distributed(device.type)
    micro_batch = validate_world_size(cfg, dist_info.world_size)
    if args.dry_run:
        print(dump_config(cfg))
    if args.output_dir is None and not args.dry_run:
        raise ValueError("--output-dir is required")
    out = args.output_dir or Path(".")
    _seed_everything(cfg.train.seed + dist_info.rank)
    train_set, val_set = build_datasets(cfg.data, cfg.model, Path.home() / ".cache" / "torchspine")
    model = build_model(cfg.model, num_classes_for(cfg, train_set))
    if args.dry_run:
        print(model)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    if dist_info.is_main:
        (out / "config.yaml").write_text(dump_config(cfg))

    sampler = ResumableSampler(
        len(train_set), seed=cfg.train.seed, rank=dist_info.rank, world_size=dist_info.world_size
    )
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
    model = wrap_model(model, dist_info, device)
    stop = GracefulExit()
    manager = CheckpointManager(out / "checkpoints", keep_last=cfg.train.keep_last, best_metric="bbox/AP")
    metrics_file = out / "metrics.jsonl"
    inner = getattr(model, "module", model)

    def evaluate() -> dict[str, dict[str, float]]:
        subset = (
            val_set
            if cfg.eval.max_images is None
            else torch.utils.data.Subset(val_set, range(min(cfg.eval.max_images, len(val_set))))
        )
        return evaluate_detector(inner, subset, batch_size=cfg.eval.batch_size, device=device, progress=False)

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
        progress = t.progress_state()
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
            **progress,
        )

    eval_every = max(1, math.ceil(cfg.train.eval_every_epochs * steps_per_epoch))
    trainer.hooks = [
        ProgressHook(metrics_file, cfg.train.global_batch_size, cfg.train.log_every, enabled=dist_info.is_main),
        EvalHook(evaluate, eval_every, metrics_file, enabled=dist_info.is_main),
        CheckpointHook(manager, cfg.train.checkpoint_every_steps, state, stop, enabled=dist_info.is_main),
    ]
    if args.resume:
        try:
            ckpt = manager.load()  # the newest checkpoint that loads and validates, read once
        except FileNotFoundError:
            logger.warning("--resume: no valid checkpoint in %s; starting from scratch", manager.directory)
        else:
            trainer.load_state_dict(ckpt)  # model, optimizer, scheduler, scaler, loop and hooks
            restore_rng_state(ckpt["rng"])
            logger.info("resumed from step %d in %s", trainer.step, manager.directory)
        if dist_info.is_main:  # the records of steps this run repeats (and a torn last line) go
            rewind_jsonl(metrics_file, trainer.step)
    with stop:
        trainer.train()
    if dist_info.is_main:
        metrics = getattr(trainer, "metrics", {})
        print(f"finished at step {trainer.step}/{max_steps} in {out}")
        if metrics:
            nested: dict[str, dict[str, float]] = {}
            for key, value in metrics.items():
                kind, name = key.split("/", 1)
                nested.setdefault(kind, {})[name] = value
            print(format_metrics(nested))
    return 0
