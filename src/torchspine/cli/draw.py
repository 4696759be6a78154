"""``torchspine draw``: picture of a SpineNet architecture (a spec file or a registered variant) as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "draw",
        help="draw an architecture like the paper's figures (blocks in build order, height = level)",
        description="Picture of a SpineNet architecture (a spec file or a registered variant) as a PNG.",
    )
    p.add_argument("arch", metavar="SPEC_OR_MODEL", help="a YAML/JSON spec file or a variant name (e.g. spinenet49)")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("--title", help="figure title (default: the variant or file name)")
    p.add_argument("--dpi", type=int, default=120, help="resolution of the PNG (default 120)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchspine.registry import variant_info
    from torchspine.search.draw import draw_architecture  # lazy: matplotlib is an optional extra
    from torchspine.specs import load_cfg

    name = args.arch
    cfg = load_cfg(name) if name.endswith((".yaml", ".yml", ".json")) else variant_info(name).cfg
    path = draw_architecture(cfg, args.out, title=args.title or Path(name).name, dpi=args.dpi)
    print(f"wrote {path}")
    return 0
