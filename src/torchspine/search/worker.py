"""A search worker: claims queued trials from the study, trains their proxy, reports the reward.

Workers hold no search state, so any number can join or leave at any time, on any machine that reaches the store
(``torchspine search worker --storage URL --study NAME``). A claim is one atomic store operation,
``storage.set_trial_state_values(trial_id, RUNNING)``: it returns False when another worker won the race (the
journal decides by log order, PostgreSQL by ``SELECT ... FOR UPDATE``), and the worker tries the next trial. We do
not call ``study.ask()``, which creates a new trial whenever nothing is waiting.

While a trial runs, a thread writes a ``heartbeat`` user attribute every ``heartbeat_interval`` seconds; a worker
killed by SIGKILL, OOM or a lost node stops beating, and the controller declares its trial stale and retries it.
A retry runs in the first attempt's directory ``<run_dir>/trials/<root number>/``, so a runner that checkpoints
there resumes instead of starting over.

Results: COMPLETE with the reward as the trial value (what optuna-dashboard plots) and ``macs``, ``params``,
``metrics``, ``train_seconds`` attributes; FAIL with ``failure="diverged"`` (a lesson for the searcher: reward 0)
or ``failure="infra"`` with a traceback excerpt (retried, never fed back).

Stopping: SIGTERM or Ctrl-C while idle makes the worker leave at once. During a trial, the proxy's trainer stops at
the next step with a checkpoint and raises ``TrialInterrupted``: the trial is recorded as an infrastructure failure
(so it is retried, resuming from that checkpoint) and the worker leaves. A second Ctrl-C forces the exit.

Multi-GPU trials: run one worker per GPU (``--device cuda:N``), or make a worker a ``torchrun`` job that trains
each trial with DDP over its GPUs (`torchspine.search.torchrun`: only rank 0 talks to the store).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from torchspine.errors import UsageError
from torchspine.search.study import FINISHED_KEY, MAX_STORE_ERRORS, SearchMeta, transient_store_errors
from torchspine.specs import blocks_from_rows

logger = logging.getLogger(__name__)

DEFAULT_RUNNER = "torchspine.search.proxy:run_proxy_trial"
TRACEBACK_CHARS = 2000


def load_runner(spec: str) -> Callable[[Any], Any]:
    """Import a trial runner given as ``module:function``.

    Raises:
        ValueError: not of the form ``module:function``, or nothing callable there.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--runner {spec!r}: expected module:function, e.g. {DEFAULT_RUNNER}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UsageError(f"--runner {spec!r}: cannot import {module_name!r} ({err})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UsageError(f"--runner {spec!r}: {module_name} has no callable {attr!r}")
    return fn


@dataclass(frozen=True)
class WorkerSettings:
    """Operational settings of a worker.

    Attributes:
        device: where the runner trains (``cpu``, ``cuda``, ``cuda:1``).
        max_trials: run at most this many trials, then exit (None: until the study is finished).
        heartbeat_interval: seconds between heartbeats; keep it well below the controller's ``stale_after``.
        poll_interval: seconds to wait when no trial is waiting.
        exit_when_idle: exit as soon as nothing is waiting (tests, and the in-line SQLite mode).
    """

    device: str = "cpu"
    max_trials: int | None = None
    heartbeat_interval: float = 30.0
    poll_interval: float = 2.0
    exit_when_idle: bool = False


class Heartbeat:
    """A daemon thread writing ``heartbeat = time.time()`` into a running trial's user attributes."""

    def __init__(self, storage: BaseStorage, trial_id: int, interval: float) -> None:
        self.storage = storage
        self.trial_id = trial_id
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{trial_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.set_trial_user_attr(self.trial_id, "heartbeat", time.time())
            except UpdateFinishedTrialError:
                # The controller declared the trial stale (heartbeats slower than its grace period). The runner cannot
                # be stopped from here, so its retry may start in the same trial directory while this one still
                # trains; this result will be dropped.
                logger.warning(
                    "trial id %d was declared stale while it runs; its result will be dropped (raise the "
                    "controller's --stale-after or lower --heartbeat)",
                    self.trial_id,
                )
                return
            except Exception as err:  # a store hiccup must not kill the trial; the next beat retries
                logger.warning("heartbeat for trial id %d failed: %s", self.trial_id, err)


class Worker:
    """Claims and runs trials of one study.

    Args:
        storage: the trial store.
        study_name: the study.
        meta: the study's metadata (experiment and overrides handed to the runner).
        runner: ``TrialTask -> TrialOutcome``; infrastructure failures are raised.
        run_dir: trial directories go to ``run_dir/trials/<number>/``.
        settings: operational settings.
        make_task: builds the runner's task (``torchspine.search.proxy.TrialTask`` by default).
    """

    def __init__(
        self,
        storage: BaseStorage,
        study_name: str,
        meta: SearchMeta,
        runner: Callable[[Any], Any],
        run_dir: str | Path,
        settings: WorkerSettings,
        make_task: Callable[..., Any] | None = None,
    ) -> None:
        self.storage = storage
        self.study_id = storage.get_study_id_from_name(study_name)
        self.meta = meta
        self.runner = runner
        self.run_dir = Path(run_dir)
        self.settings = settings
        if make_task is None:
            from torchspine.search.proxy import TrialTask

            make_task = TrialTask
        self.make_task = make_task
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.ran = 0
        self.interrupted = False

    def finished(self) -> bool:
        """Whether the controller marked the study finished."""
        return bool(self.storage.get_study_user_attrs(self.study_id).get(FINISHED_KEY))

    def claim(self) -> FrozenTrial | None:
        """Atomically take the oldest WAITING trial, or None when none is left."""
        waiting = self.storage.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.WAITING,))
        for trial in sorted(waiting, key=lambda t: t.number):
            try:
                won = self.storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING)
            except UpdateFinishedTrialError:
                continue
            if won:
                return self.storage.get_trial(trial._trial_id)
        return None

    def step(self) -> bool:
        """Claim and run one trial; returns False when nothing was waiting."""
        trial = self.claim()
        if trial is None:
            return False
        self.run_trial(trial)
        self.ran += 1
        return True

    def run(self, should_stop: Callable[[], bool], on_idle: Callable[[], None] | None = None) -> int:
        """Run trials until the study is finished, ``max_trials`` were run or `should_stop()`; returns the count.

        Args:
            should_stop: polled between trials and while waiting (e.g. a `GracefulExit` flag).
            on_idle: called after each wait for work (a ``torchrun`` worker keeps its other ranks alive with it).
        """
        logger.info("worker %s joined (device %s, runs in %s)", self.name, self.settings.device, self.run_dir)
        transient, errors = transient_store_errors(), 0
        while not should_stop() and not self.interrupted:
            if self.settings.max_trials is not None and self.ran >= self.settings.max_trials:
                break
            try:
                if self.step():
                    errors = 0
                    continue
                if self.settings.exit_when_idle or self.finished():
                    break
                errors = 0
            except transient as err:
                errors += 1
                if errors >= MAX_STORE_ERRORS:
                    raise
                logger.warning("trial store error (%d in a row), retrying: %s", errors, err)
            deadline = time.monotonic() + self.settings.poll_interval
            while not should_stop() and (left := deadline - time.monotonic()) > 0:
                time.sleep(min(left, 0.2))
            if on_idle is not None:
                on_idle()
        logger.info("worker %s leaves after %d trials", self.name, self.ran)
        return self.ran

    def run_trial(self, trial: FrozenTrial) -> None:
        """Run a claimed trial and write its result (never raises for a runner failure)."""
        tid = trial._trial_id
        attrs = trial.user_attrs
        root = int(attrs.get("root", trial.number))
        output_dir = self.run_dir / "trials" / str(root)
        set_attr = self.storage.set_trial_user_attr
        now = time.time()
        set_attr(tid, "worker", self.name)
        set_attr(tid, "started", now)
        set_attr(tid, "heartbeat", now)
        logger.info("trial %d (attempt %d): %s", trial.number, int(attrs.get("attempt", 0)) + 1, attrs.get("arch"))
        try:
            with Heartbeat(self.storage, tid, self.settings.heartbeat_interval):
                output_dir.mkdir(parents=True, exist_ok=True)
                task = self.make_task(
                    number=trial.number,
                    blocks=blocks_from_rows(attrs["blocks"]),
                    experiment=self.meta.experiment,
                    overrides=tuple(self.meta.overrides),
                    output_dir=output_dir,
                    device=self.settings.device,
                )
                outcome = self.runner(task)
                # Inside the try: an outcome the worker cannot record (a runner bug) fails the trial with its reason
                # instead of leaving it RUNNING until the controller declares it stale.
                state, value, result = outcome_result(outcome)
        except BaseException as err:
            excerpt = traceback.format_exc()[-TRACEBACK_CHARS:]
            reason = f"{type(err).__name__}: {err}"[:300]
            logger.error("trial %d failed (infrastructure): %s", trial.number, reason)
            self._finish(trial, TrialState.FAIL, None, {"failure": "infra", "reason": reason, "traceback": excerpt})
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                raise
            from torchspine.search.proxy import TrialInterrupted

            if isinstance(err, TrialInterrupted):
                # The proxy's trainer caught SIGTERM/SIGINT (its handler replaces ours while it trains), saved a
                # checkpoint and stopped: the signal was meant for this worker, so leave after recording the trial.
                self.interrupted = True
            return
        self._finish(trial, state, value, result)
        if state == TrialState.COMPLETE:
            logger.info("trial %d complete: reward %.4f", trial.number, value)
        else:
            logger.info("trial %d diverged: %s", trial.number, result["reason"])

    def _finish(self, trial: FrozenTrial, state: TrialState, value: float | None, attrs: dict[str, Any]) -> None:
        tid = trial._trial_id
        try:
            for key, val in attrs.items():
                self.storage.set_trial_user_attr(tid, key, val)
            self.storage.set_trial_user_attr(tid, "ended", time.time())
            self.storage.set_trial_state_values(tid, state, None if value is None else [value])
        except UpdateFinishedTrialError:
            logger.warning(
                "trial %d was declared stale while it ran (heartbeats too slow for the controller's grace "
                "period?); its retry will redo it",
                trial.number,
            )


def outcome_result(outcome: Any) -> tuple[TrialState, float | None, dict[str, Any]]:
    """The state, value and user attributes that record a runner's `TrialOutcome`.

    A "complete" outcome with a non-finite reward is recorded as diverged (reward 0 for the searcher).

    Raises:
        ValueError: a status other than ``"complete"`` or ``"diverged"``.
    """
    reward = float(outcome.reward)
    status = outcome.status
    reason = outcome.reason
    if status not in ("complete", "diverged"):
        raise ValueError(f"trial runner returned status {status!r}; expected 'complete' or 'diverged'")
    if status == "complete" and not math.isfinite(reward):
        status, reason = "diverged", f"non-finite reward {reward}"
    result: dict[str, Any] = {
        "macs": float(outcome.macs),
        "params": int(outcome.params),
        "metrics": {k: float(v) for k, v in dict(outcome.metrics).items() if math.isfinite(float(v))},
        "train_seconds": round(float(outcome.train_seconds), 3),
    }
    if status == "complete":
        return TrialState.COMPLETE, reward, result
    result.update(failure="diverged", reason=reason or "diverged", reward=0.0)
    return TrialState.FAIL, None, result
