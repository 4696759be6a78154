"""Stochastic depth and DropBlock, the two training-only regularisers of the SpineNet blocks.

`DropPath` is Model Garden's ``StochasticDepth`` / tensorflow/tpu's ``drop_connect``. `DropBlock` is the optional
DropBlock (Ghiasi et al., NeurIPS 2018, arXiv 1810.12890) of the SpineNet paper's protocol A (Du et al., CVPR 2020,
arXiv 1912.05027, §5.1: "SyncBN with momentum 0.99, ReLU, DropBlock").

Facts from tensorflow/tpu (commit 7dc921f8, Apache-2.0), ``models/official/detection/``:

* ``modeling/architecture/nn_ops.py`` ``Dropblock(dropblock_keep_prob=None, dropblock_size=None)``: identity unless
  training with a keep_prob other than None / 1.0. Otherwise: ``size = min(dropblock_size, H, W)``; seed rate
  ``gamma = (1 - keep_prob) * H * W / size**2 / ((W - dropblock_size + 1) * (H - dropblock_size + 1))``; seeds are
  drawn independently per element (batch, channel, position) but only at centres whose whole block fits the map; a
  min-pool (``-max_pool(-mask)``, ``'SAME'``, stride 1, kernel ``dropblock_size``) grows seeds into blocks; the
  output is ``x * mask / mean(mask)``, the mean taken over the whole tensor (batch and channels included).
* ``modeling/architecture/nn_blocks.py`` ``residual_block`` / ``bottleneck_block``: one Dropblock object is applied
  after *every* BatchNorm of the block (after BN + activation for the inner convs, after the activation-free last
  BN), and to the shortcut, the projection's BN output or, without a projection, the identity input itself. Then
  drop connect, the addition and the activation. The residual branch's input is not dropped.
* ``modeling/architecture/resnet.py``: the same Dropblock is handed to all four block groups (c2-c5); there is no
  per-group selection and no keep_prob schedule. ``configs/base_config.py`` defaults ``dropblock: {dropblock_keep_prob:
  None, dropblock_size: None}``, and no shipped detection config turns it on (``configs/*.py``, ``configs/yaml``,
  ``configs/spinenet/*.yaml``; only ViLD's YAMLs name the keys, set to null).
* ``modeling/architecture/spinenet.py``: ``self._dropblock = nn_ops.Dropblock()  # Hard-code it to not use
  DropBlock.``, passed to the stem and scale-permuted block groups; ``factory.py`` passes no dropblock to the
  SpineNet builder. So the official SpineNet code cannot reproduce protocol A's DropBlock: enabling it here is an
  extension, UNVERIFIED beyond mirroring the ResNet blocks above.
* For contrast, the ImageNet ResNet (``models/official/resnet/resnet_main.py``, ``resnet_model.py``) selects groups
  (``dropblock_groups``, e.g. "3,4"; default '' and ``dropblock_size`` 7 in ``configs/resnet_config.py``), ramps
  keep_prob linearly from 1 to its target over training, and scales it per group to ``1 - (1 - kp) / 4**(4 - g)``.
  None of that exists in the detection code, and none of it is implemented here.

`torchvision.ops.drop_block2d` against TF's op (same within these notes):

* Same: per-element seeds with ``gamma = p*H*W / (size**2 * (H-size+1)*(W-size+1))`` (``p = 1 - keep_prob``), seeds
  only where the block fits, a max-pool of the seeds with an odd kernel of ``size`` (equivalent to TF's min-pool of
  the keep mask), rescaling by the kept fraction of the whole tensor, identity in eval mode or with ``p == 0``.
* Differs: (1) torchvision rescales by ``numel / (sum + 1e-6)`` (TF divides by the exact mean; irrelevant unless
  everything is dropped). (2) A map smaller than the block: torchvision clamps the size and uses the clamped size
  throughout; TF clamps only the seed region and the ``size**2`` term but keeps the unclamped size in gamma's
  denominator and the pool kernel (at 5x5 with size 7 both drop whole channels with probability ``p``; at 4x4 TF
  drops whole channels with probability ``p / 4``; at 6x6 TF divides by zero). (3) torchvision rejects an even
  clamped size, so an even map smaller than the block would raise; `DropBlock` passes the largest odd size that fits,
  which keeps the expected dropped fraction near ``p`` where TF's formula degenerates. (4) TF bounds the seed rows
  with the width (a bug for non-square maps); torchvision uses the height. Inputs are square in the TF recipes.
  Hence `DropBlock` wraps the library op instead of reimplementing TF's quirks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import DropBlock2d, drop_block2d


class DropPath(nn.Module):
    """Zero a sample's residual branch with probability `rate` during training, scaling survivors by 1/(1-rate).

    Identity in eval mode or when ``rate == 0``, as in both official implementations.
    """

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop path rate {rate} must lie in [0, 1)")
        self.rate = rate

    def _mask(self, x: Tensor) -> Tensor | None:
        """A per-sample 0/1 mask ``(N, 1, ..., 1)`` drawn for `x`, or None when nothing is dropped."""
        if not self.training or self.rate == 0.0:
            return None
        keep = 1.0 - self.rate
        return torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)

    def forward(self, x: Tensor) -> Tensor:
        mask = self._mask(x)
        return x if mask is None else x * mask / (1.0 - self.rate)

    def factor(self, x: Tensor) -> Tensor | None:
        """The per-sample factor ``mask / keep`` that `forward` would multiply `x` by (drawing the same random
        numbers), or None when it would return `x` unchanged."""
        mask = self._mask(x)
        return None if mask is None else mask / (1.0 - self.rate)

    def extra_repr(self) -> str:
        return f"rate={self.rate:.4f}"


class DropBlock(DropBlock2d):
    """`torchvision.ops.DropBlock2d` with TF's ``keep_prob`` argument and an odd block that always fits the map.

    Args:
        keep_prob: TF's ``dropblock_keep_prob``, in (0, 1]; the drop probability is ``1 - keep_prob``.
        block_size: TF's ``dropblock_size``, odd. On a map smaller than the block, the largest odd size that fits is
            used (see the module notes for how this differs from TF).
    """

    def __init__(self, keep_prob: float, block_size: int = 7) -> None:
        if not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"dropblock keep_prob {keep_prob} must lie in (0, 1]")
        if block_size < 1 or block_size % 2 == 0:
            raise ValueError(f"dropblock size {block_size} must be odd and >= 1")
        super().__init__(p=1.0 - keep_prob, block_size=block_size)
        self.keep_prob = keep_prob

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        fits = min(self.block_size, x.shape[-2], x.shape[-1])
        size = fits if fits % 2 == 1 else fits - 1
        return drop_block2d(x, self.p, size, inplace=False, eps=self.eps, training=True)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(keep_prob={self.keep_prob}, block_size={self.block_size})"
