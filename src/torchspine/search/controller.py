"""The search controller: one process that proposes architectures, queues them in the study and learns from results.

The protocol (workers only claim and report; all searcher state lives here):

1. Keep ``WAITING + RUNNING <= queue_depth`` (workers + the searcher's update batch) by proposing and enqueuing
   trials whose user attributes carry the decisions, spec rows, arch key, sampling log-probs and policy version.
   A proposal whose decoded architecture already has a COMPLETE trial is not retrained: it is recorded at once as
   its own COMPLETE trial with ``duplicate_of`` and the same reward (the sample still counts for the searcher, as
   NASNet/NAS-FPN count repeated samples). A duplicate of an architecture still in flight is trained again: the
   store has no way to hold a trial back until another one finishes.
2. Feed each COMPLETE trial and each diverged trial (FAIL with ``failure="diverged"``, reward 0) to the searcher
   exactly once (a COMPLETE trial's AP through the optional resource-aware reward, with its ``macs`` attribute).
   Infrastructure failures (``failure`` ``"infra"``/``"stale"``) are never fed back: they are re-enqueued with
   ``retry_of`` (at most ``max_retries`` times), then abandoned.
3. RUNNING trials whose heartbeat is older than ``stale_after`` seconds are marked FAIL with ``failure="stale"``
   (and so retried).
4. After every change, checkpoint atomically: searcher state, consumed trial numbers, proposal count, RNG.

Restart safety: every proposal is in the store (as an enqueued or duplicate trial, numbered by its ``proposal``
attribute) before the checkpoint that counts it is written. On restart, proposals the store holds beyond the
checkpoint's count are replayed through ``searcher.propose()`` so the searcher's RNG ends where it was; results not
in the checkpoint's consumed set are fed (again, as the searcher state is that of the checkpoint). So a kill -9 at
any moment loses nothing and feeds nothing twice.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from torchspine.engine.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from torchspine.search.study import (
    FINISHED_KEY,
    MAX_STORE_ERRORS,
    MAX_TRIALS_KEY,
    SearchStoreError,
    failure_of,
    reward_of,
    transient_store_errors,
)

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "controller.pt"
LOCK_NAME = "controller.lock"
CHECKPOINT_FORMAT = 1
RETRYABLE = ("infra", "stale")


class ProposalLike(Protocol):
    decisions: tuple[int, ...]
    log_probs: tuple[float, ...]
    policy_version: int
    searcher: str


class SearcherLike(Protocol):
    """The `torchspine.search.searchers.Searcher` interface the controller relies on."""

    name: str

    def propose(self) -> Any: ...
    def feedback(self, proposal: Any, reward: float) -> bool: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class SpaceLike(Protocol):
    def decode(self, decisions: Sequence[int]) -> tuple[Any, ...]: ...
    def fingerprint(self) -> str: ...


@dataclass(frozen=True)
class ArchCodec:
    """How the controller turns decisions into stored attributes (the space's decode and key functions).

    Attributes:
        decode: decisions -> block specs (raises on an invalid list).
        key: block specs -> dedup key (``torchspine.search.space.arch_key``).
        text: block specs -> short string for dashboards (``arch_string``).
        rows: block specs -> JSON spec rows (``spec_rows``).
    """

    decode: Callable[[Sequence[int]], tuple[Any, ...]]
    key: Callable[[Sequence[Any]], str]
    text: Callable[[Sequence[Any]], str]
    rows: Callable[[Sequence[Any]], list[Any]]


@dataclass(frozen=True)
class ControllerSettings:
    """Operational settings of a controller.

    Attributes:
        max_trials: stop once this many trials are finished (COMPLETE, duplicates included, or diverged).
        queue_depth: target number of WAITING + RUNNING trials (workers + the searcher's update batch).
        max_retries: retries of one architecture after infrastructure failures before it is abandoned.
        stale_after: seconds without a heartbeat after which a RUNNING trial is declared dead.
        poll_interval: seconds between polls of the store.
        max_abandoned_in_a_row: stop with an error when this many architectures in a row are abandoned (every
            trial failing for infrastructure reasons means a broken setup, not a bad architecture).
    """

    max_trials: int
    queue_depth: int
    max_retries: int = 2
    stale_after: float = 600.0
    poll_interval: float = 2.0
    max_abandoned_in_a_row: int = 5

    def __post_init__(self) -> None:
        if self.max_trials < 1:
            raise ValueError(f"max_trials must be >= 1, got {self.max_trials}")
        if self.queue_depth < 1:
            raise ValueError(f"queue_depth must be >= 1, got {self.queue_depth}")
        if self.max_retries < 0 or self.stale_after <= 0 or self.poll_interval <= 0:
            raise ValueError("max_retries must be >= 0 and stale_after, poll_interval > 0")


@dataclass
class Progress:
    """Counts after one controller step (what the progress log line shows)."""

    finished: int = 0
    complete: int = 0
    diverged: int = 0
    running: int = 0
    waiting: int = 0
    failed_infra: int = 0
    abandoned: int = 0
    best: float | None = None
    updates: int = 0
    done: bool = False
    changed: bool = field(default=False, repr=False)


class ControllerLock:
    """An exclusive ``flock`` on ``<output_dir>/controller.lock``, so two controllers never drive one run.

    The kernel drops the lock when the process dies (even by kill -9), so a restart never finds a stale lock.
    """

    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> ControllerLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = self.path.read_text().strip() or "another process"
            os.close(fd)
            raise SearchStoreError(
                f"another controller ({owner}) holds {self.path}; one controller drives a run. Stop it first, or "
                "add workers with `torchspine search worker`."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ControllerLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class Controller:
    """Drives one search study (see the module docstring for the protocol).

    Args:
        study: the search study (created or joined by `torchspine.search.study.create_or_join_study`).
        searcher: the strategy; its ``feedback`` receives only usable results.
        codec: decisions -> stored attributes.
        make_proposal: rebuilds a searcher proposal from stored fields (``Proposal(decisions, log_probs,
            policy_version, searcher)``), to feed results of proposals made before a restart.
        output_dir: the run directory; holds the checkpoint and the lock file.
        settings: operational settings.
        clock: wall clock in seconds (heartbeats are wall-clock times written by workers).
        reward: ``(ap, macs) -> reward`` fed to the searcher for COMPLETE trials
            (`torchspine.search.reward.ResourceAwareReward`); None feeds the AP itself.
    """

    def __init__(
        self,
        study: optuna.Study,
        searcher: SearcherLike,
        codec: ArchCodec,
        make_proposal: Callable[..., Any],
        output_dir: str | Path,
        settings: ControllerSettings,
        clock: Callable[[], float] = time.time,
        reward: Callable[[float, float], float] | None = None,
    ) -> None:
        self.study = study
        self.searcher = searcher
        self.codec = codec
        self.make_proposal = make_proposal
        self.output_dir = Path(output_dir)
        self.settings = settings
        self.clock = clock
        self.reward = reward
        self.consumed: set[int] = set()
        self.proposals = 0
        self.updates = 0
        self._reported_abandoned: set[int] = set()
        self._abandoned_in_a_row = 0
        self._last_line = ""

    @property
    def checkpoint_path(self) -> Path:
        return self.output_dir / CHECKPOINT_NAME

    # ------------------------------------------------------------------------------------------------ checkpoint

    def save(self) -> Path:
        """Write the controller checkpoint atomically (temp file, fsync, rename)."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "study": self.study.study_name,
            "searcher_name": self.searcher.name,
            "searcher": self.searcher.state_dict(),
            "consumed": sorted(self.consumed),
            "proposals": self.proposals,
            "updates": self.updates,
            "rng": capture_rng_state(),
        }
        path = save_checkpoint(state, self.checkpoint_path)
        logger.debug("saved %s (proposals %d, consumed %d)", path, self.proposals, len(self.consumed))
        return path

    def resume(self) -> None:
        """Load the checkpoint if there is one, then reconcile with the store (see the module docstring)."""
        if self.checkpoint_path.exists():
            state = load_checkpoint(self.checkpoint_path, validate=False)
            if state.get("format") != CHECKPOINT_FORMAT or state.get("study") != self.study.study_name:
                raise SearchStoreError(
                    f"{self.checkpoint_path}: a controller checkpoint of study {state.get('study')!r} (format "
                    f"{state.get('format')}), not of {self.study.study_name!r}; use another --output-dir"
                )
            if state["searcher_name"] != self.searcher.name:
                raise SearchStoreError(
                    f"{self.checkpoint_path}: written by searcher {state['searcher_name']!r}, "
                    f"not {self.searcher.name!r}"
                )
            self.searcher.load_state_dict(state["searcher"])
            restore_rng_state(state["rng"])
            self.consumed = {int(n) for n in state["consumed"]}
            self.proposals = int(state["proposals"])
            self.updates = int(state["updates"])
            logger.info(
                "resumed from %s: %d proposals, %d results consumed, %d updates",
                self.checkpoint_path,
                self.proposals,
                len(self.consumed),
                self.updates,
            )
        self._replay_orphans()
        # Architectures abandoned before the restart were reported then; counting them again here would make them
        # look "abandoned in a row" and stop a healthy search at its first step.
        self._reported_abandoned = {
            t.number
            for t in self._unretried_failures(self.study.get_trials(deepcopy=False))
            if int(t.user_attrs.get("attempt", 0)) >= self.settings.max_retries
        }
        self.study.set_user_attr(MAX_TRIALS_KEY, self.settings.max_trials)
        if self.study.user_attrs.get(FINISHED_KEY):
            self.study.set_user_attr(FINISHED_KEY, False)  # restarted with a larger budget; step() sets it again

    def _replay_orphans(self) -> None:
        # Proposals enqueued after the last checkpoint: already in the store, so they must not be proposed again.
        # Drawing them again from the restored searcher puts its RNG where it was before the crash.
        stored: dict[int, FrozenTrial] = {}
        for t in self.study.get_trials(deepcopy=False):
            index = t.user_attrs.get("proposal")
            if index is not None and t.user_attrs.get("retry_of") is None:
                stored.setdefault(int(index), t)
        orphans = sorted(i for i in stored if i >= self.proposals)
        for index in orphans:
            again = self.searcher.propose()
            if list(again.decisions) != list(stored[index].user_attrs["decisions"]):
                logger.warning("replaying proposal %d after a restart drew a different architecture", index)
        if orphans:
            logger.info("replayed %d proposals enqueued after the last checkpoint", len(orphans))
            self.proposals = orphans[-1] + 1

    # ---------------------------------------------------------------------------------------------------- a step

    def step(self) -> Progress:
        """One poll: mark stale trials, retry failures, feed results, top up the queue, checkpoint."""
        progress = Progress(updates=self.updates)
        trials = self.study.get_trials(deepcopy=False)
        if self._mark_stale(trials):
            progress.changed = True
            trials = self.study.get_trials(deepcopy=False)
        if self._retry_failures(trials):
            progress.changed = True
            trials = self.study.get_trials(deepcopy=False)
        progress.changed |= self._feed(trials)
        complete: dict[str, FrozenTrial] = {}
        for t in trials:
            reward = reward_of(t)
            state = t.state
            if state == TrialState.COMPLETE:
                progress.complete += 1
                key = t.user_attrs.get("arch_key")
                if key and t.user_attrs.get("duplicate_of") is None and key not in complete:
                    complete[key] = t
            elif state == TrialState.RUNNING:
                progress.running += 1
            elif state == TrialState.WAITING:
                progress.waiting += 1
            elif failure_of(t) == "diverged":
                progress.diverged += 1
            elif state == TrialState.FAIL:
                progress.failed_infra += 1
            if reward is not None and (progress.best is None or reward > progress.best):
                progress.best = reward
        progress.finished = progress.complete + progress.diverged
        progress.abandoned = len(self._reported_abandoned)
        progress.updates = self.updates
        if progress.finished >= self.settings.max_trials:
            if progress.changed:
                self.save()
            if not self.study.user_attrs.get(FINISHED_KEY):
                self.study.set_user_attr(FINISHED_KEY, True)
            progress.done = True
            return progress
        progress.changed |= self._top_up(progress, complete)
        if progress.changed:
            self.save()
        return progress

    def _mark_stale(self, trials: Sequence[FrozenTrial]) -> bool:
        now = self.clock()
        storage = self.study._storage
        marked = False
        for t in trials:
            if t.state != TrialState.RUNNING:
                continue
            beat = t.user_attrs.get("heartbeat")
            if beat is None and t.datetime_start is not None:
                beat = t.datetime_start.timestamp()  # claimed, but the worker died before its first heartbeat
            if beat is None or now - float(beat) <= self.settings.stale_after:
                continue
            worker = t.user_attrs.get("worker", "unknown worker")
            reason = f"no heartbeat for {now - float(beat):.0f} s from {worker}; presumed dead"
            try:
                storage.set_trial_user_attr(t._trial_id, "failure", "stale")
                storage.set_trial_user_attr(t._trial_id, "reason", reason)
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue  # the worker finished it meanwhile: its result stands
            logger.warning("trial %d: %s", t.number, reason)
            marked = True
        return marked

    @staticmethod
    def _unretried_failures(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """Infrastructure failures that have no retry in the store yet."""
        retried = {t.user_attrs.get("retry_of") for t in trials}
        return [
            t for t in trials if t.state == TrialState.FAIL and failure_of(t) in RETRYABLE and t.number not in retried
        ]

    def _retry_failures(self, trials: Sequence[FrozenTrial]) -> bool:
        changed = False
        for t in self._unretried_failures(trials):
            attempt = int(t.user_attrs.get("attempt", 0))
            if attempt >= self.settings.max_retries:
                if t.number not in self._reported_abandoned:
                    self._reported_abandoned.add(t.number)
                    self._abandoned_in_a_row += 1
                    logger.error(
                        "trial %d abandoned after %d attempts (%s: %s)",
                        t.number,
                        attempt + 1,
                        failure_of(t),
                        t.user_attrs.get("reason", ""),
                    )
                    if self._abandoned_in_a_row >= self.settings.max_abandoned_in_a_row:
                        raise RuntimeError(
                            f"{self._abandoned_in_a_row} architectures in a row failed {attempt + 1} times for "
                            f"infrastructure reasons; the last: {t.user_attrs.get('reason', '')!r}. See the "
                            "'traceback' attribute of the failed trials (torchspine search status)."
                        )
                continue
            attrs = {k: v for k, v in t.user_attrs.items() if k in _PROPOSAL_ATTRS}
            attrs.update(retry_of=t.number, attempt=attempt + 1, root=t.user_attrs.get("root", t.number))
            self.study.enqueue_trial(params={}, user_attrs=attrs)
            logger.info("trial %d failed (%s); retry %d enqueued", t.number, failure_of(t), attempt + 1)
            changed = True
        return changed

    def _feed(self, trials: Sequence[FrozenTrial]) -> bool:
        changed = False
        for t in trials:
            if t.number in self.consumed:
                continue
            reward = reward_of(t)
            if reward is None:
                continue
            attrs = t.user_attrs
            if self.reward is not None and t.state == TrialState.COMPLETE:
                if attrs.get("macs") is None:
                    raise SearchStoreError(
                        f"trial {t.number} has no 'macs' attribute; the resource-aware reward needs the MACs the "
                        "trial runner reports"
                    )
                reward = self.reward(reward, float(attrs["macs"]))
            proposal = self.make_proposal(
                decisions=tuple(int(d) for d in attrs["decisions"]),
                log_probs=tuple(float(p) for p in attrs.get("log_probs", ())),
                policy_version=int(attrs.get("policy_version", 0)),
                searcher=str(attrs.get("searcher", self.searcher.name)),
            )
            updated = self.searcher.feedback(proposal, reward)
            self.consumed.add(t.number)
            self._abandoned_in_a_row = 0
            changed = True
            if updated:
                self.updates += 1
                logger.info(
                    "searcher update %d (policy version %d) after trial %d",
                    self.updates,
                    self.searcher.policy_version,
                    t.number,
                )
        return changed

    def _top_up(self, progress: Progress, complete: dict[str, FrozenTrial]) -> bool:
        changed = False
        finished = progress.finished
        in_flight = progress.waiting + progress.running
        while in_flight < min(self.settings.queue_depth, self.settings.max_trials - finished):
            proposal = self.searcher.propose()
            blocks = self.codec.decode(proposal.decisions)
            key = self.codec.key(blocks)
            attrs = {
                "proposal": self.proposals,
                "searcher": proposal.searcher,
                "policy_version": int(proposal.policy_version),
                "arch": self.codec.text(blocks),
                "arch_key": key,
                "decisions": [int(d) for d in proposal.decisions],
                "blocks": self.codec.rows(blocks),
                "log_probs": [round(float(p), 6) for p in proposal.log_probs],
                "attempt": 0,
            }
            if key in complete:
                first = complete[key]
                reward, original = float(first.value or 0.0), first.number
                # The measured costs come along, so the duplicate gets the same resource-aware reward.
                attrs.update({k: first.user_attrs[k] for k in ("macs", "params") if k in first.user_attrs})
                attrs.update(duplicate_of=original, reason=f"duplicate of trial {original}; reward reused")
                self.study.add_trial(
                    optuna.trial.create_trial(state=TrialState.COMPLETE, value=reward, user_attrs=attrs)
                )
                finished += 1
                progress.complete += 1
                progress.finished += 1
                logger.info("proposal %d duplicates trial %d: reward %.4f reused", self.proposals, original, reward)
            else:
                self.study.enqueue_trial(params={}, user_attrs=attrs)
                in_flight += 1
                progress.waiting += 1
            self.proposals += 1
            changed = True
        return changed

    # ------------------------------------------------------------------------------------------------------- run

    def run(self, should_stop: Callable[[], bool], between_polls: Callable[[], bool] | None = None) -> Progress:
        """Step until the study is finished or `should_stop()` says so.

        Args:
            should_stop: polled between steps (e.g. a `GracefulExit` flag).
            between_polls: called after each step instead of waiting ``poll_interval`` when given (the one-process
                SQLite mode runs a trial in-line here); it returns whether it did any work.

        Returns:
            The progress after the last step.
        """
        started = self.clock()
        transient, errors = transient_store_errors(), 0
        progress = self.step()
        while not progress.done and not should_stop():
            self._log(progress, started)
            if between_polls is None or not between_polls():
                _wait(self.settings.poll_interval, should_stop)
            try:
                progress = self.step()
                errors = 0
            except transient as err:  # the store was briefly unreachable: the next step redoes this one
                errors += 1
                if errors >= MAX_STORE_ERRORS:
                    raise
                logger.warning("trial store error (%d in a row), retrying: %s", errors, err)
        self._log(progress, started)
        if progress.done:
            logger.info(
                "search finished: %d trials, best reward %s, %d searcher updates",
                progress.finished,
                _fmt(progress.best),
                progress.updates,
            )
        return progress

    def _log(self, p: Progress, started: float) -> None:
        line = (
            f"trials {p.finished}/{self.settings.max_trials} finished ({p.complete} complete, {p.diverged} "
            f"diverged), {p.running} running, {p.waiting} waiting, {p.failed_infra} infra failures, "
            f"{p.abandoned} abandoned; best {_fmt(p.best)}; {p.updates} updates"
        )
        if line != self._last_line:
            logger.info("%s (%.0f s)", line, self.clock() - started)
            self._last_line = line


# Attributes that describe a proposal; a retry copies them.
_PROPOSAL_ATTRS = (
    "proposal",
    "searcher",
    "policy_version",
    "arch",
    "arch_key",
    "decisions",
    "blocks",
    "log_probs",
    "root",
)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _wait(seconds: float, should_stop: Callable[[], bool]) -> None:
    # Short slices so a stop request is honoured quickly without spinning.
    deadline = time.monotonic() + seconds
    while not should_stop() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.2))
