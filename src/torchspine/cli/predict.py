"""``torchspine predict``: detections on images, as COCO-style JSON and one annotated PNG per image."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from torchspine.cli.evaluate import add_detector_args
from torchspine.data.coco_names import COCO_CATEGORY_NAMES
from torchspine.engine.predict import collect_images, predict_images
from torchspine.models.detection.load import load_detector


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="detect objects in images; write predictions.json and annotated PNGs")
    add_detector_args(p)
    p.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--score-threshold", type=float, default=0.3)
    p.add_argument(
        "--categories",
        type=Path,
        metavar="instances.json",
        help="category names from a COCO annotation file (default: the COCO names)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    names = COCO_CATEGORY_NAMES
    if args.categories:
        try:
            categories = json.loads(args.categories.read_text())["categories"]
            names = {int(c["id"]): str(c["name"]) for c in categories}
        except (OSError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{args.categories}: expected a COCO JSON with a 'categories' list ({err})") from None
    detector = load_detector(
        args.weights, model=args.model, task=args.task, num_classes=args.num_classes, image_size=args.image_size
    )
    paths = collect_images(args.inputs)
    out = predict_images(
        detector,
        paths,
        args.out,
        category_names=names,
        batch_size=args.batch_size,
        device=args.device,
        score_threshold=args.score_threshold,
    )
    print(f"{len(paths)} image(s): predictions in {out}, pictures in {args.out}")
    return 0
