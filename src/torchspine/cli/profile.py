"""``torchspine profile``: parameters and multiply-adds of every variant next to the official numbers.

The measuring code lives in `torchspine.utils.profile_table`, imported when the command runs, so that
``torchspine --help`` does not load torch.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from torchspine.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="params and MACs of every variant vs. the official numbers")
    p.add_argument(
        "--task",
        choices=["backbone", "classification", "retinanet", "maskrcnn", "all"],
        default="all",
        help="which models to measure (default: all)",
    )
    p.add_argument("--model", default="*", help="shell-style filter on variant names")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format (default: table)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchspine.utils.profile_table import format_table, profile_rows

    tasks = ["backbone", "classification", "retinanet", "maskrcnn"] if args.task == "all" else [args.task]
    rows = profile_rows(tasks, args.model)
    if not rows:
        raise UsageError(f"no variant matches {args.model!r}; see `torchspine list`")
    if args.format == "json":
        print(json.dumps([asdict(r) for r in rows], indent=1))
    else:
        print(format_table(rows))
    return 0
