"""Inference-only layers that run a folded convolution with what follows it as one oneDNN call on CPU.

After BatchNorm folding (`torchspine.inference`), a SpineNet layer is ``act(conv(x))`` and a residual block ends in
``act(conv(y) + shortcut)``. Eager PyTorch runs the activation and the addition as separate passes over the whole
feature map; TF's grappler remapper fuses them into the convolution, which is much of why the official Model
Garden code was faster on CPU. oneDNN does the same fusion as convolution post-ops, reachable through
``torch.ops.mkldnn._convolution_pointwise`` (the op ``torch.compile``'s CPU backend emits for these patterns):

* unary post-op after any convolution: ``swish`` (SiLU), ``relu``, ``sigmoid``, ``hardswish`` or none;
* binary ``add`` of the shortcut, optionally followed by ``relu`` (PyTorch 2.14 accepts no other activation there,
  so a swish block adds inside the convolution and applies its SiLU separately).

The modules fall back to the plain ops whenever the fused call is not available or not wanted: tensors not on
CPU or not float32, PyTorch built without oneDNN, and under tracing, ``torch.compile`` or ``torch.export`` (the
exported graph then holds standard convolutions and activations, and the compiler does its own fusion). Results
equal the plain ops up to float rounding (oneDNN picks its own convolution algorithm either way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvAct", "FusedResidual", "activate_", "onednn_activation"]

# Activation module type -> oneDNN unary post-op name.
_UNARY: dict[type[nn.Module], str] = {
    nn.Identity: "none",
    nn.ReLU: "relu",
    nn.SiLU: "swish",
    nn.Sigmoid: "sigmoid",
    nn.Hardswish: "hardswish",
}


def onednn_activation(act: nn.Module) -> str | None:
    """The oneDNN post-op name of activation module `act`, or None when oneDNN cannot fuse it."""
    if isinstance(act, nn.ReLU) and act.inplace:
        return "relu"
    return _UNARY.get(type(act))


def _fusable_conv(conv: nn.Module) -> bool:
    """Whether `conv` maps directly onto ``_convolution_pointwise`` (a 2-D zero-padded conv with explicit padding)."""
    return type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)


_ONEDNN = torch.backends.mkldnn.is_available()  # read once: torch.compile refuses to trace the query


def _use_onednn(x: Tensor) -> bool:
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False  # the graph gets the plain operations; the compiler fuses them itself
    return _ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32


class ConvAct(nn.Module):
    """``act(conv(pad(x)))`` for a convolution with its BatchNorm already folded in; one oneDNN call on CPU.

    Args:
        conv: the convolution (any module; only a plain ``nn.Conv2d`` runs fused).
        act: the activation (``nn.Identity()`` for none); only those of `onednn_activation` run fused.
        pad: explicit padding before the convolution (TF ``'SAME'`` for strided convs), or None.
        onednn: fuse on CPU when possible; False always runs the plain operations.
    """

    def __init__(self, conv: nn.Module, act: nn.Module, pad: nn.Module | None = None, *, onednn: bool = True) -> None:
        super().__init__()
        self.pad = pad if pad is not None else nn.Identity()
        self.conv = conv
        self.act = act
        attr = onednn_activation(act) if onednn and _fusable_conv(conv) else None
        self.attr = attr

    def forward(self, x: Tensor) -> Tensor:
        x = self.pad(x)
        if self.attr is not None and _use_onednn(x):
            c = self.conv
            return torch.ops.mkldnn._convolution_pointwise(
                x, c.weight, c.bias, c.padding, c.stride, c.dilation, c.groups, self.attr, [], ""
            )
        return self.act(self.conv(x))

    def forward_add(self, x: Tensor, other: Tensor, *, relu: bool = False) -> Tensor:
        """``conv(pad(x)) + other`` (then a ReLU if `relu`), the addition inside the convolution on CPU.

        Only for a layer without activation (``nn.Identity``); `other` has the convolution's output shape.
        """
        if type(self.act) is not nn.Identity:
            raise ValueError(f"forward_add needs a ConvAct without activation, this one has {self.act}")
        x = self.pad(x)
        if self.attr == "none" and _use_onednn(x) and other.dtype == x.dtype:
            c = self.conv
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, other, c.weight, c.bias, c.padding, c.stride, c.dilation, c.groups, "add", None,
                "relu" if relu else None, [], "",
            )  # fmt: skip
        y = self.conv(x) + other
        return y.relu_() if relu else y

    def extra_repr(self) -> str:
        return f"onednn={self.attr or 'off'}"


class FusedResidual(nn.Module):
    """``act(last(body(x)) + shortcut(x))``: a residual or bottleneck block at inference, its last convolution
    adding the shortcut (and applying a ReLU) inside one oneDNN call on CPU.

    Args:
        body: the block's convolutions before the last one (each a `ConvAct`).
        last: the last convolution, without activation (a `ConvAct` with ``nn.Identity``).
        shortcut: the projection of the input, or None for the identity.
        act: the activation after the addition.
    """

    def __init__(self, body: nn.Module, last: ConvAct, shortcut: nn.Module | None, act: nn.Module) -> None:
        super().__init__()
        self.shortcut = shortcut
        self.body = body
        self.last = last
        self.act = act
        self.fuse_add = last.attr == "none"
        self.fuse_relu = self.fuse_add and onednn_activation(act) == "relu"

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        y = self.body(x)
        if not self.fuse_add:
            return self.act(self.last(y) + shortcut)
        if self.fuse_relu:
            return self.last.forward_add(y, shortcut, relu=True)
        return activate_(self.act, self.last.forward_add(y, shortcut))


def activate_(act: nn.Module, x: Tensor) -> Tensor:
    """``act(x)``, in place for the common activations: for a tensor just made and used once (an inference-time
    sum), this saves allocating another feature map of the same size. Out of place when autograd records `x`."""
    if x.requires_grad and torch.is_grad_enabled():
        return act(x)
    if type(act) is nn.SiLU:
        return F.silu(x, inplace=True)
    if type(act) is nn.ReLU:
        return x.relu_()
    if type(act) is nn.Identity:
        return x
    return act(x)
