"""``torchspine eval``: COCO AP of a detector, or top-1/top-5 of a classifier, on a data set."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from torchspine.cli.device import DEVICE_HELP, resolve_device

if TYPE_CHECKING:
    from torch import nn

CLASSIFIER_IMAGE_SIZE = 224  # the paper's ImageNet crop, for classifier state dicts that do not record one
# `torchspine.modelfile.TASKS` less "backbone", spelled out so that building the parser does not import torch.
HEAD_TASKS = ("classification", "retinanet", "maskrcnn")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Arguments that locate and build a model from a weights file (shared with ``predict``)."""
    p.add_argument(
        "--weights", required=True, type=Path, help="a torchspine model file (.safetensors) or a plain state dict"
    )
    p.add_argument("--model", help="backbone variant; needed for weights without torchspine metadata")
    p.add_argument("--task", choices=HEAD_TASKS, help="needed for weights without torchspine metadata")
    p.add_argument("--num-classes", type=int, help="needed for weights without torchspine metadata")
    p.add_argument("--image-size", type=int, help="square input size (default: the file's)")
    p.add_argument("--batch-size", type=int, default=2, help="images per forward pass (default: %(default)s)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument(
        "--no-fast-path",
        dest="fast_path",
        action="store_false",
        help="run the model as loaded; by default BatchNorm is folded into the convolutions "
        "(torchspine.optimize_for_inference: same outputs up to float rounding, faster)",
    )


def load_from_args(args: argparse.Namespace) -> tuple[nn.Module, str, dict[int, str], int | None]:
    """The model of ``--weights`` (explicit flags over the file), its task, its category names and input size.

    Category names come from the file; a file without them that has COCO's 91 outputs (a converted official
    detector) gets the COCO names.
    """
    from torchspine.data.coco_names import COCO_CATEGORY_NAMES
    from torchspine.inference import optimize_for_inference
    from torchspine.loading import load_model
    from torchspine.modelfile import read_model_file

    args.device = resolve_device(args.device)
    model = load_model(
        args.weights, task=args.task, backbone=args.model, num_classes=args.num_classes, image_size=args.image_size
    )
    if args.fast_path:
        model = optimize_for_inference(model, inplace=True)
    info = read_model_file(args.weights)
    task = info.task if info is not None else args.task
    names = info.category_names if info is not None else {}
    num_classes = info.num_classes if info is not None else args.num_classes
    if not names and task in ("retinanet", "maskrcnn") and num_classes == 91:
        names = dict(COCO_CATEGORY_NAMES)
    image_size = args.image_size or (info.image_size if info is not None else None)
    return model, task, names, image_size


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="COCO box (and mask) AP of a detector, or top-1/top-5 of a classifier")
    add_model_args(p)
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        help="detectors: a COCO-layout folder (annotations/instances_SPLIT.json + SPLIT/) or an instances JSON; "
        "classifiers: an ImageFolder-layout folder (SPLIT/<class>/...)",
    )
    p.add_argument("--split", default="val", help="split of the data folder (default: val)")
    p.add_argument("--out", type=Path, metavar="results.json", help="write the detections in COCO results format")
    p.add_argument("--max-images", type=int, help="evaluate only the first N images")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from torchspine.data.coco import build_dataset
    from torchspine.engine.evaluation import evaluate_detector, format_metrics

    model, task, names, image_size = load_from_args(args)
    if task == "classification":
        from torchspine.data.classification import build_classification_dataset, eval_transform
        from torchspine.engine.classification_eval import evaluate_classifier
        from torchspine.models.classifier_train import TrainableClassifier

        classes = [names[i] for i in sorted(names)] if names else None
        dataset = build_classification_dataset(
            args.data, args.split, transform=eval_transform(image_size or CLASSIFIER_IMAGE_SIZE), classes=classes
        )
        if args.max_images:
            dataset = torch.utils.data.Subset(dataset, range(min(args.max_images, len(dataset))))
        metrics = evaluate_classifier(
            TrainableClassifier(model), dataset, batch_size=args.batch_size, device=args.device
        )
        print(format_metrics(metrics, columns=("top1", "top5")))
        return 0
    dataset = build_dataset(args.data, args.split)
    if args.max_images:
        dataset = torch.utils.data.Subset(dataset, range(min(args.max_images, len(dataset))))
    metrics = evaluate_detector(model, dataset, batch_size=args.batch_size, device=args.device, results_file=args.out)
    print(format_metrics(metrics))
    if args.out:
        print(f"detections written to {args.out}")
    return 0
