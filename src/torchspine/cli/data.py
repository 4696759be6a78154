"""``torchspine data``: data-set utilities; ``make-demo`` writes the built-in demo data sets (COCO detection or
ImageFolder classification)."""

from __future__ import annotations

import argparse
import time

# Per-task defaults of --num-train / --num-val / --image-size (the sizes the built-in demo experiments use).
_DEMO_DEFAULTS = {"detection": (200, 50, 320), "classification": (2000, 100, 128)}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="data-set utilities (make-demo)")
    actions = p.add_subparsers(dest="data_command", required=True, metavar="ACTION", help="what to do")
    demo = actions.add_parser(
        "make-demo",
        help="write a small data set of coloured shapes (COCO detection or ImageFolder classification)",
        description="Write a deterministic demo data set of five shape categories, for smoke runs and tutorials: "
        "COCO layout (DIR/{train,val}/*.jpg, DIR/annotations/instances_{train,val}.json) for detection, ImageFolder "
        "layout (DIR/{train,val}/<class>/*.jpg, one shape per image) for classification.",
    )
    demo.add_argument("--out", required=True, help="destination folder (created if needed)")
    demo.add_argument("--task", choices=tuple(_DEMO_DEFAULTS), default="detection", help="which kind of data set")
    demo.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    demo.add_argument("--num-train", type=int, help="images in the train split (default: 200; classification 2000)")
    demo.add_argument("--num-val", type=int, help="images in the val split (default: 50; classification 100)")
    demo.add_argument(
        "--image-size",
        type=int,
        help="typical image side (default: 320, sides in [0.625, 1.25]x; classification 128, sides in [1, 1.25]x)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchspine.data.synthetic import DEMO_CATEGORIES, make_demo_dataset
    from torchspine.data.synthetic_classification import DEMO_CLASSES, make_demo_classification_dataset

    if args.data_command != "make-demo":  # argparse only accepts known actions; kept for direct callers
        raise ValueError(f"unknown data action {args.data_command!r}")
    defaults = _DEMO_DEFAULTS[args.task]
    num_train, num_val, image_size = (
        default if value is None else value
        for value, default in zip((args.num_train, args.num_val, args.image_size), defaults, strict=True)
    )
    start = time.perf_counter()
    if args.task == "classification":
        out = make_demo_classification_dataset(
            args.out, seed=args.seed, num_train=num_train, num_val=num_val, image_size=image_size
        )
        names = ", ".join(f"{i}={name}" for i, name in enumerate(DEMO_CLASSES))
        summary = f"classes: {names} (sorted folder names; num_classes={len(DEMO_CLASSES)})"
    else:
        out = make_demo_dataset(args.out, seed=args.seed, num_train=num_train, num_val=num_val, image_size=image_size)
        names = ", ".join(f"{k}={v}" for k, v in DEMO_CATEGORIES.items())
        summary = f"categories: {names} (labels are these ids; num_classes={max(DEMO_CATEGORIES) + 1})"
    print(f"wrote {num_train} train + {num_val} val images to {out} in {time.perf_counter() - start:.1f}s\n{summary}")
    return 0
