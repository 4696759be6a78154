"""Inference latency side by side: official TF Model Garden, torchspine (eager, fast path, compiled, ONNX Runtime)
and torchvision's RetinaNet R50-FPN, for the backbone, the RetinaNet network and the whole detector, in one run.

Usage: ``python benchmarks/inference.py [--size 640] [--threads 2] [--reps 7] [--warmup 2] [--device cpu]
[--tf-python .venv-tf/bin/python] [--no-compile] [--no-onnx] [--keep-freed-memory] [--out OUT]``

Workloads (batch 1, square `size`, fp32; weights random, nothing downloaded):

* ``backbone``: SpineNet-49 with Model Garden numerics (TF ``'SAME'`` padding, pool chains, BN eps 1e-3) ->
  P3-P7; torchvision: ResNet-50 + FPN + P6/P7 (``retinanet_resnet50_fpn().backbone``).
* ``network``: backbone + RetinaNet head up to the raw per-level outputs (91 classes, 9 anchors, 4 x 256 tower).
* ``detector``: the whole detector on one image tensor: torchspine's and torchvision's ``model([image])`` (input
  normalisation, padding, anchors, decoding, NMS); TF: network + ``MultilevelDetectionGenerator`` (batched NMS).
  With random weights few scores pass the 0.05 threshold, so NMS is cheap in every implementation alike.

Rows: the official TF code as ``tf.function`` (`inference_tf.py`, run in a subprocess with `--tf-python`, the
repo's ``.venv-tf``; skipped with a message when absent), torchspine eager (NCHW and channels-last) under
``inference_mode``, the fast path (`torchspine.optimize_for_inference`: BN folded, up-sampled parents projected
before up-sampling, then on CPU channels-last weights and each conv fused with its activation / residual or merge
addition in one oneDNN call; also rows with BN folding only and with NCHW weights), ``torch.compile`` of the fast
path (compile time = first call, reported separately), on CPU the fast path and its compiled form with the
heads' large 3x3 convolutions as Winograd F(6x6, 3x3) (``winograd=True``, NNPACK; ~1e-5 relative error per such
convolution, so the targets are reported with and without these rows), ONNX Runtime on the fast path exported
to ONNX (backbone and network traced; the whole detector with its NMS as ``torchspine export`` writes it; needs
``onnxruntime``), and torchvision's R50-FPN RetinaNet eager. On CUDA, also fp16 and bf16 autocast rows and the
peak memory of each row.

Fairness on a shared machine: all rows are timed round-robin, one call each per repetition (the TF worker waits
on a pipe while PyTorch runs and vice versa), and the median over repetitions is reported, so slow periods hit
every row alike and the ratios stay meaningful even when absolute times are not. Both frameworks get the same
thread count (TF: intra-op `threads`, inter-op 1). ``--clock cpu`` times each call by its process's CPU time
(``time.process_time``: all threads of the PyTorch process, or of the TF worker) instead of wall time: on a
heavily shared machine that counts the work a call needed rather than how long it waited for a core (with one
thread, the two agree on an idle machine).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

import torchspine
from torchspine.models.detection.retinanet import build_retinanet
from torchspine.utils.allocator import keep_freed_memory, malloc_env

TASKS = ("backbone", "network", "detector")
TF_ROW = "official TF Model Garden (tf.function)"
TV_ROW = "torchvision RetinaNet R50-FPN (eager)"
WINOGRAD = "+ Winograd"  # row suffix: optimize_for_inference(winograd=True), ~1e-5 relative error per head conv
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    """One timed configuration: `run` does one complete call (synchronised on CUDA)."""

    name: str
    task: str
    run: Callable[[], object]
    setup_s: float = float("nan")  # compile / export time, when there is one
    times_ms: list[float] = field(default_factory=list)
    peak_mib: float = float("nan")


class Network(nn.Module):
    """Backbone + head up to the raw per-level outputs (torchspine) or the flattened raw outputs (torchvision)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, levels: bool) -> None:
        super().__init__()
        self.backbone, self.head, self.levels = backbone, head, levels

    def forward(self, x: Tensor):
        feats = list(self.backbone(x).values())
        return self.head.forward_levels(feats) if self.levels else self.head(feats)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _caller(model: nn.Module, inp, device: torch.device, autocast: torch.dtype | None = None) -> Callable[[], object]:
    def run() -> object:
        ctx = torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            out = model(inp)
        _sync(device)
        return out

    return run


