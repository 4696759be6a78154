"""Activation checkpointing that leaves BatchNorm running statistics exactly as a plain forward would.

``torch.utils.checkpoint`` recomputes a segment's forward during the backward pass. A segment with training-mode
BatchNorm would then update its running mean and variance (and ``num_batches_tracked``) a second time, so a model
trained with checkpointing would drift from one trained without. During the recomputation this module sets each
BatchNorm's momentum to 0 (``running = 1 * running + 0 * batch``, bit-identical) and undoes the extra
``num_batches_tracked`` increment afterwards. The recomputation replays the random state (dropout masks, drop-path,
DropBlock) of the first forward (``preserve_rng_state``), so gradients equal those without checkpointing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@contextlib.contextmanager
def _frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    bns = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
            if m.num_batches_tracked is not None:
                m.num_batches_tracked.sub_(1)


def checkpointed(module: nn.Module, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` (a forward of `module` or of its parts) with its activations recomputed in the backward pass.

    Only when gradients are being recorded; otherwise (inference, ``no_grad``) it is a plain call.
    """
    if not torch.is_grad_enabled():
        return fn(*args)
    return checkpoint(
        fn,
        *args,
        use_reentrant=False,
        preserve_rng_state=True,
        context_fn=lambda: (contextlib.nullcontext(), _frozen_bn_stats(module)),
    )
