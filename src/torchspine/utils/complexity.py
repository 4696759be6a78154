"""Parameter and multiply-add (MAC) counts, measured on the meta device (no memory, no compute).

The paper's "FLOPs" are multiply-adds of convolutions and matrix products (as the official param/FLOPs counts):
``torch.utils.flop_counter.FlopCounterMode`` counts ``2 * MACs`` for those ops and nothing for element-wise ops
(BatchNorm, activations, additions, pooling, resizing), so MACs are its total divided by two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Complexity:
    params: int  # trainable parameters
    buffers: int  # BatchNorm running statistics (num_batches_tracked excluded)
    macs: int


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_bn_stats(model: nn.Module) -> int:
    return sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))


def measure(build: Callable[[], nn.Module], image_size: tuple[int, int], in_chans: int = 3) -> Complexity:
    """Count params, BN statistics and MACs of ``build()`` on one ``image_size`` image, on the meta device."""
    with torch.device("meta"):
        model = build()
    model.eval()
    x = torch.empty(1, in_chans, *image_size, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return Complexity(count_params(model), count_bn_stats(model), counter.get_total_flops() // 2)