def _spinenet_models(size: int, device: torch.device) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    det = build_retinanet("spinenet49", backbone_args={"semantics": "model_garden"}, num_classes=91, image_size=size)
    det = det.eval().to(device)
    return {"backbone": det.backbone, "network": Network(det.backbone, det.head, levels=True), "detector": det}


def _torchvision_models(size: int, device: torch.device) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    det = torchvision.models.detection.retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91, min_size=size, max_size=size
    )
    det = det.eval().to(device)
    return {"backbone": det.backbone, "network": Network(det.backbone, det.head, levels=False), "detector": det}


def _inputs(size: int, device: torch.device, channels_last: bool = False) -> dict[str, object]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, size, size, generator=gen).to(device)
    image = torch.rand(3, size, size, generator=gen).to(device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return {"backbone": x, "network": x, "detector": [image]}


def _onnx_row(name: str, task: str, export: Callable[[Path], object], x: Tensor, threads: int, tmp: Path) -> Row:
    """ONNX Runtime on the file `export` writes (the export is the row's setup time)."""
    import onnxruntime as ort

    path = tmp / f"{task}.onnx"
    start = time.perf_counter()
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' constant-folding notes
        export(path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.cpu().numpy()}
    session.run(None, feed)
    return Row(name, task, lambda: session.run(None, feed), setup_s=time.perf_counter() - start)


def _onnx_export(task: str, model: nn.Module, x: Tensor, size: int) -> Callable[[Path], object]:
    """How the ONNX row of `task` is exported: the network as traced (TorchScript exporter, fixed size); the whole
    detector, post-processing and NMS included, as ``torchspine export --format onnx`` writes it."""
    if task == "detector":
        from torchspine.deploy.exporter import export_network

        return lambda path: export_network(model, path, fmt="onnx", image_size=size)
    return lambda path: torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17)


def build_rows(args: argparse.Namespace, device: torch.device, tmp: Path) -> list[Row]:
    rows: list[Row] = []
    spine, tv = _spinenet_models(args.size, device), _torchvision_models(args.size, device)
    inputs, inputs_cl = _inputs(args.size, device), _inputs(args.size, device, channels_last=True)
    fast_fn = getattr(torchspine, "optimize_for_inference", None)
    for task in TASKS:
        rows.append(Row("torchspine eager", task, _caller(spine[task], inputs[task], device)))
        cl = copy.deepcopy(spine[task]).to(memory_format=torch.channels_last)
        rows.append(Row("torchspine eager channels_last", task, _caller(cl, inputs_cl[task], device)))
        fast = winograd = None
        if fast_fn is not None:
            folded = fast_fn(spine[task], fuse_activations=False)
            rows.append(Row("torchspine fast path, BN folded only", task, _caller(folded, inputs[task], device)))
            nchw = fast_fn(spine[task], channels_last=False)
            rows.append(Row("torchspine fast path NCHW", task, _caller(nchw, inputs[task], device)))
            fast = fast_fn(spine[task])  # channels-last weights on CPU; the input stays NCHW, as users pass it
            rows.append(Row("torchspine fast path", task, _caller(fast, inputs[task], device)))
            if device.type == "cpu" and task != "backbone":  # heads only: the backbone has no Winograd layers
                winograd = fast_fn(spine[task], winograd=True)
                rows.append(Row(f"torchspine fast path {WINOGRAD}", task, _caller(winograd, inputs[task], device)))
        else:
            print("torchspine.optimize_for_inference is absent: no fast-path rows", file=sys.stderr)
        if device.type == "cuda":
            for label, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
                model = fast if fast is not None else spine[task]
                rows.append(Row(f"torchspine fast path {label}", task, _caller(model, inputs[task], device, dtype)))
        if args.compile:
            compiled_rows = [("torchspine torch.compile", fast if fast is not None else spine[task])]
            if winograd is not None:
                compiled_rows.append((f"torchspine torch.compile {WINOGRAD}", winograd))
            for name, model in compiled_rows:
                run = _caller(torch.compile(model), inputs[task], device)
                start = time.perf_counter()
                try:
                    run()
                except Exception as exc:  # report, keep benchmarking the other rows
                    print(f"torch.compile failed for {name}, {task}: {type(exc).__name__}: {exc}", file=sys.stderr)
                else:
                    rows.append(Row(name, task, run, setup_s=time.perf_counter() - start))
        if args.onnx and device.type == "cpu":
            if task == "detector":  # the exporter applies the fast path itself; the graph takes a batch tensor
                model, x = spine[task], inputs[task][0].unsqueeze(0)
            else:
                model, x = (fast if fast is not None else spine[task]), inputs[task]
            try:
                export = _onnx_export(task, model, x, args.size)
                rows.append(_onnx_row("torchspine ONNX Runtime", task, export, x, args.threads, tmp))
            except ImportError:
                print("onnxruntime is not installed: no ONNX Runtime rows", file=sys.stderr)
            except Exception as exc:
                print(f"ONNX export/run failed for {task}: {type(exc).__name__}: {exc}", file=sys.stderr)
        rows.append(Row(TV_ROW, task, _caller(tv[task], inputs[task], device)))
    return rows


