"""Searchers behind one interface: PPO controller, regularized evolution, random search.

``create_searcher(name, space, seed=..., seeds=[...], **options)`` builds one; every searcher proposes the given
seed architectures (e.g. SpineNet-49's encoding) before its own. The options are the named keyword arguments of
the searcher's class (`PPOController`, `RegularizedEvolution`, `RandomSearch`).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torchspine.errors import UsageError
from torchspine.search.searchers.base import Proposal, Searcher
from torchspine.search.searchers.evolution import RegularizedEvolution, mutate
from torchspine.search.searchers.ppo import PPOController
from torchspine.search.searchers.random_search import RandomSearch
from torchspine.search.space import SearchSpace

__all__ = [
    "SEARCHERS",
    "PPOController",
    "Proposal",
    "RandomSearch",
    "RegularizedEvolution",
    "Searcher",
    "create_searcher",
    "mutate",
]

SEARCHERS: dict[str, Callable[..., Searcher]] = {
    "ppo": PPOController,
    "evolution": RegularizedEvolution,
    "random": RandomSearch,
}


def create_searcher(
    name: str, space: SearchSpace, *, seed: int, seeds: Sequence[Sequence[int]] = (), **options: Any
) -> Searcher:
    """Build the searcher `name` (``"ppo"``, ``"evolution"`` or ``"random"``) over `space`.

    Args:
        name: searcher name.
        space: the search space.
        seed: seed of the searcher's own random generator (no global RNG is used).
        seeds: legal decision sequences to propose first.
        **options: keyword arguments of the searcher class; unknown names are an error listing the accepted ones.
    """
    if name not in SEARCHERS:
        raise UsageError(f"unknown searcher {name!r}; expected one of {sorted(SEARCHERS)}")
    cls = SEARCHERS[name]
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("space", "seed", "seeds")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        hints = {k: difflib.get_close_matches(k, accepted, n=1) for k in unknown}
        detail = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise TypeError(f"searcher {name!r}: unknown option(s) {detail}; accepted: {accepted}")
    return cls(space, seed=seed, seeds=seeds, **options)
