"""``torchspine demo``: the main job in one command: train a small SpineNet RetinaNet on CPU, evaluate, draw.

Generates the built-in shapes data set (cached in ``~/.cache/torchspine``), trains the registered ``demo``
experiment (`torchspine.config.experiments.demo`), prints the COCO table of the validation split, writes a picture
of predictions on validation images, and prints where everything is. ``--backbone resnet50_fpn`` runs the same
recipe with the torchvision ResNet-50-FPN baseline (much slower on a CPU); ``--set`` takes any config override.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from torchspine.cli.device import DEVICE_HELP, resolve_device
from torchspine.cli.text import plain


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train, evaluate and draw a small SpineNet RetinaNet on the built-in data (~9 min on 2 CPU cores)",
        description=plain(__doc__),
    )
    p.add_argument("--output-dir", type=Path, default=Path("runs/demo"), help="run folder (default: runs/demo)")
    p.add_argument("--backbone", help="another backbone for the same recipe, e.g. resnet50_fpn or spinenet49s")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in the same folder")
    p.add_argument("--device", help=DEVICE_HELP)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchspine.config import load_config
    from torchspine.engine.evaluation import format_metrics
    from torchspine.engine.predict import save_prediction_grid
    from torchspine.engine.run import train_experiment

    args.device = resolve_device(args.device)
    overrides = ([f"model.backbone={args.backbone}"] if args.backbone else []) + list(args.overrides)
    cfg = load_config("demo", [], overrides)
    out: Path = args.output_dir
    print(
        f"torchspine demo: {cfg.model.backbone} RetinaNet at {cfg.model.image_size} px, batch "
        f"{cfg.train.global_batch_size}, {cfg.schedule.epochs:g} epochs on the built-in shapes data, on {args.device}",
        flush=True,
    )
    start = time.perf_counter()
    result = train_experiment(cfg, out, resume=args.resume, device=args.device)
    minutes = (time.perf_counter() - start) / 60
    if result.step < result.max_steps:
        print(f"stopped at step {result.step}/{result.max_steps}; continue with: torchspine demo --resume ...")
        return 0
    print(f"\ntrained {result.step} steps in {minutes:.1f} min; COCO metrics on the demo validation split (%):")
    print(format_metrics(result.nested_metrics))
    coco = result.val_set.coco
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    picture = save_prediction_grid(
        result.model, result.val_set, out / "predictions.png", category_names=names, device=args.device
    )
    rows = [
        ("predictions picture", picture),
        ("detections (COCO JSON)", out / "detections.json"),
        ("trained model", result.weights),
        ("checkpoints", out / "checkpoints"),
        ("metrics (JSONL)", out / "metrics.jsonl"),
        ("TensorBoard", f"tensorboard --logdir {out / 'tensorboard'}"),
        ("resolved config", out / "config.yaml"),
    ]
    width = max(len(name) for name, _ in rows)
    print("\nwhere everything is:")
    for name, where in rows:
        print(f"  {name.ljust(width)}  {where}")
    print(f"\ntry: torchspine predict --weights {result.weights} IMAGES --out predictions/")
    return 0
