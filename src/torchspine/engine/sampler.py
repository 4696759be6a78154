"""The training sampler: one seeded permutation per epoch, laid out in global batches, resumable mid-epoch.

The order of the samples depends only on the seed, the epoch and the global batch, never on how many processes
share the work. An epoch is ``num_samples // global_batch`` global batches of the permutation (the tail that cannot
fill one is dropped, so every optimisation step sees the configured batch and every process the same number of
micro-batches). Each global batch is cut into ``world_size * accum_steps`` micro-batches of ``micro_batch`` samples;
accumulation round ``a`` of process ``r`` takes micro-batch ``a * world_size + r``.

Why this layout rather than ``DistributedSampler``'s (process ``r`` takes every ``world_size``-th sample):

* the same global batches are trained whatever the world size, so a run resumed on another number of processes
  (2 -> 1 after losing a machine) continues with exactly the samples the original would have seen: the position
  to resume from is "global batches done in this epoch", which every layout agrees on;
* ``W`` processes with ``A`` accumulation steps compute the same step as one process with ``W * A`` accumulation
  steps of the same micro-batches: per-micro-batch quantities (BatchNorm batch statistics on CPU, RetinaNet's
  normaliser "positive anchors in the replica's batch + 1", as in the official TF code on TPU) come from the same
  samples. That is how the multi-process tests compare against one process, and how a resume on another world
  size can stay exact (``train.grad_accum_steps`` is a change a resume may make).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """This process's samples of a seeded per-epoch permutation, in global-batch order; can start mid-epoch.

    ``start`` skips the samples this process already consumed in the epoch, which is what makes resumed runs exact.
    With the defaults (``micro_batch=1``, ``accum_steps=1``) process ``r`` takes every ``world_size``-th sample from
    ``r``, as ``DistributedSampler`` does.

    Args:
        num_samples: dataset length.
        seed: base seed of the permutations (epoch ``e`` uses ``seed + e``).
        rank: this process's rank.
        world_size: number of processes.
        shuffle: random permutation (True) or dataset order.
        micro_batch: samples per process per forward pass (the data loader's batch size).
        accum_steps: micro-batches each process accumulates into one optimisation step.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        micro_batch: int = 1,
        accum_steps: int = 1,
    ) -> None:
        if num_samples < world_size:
            raise ValueError(f"{num_samples} samples cannot be shared by {world_size} processes")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        if micro_batch < 1 or accum_steps < 1:
            raise ValueError(f"micro_batch={micro_batch}, accum_steps={accum_steps}: expected >= 1")
        self.num_samples, self.seed, self.rank, self.world_size, self.shuffle = (
            num_samples,
            seed,
            rank,
            world_size,
            shuffle,
        )
        self.micro_batch, self.accum_steps = micro_batch, accum_steps
        self.epoch = 0
        self.start = 0

    @property
    def global_batch(self) -> int:
        """Samples of one optimisation step over all processes and accumulation rounds."""
        return self.micro_batch * self.world_size * self.accum_steps

    @property
    def steps_per_epoch(self) -> int:
        """Whole global batches in an epoch (the partial last one is dropped)."""
        return self.num_samples // self.global_batch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Draw epoch `epoch`'s permutation and skip the first `start` samples of this process's share."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.steps_per_epoch * self.accum_steps * self.micro_batch - self.start

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        m, blocks_per_step = self.micro_batch, self.world_size * self.accum_steps
        mine: list[int] = []
        for step in range(self.steps_per_epoch):
            for round_ in range(self.accum_steps):
                first = (step * blocks_per_step + round_ * self.world_size + self.rank) * m
                mine.extend(order[first : first + m])
        return iter(mine[self.start :])
