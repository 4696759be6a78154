"""Training hooks: progress + JSONL metrics, periodic COCO evaluation, crash-safe checkpoints with clean stops."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from tqdm import tqdm

from torchspine.engine.checkpoint import CheckpointManager
from torchspine.engine.metrics import MetricsLog
from torchspine.engine.signals import GracefulExit
from torchspine.engine.trainer import Hook, NonFiniteLossError, Trainer

logger = logging.getLogger(__name__)


class ProgressHook(Hook):
    """A progress bar (loss, LR, images/s, ETA) and one metrics record (JSONL + TensorBoard) every `log_every` steps.

    Args:
        log: where the records go (appended to, so a resumed run continues it).
        images_per_step: global images per optimisation step (for the throughput).
        log_every: steps between JSON lines.
        enabled: False on non-main processes.
    """

    def __init__(self, log: MetricsLog, images_per_step: int, log_every: int = 20, enabled: bool = True) -> None:
        self.log, self.images_per_step, self.log_every, self.enabled = log, images_per_step, log_every, enabled
        self._bar: tqdm | None = None
        self._last: tuple[float, int] = (0.0, 0)

    def before_train(self, trainer: Trainer) -> None:
        if self.enabled:
            # disable=None: a bar on terminals only; logs and CI get the JSONL lines instead of carriage returns.
            self._bar = tqdm(
                total=trainer.max_steps,
                initial=trainer.step,
                desc="train",
                unit="step",
                dynamic_ncols=True,
                disable=None,
            )
        self._last = (time.perf_counter(), trainer.step)

    def after_step(self, trainer: Trainer, losses: Mapping[str, float] | None) -> None:
        if not self.enabled or losses is None:
            return
        total = sum(v for k, v in losses.items() if k != "grad_norm")
        if not self._bar.disable:
            self._bar.update(trainer.step - self._bar.n)
            self._bar.set_postfix(loss=f"{total:.4f}", lr=f"{trainer.lr:.2e}")
        if trainer.step % self.log_every == 0:
            now, step = time.perf_counter(), trainer.step
            rate = (step - self._last[1]) * self.images_per_step / max(now - self._last[0], 1e-9)
            self._last = (now, step)
            self.log.write(
                step, {"epoch": trainer.epoch, "lr": trainer.lr, "loss": total, "images_per_s": rate, **losses}
            )
            if self._bar.disable:  # no terminal: one log line instead of the bar
                eta = (trainer.max_steps - step) * self.images_per_step / max(rate, 1e-9)
                logger.info(
                    "step %d/%d loss %.4f lr %.2e %.1f img/s eta %.0fs",
                    step,
                    trainer.max_steps,
                    total,
                    trainer.lr,
                    rate,
                    eta,
                )

    def after_train(self, trainer: Trainer) -> None:
        if self._bar is not None:
            self._bar.close()


class EvalHook(Hook):
    """Evaluate every `every_steps` and at the end; the metrics go to the metrics log and to ``trainer.metrics``.

    `evaluate` runs on every process (distributed evaluation shares the images out); only the main process
    (``enabled``) records the result.
    """

    def __init__(
        self,
        evaluate: Callable[[], dict[str, dict[str, float]]],
        every_steps: int,
        log: MetricsLog,
        enabled: bool = True,
    ) -> None:
        self.evaluate, self.every_steps, self.log, self.enabled = evaluate, every_steps, log, enabled
        self.last_step = -1

    def _run(self, trainer: Trainer) -> None:
        if self.last_step == trainer.step:
            return
        # Evaluation must not perturb training randomness (its DataLoader draws worker seeds from the global RNG),
        # or a run that evaluated at a step would diverge from one resumed there.
        with torch.random.fork_rng(devices=[]):
            metrics = self.evaluate()
        flat = {f"{kind}/{name}": value for kind, values in metrics.items() for name, value in values.items()}
        trainer.metrics = flat
        self.last_step = trainer.step
        if not self.enabled:
            return
        self.log.write(trainer.step, {"epoch": trainer.epoch, **flat})
        headline = {k: round(v, 4) for k, v in flat.items() if k.endswith(("AP", "top1"))}
        logger.info("step %d: %s", trainer.step, headline)

    def after_step(self, trainer: Trainer, losses: Mapping[str, float] | None) -> None:
        # The last step evaluates here, not only in after_train: the checkpoint hook (after this one) then saves
        # the final checkpoint with the final metrics, and best.pt can pick it.
        due = self.every_steps > 0 and trainer.step % self.every_steps == 0
        if losses is not None and (due or trainer.step >= trainer.max_steps):
            self._run(trainer)

    def after_train(self, trainer: Trainer) -> None:
        if trainer.step >= trainer.max_steps:
            self._run(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.last_step = int(state.get("last_step", -1))


class CheckpointHook(Hook):
    """Atomic checkpoints every `every_steps`, at the end, and when SIGTERM/SIGINT asks the run to stop.

    Args:
        manager: writes, rotates and selects the best checkpoint.
        every_steps: steps between checkpoints.
        state: builds the checkpoint dict from the trainer (model, optimizer, RNG, config, ...).
        stop: the signal flag of this process, for the log message. The decision to stop is the trainer's
            ``stop_agreed`` (any process's flag, agreed by all processes in the step), so a signal to one rank
            stops every rank after the same step.
        enabled: False on non-main processes (they still stop on the signal).
        collect: called on every process at each save the processes agree on (periodic, final, stop), before the
            main process writes; its entries join the checkpoint. Under DDP it may run a collective (the per-rank
            RNG states), which is why it is never called on a path only some processes take.

    A loop that dies inside a step (a crashed peer process, a data error) leaves no new checkpoint: its data
    position already counts the batches of the unfinished step, so a checkpoint of that moment would resume past
    them. The previous periodic checkpoint is the one to resume from. A run aborted for non-finite losses
    (`NonFiniteLossError`, raised between steps on every process alike) is still saved, for inspection.
    """

    def __init__(
        self,
        manager: CheckpointManager,
        every_steps: int,
        state: Callable[[Trainer], dict[str, Any]],
        stop: GracefulExit,
        enabled: bool = True,
        collect: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.manager, self.every_steps, self.state, self.stop, self.enabled = manager, every_steps, state, stop, enabled
        self.collect = collect
        self.saved_step = -1

    def _save(self, trainer: Trainer, agreed: bool) -> None:
        if self.saved_step == trainer.step:
            return
        extra = self.collect() if agreed and self.collect is not None else {}
        if self.enabled:
            state = {**self.state(trainer), **extra}
            path = self.manager.save(state, trainer.step, getattr(trainer, "metrics", None))
            logger.info("checkpoint %s", path)
        self.saved_step = trainer.step

    def after_step(self, trainer: Trainer, losses: Mapping[str, float] | None) -> None:
        if trainer.stop_agreed:
            cause = self.stop.received.name if self.stop.received is not None else "a signal (another process)"
            logger.warning("received %s: saving and stopping after step %d", cause, trainer.step)
            trainer.should_stop = True
            self._save(trainer, agreed=True)
        elif losses is not None and (trainer.step % self.every_steps == 0 or trainer.step >= trainer.max_steps):
            self._save(trainer, agreed=True)

    def after_train(self, trainer: Trainer) -> None:
        # Called from the loop's `finally`: sys.exc_info() is the exception ending the loop, if any (or one the
        # caller is handling around the whole run; then only this fallback save is skipped: the final and stop
        # saves happen in after_step).
        failure = sys.exc_info()[1]
        if failure is not None and not isinstance(failure, NonFiniteLossError):
            if self.enabled:
                logger.warning(
                    "training failed during step %d (%s): no checkpoint of this moment; resume from the last one",
                    trainer.step + 1,
                    type(failure).__name__,
                )
            return
        self._save(trainer, agreed=False)
