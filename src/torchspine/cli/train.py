"""``torchspine train``: a registered experiment, YAML deltas and ``--set`` overrides, trained with crash-safe resume.

Config precedence: registered experiment -> each ``--config`` YAML (strict) -> ``--set key=value`` (type-checked)
-> validation. The resolved config is written to ``OUTPUT_DIR/config.yaml`` and into every checkpoint. Multi-process
training: launch with ``torchrun --nproc-per-node N -m torchspine.cli.main train ...``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from torchspine.cli.checks import check_device
from torchspine.cli.text import plain
from torchspine.config import dump_config, get_experiment, list_experiments, load_config, validate_world_size
from torchspine.engine.build import build_datasets, build_model, num_classes_for
from torchspine.engine.classification_eval import CLS_METRIC_NAMES
from torchspine.engine.distributed import init_distributed
from torchspine.engine.evaluation import AP_NAMES, format_metrics
from torchspine.engine.run import CACHE_DIR, train_experiment
from torchspine.errors import UsageError

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a detector or classifier (paper recipes, resume, DDP via torchrun)",
        description=plain(__doc__),
    )
    p.add_argument("--experiment", help="registered experiment (see --list)")
    p.add_argument("--data", help="COCO folder or JSON; ImageFolder root for classification (default: demo data)")
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
    p.add_argument(
        "--resume",
        nargs="?",
        const="must",
        default="never",
        choices=["must", "auto"],
        help="continue from the newest valid checkpoint in --output-dir; bare --resume fails when there is none, "
        "--resume auto then starts from scratch (for preemptible or elastic jobs)",
    )
    p.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where to train (default: %(default)s)"
    )
    p.add_argument(
        "--list",
        action="store_true",
        help="list the registered experiments, one a line: the name, then where the recipe comes from",
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the model, then exit")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        names = list_experiments()
        width = max(map(len, names))
        for name in names:
            print(f"{name:<{width}}  {get_experiment(name).provenance}")
        return 0
    if not args.experiment:
        raise UsageError("--experiment is required (see `torchspine train --list`)")
    check_device(args.device)
    overrides = list(args.overrides) + ([f"data.data={args.data}"] if args.data else [])
    cfg = load_config(args.experiment, args.config, overrides)
    if args.dry_run:
        validate_world_size(cfg, init_distributed(torch.device(args.device).type).world_size)
        print(dump_config(cfg))
        train_set, _ = build_datasets(cfg.data, cfg.model, CACHE_DIR)
        print(build_model(cfg.model, num_classes_for(cfg, train_set), label_smoothing=cfg.schedule.label_smoothing))
        return 0
    if args.output_dir is None:
        raise UsageError("--output-dir is required")
    result = train_experiment(cfg, args.output_dir, resume=args.resume, device=args.device)
    if result.dist.is_main:
        print(f"finished at step {result.step}/{result.max_steps} in {result.output_dir}")
        if result.metrics:
            columns = CLS_METRIC_NAMES if cfg.model.task == "classification" else AP_NAMES
            print(format_metrics(result.nested_metrics, columns=columns))
    return 0
