"""The searcher interface shared by PPO, regularized evolution and random search.

A searcher proposes decision sequences of a `SearchSpace` and learns from rewards fed back in any order, possibly
long after the proposal (asynchronous workers, as in the NASNet workqueue, arXiv 1707.07012 App. A). Every piece
of state lives in `state_dict()` as tensors, lists, numbers and strings, so a controller checkpoint loads with
``torch.load(weights_only=True)`` and a restarted controller continues exactly where it stopped.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torchspine.search.space import SearchSpace, SearchSpaceError

__all__ = ["Proposal", "Searcher", "SeedQueue", "check_reward", "check_state", "rng_from_state", "rng_state"]


@dataclass(frozen=True)
class Proposal:
    """One proposed architecture and what the searcher needs to learn from its reward later.

    Attributes:
        decisions: the decision sequence (vocabulary indices of the space).
        log_probs: per-decision log-probability at sampling time (``()`` for non-policy searchers and seeds).
        policy_version: the policy version that sampled it (0 for non-policy searchers).
        searcher: ``"ppo"``, ``"evolution"``, ``"random"`` or ``"seed"`` (a user-given architecture).
    """

    decisions: tuple[int, ...]
    log_probs: tuple[float, ...]
    policy_version: int
    searcher: str


@runtime_checkable
class Searcher(Protocol):
    """What the search controller drives."""

    name: str

    def propose(self) -> Proposal: ...

    def feedback(self, proposal: Proposal, reward: float) -> bool:
        """Learn from `reward` of `proposal`; True when the policy or population changed."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    @property
    def policy_version(self) -> int: ...


def check_reward(reward: float) -> float:
    """Rewards must be finite numbers: a diverged trial is fed back as 0.0, never NaN."""
    if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
        raise ValueError(f"reward={reward!r}: expected a finite number (feed a diverged trial back as 0.0)")
    return float(reward)


class SeedQueue:
    """User-given architectures (e.g. SpineNet-49's encoding) that a searcher proposes before anything else."""

    def __init__(self, space: SearchSpace, seeds: Sequence[Sequence[int]]) -> None:
        self.seeds = []
        for k, seed in enumerate(seeds):
            try:
                space.check(seed)
            except SearchSpaceError as err:
                raise SearchSpaceError(f"seeds[{k}]: {err}") from None
            self.seeds.append(tuple(int(v) for v in seed))
        self.next = 0

    def pop(self, policy_version: int = 0) -> Proposal | None:
        if self.next >= len(self.seeds):
            return None
        self.next += 1
        return Proposal(self.seeds[self.next - 1], (), policy_version, "seed")

    def state_dict(self) -> dict[str, Any]:
        return {"seeds": [list(s) for s in self.seeds], "next": self.next}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seeds = [tuple(s) for s in state["seeds"]]
        self.next = int(state["next"])


def rng_state(rng: random.Random) -> list[Any]:
    """`random.Random` state as nested lists (weights_only-loadable)."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def rng_from_state(state: Sequence[Any]) -> random.Random:
    rng = random.Random()
    rng.setstate((state[0], tuple(state[1]), state[2]))
    return rng


def check_state(state: dict[str, Any], name: str, space: SearchSpace) -> None:
    """A state_dict must come from the same kind of searcher over the same space."""
    if not isinstance(state, dict) or state.get("searcher") != name:
        found = state.get("searcher") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"state_dict is for searcher {found!r}, not {name!r}")
    if state.get("space") != space.fingerprint():
        raise ValueError(
            f"state_dict was saved for search space {state.get('space')}, this searcher's is {space.fingerprint()}"
        )
