"""``torchspine predict``: detections (boxes, masks, labels by name) or a classifier's top-k classes on images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from torchspine.cli.checks import check_positive
from torchspine.cli.evaluate import CLASSIFIER_IMAGE_SIZE, add_model_args, load_from_args
from torchspine.engine.predict import classify_images, collect_images, predict_images
from torchspine.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="detect objects (predictions.json + annotated PNGs) or classify images (top-k classes) with a model file",
    )
    add_model_args(p)
    p.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--score-threshold", type=float, default=0.3, help="detectors: lowest score drawn and written")
    p.add_argument("--top-k", type=int, default=5, help="classifiers: classes reported per image")
    p.add_argument(
        "--categories",
        type=Path,
        metavar="instances.json",
        help="category names from a COCO annotation file (default: the model file's, else COCO's for 91 classes)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_positive("--top-k", args.top_k)
    model, task, names, image_size = load_from_args(args)
    if args.categories:
        try:
            categories = json.loads(args.categories.read_text())["categories"]
            names = {int(c["id"]): str(c["name"]) for c in categories}
        except (OSError, KeyError, TypeError, ValueError) as err:
            raise UsageError(f"{args.categories}: expected a COCO JSON with a 'categories' list ({err})") from None
    paths = collect_images(args.inputs)
    if task == "classification":
        from torchspine.models.classifier_train import TrainableClassifier

        out, results = classify_images(
            TrainableClassifier(model),
            paths,
            args.out,
            image_size=image_size or CLASSIFIER_IMAGE_SIZE,
            class_names=names,
            top_k=args.top_k,
            batch_size=args.batch_size,
            device=args.device,
            skip_bad=args.skip_bad,
        )
        for result in results:
            ranked = ", ".join(f"{t['name'] or t['class']} {t['probability']:.2f}" for t in result["top"])
            print(f"{result['file_name']}: {ranked}")
        print(f"{len(results)} image(s) classified: {out}")
        return 0
    out = predict_images(
        model,
        paths,
        args.out,
        category_names=names,
        batch_size=args.batch_size,
        device=args.device,
        score_threshold=args.score_threshold,
        skip_bad=args.skip_bad,
    )
    print(f"{len(paths)} image(s): predictions in {out}, pictures in {args.out}")
    return 0
