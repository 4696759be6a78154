"""``torchspine eval``: COCO AP of a detector, or top-1/top-5 of a classifier, on a data set."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from torchspine.cli.checks import check_positive
from torchspine.cli.device import DEVICE_HELP, resolve_device
from torchspine.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

    from torchspine.data.coco import CocoDetection

logger = logging.getLogger(__name__)

CLASSIFIER_IMAGE_SIZE = 224  # the paper's ImageNet crop, for classifier state dicts that do not record one
# `torchspine.modelfile.TASKS` less "backbone", spelled out so that building the parser does not import torch.
HEAD_TASKS = ("classification", "retinanet", "maskrcnn")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Arguments that locate and build a model from a weights file (shared with ``predict``)."""
    p.add_argument(
        "--weights",
        required=True,
        type=Path,
        help="a torchspine model file (.safetensors), a training run's folder (its model.safetensors) or a plain "
        "state dict",
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
    p.add_argument(
        "--winograd",
        action="store_true",
        help="on CPU, run the detection heads' 3x3 convolutions on large maps as Winograd F(6x6, 3x3) (NNPACK): "
        "RetinaNet-SpineNet-49 ~18 %% faster at 640, ~1e-5 relative error per such convolution instead of ~1e-6",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable images (each logged with its reason) instead of stopping",
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
    from torchspine.utils.allocator import keep_freed_memory

    args.device = resolve_device(args.device)
    check_positive("--image-size", args.image_size)
    check_positive("--batch-size", args.batch_size)
    args.weights = _weights_file(args.weights)
    info = read_model_file(args.weights)
    if info is None:
        _check_plain_state_args(args)
    model = load_model(
        args.weights, task=args.task, backbone=args.model, num_classes=args.num_classes, image_size=args.image_size
    )
    on_cpu = args.device.startswith("cpu")
    if on_cpu:
        keep_freed_memory()  # every forward pass would page-fault its feature maps in afresh (~10 % of the time)
    if args.winograd and not args.fast_path:
        raise UsageError("--winograd is part of the fast path; drop --no-fast-path")
    if args.fast_path:
        model = optimize_for_inference(model, channels_last=on_cpu, winograd=args.winograd, inplace=True)
    task = info.task if info is not None else args.task
    names = info.category_names if info is not None else {}
    num_classes = info.num_classes if info is not None else args.num_classes
    if not names and task in ("retinanet", "maskrcnn") and num_classes == 91:
        names = dict(COCO_CATEGORY_NAMES)
    image_size = args.image_size or (info.image_size if info is not None else None)
    return model, task, names, image_size


def _weights_file(path: Path) -> Path:
    """`path`, or the ``model.safetensors`` of a run folder; an error that says what `path` is if it is no weights
    file (a folder without one, an annotation JSON, an image)."""
    if path.is_dir():
        candidate = path / "model.safetensors"
        if candidate.is_file():
            logger.info("--weights %s is a folder: using its %s", path, candidate.name)
            return candidate
        raise UsageError(
            f"--weights {path}: a folder without a model.safetensors; pass a weights file (a training run writes "
            "OUTPUT_DIR/model.safetensors when it ends, `torchspine convert` writes one from official weights)"
        )
    if path.is_file() and path.suffix not in (".safetensors", ".pt", ".pth"):
        raise UsageError(
            f"--weights {path}: not a weights file (expected a .safetensors model file, or a .pt/.pth state dict)"
        )
    return path


def _check_plain_state_args(args: argparse.Namespace) -> None:
    """A file without torchspine metadata is only tensors: the flags must say what model they belong to."""
    tasks = ", ".join(HEAD_TASKS)
    wanted = {"--task": f"--task ({tasks})", "--model": "--model (a variant of `torchspine list`)"}
    missing = [text for flag, text in wanted.items() if getattr(args, flag[2:]) is None]
    if args.num_classes is None and args.task != "backbone":
        missing.append("--num-classes")
    if not missing:
        return
    hint = ""
    if args.weights.suffix in (".pt", ".pth"):
        runs = (args.weights.parent, args.weights.parent.parent)  # OUTPUT_DIR/checkpoints/ckpt-*.pt
        model_file = next((run / "model.safetensors" for run in runs if (run / "model.safetensors").is_file()), None)
        if model_file is not None:
            hint = f"; for a training checkpoint, pass its run's model file instead: --weights {model_file}"
    raise UsageError(
        f"{args.weights}: no torchspine metadata (a plain state dict), so the model it holds is unknown: pass "
        f"{', '.join(missing)}{hint}"
    )


def _check_ground_truth(dataset: CocoDetection, image_ids: list[int], data: Path, split: str) -> None:
    """Fail before running the model when no evaluated image has an annotation: AP would be undefined everywhere."""
    from torchspine.engine.evaluation import has_ground_truth

    if not has_ground_truth(dataset.coco, image_ids):
        raise UsageError(
            f"{data} (split {split!r}): the ground truth is empty: none of the {len(image_ids)} evaluated image(s) "
            "has an annotation, so AP is undefined; evaluate on annotated images (`torchspine predict` shows "
            "detections without ground truth)"
        )


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

    check_positive("--max-images", args.max_images)
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
            TrainableClassifier(model),
            dataset,
            batch_size=args.batch_size,
            device=args.device,
            skip_bad=args.skip_bad,
        )
        print(format_metrics(metrics, columns=("top1", "top5")))
        return 0
    # --skip-bad: images missing on disk are dropped when the data set is built, unreadable ones while evaluating
    # (never replaced by a neighbour, which would score that neighbour twice).
    coco = build_dataset(args.data, args.split, skip_bad=args.skip_bad, replace_unreadable=False)
    count = min(args.max_images or len(coco), len(coco))
    if count:  # an empty data set is evaluate_detector's error
        _check_ground_truth(coco, coco.ids[:count], args.data, args.split)
    dataset = torch.utils.data.Subset(coco, range(count)) if count < len(coco) else coco
    metrics = evaluate_detector(
        model,
        dataset,
        batch_size=args.batch_size,
        device=args.device,
        results_file=args.out,
        skip_bad=args.skip_bad,
    )
    print(format_metrics(metrics))
    if args.out:
        print(f"detections written to {args.out}")
    return 0
