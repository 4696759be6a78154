"""Activations by their TensorFlow names, and Model Garden's hard-sigmoid squeeze-excitation gate."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from torchspine.errors import UsageError


class TFHardSigmoid(nn.Module):
    """Model Garden's ``hard_sigmoid``: ``relu6(x + 3) * 0.16667``.

    The constant is the literal 0.16667 of ``official/modeling/activations``, not 1/6: ``nn.Hardsigmoid`` moves
    the SpineNet-Mobile outputs by up to 5e-3, well above checkpoint-parity tolerance.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(x + 3.0) * 0.16667


# TF name -> PyTorch module factory. swish is x * sigmoid(x) (nn.SiLU); Model Garden's hard_swish is
# x * relu6(x + 3) / 6, exactly nn.Hardswish.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "swish": nn.SiLU,
    "hard_swish": nn.Hardswish,
    "sigmoid": nn.Sigmoid,
    "hard_sigmoid": TFHardSigmoid,
}


def get_act_layer(name: str) -> Callable[[], nn.Module]:
    """Module factory for the activation called `name` in TF (``relu``, ``swish``, ``hard_swish``, ...)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise UsageError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None
