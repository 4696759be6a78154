"""Cheap stand-ins for the search tests: a synthetic trial runner (usable as ``--runner search_helpers:synthetic``)
and a scripted searcher, so the store/controller/worker protocol is tested without training networks.

The runner's behaviour comes from its constructor or, for ``--runner``, from the environment:

* ``TS_TEST_FAIL_INFRA=N``: the first attempt of every trial whose root number is a multiple of N raises (an
  infrastructure failure); the retry, which runs in the same directory, finds the marker and succeeds.
* ``TS_TEST_DIVERGE=N``: trials whose root number is a multiple of N diverge.
* ``TS_TEST_GATE=1`` (runner `gated`): write ``running.<pid>`` in the trial directory and wait for a ``release``
  file in the run directory before running (so a test can kill a worker mid-trial without sleeping).

Every run appends ``<trial number> <pid>`` to ``<run_dir>/runs.log``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchspine.search.proxy import TrialOutcome
from torchspine.search.searchers import Proposal
from torchspine.search.space import SearchSpace
from torchspine.specs import SPINENET_BLOCKS

GATE_TIMEOUT_S = 300.0

# The tensorflow/tpu SpineNet-49 (15 blocks; Model Garden adds a 16th, level-2 output).
SPINENET49 = SPINENET_BLOCKS[:15]


def enumerate_sequences(space: SearchSpace) -> list[list[int]]:
    """Every legal decision sequence, by depth-first search over the masks."""
    total = len(space.decisions)
    out: list[list[int]] = []

    def walk(prefix: list[int]) -> None:
        if len(prefix) == total:
            out.append(list(prefix))
            return
        for value in space.legal(prefix):
            walk([*prefix, value])

    walk([])
    return out


SMALL = SearchSpace(
    intermediate_base_alloc=((2, 1), (3, 1)), level_deltas=(-1, 0), output_levels=(3, 4), parent_window=2
)


def wait_at_gate(task: Any) -> None:
    """Write ``running.<pid>`` in the trial directory, then wait for ``release`` in the run directory."""
    out = Path(task.output_dir)
    (out / f"running.{os.getpid()}").write_text(str(task.number))
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while not (out.parent.parent / "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("test gate never released")
        time.sleep(0.05)


def synthetic_reward(blocks: Any) -> float:
    """A deterministic reward in [0, 1) from the spec rows: half the bottleneck share, half a hash."""
    rows = [[b.level, b.block_fn, list(b.input_offsets), b.is_output] for b in blocks]
    digest = int(hashlib.sha1(json.dumps(rows).encode()).hexdigest()[:8], 16) / 2**32
    share = sum(b.block_fn == "bottleneck" for b in blocks) / len(blocks)
    return 0.5 * share + 0.49 * digest


@dataclass
class SyntheticRunner:
    fail_infra_every: int = 0
    diverge_every: int = 0
    calls: list[int] = field(default_factory=list)

    @classmethod
    def from_env(cls) -> SyntheticRunner:
        return cls(
            fail_infra_every=int(os.environ.get("TS_TEST_FAIL_INFRA", "0")),
            diverge_every=int(os.environ.get("TS_TEST_DIVERGE", "0")),
        )

    def __call__(self, task: Any) -> TrialOutcome:
        out = Path(task.output_dir)
        run_dir = out.parent.parent
        root = int(out.name)
        self.calls.append(task.number)
        with open(run_dir / "runs.log", "a") as f:
            f.write(f"{task.number} {os.getpid()}\n")
        if self.fail_infra_every and root % self.fail_infra_every == 0:
            marker = out / "attempted"
            if not marker.exists():
                marker.write_text("1")
                raise RuntimeError(f"synthetic infrastructure failure of trial {task.number}")
        if self.diverge_every and root % self.diverge_every == 0:
            return TrialOutcome("diverged", 0.0, "loss is nan at step 3 (synthetic)", {}, 1.0, 1, 0.0)
        reward = synthetic_reward(task.blocks)
        return TrialOutcome("complete", reward, "", {"AP": reward}, float(len(task.blocks)), len(task.blocks), 0.01)


def synthetic(task: Any) -> TrialOutcome:
    """``--runner search_helpers:synthetic``: `SyntheticRunner` configured from the environment."""
    return SyntheticRunner.from_env()(task)


class ScriptedSearcher:
    """Proposes a fixed list of decision lists in turn; "updates" after every `batch` results."""

    name = "scripted"

    def __init__(self, script: list[list[int]], batch: int = 2) -> None:
        self.script = script
        self.batch = batch
        self.index = 0
        self.fed: list[tuple[tuple[int, ...], float]] = []
        self.version = 0

    @property
    def policy_version(self) -> int:
        return self.version

    def propose(self) -> Proposal:
        decisions = self.script[self.index % len(self.script)]
        self.index += 1
        return Proposal(tuple(decisions), (-1.0,) * len(decisions), self.version, self.name)

    def feedback(self, proposal: Proposal, reward: float) -> bool:
        self.fed.append((tuple(proposal.decisions), float(reward)))
        if len(self.fed) % self.batch == 0:
            self.version += 1
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"index": self.index, "version": self.version, "fed": [[list(d), r] for d, r in self.fed]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.index = int(state["index"])
        self.version = int(state["version"])
        self.fed = [(tuple(d), float(r)) for d, r in state["fed"]]


def gated(task: Any) -> Any:
    """``--runner search_helpers:gated``: `wait_at_gate` (when ``TS_TEST_GATE=1``), then the runner
    named by ``TS_TEST_INNER`` (``module:function``; default `synthetic`), e.g. the real proxy trial."""
    from torchspine.search.worker import load_runner

    if os.environ.get("TS_TEST_GATE") == "1":
        wait_at_gate(task)
    return load_runner(os.environ.get("TS_TEST_INNER", "search_helpers:synthetic"))(task)
