"""The training sampler's layout: the same global batches for every world size, and resume positions that map."""

from __future__ import annotations

import pytest

from torchspine.engine.checkpoint import CheckpointError
from torchspine.engine.run import _resume_position
from torchspine.engine.sampler import ResumableSampler

GLOBAL = 8
# (world size, accumulation steps): each splits the global batch of 8 into world x accum micro-batches.
LAYOUTS = [(1, 1), (2, 1), (4, 1), (1, 2), (2, 2), (8, 1)]


def _micro_batches(num: int, world: int, accum: int, epoch: int = 0, start: int = 0) -> list[list[list[int]]]:
    """Per step, the micro-batches in the order (accumulation round, rank) that one process with ``world *
    accum`` accumulation steps would see them; `start` is in samples of each rank's share."""
    micro = GLOBAL // (world * accum)
    shares = []
    for rank in range(world):
        sampler = ResumableSampler(num, seed=3, rank=rank, world_size=world, micro_batch=micro, accum_steps=accum)
        sampler.set_epoch(epoch, start=start)
        shares.append(list(sampler))
    steps = []
    for first in range(0, len(shares[0]), micro * accum):
        rounds = [shares[r][first + a * micro : first + (a + 1) * micro] for a in range(accum) for r in range(world)]
        steps.append(rounds)
    return steps


@pytest.mark.parametrize(("world", "accum"), LAYOUTS, ids=[f"w{w}xa{a}" for w, a in LAYOUTS])
def test_every_world_size_trains_the_same_micro_batches_in_the_same_steps(world, accum):
    reference = _micro_batches(37, 1, GLOBAL)  # one process, micro-batches of 1
    steps = _micro_batches(37, world, accum)
    assert len(steps) == 37 // GLOBAL == len(reference)  # the partial last global batch is dropped
    for got, want in zip(steps, reference, strict=True):
        # Micro-batch k of the W x A layout holds the samples of micro-batches k*m .. (k+1)*m - 1 of the reference.
        assert [i for batch in got for i in batch] == [i for batch in want for i in batch]
    assert len({i for step in steps for batch in step for i in batch}) == 4 * GLOBAL  # no sample twice


def test_default_layout_is_distributed_samplers():
    # micro_batch=1: process r takes every world_size-th sample from r, tail dropped.
    order = list(ResumableSampler(10, seed=1))
    shards = [list(ResumableSampler(10, seed=1, rank=r, world_size=3)) for r in range(3)]
    assert shards == [order[r:9:3] for r in range(3)]


@pytest.mark.parametrize(("saved", "resumed"), [((2, 1), (1, 1)), ((2, 1), (1, 2)), ((1, 1), (4, 1)), ((4, 1), (2, 2))])
def test_a_resume_on_another_world_size_continues_with_the_next_global_batch(saved, resumed):
    (w0, a0), (w1, a1) = saved, resumed
    micro0, micro1 = GLOBAL // (w0 * a0), GLOBAL // (w1 * a1)
    steps_done = 2  # into epoch 1 of 37 // 8 = 4 steps
    position0 = steps_done * a0  # micro-batches each process consumed in the epoch
    checkpoint = {"data_position": position0 * micro0 * w0, "world_size": w0}  # what run.py stores
    position1 = _resume_position(checkpoint, micro1, w1, directory=None)
    remaining = _micro_batches(37, w1, a1, epoch=1, start=position1 * micro1)
    uninterrupted = _micro_batches(37, w0, a0, epoch=1)[steps_done:]
    flat = [[i for batch in step for i in batch] for step in remaining]
    assert flat == [[i for batch in step for i in batch] for step in uninterrupted]


def test_a_position_that_is_not_a_whole_round_is_a_clear_error():
    # 6 samples into the epoch cannot be resumed by 2 processes x 4 (a skipped step under other accumulation).
    with pytest.raises(CheckpointError, match="not a whole number of rounds of 2 x 4 samples"):
        _resume_position({"data_position": 6, "world_size": 1}, 4, 2, directory=None)
