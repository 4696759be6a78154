"""Regularized (aging) evolution over the decision sequences of a `SearchSpace`.

Real, Aggarwal, Huang, Le, "Regularized Evolution for Image Classifier Architecture Search" (AAAI 2019, arXiv
1802.01548), Algorithm 1: keep the ``population_size`` most recent architectures; each child is a one-gene mutation
of the best of ``sample_size`` members drawn at random; the *oldest* member dies when a new one arrives (aging, not
the worst). The paper's large runs use P = 100, S = 25 (our defaults; NNI ``nas/strategy/evolution.py`` uses the
same, pyglove ``regularized_evolution`` uses a tournament of 10).

Asynchronous as in the paper's distributed setting: the first ``population_size`` proposals are random (seeds
first); later proposals mutate whatever population has been reported so far, and results may arrive in any order.

Mutation (one gene, always a valid and *different* child). A gene is one decision of the sequence, with the parent
pair of a block counted as one gene:

* a permutation slot (intermediate base level or output level): swap it with another slot holding a *different*
  level. pyglove's ``mutators.Uniform`` cannot change a full permutation (it redraws a distinct value from an empty
  set), hence a swap, as its ``mutators.Swap``;
* a delta or block fn: redraw a *different* legal value (NNI's per-dimension redraw may return the same value);
* a parent pair: replace one of the two parents by another feature of the block's window, keeping ``in0 < in1``.

Only the delta masks depend on other genes (a base level's legal deltas are those that stay in levels 1..7). After a
base swap, a delta that became illegal is repaired to the nearest legal delta; with the paper's space that never
happens (2 - 1 >= 1 and 5 + 2 <= 7). A child is compared with its parent on `arch_key` (the decoded specs), so it is
a different *network*, not only a different encoding.
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
from torchspine.search.space import SearchSpace, arch_key
from torchspine.specs import MAX_LEVEL, MIN_LEVEL

__all__ = ["RegularizedEvolution", "mutate"]

_MAX_TRIES = 1000


def _genes(space: SearchSpace) -> dict[str, list[int]]:
    """Slot indices of each gene type (a parent pair is named by its ``in0`` slot)."""
    genes: dict[str, list[int]] = {"level": [], "out_level": [], "delta": [], "fn": [], "pair": []}
    for t, slot in enumerate(space.decisions):
        key = "pair" if slot.kind == "in0" else slot.kind
        if key in genes:
            genes[key].append(t)
    return genes


def _legal_deltas(space: SearchSpace, base: int) -> list[int]:
    return [k for k, d in enumerate(space.level_deltas) if MIN_LEVEL <= base + d <= MAX_LEVEL]


def mutate(space: SearchSpace, decisions: Sequence[int], rng: random.Random) -> list[int]:
    """A child of `decisions` that differs in one gene (see the module docstring) and decodes to other specs.

    Raises `SearchSpaceError` for illegal `decisions`, ``ValueError`` if the space has a single architecture.
    """
    parent_key = arch_key(space.decode(decisions))
    genes = _genes(space)
    levels = genes["level"]
    n_int = space.num_intermediate
    delta_slots = genes["delta"]
    candidates: list[tuple[str, int]] = []
    for t in levels:
        if any(decisions[u] != decisions[t] for u in levels):
            candidates.append(("level", t))
    if len(genes["out_level"]) >= 2:
        candidates += [("out_level", t) for t in genes["out_level"]]
    for i, t in enumerate(delta_slots):
        if len(_legal_deltas(space, space.base_levels[decisions[i]])) >= 2:
            candidates.append(("delta", t))
    if len(space.block_fns) >= 2:
        candidates += [("fn", t) for t in genes["fn"]]
    for block, t in enumerate(genes["pair"]):
        if len(space.window(block)) >= 3:
            candidates.append(("pair", t))
    if not candidates:
        raise ValueError("mutate: this search space holds a single architecture; nothing can be mutated")

    for _ in range(_MAX_TRIES):
        kind, t = rng.choice(candidates)
        child = list(decisions)
        if kind == "level":
            u = rng.choice([u for u in levels if decisions[u] != decisions[t]])
            child[t], child[u] = child[u], child[t]
            for i in (levels.index(t), levels.index(u)):
                legal = _legal_deltas(space, space.base_levels[child[i]])
                if child[delta_slots[i]] not in legal:  # repair (never in the paper's space)
                    old = space.level_deltas[child[delta_slots[i]]]
                    child[delta_slots[i]] = min(legal, key=lambda k: (abs(space.level_deltas[k] - old), k))
        elif kind == "out_level":
            u = rng.choice([u for u in genes["out_level"] if u != t])
            child[t], child[u] = child[u], child[t]
        elif kind == "delta":
            i = delta_slots.index(t)
            child[t] = rng.choice([k for k in _legal_deltas(space, space.base_levels[child[i]]) if k != child[t]])
        elif kind == "fn":
            child[t] = rng.choice([k for k in range(len(space.block_fns)) if k != child[t]])
        else:
            block = genes["pair"].index(t)
            pair = [child[t], child[t + 1]]
            keep = pair[1 - rng.randrange(2)]
            new = rng.choice([f for f in space.window(block) if f not in pair])
            child[t], child[t + 1] = min(keep, new), max(keep, new)
        if arch_key(space.decode(child)) != parent_key:
            return child
    raise RuntimeError(f"mutate: no different child after {_MAX_TRIES} tries (n_int={n_int}); please report")


class RegularizedEvolution:
    """Aging evolution (Real et al. 2019, Algorithm 1), asynchronous.

    Args:
        space: the search space.
        seed: seed of the searcher's own `random.Random`.
        seeds: decision sequences proposed first; they count toward the initial population.
        population_size: P, the number of most recent reported architectures kept alive.
        sample_size: S, the tournament size.
    """

    name = "evolution"

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int,
        seeds: Sequence[Sequence[int]] = (),
        population_size: int = 100,
        sample_size: int = 25,
    ) -> None:
        if population_size < 1 or not 1 <= sample_size <= population_size:
            raise ValueError(
                f"population_size={population_size}, sample_size={sample_size}: need 1 <= sample_size <= "
                "population_size"
            )
        self.space = space
        self.population_size = population_size
        self.sample_size = sample_size
        self._rng = random.Random(seed)
        self._seeds = SeedQueue(space, seeds)
        self._initial = 0  # proposals made to fill the initial population
        self._population: list[tuple[tuple[int, ...], float]] = []  # oldest first

    @property
    def policy_version(self) -> int:
        return 0

    @property
    def population(self) -> list[tuple[tuple[int, ...], float]]:
        """The living members, oldest first, as ``(decisions, reward)``."""
        return list(self._population)

    def propose(self) -> Proposal:
        seeded = self._seeds.pop()
        if seeded is not None:
            self._initial += 1
            return seeded
        if (self._initial < self.population_size and len(self._population) < self.population_size) or not (
            self._population
        ):
            self._initial += 1
            return Proposal(tuple(self.space.random(self._rng)), (), 0, self.name)
        sample = self._rng.sample(self._population, min(self.sample_size, len(self._population)))
        parent = max(sample, key=lambda member: member[1])
        return Proposal(tuple(mutate(self.space, parent[0], self._rng)), (), 0, self.name)

    def feedback(self, proposal: Proposal, reward: float) -> bool:
        reward = check_reward(reward)
        self.space.check(proposal.decisions)
        self._population.append((tuple(proposal.decisions), reward))
        if len(self._population) > self.population_size:
            self._population.pop(0)  # aging: the oldest dies, whatever its reward
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "searcher": self.name,
            "space": self.space.fingerprint(),
            "population_size": self.population_size,
            "sample_size": self.sample_size,
            "rng": rng_state(self._rng),
            "seeds": self._seeds.state_dict(),
            "initial": self._initial,
            "population": [[list(d), r] for d, r in self._population],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state(state, self.name, self.space)
        self.population_size = int(state["population_size"])
        self.sample_size = int(state["sample_size"])
        self._rng = rng_from_state(state["rng"])
        self._seeds.load_state_dict(state["seeds"])
        self._initial = int(state["initial"])
        self._population = [(tuple(d), float(r)) for d, r in state["population"]]
