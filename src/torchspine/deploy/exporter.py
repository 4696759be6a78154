"""Write a model file's network as ONNX, TorchScript or a ``torch.export`` program (``torchspine export``).

All formats start from the same tensor-in, tensors-out graph (`torchspine.deploy.graphs`) of the model with its
BatchNorms folded (`torchspine.optimize_for_inference`, unless ``fast_path=False``):

* ``onnx``: ``torch.onnx.export(dynamo=True)``; with ``dynamic=True`` the batch size and the input height and width
  are free (H and W any multiples of ``2**max_level``, 128 for P3-P7). RetinaNet includes the post-processing,
  with ONNX ``NonMaxSuppression``.
* ``exported-program``: ``torch.export.save`` of the same program (``.pt2``), loadable with ``torch.export.load``.
  torch.export specialises sizes 0 and 1 and keeps that as run-time guards, so a dynamic program takes a batch of
  at least 2 and H, W of at least ``2 * 2**max_level`` (ONNX files have no such limit).
* ``torchscript``: ``torch.jit.trace`` at the example size; tracing records sizes as constants, so it runs at that
  input size only and ``dynamic`` is refused. RetinaNet is traced with ``raw=True`` outputs (boxes and scores of
  all anchors; the data-dependent NMS does not trace), to finish with
  `torchspine.deploy.postprocess.retinanet_detections`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.export import Dim
from torchvision.models.detection import MaskRCNN

from torchspine.deploy.graphs import BackboneGraph, ClassifierGraph, MaskRCNNGraph, RetinaNetGraph
from torchspine.errors import UsageError
from torchspine.inference import optimize_for_inference
from torchspine.models.classifier import ImageClassifier
from torchspine.models.detection.retinanet import SpineNetRetinaNet
from torchspine.models.spinenet import SpineNet

Format = Literal["onnx", "torchscript", "exported-program"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript", "exported-program")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported-program": ".pt2"}
ONNX_OPSET = 18

__all__ = ["FORMATS", "ExportGraph", "export_graph", "export_network", "graph_for", "size_for_export"]


@dataclass(frozen=True)
class ExportGraph:
    """A module ready to export, its input and output names, and the input granularity of its H and W."""

    module: nn.Module
    output_names: list[str]
    size_multiple: int


def graph_for(model: nn.Module, *, raw: bool = False) -> ExportGraph:
    """The exportable graph of a backbone, classifier, RetinaNet or Mask R-CNN (see `torchspine.deploy.graphs`)."""
    if isinstance(model, SpineNet):
        graph: nn.Module = BackboneGraph(model)
        backbone = model
    elif isinstance(model, ImageClassifier):
        graph, backbone = ClassifierGraph(model), model.backbone
    elif isinstance(model, SpineNetRetinaNet):
        graph, backbone = RetinaNetGraph(model, raw=raw), model.backbone
    elif isinstance(model, MaskRCNN):
        graph, backbone = MaskRCNNGraph(model), model.backbone
    else:
        raise UsageError(
            f"cannot export a {type(model).__name__}: expected a torchspine backbone, classifier or detector"
        )
    multiple = 2 ** max(f.level for f in backbone.feature_info)
    return ExportGraph(graph.eval(), list(graph.output_names), multiple)


def _dynamic_shapes(graph: ExportGraph, dynamic: bool) -> dict | None:
    if not dynamic:
        return None
    # H and W as multiples of the coarsest stride: the padding and resampling sizes then simplify to expressions of
    # one symbol each and the graph has no shape branches (`torchspine.layers.padding`).
    h, w = Dim("h", min=1, max=64), Dim("w", min=1, max=64)
    return {"images": {0: Dim("batch", min=1, max=1024), 2: graph.size_multiple * h, 3: graph.size_multiple * w}}


def export_graph(
    graph: ExportGraph, path: str | Path, *, fmt: Format, example: torch.Tensor, dynamic: bool = False
) -> Path:
    """Export `graph` with the input `example` to `path` in format `fmt`."""
    path = Path(path)
    if fmt not in FORMATS:
        raise UsageError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    shapes = _dynamic_shapes(graph, dynamic)
    if dynamic:
        # A size of 1 (batch) or of one multiple (H, W) would be specialised as a constant by torch.export.
        m = graph.size_multiple
        h, w = (max(s, 2 * m) for s in example.shape[-2:])
        example = torch.rand(
            max(example.shape[0], 2), example.shape[1], h, w, generator=torch.Generator().manual_seed(0)
        )
    with torch.no_grad():
        if fmt == "torchscript":
            if dynamic:
                raise UsageError(
                    "--dynamic: a TorchScript trace records input sizes as constants; use onnx or exported-program"
                )
            torch.jit.trace(graph.module, (example,), check_trace=False).save(str(path))
        elif fmt == "exported-program":
            program = torch.export.export(graph.module, (example,), dynamic_shapes=shapes)
            torch.export.save(program, path)
        else:
            torch.onnx.export(
                graph.module,
                (example,),
                str(path),
                dynamo=True,
                input_names=["images"],
                output_names=graph.output_names,
                dynamic_shapes=shapes,
                opset_version=ONNX_OPSET,
                external_data=False,
            )
    return path


def export_network(
    model: nn.Module,
    path: str | Path,
    *,
    fmt: Format = "onnx",
    dynamic: bool = False,
    image_size: int | None = None,
    batch_size: int = 1,
    fast_path: bool = True,
) -> Path:
    """Export `model` (as `torchspine.load_model` returns it) to `path`.

    Args:
        model: a SpineNet, `ImageClassifier`, `SpineNetRetinaNet` or torchvision ``MaskRCNN`` from the builders.
        path: the file to write.
        fmt: ``onnx``, ``torchscript`` or ``exported-program``.
        dynamic: free batch size, height and width (H, W multiples of ``2**max_level``); not for TorchScript.
        image_size: the example input's side (default: a detector's input size, else 256).
        batch_size: the example input's batch size.
        fast_path: fold BatchNorm into the convolutions first (`torchspine.optimize_for_inference`).
    """
    model = model.eval()
    if fast_path:
        # Plain operations in the graph: the oneDNN-fused CPU modules are an eager-mode kernel choice.
        model = optimize_for_inference(model, fuse_activations=False)
    graph = graph_for(model, raw=fmt == "torchscript")
    example = size_for_export(model, graph, image_size, batch_size)
    return export_graph(graph, path, fmt=fmt, example=example, dynamic=dynamic)


def size_for_export(model: nn.Module, graph: ExportGraph, image_size: int | None, batch_size: int = 1) -> torch.Tensor:
    """A random example input ``(batch_size, 3, S, S)``: S is `image_size`, else a detector's input size, else 256."""
    transform = getattr(model, "transform", None)
    size = image_size or int(getattr(transform, "image_size", 0)) or 256
    if size % graph.size_multiple:
        raise UsageError(f"image size {size} must be a multiple of {graph.size_multiple} (2**max_level)")
    return torch.rand(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
