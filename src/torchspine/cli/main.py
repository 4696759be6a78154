"""``torchspine <command>``: one entry point, one module per subcommand (``add_parser`` + ``run``).

Errors: torchspine's own errors (`torchspine.errors.TorchspineError`: bad arguments, configs, files, data), the
architecture errors of `torchspine.specs` (kept free of the package's imports, so not a subclass) and OS errors
about the user's files print one line and exit with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from torchspine import __version__
from torchspine.cli import convert, data, demo, draw, evaluate, export, list_models, predict, profile, search, train
from torchspine.errors import TorchspineError
from torchspine.specs import SpecError

COMMANDS = (demo, list_models, profile, convert, data, evaluate, predict, export, train, search, draw)
USER_ERRORS = (TorchspineError, SpecError, OSError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchspine", description="SpineNet backbones and detectors in PyTorch.")
    parser.add_argument("--version", action="version", version=f"torchspine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except USER_ERRORS as err:
        print(f"torchspine {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
