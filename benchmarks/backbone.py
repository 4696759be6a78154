"""Backbone speed and memory: SpineNet vs. torchvision ResNet-50-FPN, measured in one run, reported as ratios.

Usage: ``python benchmarks/backbone.py [--size 512] [--batch 2] [--iters 5] [--device cpu]``

Rows: SpineNet-49 (both numerics), SpineNet-49S and SpineNet-49 Mobile, and the reference ResNet-50-FPN with
P3-P7 (`torchspine.models.detection.resnet_fpn.ResNetFPN`: torchvision's ResNet-50 + FPN + ``LastLevelP6P7``, the
RetinaNet backbone, with trainable BatchNorm). Inference is eval mode
under ``torch.inference_mode``; training is forward + backward of the sum of the outputs. Times are medians of
`iters` runs after one warm-up; peak memory is reported on CUDA only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import torchspine
from torchspine.models.detection.resnet_fpn import ResNetFPN


def _time(fn, iters: int, device: torch.device) -> float:
    fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _models() -> dict[str, torch.nn.Module]:
    return {
        # torchspine's ResNet-FPN baseline: trainable BatchNorm (resnet_fpn_backbone's default is frozen BN).
        "resnet50_fpn (reference)": ResNetFPN("resnet50_fpn"),
        "spinenet49 (tpu)": torchspine.create_model("spinenet49", semantics="tpu"),
        "spinenet49 (model_garden)": torchspine.create_model("spinenet49", semantics="model_garden"),
        "spinenet49s": torchspine.create_model("spinenet49s"),
        "spinenet49_mobile": torchspine.create_model("spinenet49_mobile"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    rows = []
    for name, model in _models().items():
        model = model.to(device)

        def infer(model=model) -> None:
            model.eval()
            with torch.inference_mode():
                model(x)

        def train(model=model) -> None:
            model.train()
            sum(t.float().mean() for t in model(x).values()).backward()

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t_infer, t_train = _time(infer, args.iters, device), _time(train, args.iters, device)
        peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
        rows.append((name, args.batch / t_infer, args.batch / t_train, peak))
    ref_infer, ref_train = rows[0][1], rows[0][2]
    print(
        f"device={device} torch={torch.__version__} size={args.size} batch={args.batch} threads="
        f"{torch.get_num_threads()}"
    )
    print(f"{'model':<28} {'infer img/s':>11} {'x ref':>6} {'train img/s':>11} {'x ref':>6} {'peak MiB':>9}")
    for name, infer_ips, train_ips, peak in rows:
        print(
            f"{name:<28} {infer_ips:>11.2f} {infer_ips / ref_infer:>6.2f} {train_ips:>11.2f} "
            f"{train_ips / ref_train:>6.2f} {peak:>9.0f}"
        )


if __name__ == "__main__":
    main()