class TFWorker:
    """The official model in a `.venv-tf` subprocess, driven line by line (`inference_tf.py`)."""

    def __init__(self, python: str, size: int, threads: int, env: dict[str, str] | None = None) -> None:
        script = str(Path(__file__).with_name("inference_tf.py"))
        self.proc = subprocess.Popen(
            [python, script, str(size), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=None if env is None else {**os.environ, **env},
        )
        self.info: dict = {}

    def wait_ready(self) -> None:
        """Block until the worker has built and traced its models (it starts while PyTorch builds its rows)."""
        self.info = self._read()
        if not self.info.get("ready"):
            raise RuntimeError(f"TF worker did not start: {self.info}")

    def _read(self) -> dict:
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"TF worker exited with status {self.proc.wait()} (its error is above)")

    def time(self, task: str, clock: str) -> float:
        self.proc.stdin.write(f"{task} {clock}\n")
        self.proc.stdin.flush()
        return self._read()["ms"]

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def measure(
    rows: list[Row],
    tf: TFWorker | None,
    args: argparse.Namespace,
    device: torch.device,
    after_rep: Callable[[list[Row]], None],
) -> list[Row]:
    """Round-robin: every repetition calls every row once (TF rows through the worker); `after_rep` sees the rows
    after every timed repetition (results so far are written out, in case a long run is cut short)."""
    all_rows = list(rows)
    if tf is not None:
        for task in TASKS:
            all_rows.append(Row(TF_ROW, task, lambda task=task: None))
    for rep in range(args.warmup + args.reps):
        for row in all_rows:
            if row.name == TF_ROW:
                ms = tf.time(row.task, args.clock)
            else:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                clock = time.process_time if args.clock == "cpu" else time.perf_counter
                start = clock()
                row.run()
                ms = (clock() - start) * 1e3
                if device.type == "cuda":
                    peak = torch.cuda.max_memory_allocated() / 2**20
                    row.peak_mib = peak if row.peak_mib != row.peak_mib else max(row.peak_mib, peak)
            if rep >= args.warmup:
                row.times_ms.append(ms)
        print(f"repetition {rep + 1}/{args.warmup + args.reps} done", file=sys.stderr, flush=True)
        if rep >= args.warmup:
            after_rep(all_rows)
    return all_rows


def _median(rows: list[Row], name: str, task: str) -> float:
    found = [statistics.median(r.times_ms) for r in rows if r.name == name and r.task == task and r.times_ms]
    return found[0] if found else float("nan")


def _best(rows: list[Row], task: str, prefix: str, exclude: tuple[str, ...] = ()) -> tuple[str, float]:
    """Fastest row whose name starts with `prefix` (excluding names containing any of `exclude`)."""
    cands = [
        (statistics.median(r.times_ms), r.name)
        for r in rows
        if r.task == task and r.name.startswith(prefix) and r.times_ms and not any(e in r.name for e in exclude)
    ]
    if not cands:
        return "-", float("nan")
    ms, name = min(cands)
    return name, ms


