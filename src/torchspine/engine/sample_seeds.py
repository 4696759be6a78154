"""Per-sample augmentation seeds: a sample's random augmentation depends on (seed, epoch, index) and nothing else.

Why: with ``DataLoader`` workers, each worker draws augmentations from its own copy of the global torch RNG, and
batches are dealt to workers round-robin. Which worker augments a sample, and how many draws that worker made
before it, then depend on where the iterator started: a run resumed mid-epoch deals its first batch to worker 0,
where the uninterrupted run had dealt it to worker ``position % num_workers``, so the resumed run trains on other
crops and flips. Seeding the RNG per sample from ``(seed, epoch, index)`` removes every dependence on worker count,
worker assignment and iteration order, which makes resumed runs exact with ``num_workers > 0`` (and with another
world size: the seed of a sample does not depend on the rank that loads it).

`SeededSampler` yields ``(index, sample_seed)`` pairs instead of indices, and `SeededSamples` wraps the data set to
accept them: it loads the sample with torch's global RNG seeded by ``sample_seed`` and restores the RNG afterwards,
so the caller's random stream (the model's dropout / drop-path draws in the main process) is untouched. The
transforms must draw from torch's global RNG, as the torchspine and torchvision v2 transforms do; Python's
``random`` and NumPy's global RNG are not reseeded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from torchspine.engine.trainer import ResumableSampler

__all__ = ["SeededSampler", "SeededSamples", "sample_seed"]

_UINT64 = 2**64


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed for the augmentation of sample `index` in `epoch` of a run seeded `seed`.

    NumPy's ``SeedSequence`` hashes the three numbers, so neighbouring indices or epochs get unrelated streams
    (``seed + index`` would give epoch 1's sample 0 the stream of epoch 0's sample 1 under some offsets).
    """
    entropy = [seed % _UINT64, epoch % _UINT64, index % _UINT64]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


class SeededSampler(ResumableSampler):
    """`ResumableSampler` that yields ``(index, sample_seed(seed, epoch, index))``; use with `SeededSamples`.

    The permutation, sharding and mid-epoch start are those of `ResumableSampler`; only the items differ.
    """

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        for index in super().__iter__():
            yield index, sample_seed(self.seed, self.epoch, index)


class SeededSamples(Dataset):
    """`dataset` indexed by ``(index, seed)`` pairs: ``dataset[index]`` computed with torch's RNG seeded by `seed`.

    Args:
        dataset: the map-style data set whose random transforms draw from torch's global RNG.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        # fork_rng restores the CPU RNG on exit; devices=[] leaves CUDA alone (workers never initialise it).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
