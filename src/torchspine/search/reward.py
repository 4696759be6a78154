"""Resource-aware reward: trade proxy AP against compute, as MnasNet does with latency.

MnasNet (Tan et al., arXiv 1807.11626, §3 eq. 2) maximises ``ACC(m) * (LAT(m) / T)^w`` with ``w = alpha`` when
the model is within the target ``T`` and ``w = beta`` beyond it; its soft constraint uses
``alpha = beta = -0.07`` (a model twice as costly must be about 5 % more accurate to tie). We use multiply-adds
(MACs) of the proxy network instead of measured latency, because MACs are deterministic and hardware-independent,
so a study gives the same rewards on any worker. google/vertex-ai-nas ``cloud_nas_utils.py::compute_reward``
offers the same soft form for FLOPs/latency.

Neither the SpineNet paper nor its public code uses a resource term (the paper's reward is plain AP); this is an
option for users who search for a compute budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ResourceAwareReward", "resource_aware_reward"]


def resource_aware_reward(ap: float, macs: float, target_macs: float, w: float, w_over: float | None = None) -> float:
    """``ap * (macs / target_macs) ** w`` (MnasNet soft constraint).

    Args:
        ap: the quality metric, e.g. box AP in [0, 1] (0 for a diverged trial gives 0).
        macs: multiply-adds of the trial's network (positive).
        target_macs: the compute budget (positive).
        w: exponent, usually negative (MnasNet: -0.07); 0 gives the plain AP.
        w_over: exponent used instead of `w` when ``macs > target_macs`` (MnasNet's beta; e.g. -1 for a nearly hard
            constraint). None: `w` on both sides.

    Returns:
        The reward; ``ap`` itself when ``macs == target_macs``.
    """
    for name, value in (("ap", ap), ("macs", macs), ("target_macs", target_macs), ("w", w)):
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"resource_aware_reward: {name}={value!r} must be a finite number")
    if macs <= 0 or target_macs <= 0:
        raise ValueError(f"resource_aware_reward: macs={macs!r} and target_macs={target_macs!r} must be positive")
    exponent = w if w_over is None or macs <= target_macs else w_over
    return float(ap) * (macs / target_macs) ** exponent


@dataclass(frozen=True)
class ResourceAwareReward:
    """What the search controller feeds its searcher instead of the plain AP: `resource_aware_reward` of a trial.

    Recorded in the study (``torchspine search start --target-macs``), so a restarted controller cannot silently
    change the objective.

    Attributes:
        target_macs: the compute budget in multiply-adds of the proxy network (positive).
        w: exponent (MnasNet: -0.07).
        w_over: exponent beyond the budget (None: `w`).
    """

    target_macs: float
    w: float = -0.07
    w_over: float | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.target_macs) or self.target_macs <= 0:
            raise ValueError(f"target_macs={self.target_macs!r} must be a positive number")
        for name in ("w", "w_over"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name}={value!r} must be a finite number")

    def __call__(self, ap: float, macs: float) -> float:
        return resource_aware_reward(ap, macs, self.target_macs, self.w, self.w_over)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResourceAwareReward | None:
        """The reward recorded as `to_dict` (None for an empty mapping: plain AP)."""
        return cls(**data) if data else None
