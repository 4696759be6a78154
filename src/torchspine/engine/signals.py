"""Graceful shutdown on SIGTERM / SIGINT: finish the current step, save a checkpoint, exit cleanly.

Cluster schedulers (SLURM, Kubernetes, preemptible cloud VMs) send SIGTERM and a SIGKILL some seconds later. Letting
the default handler kill the process mid-step loses everything since the last periodic checkpoint; raising an
exception from the handler could interrupt a checkpoint write or a collective. So the handler only sets a flag,
and the trainer checks `GracefulExit.should_stop` after each step, saves a checkpoint and returns::

    with GracefulExit() as stop:
        for step in ...:
            trainer.run_step()
            if stop.should_stop:      # under DDP, all-reduce the flag first so every rank stops at the same step
                manager.save(...)
                break

A second SIGINT (Ctrl-C pressed again) raises `KeyboardInterrupt` at once, so a user can always force-quit a run
whose save hangs. Repeated SIGTERMs are ignored: the scheduler's SIGKILL is the escalation there.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable
from types import FrameType, TracebackType
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulExit:
    """Context manager turning SIGTERM / SIGINT into a ``should_stop`` flag, restoring the old handlers on exit.

    Handlers can only be installed from the main thread (a CPython rule); elsewhere the context does nothing but
    log a warning, and ``should_stop`` stays False.

    Args:
        signals: signals to catch.

    Attributes:
        should_stop: set by the first caught signal.
        received: number of the first caught signal, or None.
    """

    def __init__(self, signals: Iterable[int] = DEFAULT_SIGNALS) -> None:
        self.signals = tuple(signal.Signals(s) for s in signals)
        self.should_stop = False
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    @property
    def installed(self) -> bool:
        """Whether the handlers are currently installed."""
        return bool(self._previous)

    def install(self) -> GracefulExit:
        """Install the handlers (what ``__enter__`` does).

        Returns:
            self.
        """
        if self.installed:
            raise RuntimeError("GracefulExit handlers are already installed")
        if threading.current_thread() is not threading.main_thread():
            logger.warning("GracefulExit: not in the main thread, signal handlers not installed")
            return self
        for sig in self.signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        """Restore the handlers that were installed before `install`."""
        for sig, previous in self._previous.items():
            # getsignal returns None for handlers set outside Python; the default is the closest we can restore.
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Runs in the main thread between bytecodes; keep it to flag updates (no I/O, no locks).
        if self.should_stop and signum == signal.SIGINT:
            raise KeyboardInterrupt(f"second interrupt after {self.received.name if self.received else 'a signal'}")
        if not self.should_stop:
            self.should_stop = True
            self.received = signal.Signals(signum)

    def __enter__(self) -> GracefulExit:
        return self.install()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()
        if self.received is not None:
            logger.info("received %s; stopped gracefully", self.received.name)
