"""``torchspine export``: a model file's network as ONNX, TorchScript or a ``torch.export`` program."""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("onnx", "torchscript", "exported-program")  # `torchspine.deploy.exporter.FORMATS`, without importing torch
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported-program": ".pt2"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model file to ONNX, TorchScript or a torch.export program",
        description="Export the network of a torchspine model file (backbone, classifier, RetinaNet with its "
        "post-processing and NMS, or the dense part of Mask R-CNN) with BatchNorm folded into the convolutions. "
        "Inputs: (N, 3, H, W) images; detectors take [0, 1] RGB and normalise in the graph.",
    )
    p.add_argument("--weights", required=True, type=Path, help="a torchspine model file (.safetensors)")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="output format (default: %(default)s)")
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="free batch size, height and width (H, W: any multiples of 2**max_level, 128 for P3-P7); "
        "onnx and exported-program only",
    )
    p.add_argument("--out", type=Path, help="file to write (default: the weights' name with the format's suffix)")
    p.add_argument("--image-size", type=int, help="example input side (default: the detector's size, else 256)")
    p.add_argument(
        "--raw",
        action="store_true",
        help="RetinaNet: output boxes and class probabilities of all anchors, without the in-graph NMS "
        "(post-process with torchspine.deploy.postprocess.retinanet_detections)",
    )
    p.add_argument(
        "--no-fast-path",
        dest="fast_path",
        action="store_false",
        help="export the model as loaded, without folding BatchNorm into the convolutions",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchspine.deploy.exporter import export_graph, graph_for, size_for_export
    from torchspine.inference import optimize_for_inference
    from torchspine.loading import load_model

    model = load_model(args.weights)
    if args.fast_path:
        model = optimize_for_inference(model, fuse_activations=False, inplace=True)  # standard ops in the graph
    out = args.out or args.weights.with_name(args.weights.name.split(".")[0] + SUFFIXES[args.format])
    graph = graph_for(model, raw=args.raw or args.format == "torchscript")
    example = size_for_export(model, graph, args.image_size)
    export_graph(graph, out, fmt=args.format, example=example, dynamic=args.dynamic)
    kind = "raw outputs" if args.raw else "outputs"
    print(f"exported {args.weights} ({args.format}{', dynamic' if args.dynamic else ''}) -> {out}")
    print(f"  input: images {tuple(example.shape)}; {kind}: {', '.join(graph.output_names)}")
    return 0
