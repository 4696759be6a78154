"""Random search: every decision uniform over its legal values (the baseline every NAS paper reports).

Note that a uniform masked sample is uniform per decision, not uniform over architectures; it is the distribution
of an untrained controller with equal logits, which makes it the natural baseline for the PPO controller.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from torchspine.search.searchers.base import (
    Proposal,
    SeedQueue,
    check_reward,
    check_state,
    rng_from_state,
    rng_state,
)
from torchspine.search.space import SearchSpace

__all__ = ["RandomSearch"]


class RandomSearch:
    """Uniform masked random sampling; seeds are proposed first.

    Args:
        space: the search space.
        seed: seed of the sampler's own `random.Random`.
        seeds: decision sequences to propose before sampling.
    """

    name = "random"

    def __init__(self, space: SearchSpace, *, seed: int, seeds: Sequence[Sequence[int]] = ()) -> None:
        self.space = space
        self._rng = random.Random(seed)
        self._seeds = SeedQueue(space, seeds)

    @property
    def policy_version(self) -> int:
        return 0

    def propose(self) -> Proposal:
        seeded = self._seeds.pop()
        if seeded is not None:
            return seeded
        return Proposal(tuple(self.space.random(self._rng)), (), 0, self.name)

    def feedback(self, proposal: Proposal, reward: float) -> bool:
        check_reward(reward)
        self.space.check(proposal.decisions)
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "searcher": self.name,
            "space": self.space.fingerprint(),
            "rng": rng_state(self._rng),
            "seeds": self._seeds.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state(state, self.name, self.space)
        self._rng = rng_from_state(state["rng"])
        self._seeds.load_state_dict(state["seeds"])
