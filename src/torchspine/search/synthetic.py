"""A synthetic reward for testing and benchmarking searchers without training networks.

The reward of an architecture is its agreement with a hidden target architecture: the fraction of decoded block
attributes (level, block fn, first parent, second parent, for every block) equal to the target's. It is computed
on the *decoded* specs, not on the decisions, because several decision sequences (different base/delta pairs)
decode to the same network and must score the same. The reward changes smoothly with single-gene changes and its
optimum (1.0) is known, so a test can check that a searcher learns without training a single network.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from torchspine.search.space import SearchSpace
from torchspine.specs import BlockSpec

__all__ = ["SyntheticReward", "agreement"]


def agreement(blocks: Sequence[BlockSpec], target: Sequence[BlockSpec]) -> float:
    """Fraction of (level, block_fn, in0, in1) attributes of `blocks` equal to `target`'s, position by position."""
    if len(blocks) != len(target):
        raise ValueError(f"agreement: {len(blocks)} blocks vs {len(target)} in the target")
    hits = 0
    for b, t in zip(blocks, target, strict=True):
        hits += (b.level == t.level) + (b.block_fn == t.block_fn)
        hits += (b.input_offsets[0] == t.input_offsets[0]) + (b.input_offsets[1] == t.input_offsets[1])
    return hits / (4 * len(target))


@dataclass(frozen=True)
class SyntheticReward:
    """Callable ``decisions -> reward in [0, 1]``: agreement of the decoded specs with `target`.

    Attributes:
        space: the search space the decisions belong to.
        target: the hidden architecture (in `space`).
    """

    space: SearchSpace
    target: tuple[BlockSpec, ...]

    @classmethod
    def from_seed(cls, space: SearchSpace, seed: int) -> SyntheticReward:
        """A target drawn uniformly (masked) from `space` with `random.Random(seed)`."""
        return cls(space, space.decode(space.random(random.Random(seed))))

    def __call__(self, decisions: Sequence[int]) -> float:
        return agreement(self.space.decode(decisions), self.target)
