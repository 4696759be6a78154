"""Checkpoint writer for the kill -9 test in ``tests/test_checkpoint.py``: resumes from the latest checkpoint and
saves a few-MB checkpoint per step in a tight loop until it is killed.

Every checkpoint is self-checking: its payload tensor is filled with its step and its epoch and data position are
functions of the step, so a reader can tell a torn or mixed-up file from a good one.

Usage: ``python ckpt_writer.py DIRECTORY [PAYLOAD_NUMEL] [KEEP_LAST]``; prints ``ready <first step>`` once resumed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from torchspine.engine.checkpoint import FORMAT_VERSION, CheckpointManager, capture_rng_state

STEPS_PER_EPOCH = 10
BATCH = 4
MAX_SECONDS = 60.0  # in case the test that should kill us dies first


def make_state(step: int, numel: int) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "step": step,
        "epoch": step // STEPS_PER_EPOCH,
        "data_position": (step % STEPS_PER_EPOCH) * BATCH,
        "model": {"payload": torch.full((numel,), step, dtype=torch.int64), "step": torch.tensor(step)},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "scheduler": None,
        "scaler": None,
        "rng": capture_rng_state(),
        "config": {"writer": "ckpt_writer"},
        "metrics": {},
        "versions": {"torch": str(torch.__version__), "torchspine": "test"},
    }


def loss_for(step: int) -> float:
    # Decreasing with noise, so best.pt is replaced often but not at every step.
    return 1.0 / (step + 1) + 0.5 * ((step * 7919) % 3)


def main() -> None:
    directory = Path(sys.argv[1])
    numel = int(sys.argv[2]) if len(sys.argv) > 2 else 512 * 1024
    keep_last = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    manager = CheckpointManager(directory, keep_last=keep_last, best_metric="loss", mode="min")
    step = 0 if manager.latest() is None else manager.load()["step"] + 1
    print(f"ready {step}", flush=True)
    start = time.monotonic()
    while time.monotonic() - start < MAX_SECONDS:
        manager.save(make_state(step, numel), step, metrics={"loss": loss_for(step)})
        step += 1


if __name__ == "__main__":
    main()
