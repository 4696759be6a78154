"""Where the time of a SpineNet forward goes, per op and per block, next to where the multiply-adds are.

Usage: ``python benchmarks/profile_spinenet.py [--model spinenet49] [--size 640] [--semantics model_garden]
[--threads 1] [--iters 3] [--channels-last] [--out benchmarks/results/profile_spinenet49.md]``

Profiles, in eval mode under ``torch.inference_mode`` (batch 1, fp32), the backbone and the RetinaNet network
(backbone + head up to the raw per-level outputs, no post-processing) with ``torch.profiler``:

* **ops**: self CPU time per ATen op, summed over `iters` profiled runs (after one warm-up), as a share of the total.
* **regions**: the time of each part of the network (stem, stem block groups, the two resampling paths and the
  block group of every scale-permuted block, the endpoint convs, the head towers per level), labelled by
  ``record_function`` ranges opened in forward pre-hooks, next to the region's share of the multiply-adds
  (``FlopCounterMode`` per module). ``time share / MAC share`` > 1 marks parts that run below the network's
  average arithmetic throughput: memory-bound element-wise work, small convolutions, padding and resizing copies.

Times on a shared machine are noisy; the shares within one run are what this measures.
"""

from __future__ import annotations

import argparse
import platform
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

import torchspine
from torchspine.models.detection.retinanet import build_retinanet


class RetinaNetNetwork(nn.Module):
    """Backbone + head up to the raw per-level outputs (what the paper's FLOPs count)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        return self.head.forward_levels(list(self.backbone(x).values()))


def _region_of(name: str) -> str | None:
    """The region label of a module FQN (relative to the backbone or the network), or None for other modules."""
    parts = name.split(".")
    if parts[0] == "backbone":
        parts = parts[1:]
    if not parts or parts == [""]:
        return None
    if parts[0] in ("stem", "stem_pool") and len(parts) == 1:
        return "stem (7x7/2 conv + BN + act + 3x3/2 pool)"
    if parts[0] == "stem_blocks" and len(parts) == 2:
        return f"stem group {parts[1]}"
    if parts[0] == "blocks" and len(parts) == 3 and parts[2] in ("resample0", "resample1", "group", "act"):
        kind = {"resample0": "resample", "resample1": "resample", "group": "group", "act": "merge act"}[parts[2]]
        return f"block {int(parts[1]):02d} {kind}"
    if parts[0] == "endpoints" and len(parts) == 2:
        return f"endpoint {parts[1]}"
    if parts[0] == "head" and len(parts) == 2 and parts[1] in ("cls", "box"):
        return f"head {parts[1]} tower"
    return None


def _label_regions(model: nn.Module) -> Callable[[], None]:
    """Open a ``record_function`` range named after each region's module around its forward; returns a remover."""
    handles = []
    for name, module in model.named_modules():
        region = _region_of(name)
        if region is None:
            continue

        def pre(mod: nn.Module, args: tuple, region: str = region) -> None:
            suffix = f" L{args[1] + 3}" if region.startswith("head") and len(args) > 1 else ""
            ctx = record_function("R:" + region + suffix)
            ctx.__enter__()
            mod._profile_ctx = ctx  # type: ignore[attr-defined]

        def post(mod: nn.Module, args: tuple, out: object) -> None:
            mod._profile_ctx.__exit__(None, None, None)  # type: ignore[attr-defined]

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return lambda: [h.remove() for h in handles]


