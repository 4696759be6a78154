"""Architecture search for SpineNet (arXiv 1912.05027 §3, §5.1): the search space, searchers and rewards.

Nothing in the library imports this package. `space`, `reward` and `synthetic` are torch-free; the searchers
(`create_searcher`, `Proposal`, ...) import torch (the PPO controller) and are loaded on first access, so
``import torchspine.search.space`` stays light.
"""

from __future__ import annotations

from typing import Any

from torchspine.search.reward import ResourceAwareReward, resource_aware_reward
from torchspine.search.space import (
    DecisionSlot,
    SearchSpace,
    SearchSpaceError,
    SpaceSize,
    arch_key,
    arch_string,
    spec_rows,
)
from torchspine.search.synthetic import SyntheticReward, agreement

_SEARCHER_NAMES = ("Proposal", "Searcher", "create_searcher", "SEARCHERS")

__all__ = [
    "DecisionSlot",
    "SearchSpace",
    "ResourceAwareReward",
    "SearchSpaceError",
    "SpaceSize",
    "SyntheticReward",
    "agreement",
    "arch_key",
    "arch_string",
    "resource_aware_reward",
    "spec_rows",
    *_SEARCHER_NAMES,
]


def __getattr__(name: str) -> Any:
    # Lazy: the searchers import torch; the space must stay importable without it.
    if name in _SEARCHER_NAMES:
        from torchspine.search import searchers

        return getattr(searchers, name)
    raise AttributeError(f"module 'torchspine.search' has no attribute {name!r}")
