"""The checkpoint hook saves only at moments every process agrees on, and never in the middle of a step."""

from __future__ import annotations

import pytest
import torch

from test_trainer import _trainer
from torchspine.engine.checkpoint import CheckpointManager, build_checkpoint, capture_rng_state
from torchspine.engine.distributed import DistInfo
from torchspine.engine.hooks import CheckpointHook
from torchspine.engine.run import _restore_rng
from torchspine.engine.signals import GracefulExit
from torchspine.engine.trainer import NonFiniteLossError, Trainer


def _hook(tmp_path, every: int, collected: list) -> tuple[CheckpointHook, CheckpointManager]:
    manager = CheckpointManager(tmp_path / "ckpt", keep_last=10, best_metric=None)

    def state(t: Trainer) -> dict:
        return build_checkpoint(model=t.model, optimizer=t.optimizer, step=t.step, **t.progress_state())

    def collect() -> dict:
        collected.append("rank states")
        return {"extra": 1}

    return CheckpointHook(manager, every, state, GracefulExit(), collect=collect), manager


def test_a_step_that_dies_half_way_leaves_the_last_periodic_checkpoint(tmp_path):
    collected: list = []
    trainer = _trainer(10)
    hook, manager = _hook(tmp_path, every=2, collected=collected)
    trainer.hooks = [hook]
    batches = trainer.data_loader.__class__.__iter__

    def failing_iter(loader):  # the 8th batch fails to load (a dead peer, an I/O error): step 8 dies half-way
        for batch in batches(loader):
            if trainer.step == 7:
                raise OSError("disk gone")
            yield batch

    trainer.data_loader.__class__ = type("_Failing", (trainer.data_loader.__class__,), {"__iter__": failing_iter})
    with pytest.raises(OSError, match="disk gone"):
        trainer.train()
    assert [step for step, _ in manager.checkpoints()] == [2, 4, 6]  # nothing written at step 7 + a batch
    assert manager.load()["extra"] == 1 and len(collected) == 3  # periodic saves carry the collected entries


def test_the_final_save_is_agreed_and_an_abort_is_still_saved(tmp_path):
    collected: list = []
    trainer = _trainer(5)
    hook, manager = _hook(tmp_path, every=2, collected=collected)
    trainer.hooks = [hook]
    trainer.train()
    assert [step for step, _ in manager.checkpoints()] == [2, 4, 5] and len(collected) == 3

    trainer = _trainer(5, max_nonfinite=2)
    hook, manager = _hook(tmp_path / "abort", every=100, collected=[])
    trainer.hooks = [hook]
    trainer.model.make_nan = True
    with pytest.raises(NonFiniteLossError):
        trainer.train()
    saved = manager.load()  # written between steps, on every process alike: kept for inspection
    assert saved["loop"]["nonfinite_in_a_row"] == 2 and "extra" not in saved
    assert torch.is_tensor(next(iter(saved["model"].values())))


def test_each_process_resumes_its_own_random_stream():
    torch.manual_seed(1)
    rank0 = capture_rng_state()
    torch.manual_seed(2)
    rank1 = capture_rng_state()
    expected = torch.rand(3)
    checkpoint = {"rng": rank0, "rng_per_rank": [rank0, rank1]}
    _restore_rng(checkpoint, DistInfo(rank=1, local_rank=1, world_size=2))
    assert torch.equal(torch.rand(3), expected)
    _restore_rng({"rng": rank1}, DistInfo())  # single-process checkpoints have only "rng"
    assert torch.equal(torch.rand(3), expected)
