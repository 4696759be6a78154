"""``torchspine eval``: COCO AP of a detector on a COCO-format dataset, with COCO results JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from torchspine.data.coco import build_dataset
from torchspine.engine.evaluation import evaluate_detector, format_metrics
from torchspine.models.detection.load import load_detector


def add_detector_args(p: argparse.ArgumentParser) -> None:
    """Arguments that locate and build a detector (shared with ``predict``)."""
    p.add_argument("--weights", required=True, type=Path, help="converted or trained .safetensors (or .pt) file")
    p.add_argument("--model", help="backbone variant, for weights without torchspine metadata")
    p.add_argument("--task", choices=["retinanet", "maskrcnn"], help="for weights without torchspine metadata")
    p.add_argument("--num-classes", type=int, help="for weights without torchspine metadata")
    p.add_argument("--image-size", type=int, help="square input size (default: the model's)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="COCO box (and mask) AP of a detector on a COCO-format dataset")
    add_detector_args(p)
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        help="a COCO-layout folder (annotations/instances_SPLIT.json + SPLIT/) or an instances JSON",
    )
    p.add_argument("--split", default="val", help="split of a COCO-layout folder (default: val)")
    p.add_argument("--out", type=Path, metavar="results.json", help="write the detections in COCO results format")
    p.add_argument("--max-images", type=int, help="evaluate only the first N images")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    detector = load_detector(
        args.weights, model=args.model, task=args.task, num_classes=args.num_classes, image_size=args.image_size
    )
    dataset = build_dataset(args.data, args.split)
    if args.max_images:
        dataset = torch.utils.data.Subset(dataset, range(min(args.max_images, len(dataset))))
    metrics = evaluate_detector(
        detector, dataset, batch_size=args.batch_size, device=args.device, results_file=args.out
    )
    print(format_metrics(metrics))
    if args.out:
        print(f"detections written to {args.out}")
    return 0
