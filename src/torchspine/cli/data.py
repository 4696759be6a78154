"""``torchspine data``: data-set utilities; ``make-demo`` writes the built-in COCO-format demo data set."""

from __future__ import annotations

import argparse
import time

from torchspine.data.synthetic import DEMO_CATEGORIES, make_demo_dataset


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="data-set utilities (make-demo)")
    actions = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    demo = actions.add_parser(
        "make-demo",
        help="write a small COCO-format data set of coloured shapes",
        description="Write a deterministic COCO-layout demo data set (DIR/{train,val}/*.jpg, "
        "DIR/annotations/instances_{train,val}.json) of five shape categories, for smoke runs and tutorials.",
    )
    demo.add_argument("--out", required=True, help="destination folder (created if needed)")
    demo.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    demo.add_argument("--num-train", type=int, default=200, help="images in the train split")
    demo.add_argument("--num-val", type=int, default=50, help="images in the val split")
    demo.add_argument("--image-size", type=int, default=320, help="typical image side; sides vary in [0.625, 1.25]x")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.data_command != "make-demo":  # argparse only accepts known actions; kept for direct callers
        raise ValueError(f"unknown data action {args.data_command!r}")
    start = time.perf_counter()
    out = make_demo_dataset(
        args.out, seed=args.seed, num_train=args.num_train, num_val=args.num_val, image_size=args.image_size
    )
    names = ", ".join(f"{k}={v}" for k, v in DEMO_CATEGORIES.items())
    print(
        f"wrote {args.num_train} train + {args.num_val} val images to {out} in {time.perf_counter() - start:.1f}s\n"
        f"categories: {names} (labels are these ids; num_classes={max(DEMO_CATEGORIES) + 1})"
    )
    return 0
