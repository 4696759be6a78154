"""Gradient-norm clipping with the official semantics: per replica before the all-reduce, or on the mean gradient.

The two official SpineNet code bases clip differently under data parallelism:

* **tensorflow/tpu** (``modeling/base_model.py``, ``gradient_clip_norm``): the optimizer is wrapped in
  ``tf.tpu.CrossShardOptimizer``, whose ``compute_gradients`` scales the loss by ``1 / num_shards`` (the default
  ``MEAN`` reduction), so each replica's gradient is its local gradient divided by the replica count;
  ``tf.clip_by_global_norm`` then clips that *local* gradient, and only ``apply_gradients`` sums the clipped
  gradients across replicas (``cross_replica_sum``). The gradient is that of ``model_loss + l2_loss``: the L2
  weight-decay term is clipped together with the loss gradient. With N replicas the update is::

      G = sum_r clip((g_r + wd * w) / N, c)        clip(v, c) = v * c / max(||v||, c)

  so a clip of 10 on 64 replicas only bites when one replica's full gradient exceeds 640: it almost never fires.
* **Model Garden** (``official/modeling/optimization``, the ``global_clipnorm`` of the optimizer config): the Keras
  optimizer's ``apply_gradients`` first aggregates the replicas' gradients and then applies ``global_clipnorm``
  (``_aggregate_gradients`` before ``_transform_gradients``), i.e. it clips the mean gradient,
  ``G = clip(mean_r g_r + wd * w, c)`` (the L2 term comes from the kernel regularisers' ``model.losses``, so it is
  in the clipped gradient too). (The ``task.gradient_clip_norm`` key of Model Garden's early RetinaNet YAMLs is
  never read by its RetinaNet task's ``train_step``.)

`GradientClipper` implements both. Per-replica clipping under DDP uses ``no_sync()`` plus one manual all-reduce
rather than a DDP communication hook: the clip factor of a replica depends on the norm of its *whole* local
gradient, which a comm hook (called bucket by bucket while backward is still running) cannot know before it has
to communicate the first bucket; deferring every bucket to the end would keep DDP's machinery for nothing. With
``no_sync()`` DDP leaves each process's local gradient in ``.grad`` (accumulation over micro-batches included),
and `clip_` clips it and sums the processes' gradients in one flattened all-reduce. Communication no longer
overlaps backward; for the official recipes' per-replica semantics that is unavoidable.

Weight decay: PyTorch SGD adds ``weight_decay * w`` to the gradient inside ``step()``, after any clipping. To clip
the same vector as the official code, `clip_` folds SGD's decay into the clipped vector and leaves ``.grad`` such
that SGD's own ``+ weight_decay * w`` completes the official update exactly (when nothing is clipped, ``.grad`` is
the plain mean gradient, as without clipping). AdamW's decay is decoupled from the gradient, so it is not folded.

fp16 loss scaling: the gradients are still multiplied by the scaler's scale here; the threshold is scaled by the
same factor instead of unscaling, so an overflow (an inf/NaN norm) turns the clipped gradient into NaN, which the
all-reduce spreads to every process and the scaler then skips on all of them alike.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["ClipMode", "GradientClipper"]

ClipMode = Literal["per_replica", "global"]


class GradientClipper:
    """Clips gradients by their global L2 norm, per replica (tensorflow/tpu) or on the mean gradient (Model Garden).

    Args:
        max_norm: the clip norm ``c``.
        mode: ``"per_replica"``: clip each process's local gradient divided by the world size, then sum over
            processes (tensorflow/tpu); ``"global"``: average over processes (DDP's all-reduce), then clip (Model
            Garden's ``global_clipnorm``). In a single process the two are the same.
        world_size: number of data-parallel processes.

    Use: run forward and backward inside ``sync_context(model)``, then call ``clip_(model, optimizer, scale)``
    before ``optimizer.step()``.
    """

    def __init__(self, max_norm: float, mode: ClipMode = "per_replica", *, world_size: int = 1) -> None:
        if not max_norm > 0:
            raise ValueError(f"max_norm={max_norm}: expected a positive clip norm")
        if mode not in ("per_replica", "global"):
            raise ValueError(f"mode={mode!r}: expected 'per_replica' or 'global'")
        if world_size < 1:
            raise ValueError(f"world_size={world_size}: expected >= 1")
        self.max_norm, self.mode, self.world_size = float(max_norm), mode, world_size

    @property
    def reduces_gradients(self) -> bool:
        """Whether `clip_` sums the processes' gradients itself (DDP must then not all-reduce them)."""
        return self.mode == "per_replica" and self.world_size > 1

    def sync_context(self, model: nn.Module) -> AbstractContextManager:
        """``model.no_sync()`` when `clip_` does the all-reduce itself, a no-op context otherwise."""
        if self.reduces_gradients:
            if not isinstance(model, nn.parallel.DistributedDataParallel):
                raise TypeError(f"per-replica clipping on {self.world_size} processes needs a DDP model")
            return model.no_sync()
        return nullcontext()

    def clip_(self, model: nn.Module, optimizer: torch.optim.Optimizer, scale: float = 1.0) -> float:
        """Clip the gradients in place (and, per replica under DDP, all-reduce them); returns the norm that was
        compared with the clip norm (this process's local one, per replica), in unscaled units.

        Args:
            model: the (DDP) model whose parameters' ``.grad`` hold the gradients (local ones under ``no_sync``).
            optimizer: the optimizer about to step; for SGD its groups' ``weight_decay`` is clipped with the
                gradient (TF's L2 loss term), see the module docstring.
            scale: the factor the gradients are multiplied by (an fp16 loss scaler's scale; 1.0 otherwise).
        """
        params, decays = _grads_and_decays(optimizer)
        grads = [p.grad for p in params]
        if not grads:
            return 0.0
        # In place, .grad becomes the vector to clip: the local gradient (per replica: divided by the world size,
        # as CrossShardOptimizer's loss scaling does) or the mean one, plus SGD's L2 term, both in the gradients'
        # (possibly loss-scaled) units.
        share = 1.0 / self.world_size if self.reduces_gradients else 1.0
        l2 = [wd * share * scale for wd in decays]
        for p, coef in zip(params, l2, strict=True):
            p.grad.mul_(share)
            if coef:
                p.grad.add_(p.detach(), alpha=coef)
        norm = torch.nn.utils.get_total_norm(grads)
        # tf.clip_by_global_norm: v * c / max(||v||, c). An inf/NaN norm gives NaN gradients (see module docstring).
        threshold = self.max_norm * scale
        factor = threshold / torch.maximum(norm, norm.new_tensor(threshold))
        for p, coef in zip(params, l2, strict=True):
            p.grad.mul_(factor.to(p.grad.dtype))
            if coef:  # minus the decay SGD adds in step() (this process's share of it)
                p.grad.sub_(p.detach(), alpha=coef)
        if self.reduces_gradients:
            _all_reduce_sum(grads)
        return float(norm) / scale


def _grads_and_decays(optimizer: torch.optim.Optimizer) -> tuple[list[nn.Parameter], list[float]]:
    """Parameters with a gradient and the L2 coefficient that is part of their gradient (SGD's weight decay;
    0 for optimizers whose decay is decoupled from the gradient, such as AdamW)."""
    coupled = isinstance(optimizer, torch.optim.SGD)
    params, decays = [], []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                params.append(p)
                decays.append(float(group.get("weight_decay", 0.0)) if coupled else 0.0)
    return params, decays


def _all_reduce_sum(grads: list[Tensor]) -> None:
    """Sum `grads` over all processes, in one all-reduce per dtype (flattened, like DDP's buckets)."""
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for g in grads:
        by_dtype.setdefault(g.dtype, []).append(g)
    for same in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in same])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in same:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