def region_macs(model: nn.Module, x: Tensor) -> dict[str, float]:
    """Multiply-adds per region (head towers summed over levels)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(x)
    counts = counter.get_flop_counts()
    macs: dict[str, float] = defaultdict(float)
    total = 0.0
    for fqn, per_op in counts.items():
        flops = sum(per_op.values())
        # FlopCounterMode keys modules by their FQN prefixed with the root class name ("Global" is the total).
        name = fqn.split(".", 1)[1] if "." in fqn else ""
        if fqn == "Global":
            total = flops / 2
        region = _region_of(name)
        if region is not None:
            macs[region] += flops / 2
    macs["total"] = total
    return macs


def profile_model(model: nn.Module, x: Tensor, iters: int) -> tuple[list, dict[str, float], float]:
    """(per-op rows, per-region times in ms per forward, total ms per forward)."""
    remove = _label_regions(model)
    try:
        with torch.inference_mode():
            model(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(iters):
                    with record_function("R:forward"):
                        model(x)
    finally:
        remove()
    events = prof.key_averages()
    regions: dict[str, float] = defaultdict(float)
    ops = []
    total = 0.0
    for e in events:
        if e.key == "R:forward":
            total = e.cpu_time_total / 1e3 / iters
        elif e.key.startswith("R:"):
            label = e.key[2:]
            if label.startswith("head"):
                label = label.rsplit(" L", 1)[0]
            regions[label] += e.cpu_time_total / 1e3 / iters
        else:
            ops.append((e.key, e.self_cpu_time_total / 1e3 / iters, e.count // iters))
    ops.sort(key=lambda r: -r[1])
    return ops, dict(regions), total


def _summarise_regions(regions: dict[str, float], macs: dict[str, float]) -> list[tuple[str, float, float]]:
    """Group per-block regions by kind (resample by direction needs the block list; keep kind-level sums)."""
    groups: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for label, ms in regions.items():
        kind = label
        if label.startswith("block "):
            kind = "all blocks: " + label.split(" ", 2)[2]
        elif label.startswith("stem group"):
            kind = "stem groups (L2, 3 bottlenecks each)"
        elif label.startswith("endpoint"):
            kind = "endpoints (1x1 conv + BN + act)"
        groups[kind][0] += ms
        groups[kind][1] += macs.get(label, 0.0)
    return sorted(((k, v[0], v[1]) for k, v in groups.items()), key=lambda r: -r[1])


def report(name: str, model: nn.Module, x: Tensor, iters: int, top: int) -> list[str]:
    macs = region_macs(model, x)
    ops, regions, total = profile_model(model, x, iters)
    op_total = sum(r[1] for r in ops)
    lines = [f"### {name}", "", f"{total:.0f} ms per forward; {macs['total'] / 1e9:.2f} GMACs.", ""]
    lines += ["Top ops (self CPU time):", "", "| op | ms | % time | calls |", "|---|---:|---:|---:|"]
    for key, ms, count in ops[:top]:
        lines.append(f"| `{key}` | {ms:.1f} | {100 * ms / op_total:.1f} | {count} |")
    lines += ["", "Regions, grouped by kind (inclusive time):", ""]
    lines += ["| region | ms | % time | % MACs | time/MAC share |", "|---|---:|---:|---:|---:|"]
    for kind, ms, m in _summarise_regions(regions, macs):
        pm = 100 * m / macs["total"]
        ratio = f"{(ms / total) / (m / macs['total']):.2f}" if m else "-"
        lines.append(f"| {kind} | {ms:.1f} | {100 * ms / total:.1f} | {pm:.1f} | {ratio} |")
    lines += ["", "Ten most expensive single regions:", ""]
    lines += ["| region | ms | % time | % MACs |", "|---|---:|---:|---:|"]
    for label, ms in sorted(regions.items(), key=lambda r: -r[1])[:10]:
        lines.append(
            f"| {label} | {ms:.1f} | {100 * ms / total:.1f} | {100 * macs.get(label, 0) / macs['total']:.1f} |"
        )
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="spinenet49")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--semantics", default="model_garden", choices=("tpu", "model_garden"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(1, 3, args.size, args.size).to(memory_format=fmt)
    backbone = torchspine.create_model(args.model, semantics=args.semantics).eval().to(memory_format=fmt)
    det = build_retinanet(args.model, backbone_args={"semantics": args.semantics}, num_classes=91).eval()
    network = RetinaNetNetwork(det.backbone, det.head).to(memory_format=fmt)
    head = (
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} thread(s), fp32, batch 1, {args.size}x{args.size}, semantics={args.semantics}, "
        f"{'channels_last' if args.channels_last else 'NCHW'}, eager eval under inference_mode."
    )
    lines = [f"## {args.model} at {args.size}", "", head, ""]
    lines += report(f"{args.model} backbone", backbone, x, args.iters, args.top)
    lines += report(f"RetinaNet-{args.model} network (backbone + head, raw outputs)", network, x, args.iters, args.top)
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
