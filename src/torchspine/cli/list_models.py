"""``torchspine list``: registered variants, or the connection plan of one."""

from __future__ import annotations

import argparse

from torchspine.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the SpineNet variants, or print a variant's block plan")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'spinenet4*'")
    p.add_argument("--plan", metavar="NAME_OR_FILE", help="print the plan of a variant or of a YAML/JSON spec file")
    p.add_argument("--all", action="store_true", help="include the tiny test variants")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchspine.registry import list_models, variant_info
    from torchspine.specs import load_cfg, plan_graph

    if args.plan:
        name = args.plan
        cfg = load_cfg(name) if name.endswith((".yaml", ".yml", ".json")) else variant_info(name).cfg
        print(plan_graph(cfg).describe())
        return 0
    names = list_models(args.pattern, include_test=args.all)
    if not names:
        hint = "" if args.all else " (--all includes the tiny test variants)"
        raise UsageError(f"no variant matches {args.pattern!r}{hint}; `torchspine list` shows them all")
    for name in names:
        info = variant_info(name)
        print(f"{name:<22} {info.image_size:>5}px  {info.description}")
    return 0
