"""What a RetinaNet training step keeps for the backward pass, by the operator that produced each tensor.

Usage: ``python benchmarks/saved_activations.py [--size 384] [--batch 2]
[--models resnet50_fpn,spinenet49,spinenet49+fused_bn_act]``

A ``+fused_bn_act`` suffix trains with `torchspine.layers.bn_act` (``--set model.fused_bn_act=true``).

Activation memory is most of a detector's training memory, and unlike peak RSS or CUDA peak it can be counted
exactly on any machine: every tensor autograd saves passes through ``torch.autograd.graph.saved_tensors_hooks``,
and a ``TorchDispatchMode`` records which operator wrote each storage. Each storage is counted once (a tensor saved
by two ops, e.g. an activation's output that is also the next convolution's input, is one map). Weights are
counted under ``param/input`` with the input images. Ratios are against the first model.

Why this matters for SpineNet: with in-place ReLU (ResNet-50) a conv + BN + act layer keeps two maps (the conv
output for BN, the BN output, overwritten by ReLU, for ReLU and the next conv); with swish it keeps three (the
conv output, the BN output for SiLU's backward and the SiLU output for the next conv), and each residual addition
followed by swish keeps its sum. The table shows where those maps are.
"""

from __future__ import annotations

import argparse
import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from torchspine.layers.bn_act import set_fused_bn_act
from torchspine.models.detection.retinanet import build_retinanet


class _Producers(TorchDispatchMode):
    """Maps each storage to the name of the operator that last wrote it (storages are reused once freed)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_storage: dict[int, str] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.by_storage[t.untyped_storage().data_ptr()] = func.__name__.split(".")[0]
        return out


def saved_by_op(name: str, size: int, batch: int) -> collections.Counter[str]:
    """Bytes saved for backward by one training forward of RetinaNet-`name`, keyed by producing operator."""
    torch.manual_seed(0)
    backbone, _, option = name.partition("+")
    model = build_retinanet(backbone, num_classes=91, image_size=size).train()
    if option == "fused_bn_act":
        set_fused_bn_act(model)
    elif option:
        raise SystemExit(f"unknown option {option!r} in {name!r}; expected fused_bn_act")
    images = [torch.rand(3, size, size) for _ in range(batch)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 100.0, 120.0]]), "labels": torch.tensor([1])}] * batch
    producers = _Producers()
    saved: dict[int, tuple[str, int]] = {}  # storage -> (producer when first saved, bytes)

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in saved:
            saved[storage.data_ptr()] = (producers.by_storage.get(storage.data_ptr(), "param/input"), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), producers:
        model(images, targets)
    counts: collections.Counter[str] = collections.Counter()
    for op, nbytes in saved.values():
        counts[op] += nbytes
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=384, help="square input side, a multiple of 128")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument(
        "--models", default="resnet50_fpn,spinenet49,spinenet49+fused_bn_act", help="comma-separated backbones"
    )
    args = parser.parse_args()
    results = {name: saved_by_op(name, args.size, args.batch) for name in args.models.split(",")}
    reference = sum(next(iter(results.values())).values())
    ops = sorted(
        {op for counts in results.values() for op in counts}, key=lambda op: -max(r[op] for r in results.values())
    )
    print(f"saved for backward, MiB (size {args.size}, batch {args.batch}, fp32)")
    print(f"{'producing op':34s}" + "".join(f"{name:>24s}" for name in results))
    for op in ops[:14]:
        print(f"{op:34s}" + "".join(f"{r[op] / 2**20:24.1f}" for r in results.values()))
    print(f"{'total':34s}" + "".join(f"{sum(r.values()) / 2**20:24.1f}" for r in results.values()))
    print(
        f"{'x ' + next(iter(results)):34s}" + "".join(f"{sum(r.values()) / reference:24.2f}" for r in results.values())
    )


if __name__ == "__main__":
    main()
