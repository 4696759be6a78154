"""Detector training throughput and peak memory: SpineNet RetinaNet vs. ResNet-50-FPN RetinaNet, as ratios.

Usage: ``python benchmarks/detector_train.py [--size 640] [--batch 2] [--steps N] [--warmup N] [--device cpu]
[--models resnet50_fpn,spinenet49s,spinenet49,tv_resnet50_fpn] [--amp none|bf16|fp16] [--channels-last]
[--interleave ROUNDS] [--json OUT]``

One training step is what `torchspine train` does per batch: forward in train mode on a list of synthetic images
with random boxes/labels (so the loss, matching and transform are included), backward, one SGD step (momentum 0.9,
weight decay 4e-5). Throughput is ``batch * steps / time`` over the timed steps after the warm-up steps. ``CPU
s/img`` is this process's CPU time (all threads, ``time.process_time``) per image over the same steps: on a shared
CPU machine it is less sensitive than wall time to other processes, so compare its ratios there (on CUDA it is
host overhead only). Ratios are against ``resnet50_fpn`` (nan if it is left out of ``--models``).

Rows (all at the same square input size, batch and 91 classes, weights random, nothing downloaded):

* ``resnet50_fpn``: the reference, `build_retinanet("resnet50_fpn")` -- torchvision's ResNet-50 + FPN P3-P7 on
  *our* head, anchors, losses and square-pad transform, so it differs from the SpineNet rows only in the backbone
  (trainable ``BatchNorm2d``, as for training from scratch).
* ``spinenet49s`` / ``spinenet49``: `build_retinanet` with the registry defaults (49S: 128-d endpoints and head).
* ``spinenet49+ckpt``: SpineNet-49 with activation checkpointing of every backbone block group and head tower
  level (``--set model.grad_checkpointing=true`` in `torchspine train`): less activation memory, one more forward.
  ``spinenet49+ckpt_backbone``: the backbone's block groups only (``model.backbone.set_grad_checkpointing()``); the
  head, two thirds of the multiply-adds, is not recomputed.
* ``spinenet49+fused_bn_act``: SpineNet-49 with ``--set model.fused_bn_act=true`` (`torchspine.layers.bn_act`:
  BatchNorm + activation, and a block's BatchNorm + addition + activation, keep only the BatchNorm input for
  backward and recompute the rest).
* ``tv_resnet50_fpn``: plain ``torchvision.models.detection.retinanet_resnet50_fpn(weights=None,
  weights_backbone=None)`` with ``min_size = max_size = size`` (square inputs are then not rescaled); torchvision's
  own head, anchors and losses, and trainable ``BatchNorm2d`` (what torchvision picks without pretrained weights).

Every model runs in a fresh subprocess (this script with ``--worker``), so no model sees another's allocator state.
Peak memory:

* CUDA: ``torch.cuda.max_memory_allocated`` over the warm-up and timed steps (peak stats reset after the model and
  data are on the device, so it counts weights, gradients, optimizer state, activations and inputs; not the
  caching allocator's reserve or the CUDA context).
* CPU (Linux): the increase of the process's resident set during training: ``ru_maxrss`` at the end minus the RSS
  after imports, model build and data creation. It counts gradients, momentum buffers, activations, allocator
  slack and oneDNN scratch/JIT code, but not the weights. If training never exceeded the pre-training high-water
  mark the number is meaningless and is reported as nan.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from torchspine.layers.bn_act import set_fused_bn_act
from torchspine.models.detection.retinanet import build_retinanet
from torchspine.utils.allocator import keep_freed_memory

MODELS = (
    "resnet50_fpn",
    "spinenet49s",
    "spinenet49",
    "spinenet49+fused_bn_act",
    "spinenet49+ckpt",
    "spinenet49+ckpt_backbone",
    "tv_resnet50_fpn",
)
FUSED_BN_ACT = "+fused_bn_act"  # suffix: BN + activation keeping one map for backward (``model.fused_bn_act``)
CHECKPOINTED = "+ckpt"  # suffix: the same detector with activation checkpointing (``model.grad_checkpointing``)
BACKBONE_ONLY = "_backbone"  # ... of the backbone's block groups only (the head keeps its activations)
REFERENCE = "resnet50_fpn"
NUM_CLASSES = 91
BOXES_PER_IMAGE = 8
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def build(name: str, size: int) -> nn.Module:
    """The detector called `name`, randomly initialised, for square `size` inputs."""
    if name == "tv_resnet50_fpn":
        return torchvision.models.detection.retinanet_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES, min_size=size, max_size=size
        )
    if CHECKPOINTED in name:
        base = name.split(CHECKPOINTED)[0]
        model = build_retinanet(base, num_classes=NUM_CLASSES, image_size=size)
        model.backbone.set_grad_checkpointing(True)
        model.head.set_grad_checkpointing(not name.endswith(BACKBONE_ONLY))
        return model
    if name.endswith(FUSED_BN_ACT):
        return set_fused_bn_act(
            build_retinanet(name.removesuffix(FUSED_BN_ACT), num_classes=NUM_CLASSES, image_size=size)
        )
    return build_retinanet(name, num_classes=NUM_CLASSES, image_size=size)


def synthetic_batch(batch: int, size: int, device: torch.device) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Images in [0, 1] and random boxes (5-50% of the side, inside the image) with labels 1..90, seeded so every
    model trains on the same data."""
    gen = torch.Generator().manual_seed(0)
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.rand(3, size, size, generator=gen).to(device))
        xy = torch.rand(BOXES_PER_IMAGE, 2, generator=gen) * size * 0.5
        wh = (0.05 + 0.45 * torch.rand(BOXES_PER_IMAGE, 2, generator=gen)) * size
        boxes = torch.cat([xy, (xy + wh).clamp(max=size)], dim=1)
        labels = torch.randint(1, NUM_CLASSES, (BOXES_PER_IMAGE,), generator=gen)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return images, targets


