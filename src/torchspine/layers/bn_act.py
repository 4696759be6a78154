"""Training-time BatchNorm + activation (+ residual addition) that keeps one feature map for backward instead of two.

With swish, a SpineNet layer ``silu(bn(conv(x)))`` keeps three maps for the backward pass: the conv output (for
BatchNorm's backward), the BN output (for SiLU's backward) and the SiLU output (for the next convolution); a
residual block ending in ``silu(bn(conv(y)) + shortcut)`` also keeps the sum. ResNets escape the second map with an
in-place ReLU, whose backward needs only its output; swish has no such trick. `bn_act` saves only the conv output
and the batch statistics (plus the shortcut, which the block's first convolution keeps anyway) and recomputes the
normalised map in backward, as in-place activated BatchNorm does (Rota Bulò et al., CVPR 2018). On
RetinaNet-SpineNet-49 that is about a quarter of the saved activations (`benchmarks/saved_activations.py`), for
one extra element-wise pass per layer in backward.

Semantics equal ``nn.BatchNorm2d`` in training mode: batch statistics, running statistics updated with the
module's momentum (or the cumulative average for ``momentum=None``) and ``num_batches_tracked`` incremented.
Outputs equal the unfused modules exactly on CPU in fp32 and gradients to float rounding. Only plain
``nn.BatchNorm2d`` in training mode with ReLU, SiLU or no activation takes this path (`supported`); callers fall
back to the modules otherwise (eval mode, SyncBatchNorm, frozen BN, other activations).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["bn_act", "set_fused_bn_act", "supported"]

_ACTS: dict[type[nn.Module], str] = {nn.SiLU: "swish", nn.ReLU: "relu", nn.Identity: "none"}


def supported(bn: nn.Module, act: nn.Module) -> bool:
    """Whether `bn_act` can replace ``act(bn(x))``: a training-mode affine ``nn.BatchNorm2d`` with running
    statistics and a ReLU, SiLU or no activation."""
    return (
        type(bn) is nn.BatchNorm2d
        and bn.training
        and bn.affine
        and bn.track_running_stats
        and type(act) in _ACTS
        and not torch.jit.is_tracing()
    )


def _channel(t: Tensor) -> Tensor:
    return t.view(1, -1, 1, 1)


def _activate(z: Tensor, act: str) -> Tensor:
    if act == "swish":
        return F.silu(z, inplace=True)
    if act == "relu":
        return F.relu(z, inplace=True)
    return z


def _activation_grad(grad: Tensor, z: Tensor, act: str) -> Tensor:
    """The gradient through ``act`` at pre-activation `z`, each one fused ATen kernel (one pass over the map)."""
    if act == "swish":
        return torch.ops.aten.silu_backward(grad, z)
    if act == "relu":
        return torch.ops.aten.threshold_backward(grad, z, 0)
    return grad


class _BatchNormAct(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        momentum: float,
        eps: float,
        act: str,
        residual: Tensor | None,
        scale: Tensor | None,
    ) -> Tensor:
        z, mean, invstd = torch.ops.aten.native_batch_norm(
            x, weight, bias, running_mean, running_var, True, momentum, eps
        )
        if scale is not None:
            z = z.mul_(scale)
        if residual is not None:
            z = z.add_(residual)
        ctx.act, ctx.eps = act, eps
        ctx.save_for_backward(x, weight, bias, mean, invstd, residual, scale)
        return _activate(z, act)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, bias, mean, invstd, residual, scale = ctx.saved_tensors
        # Recompute the pre-activation map in the statistics' precision (fp32 for fp16/bf16 inputs on GPU).
        # One pass: z = x * a + b with the per-channel a = invstd * weight, b = bias - mean * a; the rest in place.
        dtype = torch.promote_types(x.dtype, mean.dtype)
        a = invstd * weight
        z = torch.addcmul(_channel(bias - mean * a), x.to(dtype), _channel(a))
        if scale is not None:
            z.mul_(scale)
        if residual is not None:
            z.add_(residual)
        gz = _activation_grad(grad.to(dtype), z, ctx.act)
        g_residual = gz.to(residual.dtype) if residual is not None and ctx.needs_input_grad[8] else None
        g_bn = gz if scale is None else gz * scale
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            g_bn.to(x.dtype),
            x,
            weight,
            None,
            None,
            mean,
            invstd,
            True,
            ctx.eps,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]],
        )
        return gx, gw, gb, None, None, None, None, None, g_residual, None


def bn_act(
    x: Tensor, bn: nn.BatchNorm2d, act: nn.Module, *, residual: Tensor | None = None, scale: Tensor | None = None
) -> Tensor:
    """``act(bn(x) * scale + residual)`` in training mode, keeping only `x` (and `residual`) for backward.

    Args:
        x: the convolution output, ``(N, C, H, W)``.
        bn: a module for which `supported` holds; its running statistics are updated as its own forward would.
        act: ``nn.SiLU``, ``nn.ReLU`` or ``nn.Identity``.
        residual: added before the activation (a block's shortcut), or None.
        scale: per-sample factor ``(N, 1, 1, 1)`` on the normalised map before the addition (stochastic depth's
            ``mask / keep``), or None.
    """
    bn.num_batches_tracked.add_(1)
    momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return _BatchNormAct.apply(
        x, bn.weight, bn.bias, bn.running_mean, bn.running_var, momentum, bn.eps, _ACTS[type(act)], residual, scale
    )


def set_fused_bn_act(model: nn.Module, enable: bool = True) -> nn.Module:
    """Turn `bn_act` on (or off) in every layer of `model` that offers it (a ``fused_bn_act`` attribute: SpineNet's
    conv layers and residual blocks, the RetinaNet head towers). Returns `model`."""
    for module in model.modules():
        if hasattr(module, "fused_bn_act"):
            module.fused_bn_act = enable
    return model
