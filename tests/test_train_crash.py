"""``kill -9`` of a whole ``torchspine train`` process, then ``--resume``, until the run ends as if never stopped.

``tests/test_checkpoint.py`` kills a process that only writes checkpoints; this kills the real trainer, so every
moment of a run can be hit: imports, model building, loading the checkpoint to resume from, rewinding the metrics
file, training steps, evaluation, metrics lines, and above all the checkpoint writes (temporary file, fsync, rename,
``best.pt`` link, pruning). The kill points come from a seeded RNG; kills meant to land *during* a checkpoint write
fire as soon as the process's temporary checkpoint file appears in the folder, and a kill counts as having landed
mid-write only if that temporary file is still there afterwards (the rename never happened).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torchspine.cli.main import main
from torchspine.engine.checkpoint import CKPT_PATTERN, TMP_PATTERN, CheckpointManager, load_checkpoint
from torchspine.engine.metrics import rewind_jsonl

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_STEPS = 10
RUN_TIMEOUT = 300.0  # seconds; one run takes ~10 s alone on 2 cores
COMMON = [
    "--experiment",
    "demo",
    "--set",
    "train.global_batch_size=4",  # 8 images: 2 steps per epoch, so kills land in both halves of epochs
    "--set",
    "data.num_workers=0",  # deterministic on CPU: resumed runs must match bit for bit
    "--set",
    "eval.max_images=2",
    "--set",
    "train.log_every=1",
    "--set",
    "train.keep_last=2",
]
# What the kill test runs: a checkpoint and a metrics line every step, an evaluation every epoch (2 steps).
CRASH = [
    *COMMON,
    "--set",
    "train.checkpoint_every_steps=1",
    "--set",
    "train.eval_every_epochs=1",
    "--set",
    f"train.max_steps={MAX_STEPS}",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["data", "make-demo", "--out", str(out), "--num-train", "8", "--num-val", "2"]) == 0
    return out


def _records(path: Path) -> list[dict]:
    """The metrics file's records without the wall-clock throughput, which no two runs share."""
    records = [json.loads(line) for line in path.read_text().splitlines()]  # every line must parse
    for record in records:
        record.pop("images_per_s", None)
    return records


def _assert_identical(actual, expected, where: str = "checkpoint") -> None:
    assert type(actual) is type(expected), f"{where}: {type(actual).__name__} != {type(expected).__name__}"
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, where
        assert torch.equal(actual, expected), f"{where}: values differ"
    elif isinstance(expected, dict):
        assert actual.keys() == expected.keys(), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            _assert_identical(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{where}: lengths differ"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_identical(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


# ---------------------------------------------------------------------------------------------------------------------
# The final evaluation and the metrics file across a resume (fast)


def test_final_checkpoint_holds_the_final_evaluation_and_survives_a_resume(data, tmp_path):
    """The last step's checkpoint is written after the final evaluation, and a resume keeps its metrics.

    With ``max_steps`` a multiple of ``checkpoint_every_steps`` but not of the evaluation period, the final
    checkpoint used to be written before the final evaluation, so neither it nor ``best.pt`` had the final metrics.
    Resuming a finished run re-saves the last step; that checkpoint lost its metrics when the trainer did not restore
    them, and so would any checkpoint a resumed run writes before its next evaluation.
    """
    args = [*COMMON, "--data", str(data), "--output-dir", str(tmp_path), "--set", "train.max_steps=2"]
    args += ["--set", "train.checkpoint_every_steps=2"]  # evaluation: every 20 epochs = 40 steps
    assert main(["train", *args]) == 0
    final = tmp_path / "checkpoints" / "ckpt-00000002.pt"
    evaluated = [r for r in _records(tmp_path / "metrics.jsonl") if "bbox/AP" in r]
    assert [r["step"] for r in evaluated] == [2]
    expected = {k: v for k, v in evaluated[0].items() if "/" in k}
    assert load_checkpoint(final)["metrics"] == expected
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["metrics"] == expected

    before = (tmp_path / "metrics.jsonl").read_text()
    assert main(["train", *args, "--resume"]) == 0  # nothing left to do but the final save
    assert load_checkpoint(final)["metrics"] == expected
    assert (tmp_path / "metrics.jsonl").read_text() == before


def test_rewind_jsonl_drops_later_steps_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert rewind_jsonl(path, 3) == 0 and not path.exists()

    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (1, 2, 3, 4)] + ['{"note": "no step"}']
    path.write_text("\n".join(lines) + "\n")
    inode = path.stat().st_ino
    assert rewind_jsonl(path, 4) == 0
    assert path.stat().st_ino == inode  # nothing to do: the file is not rewritten

    path.write_text("\n".join(lines) + '\n{"step": 5, "lo')  # a torn last line
    assert rewind_jsonl(path, 2) == 3  # steps 3 and 4, and the torn line
    assert path.read_text() == "\n".join([lines[0], lines[1], lines[4]]) + "\n"

    path.write_text(lines[0])  # complete, but its newline is missing: the next append would run into it
    assert rewind_jsonl(path, 2) == 0
    assert path.read_text() == lines[0] + "\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


# ---------------------------------------------------------------------------------------------------------------------
# kill -9 of the trainer


def _spawn(data: Path, out: Path, log: Path, resume: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torchspine.cli.main", "train", *CRASH, "--data", str(data), "--output-dir", str(out)]
    with log.open("wb") as f:  # a file, not a pipe: nobody reads while the process runs
        return subprocess.Popen(
            [*cmd, *(["--resume", "auto"] if resume else [])],  # a kill may come before the first checkpoint
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(SRC), "PYTHONUNBUFFERED": "1"},
        )


