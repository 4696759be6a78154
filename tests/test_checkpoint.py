"""Checkpoints: weights_only round trips, rotation, best tracking, corruption, kill -9 during writes; GracefulExit."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from torchspine.engine.checkpoint import (
    FORMAT_VERSION,
    TMP_PATTERN,
    CheckpointError,
    CheckpointManager,
    build_checkpoint,
    capture_rng_state,
    load_checkpoint,
    restore_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from torchspine.engine.signals import GracefulExit

WRITER = Path(__file__).parent / "engine_helpers" / "ckpt_writer.py"


class Pickled:
    """A custom class: plain ``torch.save`` pickles it, ``weights_only=True`` must refuse it."""

    def __init__(self) -> None:
        self.value = 42


def _training_objects(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    return model, optimizer, scheduler


def _train_step(model, optimizer, scheduler) -> torch.Tensor:
    x = torch.randn(2, 3, 8, 8)  # global RNG on purpose: resumption must reproduce the draws
    loss = model(x).square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.detach()


def _state(step: int, metrics: dict[str, float] | None = None) -> dict:
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = build_checkpoint(model=model, optimizer=optimizer, step=step, metrics=metrics)
    state["model"]["weight"].fill_(step)
    return state


def _steps(manager: CheckpointManager) -> list[int]:
    return [step for step, _ in manager.checkpoints()]


# ---------------------------------------------------------------------------------------------------------------------
# RNG and round trip


def test_rng_state_restores_identical_draws(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leaves a cached Gaussian in numpy's legacy state (has_gauss=1)
    random.gauss(0, 1)  # and in Python's (gauss_next)
    state = capture_rng_state()
    save_checkpoint({"rng": state}, tmp_path / "rng.pt")
    expected = (
        torch.rand(5),
        np.random.normal(size=5),
        np.random.randint(0, 1000, 5),
        random.random(),
        random.gauss(0, 1),
    )
    torch.rand(100), np.random.rand(100), random.random()  # move everything on

    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)["rng"]
    restore_rng_state(loaded)
    got = (torch.rand(5), np.random.normal(size=5), np.random.randint(0, 1000, 5), random.random(), random.gauss(0, 1))
    assert torch.equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], expected[2])
    assert got[3:] == expected[3:]


def test_round_trip_resumes_training_exactly(tmp_path):
    model, optimizer, scheduler = _training_objects()
    for _ in range(3):
        _train_step(model, optimizer, scheduler)
    assert all("momentum_buffer" in s for s in optimizer.state.values())
    manager = CheckpointManager(tmp_path)
    state = build_checkpoint(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        step=3,
        epoch=1,
        data_position=6,
        config={"model": {"name": "spinenet49"}, "lr": 0.1, "sizes": [1, 2]},
        metrics={"loss": np.float32(0.5)},  # numpy scalars become floats
    )
    path = manager.save(state, step=3, metrics={"bbox/AP": 0.25})
    reference = [_train_step(model, optimizer, scheduler) for _ in range(2)]

    raw = torch.load(path, weights_only=True)  # the format promise, independent of our loader
    assert raw["format_version"] == FORMAT_VERSION
    assert (raw["step"], raw["epoch"], raw["data_position"]) == (3, 1, 6)
    assert raw["metrics"] == {"loss": 0.5, "bbox/AP": 0.25}
    assert raw["config"]["model"] == {"name": "spinenet49"}
    assert raw["versions"]["torch"] == str(torch.__version__)
    assert raw["scaler"] is None and raw["rng"]["cuda"] == []

    model2, optimizer2, scheduler2 = _training_objects(seed=123)
    restore_checkpoint(manager.load(), model=model2, optimizer=optimizer2, scheduler=scheduler2)
    resumed = [_train_step(model2, optimizer2, scheduler2) for _ in range(2)]
    for a, b in zip(reference, resumed, strict=True):
        assert torch.equal(a, b)
    for (name, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert scheduler2.last_epoch == scheduler.last_epoch


def test_save_rejects_what_weights_only_cannot_load(tmp_path):
    manager = CheckpointManager(tmp_path)
    state = _state(1)
    state["config"] = {"nested": {"value": np.float64(1.0)}}
    with pytest.raises(TypeError, match=r"\['config'\]\['nested'\]\['value'\].*numpy"):
        manager.save(state, step=1)
    with pytest.raises(CheckpointError, match="missing required keys"):
        manager.save({"format_version": FORMAT_VERSION}, step=1)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------------
# Rotation and best


def test_keep_last_prunes_old_step_checkpoints(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2, best_metric=None)
    for step in (10, 20, 30, 40):
        path = manager.save(_state(step), step)
        assert path == tmp_path / f"ckpt-{step:08d}.pt"
    assert _steps(manager) == [30, 40]
    assert not manager.best_path.exists()
    assert manager.latest() == tmp_path / "ckpt-00000040.pt"
    assert manager.load()["step"] == 40


@pytest.mark.parametrize(
    ("mode", "values", "best_step"),
    [("max", [0.1, 0.3, 0.2, 0.25], 2), ("min", [0.5, 0.4, 0.45, 0.1], 4)],
)
def test_best_follows_metric_and_survives_pruning(tmp_path, mode, values, best_step):
    manager = CheckpointManager(tmp_path, keep_last=1, best_metric="bbox/AP", mode=mode)
    for step, value in enumerate(values, start=1):
        manager.save(_state(step), step, metrics={"bbox/AP": value, "other": 1.0})
    best = load_checkpoint(manager.best_path)
    assert best["step"] == best_step
    assert torch.all(best["model"]["weight"] == best_step)
    assert _steps(manager) == [len(values)]  # best.pt is not counted, and keeps its data after the step file goes

    # A new manager (a restarted run) reads the best value back from best.pt instead of starting over.
    restarted = CheckpointManager(tmp_path, keep_last=1, best_metric="bbox/AP", mode=mode)
    worse = min(values) - 1 if mode == "max" else max(values) + 1
    restarted.save(_state(10), 10, metrics={"bbox/AP": worse})
    assert load_checkpoint(restarted.best_path)["step"] == best_step
    restarted.save(_state(11), 11, metrics={"bbox/AP": float("nan")})
    assert load_checkpoint(restarted.best_path)["step"] == best_step
    restarted.save(_state(11), 12, metrics={"loss": 1.0})  # metric absent: best untouched
    assert load_checkpoint(restarted.best_path)["step"] == best_step


def test_resuming_catches_up_on_a_best_link_a_crash_missed(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, keep_last=2, best_metric="bbox/AP")
    manager.save(_state(1), 1, metrics={"bbox/AP": 0.1})
    # A kill after the step file's rename and before best.pt's: the step file is complete, best.pt is behind.
    with monkeypatch.context() as patch:
        patch.setattr(CheckpointManager, "_maybe_update_best", lambda *args: None)
        manager.save(_state(2), 2, metrics={"bbox/AP": 0.2})
    assert load_checkpoint(manager.best_path)["step"] == 1

    restarted = CheckpointManager(tmp_path, keep_last=2, best_metric="bbox/AP")
    assert restarted.load()["step"] == 2  # what a resume does
    assert load_checkpoint(restarted.best_path)["step"] == 2  # as if the run had never stopped
    inode = restarted.best_path.stat().st_ino
    assert CheckpointManager(tmp_path, keep_last=2, best_metric="bbox/AP").load()["step"] == 2
    assert restarted.best_path.stat().st_ino == inode  # best.pt current: nothing rewritten


def test_latest_ignores_and_save_removes_leftover_temporaries(tmp_path):
    manager = CheckpointManager(tmp_path, best_metric=None)
    manager.save(_state(1), 1)
    dead = tmp_path / ".ckpt-00000002.pt.999999.0123abcd.tmp"  # what a writer killed mid-save leaves
    dead.write_bytes(b"PK\x03\x04 half a zip")
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("keep me")
    assert manager.latest() == tmp_path / "ckpt-00000001.pt"
    manager.save(_state(2), 2)
    assert not dead.exists()
    assert unrelated.exists()
    assert not [p for p in tmp_path.iterdir() if TMP_PATTERN.match(p.name)]


def test_empty_directory(tmp_path):
    manager = CheckpointManager(tmp_path / "new" / "dir")
    assert manager.latest() is None
    with pytest.raises(FileNotFoundError):
        manager.load()
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)


# ---------------------------------------------------------------------------------------------------------------------
# Corruption


def _corrupt_truncated(path: Path, good: Path) -> None:
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt_empty(path: Path, good: Path) -> None:
    path.write_bytes(b"")


def _corrupt_random(path: Path, good: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(4096))


def _corrupt_pickled_class(path: Path, good: Path) -> None:
    state = load_checkpoint(good)
    state["config"] = {"obj": Pickled()}
    torch.save(state, path)  # plain torch.save, as foreign code would


def _corrupt_no_format(path: Path, good: Path) -> None:
    torch.save({"model": {}}, path)


def _corrupt_future_format(path: Path, good: Path) -> None:
    torch.save({**load_checkpoint(good), "format_version": FORMAT_VERSION + 1}, path)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_corrupt_truncated, "truncated or corrupt"),
        (_corrupt_empty, "empty file"),
        (_corrupt_random, "truncated or corrupt"),
        (_corrupt_pickled_class, "weights_only=True"),
        (_corrupt_no_format, "no 'format_version'"),
        (_corrupt_future_format, "newer torchspine"),
    ],
)
def test_corrupt_checkpoint_is_rejected_and_latest_falls_back(tmp_path, corrupt, message):
    manager = CheckpointManager(tmp_path, keep_last=5)
    good = manager.save(_state(5), 5)
    bad = manager.path_for(6)
    corrupt(bad, good)

    with pytest.raises(CheckpointError, match=message) as info:
        manager.load(bad)
    assert str(bad) in str(info.value)
    assert manager.latest() == good
    assert manager.load()["step"] == 5
    # The next save replaces the bad file and rotation goes on.
    manager.save(_state(6), 6)
    assert manager.latest() == bad
    assert manager.load()["step"] == 6


# ---------------------------------------------------------------------------------------------------------------------
# kill -9 while writing


def _check_consistent(path: Path) -> dict:
    state = load_checkpoint(path)
    step = state["step"]
    payload = state["model"]["payload"]
    assert payload.numel() == 512 * 1024
    assert torch.all(payload == step), f"{path}: payload does not match step {step}"
    assert int(state["model"]["step"]) == step
    assert (state["epoch"], state["data_position"]) == (step // 10, (step % 10) * 4)
    return state


def test_kill_9_during_writes_leaves_a_valid_latest(tmp_path):
    rng = random.Random(20240531)
    manager = CheckpointManager(tmp_path, keep_last=2, best_metric="loss", mode="min")
    previous = -1
    leftovers = 0
    for _ in range(10):
        proc = subprocess.Popen([sys.executable, str(WRITER), str(tmp_path)], stdout=subprocess.PIPE, text=True)
        try:
            ready = proc.stdout.readline().split()
            assert ready[:1] == ["ready"], ready
            assert int(ready[1]) == previous + 1  # the writer resumed from what latest() also sees
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.kill()  # SIGKILL: no handler, no cleanup, no flush
            proc.wait()
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL

        leftovers += sum(bool(TMP_PATTERN.match(p.name)) for p in tmp_path.iterdir())
        latest = manager.latest()
        if latest is None:  # killed before its first save completed
            assert previous == -1
            continue
        step = _check_consistent(latest)["step"]
        assert step >= previous, f"went back from step {previous} to {step}"
        previous = step
        assert len(manager.checkpoints()) <= manager.keep_last + 1  # a kill may land between write and prune
        if manager.best_path.exists():
            _check_consistent(manager.best_path)

    assert previous > 0, "the writer never completed a checkpoint"
    # Whatever the kills left behind, the next save (another pid) cleans it up.
    manager.save(_check_consistent(manager.latest()), previous + 1)
    assert not [p for p in tmp_path.iterdir() if TMP_PATTERN.match(p.name)]
    print(f"10 kills, final step {previous}, {leftovers} leftover temporary files seen")


# ---------------------------------------------------------------------------------------------------------------------
# GracefulExit


def _wait_for(predicate, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.001)
    return predicate()


def test_graceful_exit_sigterm_sets_flag_and_restores_handlers():
    before_term, before_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with GracefulExit() as stop:
        assert stop.installed and not stop.should_stop
        os.kill(os.getpid(), signal.SIGTERM)
        assert _wait_for(lambda: stop.should_stop)
        assert stop.received == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)  # repeated SIGTERM: still no exception
        time.sleep(0.01)
    assert not stop.installed
    assert signal.getsignal(signal.SIGTERM) is before_term
    assert signal.getsignal(signal.SIGINT) is before_int


def test_graceful_exit_second_sigint_raises_keyboard_interrupt():
    before = signal.getsignal(signal.SIGINT)
    stop = GracefulExit()
    with pytest.raises(KeyboardInterrupt), stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert _wait_for(lambda: stop.should_stop)
        assert stop.received == signal.SIGINT
        os.kill(os.getpid(), signal.SIGINT)
        _wait_for(lambda: False, timeout=2.0)  # the handler raises in here
        pytest.fail("second SIGINT did not raise")
    assert signal.getsignal(signal.SIGINT) is before


def test_graceful_exit_is_inert_outside_the_main_thread():
    import threading

    result = {}

    def run() -> None:
        with GracefulExit() as stop:
            result["installed"] = stop.installed

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert result == {"installed": False}