def report(rows: list[Row], settings: dict) -> tuple[str, str]:
    """(plain text, markdown)."""
    txt = [" ".join(f"{k}={v}" for k, v in settings.items()), ""]
    md = ["Settings: " + ", ".join(f"`{k}={v}`" for k, v in settings.items()), ""]
    for task in TASKS:
        tf_ms, tv_ms = _median(rows, TF_ROW, task), _median(rows, TV_ROW, task)
        txt.append(f"== {task} ==")
        txt.append(f"{'row':<40} {'median ms':>10} {'x TF':>6} {'x tv':>6} {'setup s':>8} {'peak MiB':>9}")
        md += [f"### {task}", "", "| row | median ms | x TF | x torchvision R50-FPN | setup s | peak MiB |"]
        md.append("|---|---:|---:|---:|---:|---:|")
        for r in rows:
            if r.task != task or not r.times_ms:
                continue
            ms = statistics.median(r.times_ms)
            cells = (f"{ms:.1f}", f"{ms / tf_ms:.2f}", f"{ms / tv_ms:.2f}", f"{r.setup_s:.1f}", f"{r.peak_mib:.0f}")
            cells = tuple("-" if c == "nan" else c for c in cells)
            txt.append(f"{r.name:<40} {cells[0]:>10} {cells[1]:>6} {cells[2]:>6} {cells[3]:>8} {cells[4]:>9}")
            md.append(f"| {r.name} | " + " | ".join(cells) + " |")
        txt.append("")
        md.append("")
    # The issue's targets, from this run's medians (fp32 rows): in PyTorch (eager, fast path, compiled) and on any
    # runtime (ONNX Runtime included) with the default numerics (< 1e-5 relative of the unfused model), and with the
    # opt-in Winograd head convolutions too.
    checks = []
    scopes = (
        ("in PyTorch", ("fp16", "bf16", "ONNX", WINOGRAD)),
        ("any runtime", ("fp16", "bf16", WINOGRAD)),
        ("with Winograd heads", ("fp16", "bf16")),
    )
    for task, ref, limit in (("backbone", TF_ROW, 0.9), ("network", TF_ROW, 0.85), ("detector", TV_ROW, 0.8)):
        for scope, exclude in scopes if task != "backbone" else scopes[:2]:
            name, ms = _best(rows, task, "torchspine", exclude=exclude)
            ratio = ms / _median(rows, ref, task)
            verdict = "met" if ratio <= limit else ("not met" if ratio == ratio else "not measured")
            checks.append(
                f"{task}: best torchspine {scope} ({name}) = {ratio:.2f} x {ref} (target <= {limit}): {verdict}"
            )
    for task in ("backbone", "network"):
        ort = _median(rows, "torchspine ONNX Runtime", task)
        fast = _median(rows, "torchspine fast path", task)
        verdict = "met" if ort <= fast else ("not met" if ort == ort and fast == fast else "not measured")
        checks.append(f"{task}: ONNX Runtime {ort:.1f} ms vs fast path {fast:.1f} ms (target: ORT <= fast): {verdict}")
    txt += ["Targets (issue 11):", *checks]
    md += ["Targets (issue 11):", "", *[f"- {c}" for c in checks]]
    return "\n".join(txt) + "\n", "\n".join(md) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for PyTorch, TF and ONNX Runtime")
    parser.add_argument("--reps", type=int, default=7, help="timed round-robin repetitions (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed round-robin repetitions first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall time or process CPU time")
    parser.add_argument("--tf-python", default=str(REPO / ".venv-tf" / "bin" / "python"))
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile rows")
    parser.add_argument("--no-onnx", dest="onnx", action="store_false", help="skip the ONNX Runtime rows")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="both processes keep freed memory in the heap (glibc: no page faults for every new feature map); "
        "torchspine eval/predict/train do this on CPU",
    )
    parser.add_argument("--out", type=Path, default=None, help="write OUT.txt and OUT.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tf_env = None
    if args.keep_freed_memory:
        keep_freed_memory()
        tf_env = malloc_env()  # the same glibc settings for the TF worker
    tf = None
    if Path(args.tf_python).exists():
        tf = TFWorker(args.tf_python, args.size, args.threads, tf_env)
    else:
        print(f"{args.tf_python} not found (run `make tf-env`): no official TF rows, no x TF ratios", file=sys.stderr)
    settings = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": args.threads,
        "size": args.size,
        "batch": 1,
        "reps": args.reps,
        "warmup": args.warmup,
        "clock": args.clock,
        "keep_freed_memory": args.keep_freed_memory,
    }

    def write(rows: list[Row]) -> None:
        done = min(len(r.times_ms) for r in rows)
        tf_version = tf.info.get("tf") if tf is not None else "absent"
        txt, md = report(rows, {**settings, "tf": tf_version, "reps": f"{done}/{args.reps}"})
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".txt").write_text(txt)
            args.out.with_suffix(".md").write_text(md)
        if done == args.reps:
            print(txt)

    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = build_rows(args, device, Path(tmp))
            if tf is not None:
                tf.wait_ready()
            measure(rows, tf, args, device, write)
    finally:
        if tf is not None:
            tf.close()


if __name__ == "__main__":
    main()