def _own_temporaries(directory: Path, pid: int) -> set[str]:
    """Temporary checkpoint files of process `pid` (others are leftovers of earlier kills)."""
    names = os.listdir(directory) if directory.is_dir() else []
    return {n for n in names if n.startswith(".ckpt-") and (m := TMP_PATTERN.match(n)) and int(m.group(1)) == pid}


def _completed_step(directory: Path) -> int:
    """The newest step checkpoint under its final name, i.e. whose write completed (-1 if none)."""
    names = os.listdir(directory) if directory.is_dir() else []
    return max((int(m.group(1)) for n in names if (m := CKPT_PATTERN.match(n))), default=-1)


def _run_and_kill(proc: subprocess.Popen, ckpt_dir: Path, plan: tuple[str, float]) -> tuple[bool, int, set[str]]:
    """Poll the process's checkpoint folder and SIGKILL it when `plan` says.

    Plans: ``("write", k)`` kills as soon as the k-th temporary checkpoint file of this process appears;
    ``("after", t)`` kills `t` seconds after the first one appeared (anywhere in training, evaluation, logging,
    saving); ``("start", t)`` kills `t` seconds after the start (imports, building, loading, rewinding).

    Returns:
        Whether it was killed (False: it finished first), the newest completed checkpoint step seen before the kill,
        and the temporary files of the process seen at the moment of the kill.
    """
    kind, value = plan
    start, first_write = time.monotonic(), None
    seen: set[str] = set()
    completed = -1
    while proc.poll() is None:
        if time.monotonic() - start > RUN_TIMEOUT:
            proc.kill()
            pytest.fail(f"a training run took more than {RUN_TIMEOUT} s")
        completed = max(completed, _completed_step(ckpt_dir))  # listed before the kill: surely complete
        current = _own_temporaries(ckpt_dir, proc.pid)
        seen |= current
        now = time.monotonic()
        if seen and first_write is None:
            first_write = now
        fire = (
            (kind == "write" and len(seen) >= value)
            or (kind == "after" and first_write is not None and now - first_write >= value)
            or (kind == "start" and now - start >= value)
        )
        if fire:
            proc.send_signal(signal.SIGKILL)  # no handler, no cleanup, no flush
            proc.wait()
            return True, completed, current
        time.sleep(0.0005)
    return False, completed, set()


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_matches_an_uninterrupted_run(data, tmp_path):
    reference = tmp_path / "reference"
    assert main(["train", *CRASH, "--data", str(data), "--output-dir", str(reference)]) == 0

    rng = random.Random(20240605)
    plans = [("write", rng.randint(1, 3)) for _ in range(4)]
    plans += [("after", rng.uniform(0.0, 1.5)) for _ in range(2)] + [("start", rng.uniform(0.5, 4.0))]
    rng.shuffle(plans)
    out, ckpt_dir = tmp_path / "crashed", tmp_path / "crashed" / "checkpoints"
    manager = CheckpointManager(ckpt_dir, keep_last=2)
    kills, mid_write, resumed_from, torn_line = [], 0, [], False
    logs: list[Path] = []
    for attempt, plan in enumerate([*plans, ("never", 0.0)]):
        logs.append(tmp_path / f"run{attempt}.log")
        proc = _spawn(data, out, logs[-1], resume=attempt > 0)
        killed, completed, in_flight = _run_and_kill(proc, ckpt_dir, plan)
        log = logs[-1].read_text()
        if match := re.search(r"resumed from step (\d+)", log):  # absent if killed before, or nothing to resume
            resumed_from.append(int(match.group(1)))
            assert resumed_from[-1] == kills[-1][-1], "the resume did not start from the newest valid checkpoint"
        if not killed:
            assert proc.returncode == 0, f"run {attempt} failed:\n{log[-3000:]}"
            break
        # Atomic writes: every file under a final name is complete (the loader would skip a torn one, silently
        # losing steps), and the newest is at least the newest one seen complete before the kill.
        newest = max((load_checkpoint(path)["step"] for _, path in manager.checkpoints()), default=-1)
        assert newest >= completed, f"step {completed} was complete before the kill, the newest valid is {newest}"
        landed = bool(in_flight & _own_temporaries(ckpt_dir, proc.pid))  # killed before the rename
        mid_write += landed
        kills.append((plan, landed, completed, newest))
        if len(kills) == 2 and (out / "metrics.jsonl").exists():
            # SIGKILL cannot cut a single write() of a line short, but a full disk or a power loss can.
            with (out / "metrics.jsonl").open("a") as f:
                f.write('{"step": 1, "loss": 0.12')
            torn_line = True
    print(f"\nkills (plan, landed mid-write, newest complete before, resumed from): {kills}")
    assert len(kills) >= 5 and mid_write >= 2 and torn_line, (kills, mid_write)
    for path in logs:
        assert "skipping checkpoint" not in path.read_text(), path  # no torn file under a final name, ever

    # The interrupted run ends exactly where the uninterrupted one does: same files, same bits, same metrics.
    names = sorted(p.name for p in ckpt_dir.iterdir())
    assert names == sorted(p.name for p in (reference / "checkpoints").iterdir())  # leftovers were cleaned up
    for name in (f"ckpt-{MAX_STEPS:08d}.pt", "best.pt"):
        _assert_identical(load_checkpoint(ckpt_dir / name), load_checkpoint(reference / "checkpoints" / name), name)
    assert _records(out / "metrics.jsonl") == _records(reference / "metrics.jsonl")
