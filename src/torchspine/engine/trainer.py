"""The training loop: one explicit ``run_step`` plus hooks, after detectron2's ``SimpleTrainer``.

The loop knows nothing about configs, files or logging formats: it gets a model that returns a dict of losses in
train mode (torchvision's detection API), an optimizer, an optional per-step LR scheduler and a data loader whose
sampler can resume mid-epoch (`ResumableSampler`). Everything else (checkpoints, evaluation, metrics files,
progress) is a `Hook`. The loop's whole state (step, epoch, position in the epoch, non-finite counter) is in
``state_dict()``, so a run restored from a checkpoint continues exactly where it stopped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from torchspine.engine.clipping import ClipMode, GradientClipper
from torchspine.errors import TorchspineError

logger = logging.getLogger(__name__)

AmpMode = Literal["none", "bf16", "fp16"]


class NonFiniteLossError(TorchspineError, RuntimeError):
    """Too many consecutive steps had a NaN or infinite loss: the run is diverging."""


class ResumableSampler(Sampler[int]):
    """A seeded random permutation per epoch, sharded across processes, that can start mid-epoch.

    Every process draws the same permutation (seed + epoch) and takes every ``world_size``-th index from its rank,
    as ``DistributedSampler`` does (the tail is dropped so all ranks see the same number of samples). ``start``
    skips the samples this rank already consumed in the epoch, which is what makes resumed runs exact.

    Args:
        num_samples: dataset length.
        seed: base seed of the permutations.
        rank: this process's rank.
        world_size: number of processes.
        shuffle: random permutation (True) or dataset order.
    """

    def __init__(
        self, num_samples: int, *, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True
    ) -> None:
        if num_samples < world_size:
            raise ValueError(f"{num_samples} samples cannot be shared by {world_size} processes")
        self.num_samples, self.seed, self.rank, self.world_size, self.shuffle = (
            num_samples,
            seed,
            rank,
            world_size,
            shuffle,
        )
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.num_samples // self.world_size - self.start

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        per_rank = self.num_samples // self.world_size
        mine = order[self.rank : per_rank * self.world_size : self.world_size]
        return iter(mine[self.start :])


class Hook:
    """Called around the loop; `state_dict` / `load_state_dict` let a hook's state resume with the run."""

    def before_train(self, trainer: Trainer) -> None: ...

    def after_step(self, trainer: Trainer, losses: Mapping[str, float] | None) -> None: ...

    def after_train(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class Trainer:
    """Runs optimisation steps until `max_steps` (or until a hook sets ``should_stop``).

    One step consumes ``grad_accum_steps`` batches; the losses of each are scaled by ``1 / grad_accum_steps`` and
    accumulated, then the gradients are clipped and the optimizer and scheduler step once. A step whose loss is not
    finite is skipped (gradients dropped, nothing updated) and logged; ``max_nonfinite`` such steps in a row raise
    `NonFiniteLossError`.

    Args:
        model: returns a dict of scalar losses for ``model(images, targets)`` in train mode.
        optimizer: the optimizer.
        data_loader: yields ``(images, targets)``; its sampler must be a `ResumableSampler`, and it should have its
            own ``generator`` (reseeded per epoch here) so that iterating it does not consume the global RNG.
            Resuming is then exact when data loading is deterministic given the RNG (``num_workers=0``); with
            workers, augmentations resume exactly only when seeded per sample (`engine.sample_seeds`, as
            `train_experiment` does), otherwise approximately.
        max_steps: optimisation steps of the whole run.
        scheduler: stepped once per optimisation step, or None.
        grad_accum_steps: batches per optimisation step.
        clip_grad_norm: max global gradient norm, or None.
        clip_mode: under DDP, clip each process's local gradient (divided by the process count) before summing
            (``"per_replica"``, tensorflow/tpu) or the averaged gradient (``"global"``, Model Garden); see
            `torchspine.engine.clipping`.
        amp: mixed precision: ``"bf16"`` (CPU or CUDA) or ``"fp16"`` (CUDA, with a gradient scaler).
        device: where the model and batches live.
        hooks: called in order around the loop.
        max_nonfinite: consecutive non-finite steps tolerated.
        stop_requested: polled once per step (e.g. a SIGTERM flag); a request stops the run after that step.

    Under DDP every decision that changes the control flow is agreed by all processes in one all-reduce of a
    two-element flag per batch (non-finite loss here, stop requested here): a non-finite loss on one rank makes
    every rank skip the step (a rank that skipped ``backward()`` alone would leave the others waiting in DDP's
    gradient all-reduce forever), a signal to one rank stops every rank after the same step, and the
    "too many non-finite steps" abort happens at the same step everywhere. ``stop_agreed`` is the result.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data_loader: DataLoader,
        *,
        max_steps: int,
        scheduler: Any | None = None,
        grad_accum_steps: int = 1,
        clip_grad_norm: float | None = None,
        clip_mode: ClipMode = "global",
        amp: AmpMode = "none",
        device: str | torch.device = "cpu",
        hooks: Sequence[Hook] = (),
        max_nonfinite: int = 10,
        stop_requested: Callable[[], bool] | None = None,
    ) -> None:
        if not isinstance(data_loader.sampler, ResumableSampler):
            raise TypeError("the data loader's sampler must be a ResumableSampler (exact resume needs it)")
        if grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps={grad_accum_steps}: expected >= 1")
        self.model, self.optimizer, self.scheduler, self.data_loader = model, optimizer, scheduler, data_loader
        self.max_steps, self.grad_accum_steps, self.clip_grad_norm = max_steps, grad_accum_steps, clip_grad_norm
        self.device = torch.device(device)
        self.amp = amp
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        self.hooks = list(hooks)
        self.max_nonfinite = max_nonfinite
        self.step = 0  # optimisation steps done
        self.epoch = 0
        self.position = 0  # batches of the current epoch consumed
        self.nonfinite_in_a_row = 0
        self.should_stop = False
        self.stop_requested = stop_requested
        self.stop_agreed = False  # some process asked to stop (a signal); every process stops after this step
        self._distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.clipper = (
            GradientClipper(clip_grad_norm, clip_mode, world_size=dist.get_world_size() if self._distributed else 1)
            if clip_grad_norm is not None
            else None
        )
        # The latest evaluation ({"bbox/AP": ...}), set by the evaluation hook. Part of the state: a checkpoint
        # written after a resume must carry the same metrics as one written by the uninterrupted run.
        self.metrics: dict[str, float] = {}
        self._batches: Iterator | None = None

    # -- state ----------------------------------------------------------------------------------------------------

    def progress_state(self) -> dict[str, Any]:
        """The loop's own position (step, epoch, batches into the epoch, non-finite streak) and the hooks' states."""
        return {
            "loop": {
                "step": self.step,
                "epoch": self.epoch,
                "position": self.position,
                "nonfinite_in_a_row": self.nonfinite_in_a_row,
            },
            "hooks": [hook.state_dict() for hook in self.hooks],
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly (model, optimizer, scheduler, scaler, metrics, loop, hooks)."""
        model = self.model.module if hasattr(self.model, "module") else self.model
        return {
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "metrics": dict(self.metrics),
            **self.progress_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        model = self.model.module if hasattr(self.model, "module") else self.model
        model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        loop = state["loop"]
        self.step, self.epoch, self.position = int(loop["step"]), int(loop["epoch"]), int(loop["position"])
        self.nonfinite_in_a_row = int(loop["nonfinite_in_a_row"])
        self.metrics = {str(k): float(v) for k, v in state.get("metrics", {}).items()}
        for hook, hook_state in zip(self.hooks, state.get("hooks", []), strict=False):
            hook.load_state_dict(hook_state)
        self._batches = None

    # -- the loop -------------------------------------------------------------------------------------------------

    def _next_batch(self) -> tuple[list, list]:
        """The next batch, starting a new epoch (and a new permutation) when one ends."""
        fresh = False  # whether the current iterator started a whole epoch and has not yielded yet
        while True:
            if self._batches is None:
                fresh = self.position == 0
                sampler: ResumableSampler = self.data_loader.sampler  # type: ignore[assignment]
                sampler.set_epoch(self.epoch, start=self.position * self.data_loader.batch_size)
                if self.data_loader.generator is not None:
                    # Creating a DataLoader iterator draws worker seeds from this generator (or, without one,
                    # from the global RNG, which a resumed run would then consume once more than the original).
                    self.data_loader.generator.manual_seed(sampler.seed + 7919 * self.epoch)
                self._batches = iter(self.data_loader)
            try:
                batch = next(self._batches)
                self.position += 1
                return batch
            except StopIteration:
                self._batches = None
                if fresh:  # a whole epoch without one batch: looping on would spin forever
                    raise RuntimeError(
                        f"the training data loader yielded no batch in epoch {self.epoch} "
                        f"({len(self.data_loader.dataset)} samples, batch size {self.data_loader.batch_size}, "
                        "last partial batch dropped): the data set is smaller than one batch"
                    ) from None
                self.epoch += 1
                self.position = 0

    def _autocast(self) -> nullcontext | torch.autocast:
        if self.amp == "none":
            return nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _agree(self, nonfinite: bool) -> tuple[bool, bool]:
        """``(any process has a non-finite loss, any process asked to stop)``; one all-reduce under DDP."""
        stop = bool(self.stop_requested()) if self.stop_requested is not None else False
        if not self._distributed:
            return nonfinite, stop
        flags = torch.tensor([float(nonfinite), float(stop)], device=self._flag_device())
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0]), bool(flags[1])

    def _flag_device(self) -> torch.device:
        # NCCL reduces CUDA tensors only; gloo reduces CPU tensors.
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def run_step(self) -> dict[str, float] | None:
        """One optimisation step; returns the mean losses of its batches, or None if it was skipped."""
        self.model.train()
        totals: dict[str, float] = {}
        finite = True
        for _ in range(self.grad_accum_steps):
            images, targets = self._next_batch()
            images = [img.to(self.device, non_blocking=True) for img in images]
            targets = [{k: v.to(self.device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
            # Per-replica clipping all-reduces the clipped gradients itself: DDP must not (no_sync).
            with self.clipper.sync_context(self.model) if self.clipper is not None else nullcontext():
                with self._autocast():
                    losses = self.model(images, targets)
                loss = sum(losses.values())
                nonfinite, stop = self._agree(not bool(torch.isfinite(loss)))
                self.stop_agreed = self.stop_agreed or stop
                if nonfinite:  # here or on another process: every process skips this step
                    finite = False
                    break
                self.scaler.scale(loss / self.grad_accum_steps).backward()
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / self.grad_accum_steps
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_in_a_row += 1
            logger.warning(
                "step %d: non-finite loss (%s here; the step is skipped if any process has one), step skipped "
                "(%d in a row)",
                self.step,
                {k: float(v.detach()) for k, v in losses.items()},
                self.nonfinite_in_a_row,
            )
            if self.nonfinite_in_a_row >= self.max_nonfinite:
                raise NonFiniteLossError(
                    f"{self.nonfinite_in_a_row} consecutive steps had a non-finite loss "
                    f"(last: step {self.step}); lower the learning rate or check the data"
                )
            return None
        self.nonfinite_in_a_row = 0
        if self.clipper is not None:
            totals["grad_norm"] = self.clipper.clip_(self.model, self.optimizer, scale=float(self.scaler.get_scale()))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        return totals

    def train(self) -> None:
        """Run until `max_steps` or until ``should_stop`` is set; hooks see every step."""
        for hook in self.hooks:
            hook.before_train(self)
        try:
            while self.step < self.max_steps and not self.should_stop:
                losses = self.run_step()
                for hook in self.hooks:
                    hook.after_step(self, losses)
        finally:
            for hook in self.hooks:
                hook.after_train(self)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def progress(self) -> float:
        return self.step / max(self.max_steps, 1)


def warmup_step_schedule(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: int,
    warmup_init_ratio: float,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    cosine: bool = False,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from ``warmup_init_ratio * lr`` to ``lr``, then step decays (x `gamma` at each milestone,
    the official "last 30 and 10 epochs") or a cosine decay to zero; stepped once per optimisation step."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return warmup_init_ratio + (1.0 - warmup_init_ratio) * step / max(warmup_steps, 1)
        if cosine:
            progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return gamma ** sum(step >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
