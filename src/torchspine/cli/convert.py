"""``torchspine convert``: official TensorFlow SpineNet checkpoints to torchspine safetensors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchspine.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a tensorflow/tpu or Model Garden checkpoint to .safetensors",
        description="Convert an official SpineNet TensorFlow checkpoint (tensorflow/tpu TF1 or Model Garden TF2) "
        "to a torchspine .safetensors file whose metadata rebuilds the model. The architecture, head and "
        "numerics are inferred from the checkpoint where possible; nothing is written unless every model tensor "
        "is mapped with the right shape.",
    )
    p.add_argument(
        "--tf-checkpoint",
        required=True,
        type=Path,
        metavar="PATH",
        help="checkpoint prefix (e.g. model.ckpt-231500) or a folder holding one",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="FILE.safetensors",
        help="the model file to write (its folder must exist)",
    )
    p.add_argument("--model", help="variant to build (default: inferred from the shapes)")
    p.add_argument(
        "--task",
        choices=["backbone", "retinanet", "maskrcnn", "classification"],
        help="what to convert (default: all the checkpoint holds; 'backbone' extracts the backbone)",
    )
    p.add_argument(
        "--semantics",
        choices=["auto", "tpu", "model_garden"],
        default="auto",
        help="numerics of the converted model (default: those of the checkpoint's implementation)",
    )
    p.add_argument(
        "--act",
        choices=["relu", "swish", "hard_swish"],
        help="activation the checkpoint was trained with (not stored in TF checkpoints)",
    )
    p.add_argument("--norm-eps", type=float, help="BatchNorm epsilon (default: the official config's)")
    p.add_argument("--report", type=Path, metavar="FILE.json", help="write the variable-by-variable report")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchspine.convert.converter import ConversionError, convert_checkpoint
    from torchspine.modelfile import save_model_file

    if args.out.suffix != ".safetensors":
        raise UsageError(f"--out {args.out}: expected a .safetensors file name")
    if not args.out.parent.is_dir():
        raise FileNotFoundError(f"--out {args.out}: folder {args.out.parent} does not exist")
    try:
        state, metadata, report = convert_checkpoint(
            args.tf_checkpoint,
            model=args.model,
            task=args.task,
            semantics=args.semantics,
            act=args.act,
            norm_eps=args.norm_eps,
        )
    except ConversionError as err:
        print(f"torchspine convert: error: {err}", file=sys.stderr)
        return 2
    save_model_file(state, metadata, args.out)
    if args.report:
        args.report.write_text(report.to_json())
    print(
        f"converted {report.source} ({report.source_format}, {report.task}, {report.model}): "
        f"{len(report.mapped)} variables mapped, {len(report.skipped)} skipped -> {args.out}"
    )
    for note in report.notes:
        print(f"  note: {note}")
    return 0