def _rss_mib() -> float:
    """Current resident set size (Linux ``/proc``; nan elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return float("nan")
    return pages * resource.getpagesize() / 2**20


def _maxrss_mib() -> float:
    """Lifetime peak resident set size of this process (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def _trainer(
    name: str, args: argparse.Namespace, device: torch.device, data: tuple[list[Tensor], list[dict[str, Tensor]]]
) -> tuple[nn.Module, Callable[[], float]]:
    """`name` built for training and a function that runs one training step on `data` and returns the loss."""
    torch.manual_seed(0)
    model = build(name, args.size).to(device).train()
    if args.channels_last:
        # The transform batches images as NCHW; channels-last weights make the convolutions pick NHWC anyway.
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=4e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    images, targets = data
    autocast = (
        torch.autocast(device.type, dtype=AMP_DTYPES[args.amp]) if args.amp != "none" else contextlib.nullcontext()
    )

    def step() -> float:
        with autocast:
            losses = model(images, targets)
        loss = sum(losses.values())
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())  # float() synchronises on CUDA too

    return model, step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train `name` for ``warmup + steps`` steps in this process; throughput, step times and peak memory."""
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_memory()  # as `torchspine train` does on CPU, for every model alike
    model, step = _trainer(name, args, device, synthetic_batch(args.batch, args.size, device))
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before, maxrss_before = _rss_mib(), _maxrss_mib()
    for _ in range(args.warmup):
        step()
    times, loss = [], float("nan")
    _sync(device)
    cpu_start = time.process_time()
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = step()
        _sync(device)
        times.append(time.perf_counter() - start)
    cpu_seconds = time.process_time() - cpu_start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        maxrss = _maxrss_mib()
        peak = maxrss - rss_before if maxrss > maxrss_before else float("nan")
    return {
        "model": name,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "images_per_s": args.batch * len(times) / sum(times),
        "median_step_s": statistics.median(times),
        "cpu_s_per_image": cpu_seconds / (args.batch * len(times)),
        "peak_mib": peak,
        "rss_after_build_mib": rss_before,
        "last_loss": loss,
    }


def interleaved(names: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """All `names` in this process, timed round-robin: one training step of each model per round, `args.interleave`
    rounds after the warm-up steps. Slow periods of a shared or throttled machine then hit every model alike, so
    the throughput ratios (from the summed step times) hold when single-model runs in separate processes wander by
    more than the differences measured. Peak memory needs a process per model: not measured here (nan)."""
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_memory()
    data = synthetic_batch(args.batch, args.size, device)
    steps, params = {}, {}
    for name in names:
        model, steps[name] = _trainer(name, args, device, data)
        params[name] = sum(p.numel() for p in model.parameters()) / 1e6
        for _ in range(args.warmup):
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, float] = dict.fromkeys(names, 0.0)
    for r in range(args.interleave):
        for name in names:
            _sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            steps[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
            cpu[name] += time.process_time() - cpu_start
        print(f"round {r + 1}/{args.interleave} done", file=sys.stderr, flush=True)
    return [
        {
            "model": name,
            "params_m": params[name],
            "images_per_s": args.batch * len(times[name]) / sum(times[name]),
            "median_step_s": statistics.median(times[name]),
            "cpu_s_per_image": cpu[name] / (args.batch * len(times[name])),
            "peak_mib": float("nan"),
        }
        for name in names
    ]


def _worker_argv(name: str, args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, __file__, "--worker", name, "--device", args.device, "--amp", args.amp]
    argv += ["--size", str(args.size), "--batch", str(args.batch), "--steps", str(args.steps)]
    argv += ["--warmup", str(args.warmup)] + (["--channels-last"] if args.channels_last else [])
    return argv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=640, help="square input size, a multiple of 128")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on CUDA, 5 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 on CUDA, 2 on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument(
        "--interleave",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="time all models in one process, one step each per round, ROUNDS rounds (no memory column)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the settings and rows here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = torch.device(args.device).type == "cuda"
    args.steps = args.steps if args.steps is not None else (20 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 2)
    if args.worker is not None:
        print(json.dumps(measure(args.worker, args)))
        return

    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(MODELS)}")
    if args.interleave:
        rows = interleaved(names, args)
    else:
        rows = []
        for name in names:
            done = subprocess.run(_worker_argv(name, args), stdout=subprocess.PIPE, text=True)
            if done.returncode:
                sys.exit(f"{name}: the worker failed (exit status {done.returncode}); its error is above")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    nan = dict.fromkeys(("images_per_s", "peak_mib", "cpu_s_per_image"), float("nan"))
    ref = next((r for r in rows if r["model"] == REFERENCE), nan)  # ratios are nan without the reference
    settings = {
        "device": torch.cuda.get_device_name(args.device) if cuda else "cpu",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        **{k: getattr(args, k) for k in ("size", "batch", "steps", "warmup", "amp", "channels_last", "interleave")},
    }
    print(" ".join(f"{k}={v}" for k, v in settings.items()))
    mem = "peak MiB" if cuda else "peak dRSS MiB"
    print(
        f"{'model':<26} {'params M':>8} {'train img/s':>11} {'x ref':>6} {'ms/step':>8} {'CPU s/img':>9} "
        f"{'x ref':>6} {mem:>13} {'x ref':>6}"
    )
    for r in rows:
        label = r["model"] + (" (reference)" if r["model"] == REFERENCE else "")
        print(
            f"{label:<26} {r['params_m']:>8.2f} {r['images_per_s']:>11.2f} "
            f"{r['images_per_s'] / ref['images_per_s']:>6.2f} {r['median_step_s'] * 1e3:>8.0f} "
            f"{r['cpu_s_per_image']:>9.2f} {r['cpu_s_per_image'] / ref['cpu_s_per_image']:>6.2f} "
            f"{r['peak_mib']:>13.0f} {r['peak_mib'] / ref['peak_mib']:>6.2f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
