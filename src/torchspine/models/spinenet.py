"""The SpineNet backbone: a scale-permuted network run from a precomputed `GraphPlan`.

Du et al., "SpineNet: Learning Scale-Permuted Backbone for Recognition and Localization", CVPR 2020
(arXiv 1912.05027). The structure, widths and numerics follow the official TensorFlow code, tensorflow/models
``official/vision/modeling/backbones/spinenet.py`` / ``spinenet_mobile.py`` and tensorflow/tpu
``models/official/detection/modeling/architecture/spinenet.py`` (both Apache-2.0); the topology is data
(`torchspine.specs`), and ``forward`` only executes the plan built from it in ``__init__``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn

from torchspine.errors import UsageError
from torchspine.layers.activations import get_act_layer
from torchspine.layers.blocks import BottleneckBlock, MBConvBlock, ResidualBlock
from torchspine.layers.conv import ConvNormAct, NormLayer
from torchspine.layers.padding import MaxPool2dSame, PadMode
from torchspine.layers.resample import PoolMode, Resample, ResampleSepConv
from torchspine.specs import (
    SPINENET_BLOCKS,
    SPINENET_STEM_FILTERS,
    TPU_SPINENET_NUM_BLOCKS,
    GraphPlan,
    NodePlan,
    ParentPlan,
    SpineNetCfg,
    plan_graph,
)

Semantics = Literal["tpu", "model_garden"]


@dataclass(frozen=True)
class Numerics:
    """The numerical conventions of one official implementation (they share the architecture)."""

    pad_mode: PadMode
    pool_mode: PoolMode
    norm_eps: float
    norm_momentum: float  # PyTorch convention: 1 - TF momentum


SEMANTICS: dict[str, Numerics] = {
    # tensorflow/tpu: conv2d_fixed_padding (symmetric) for strided convs, one 5x5/4 pool for a level ratio of 8,
    # BatchNormActivation(momentum=0.997, epsilon=1e-4) as in its RetinaNet configs.
    "tpu": Numerics(pad_mode="symmetric", pool_mode="single", norm_eps=1e-4, norm_momentum=1 - 0.997),
    # Model Garden: 'same' padding everywhere, chains of 3x3/2 pools, Keras BN(momentum=0.99, epsilon=1e-3).
    "model_garden": Numerics(pad_mode="same", pool_mode="chain", norm_eps=1e-3, norm_momentum=1 - 0.99),
}


def drop_path_blocks(cfg: SpineNetCfg, semantics: str) -> int:
    """The N of the stochastic-depth schedule ``rate * i / N`` that `semantics`' official code uses for `cfg`.

    Both official codes divide by the length of their block table. Model Garden's has 16 rows (a level-2 output
    last); tensorflow/tpu's has only the first 15 (`TPU_SPINENET_NUM_BLOCKS`), so with the paper's blocks under
    ``"tpu"`` the last built block drops with the full rate (0.2, not 0.1875). Any other block list (a searched
    spec, the mobile family) is its own table in both codes.
    """
    if semantics == "tpu" and cfg.blocks == SPINENET_BLOCKS:
        return TPU_SPINENET_NUM_BLOCKS
    return len(cfg.blocks)


@dataclass(frozen=True)
class FeatureInfo:
    """One output of the backbone, known without a forward pass."""

    key: str
    level: int
    stride: int
    channels: int


class ScalePermutedBlock(nn.Module):
    """Resample two parents (plus any merged out-degree-0 features), add, activate, run the block group."""

    def __init__(self, node: NodePlan, parents: list[nn.Module], group: nn.Sequential, act: nn.Module) -> None:
        super().__init__()
        self.index = node.index
        self.level = node.level
        self.sources = tuple(p.source for p in node.parents)
        self.merged = node.merged
        self.resample0, self.resample1 = parents
        self.act = act
        self.group = group

    def forward(self, feats: dict[int, Tensor], size: tuple[int, int]) -> Tensor:
        x = self.resample0(feats[self.sources[0]], size) + self.resample1(feats[self.sources[1]], size)
        for j in self.merged:
            x = x + feats[j]
        return self.group(self.act(x))


class SpineNet(nn.Module):
    """SpineNet backbone returning ``OrderedDict(p{min_level}..p{max_level})``, ascending level.

    Meets torchvision's detection-backbone contract (``out_channels`` and an ordered feature dict) and describes
    its outputs statically in ``feature_info``. Blocks that feed no endpoint in ``[min_level, max_level]`` are not
    built (Model Garden's level-2 output block for ``min_level=3``, for instance), so every parameter gets a
    gradient and the parameters equal the official models' exactly.

    Args:
        cfg: topology and widths.
        in_chans: input channels.
        semantics: which official implementation's numerics to follow: ``"tpu"`` (tensorflow/tpu: symmetric
            padding of strided convs, a single 5x5/4 pool for a level ratio of 8, BN eps 1e-4, momentum 0.997) or
            ``"model_garden"`` (TF ``'SAME'`` padding, chains of 3x3/2 pools, BN eps 1e-3, momentum 0.99). With
            identical weights the two differ by several percent, so a converted checkpoint must use its own.
        act: ``"relu"``, ``"swish"`` or ``"hard_swish"`` (TF names). The default, swish, is what the paper's best
            recipes (protocol C), the tensorflow/tpu class and Model Garden's released SpineNet-49/96/143 use.
        norm_eps: BatchNorm epsilon; None takes the semantics' default.
        norm_momentum: BatchNorm momentum in PyTorch's convention (``1 - TF momentum``); None takes the default.
        drop_path_rate: initial stochastic-depth rate; block i (1-based) drops its residual branches with
            ``rate * i / N`` during training, N being the block count of the chosen implementation's table
            (`drop_path_blocks`: 15 for tensorflow/tpu, 16 for Model Garden). Stem blocks never drop.
        se_gate: gate of the mobile blocks' squeeze-excitation; Model Garden's ``"hard_sigmoid"`` by default.
        dropblock_keep_prob: DropBlock keep probability in (0, 1] (the paper's protocol A), or None (default) for
            none, as both official SpineNets (tensorflow/tpu hard-codes it off). When set, every residual and
            bottleneck block at level >= `dropblock_min_level` applies `torchspine.layers.drop.DropBlock` where
            tensorflow/tpu's ResNet blocks do: after each BatchNorm and on the shortcut. UNVERIFIED extension: no
            official SpineNet code runs it. Constant over training, as in the tensorflow/tpu detection code.
        dropblock_size: DropBlock block size (odd).
        dropblock_min_level: lowest block level that gets DropBlock. 2 (default) means every block including the
            stem groups, as the tensorflow/tpu detection ResNet applies it to all four groups (levels 2-5).
    """

    def __init__(
        self,
        cfg: SpineNetCfg,
        *,
        in_chans: int = 3,
        semantics: Semantics = "tpu",
        act: str = "swish",
        norm_eps: float | None = None,
        norm_momentum: float | None = None,
        drop_path_rate: float = 0.0,
        se_gate: str = "hard_sigmoid",
        dropblock_keep_prob: float | None = None,
        dropblock_size: int = 7,
        dropblock_min_level: int = 2,
    ) -> None:
        super().__init__()
        if semantics not in SEMANTICS:
            raise UsageError(f"semantics={semantics!r}: expected one of {sorted(SEMANTICS)}")
        if cfg.family == "mobile" and semantics != "model_garden":
            raise UsageError(
                "SpineNet-Mobile follows Model Garden's SpineNetMobile; tensorflow/tpu's SpineNet-MBConv is a "
                "different model (swish/sigmoid squeeze-excitation) and is not implemented: use "
                "semantics='model_garden'"
            )
        if not 0.0 <= drop_path_rate < 1.0:
            raise UsageError(f"drop_path_rate={drop_path_rate}: expected a value in [0, 1)")
        if dropblock_keep_prob is not None:
            if cfg.family == "mobile":
                raise UsageError("dropblock_keep_prob: DropBlock is only available for the ResNet-block SpineNets")
            if not 0.0 < dropblock_keep_prob <= 1.0:
                raise UsageError(f"dropblock_keep_prob={dropblock_keep_prob}: expected a value in (0, 1]")
            if dropblock_size < 1 or dropblock_size % 2 == 0:
                raise UsageError(f"dropblock_size={dropblock_size}: expected an odd size >= 1")
        numerics = SEMANTICS[semantics]
        self.cfg = cfg
        self.plan: GraphPlan = plan_graph(cfg, drop_path_blocks=drop_path_blocks(cfg, semantics))
        self.in_chans = in_chans
        self.semantics = semantics
        self.act_name = act
        self.norm_eps = numerics.norm_eps if norm_eps is None else norm_eps
        self.norm_momentum = numerics.norm_momentum if norm_momentum is None else norm_momentum
        self.drop_path_rate = drop_path_rate
        self.dropblock_keep_prob = dropblock_keep_prob
        self.dropblock_size = dropblock_size
        self.dropblock_min_level = dropblock_min_level
        act_layer = get_act_layer(act)
        norm_layer: NormLayer = partial(nn.BatchNorm2d, eps=self.norm_eps, momentum=self.norm_momentum)
        self._pad_mode = numerics.pad_mode
        self._pool_mode = numerics.pool_mode
        self._norm_layer = norm_layer
        self._act_layer = act_layer
        self._se_gate_layer = get_act_layer(se_gate)

        stem_nodes = self.plan.nodes[: self.plan.num_stem]
        if cfg.family == "mobile":
            self.stem = ConvNormAct(
                in_chans, cfg.width(0), 3, stride=2, norm_layer=norm_layer, act_layer=act_layer, pad_mode=self._pad_mode
            )
            self.stem_pool: nn.Module = nn.Identity()
        else:
            self.stem = ConvNormAct(
                in_chans,
                SPINENET_STEM_FILTERS,
                7,
                stride=2,
                norm_layer=norm_layer,
                act_layer=act_layer,
                pad_mode=self._pad_mode,
            )
            self.stem_pool = MaxPool2dSame(3, 2)
        self.stem_blocks = nn.ModuleList([self._group(node) for node in stem_nodes])

        self.blocks = nn.ModuleDict()
        for i, node in enumerate(self.plan.blocks):
            if node.live:
                self.blocks[str(i)] = ScalePermutedBlock(
                    node, [self._resample(p) for p in node.parents], self._group(node), act_layer()
                )
        self.endpoints = nn.ModuleDict(
            {
                f"p{ep.level}": ConvNormAct(
                    ep.in_channels, ep.out_channels, 1, norm_layer=norm_layer, act_layer=act_layer
                )
                for ep in self.plan.endpoints
            }
        )
        self._endpoint_sources = tuple((f"p{ep.level}", ep.source) for ep in self.plan.endpoints)
        self._release = self._release_schedule()
        live_levels = [node.level for node in self.plan.nodes if node.live]
        self.max_block_level = max(live_levels)
        self._levels = tuple(sorted(set(live_levels)))
        self.out_channels: int = cfg.endpoints_num_filters
        self.feature_info: tuple[FeatureInfo, ...] = tuple(
            FeatureInfo(f"p{ep.level}", ep.level, 2**ep.level, ep.out_channels) for ep in self.plan.endpoints
        )
        self.reset_parameters()

    # -- construction -------------------------------------------------------------------------------------------

    def _group(self, node: NodePlan) -> nn.Sequential:
        """The `block_repeats` blocks of one node; only the first may change width or stride."""
        rate = self.drop_path_rate * node.drop_path_scale
        common = dict(
            norm_layer=self._norm_layer, act_layer=self._act_layer, drop_path_rate=rate, pad_mode=self._pad_mode
        )
        dropblock = {}
        if self.dropblock_keep_prob is not None and node.level >= self.dropblock_min_level:
            dropblock = dict(dropblock_keep_prob=self.dropblock_keep_prob, dropblock_size=self.dropblock_size)
        blocks: list[nn.Module] = []
        for r in range(self.cfg.block_repeats):
            in_ch = node.in_channels if r == 0 else node.out_channels
            stride = node.stride if r == 0 else 1
            if node.block_fn == "mbconv":
                blocks.append(
                    MBConvBlock(
                        in_ch,
                        node.out_channels,
                        stride=stride,
                        expand_ratio=self.cfg.expand_ratio,
                        se_ratio=self.cfg.se_ratio,
                        se_gate_layer=self._se_gate_layer,
                        **common,
                    )
                )
            elif node.block_fn == "bottleneck":
                blocks.append(BottleneckBlock(in_ch, node.width, stride=stride, **common, **dropblock))
            else:
                blocks.append(ResidualBlock(in_ch, node.width, stride=stride, **common, **dropblock))
        return nn.Sequential(*blocks)

    def _resample(self, parent: ParentPlan) -> nn.Module:
        if self.cfg.family == "mobile":
            return ResampleSepConv(
                parent.in_channels,
                parent.out_channels,
                parent.level_diff,
                norm_layer=self._norm_layer,
                act_layer=self._act_layer,
                pad_mode=self._pad_mode,
            )
        return Resample(
            parent.in_channels,
            parent.mid_channels,
            parent.out_channels,
            parent.level_diff,
            norm_layer=self._norm_layer,
            act_layer=self._act_layer,
            pad_mode=self._pad_mode,
            pool_mode=self._pool_mode,
        )

    def _release_schedule(self) -> dict[int, tuple[int, ...]]:
        """Features that can be dropped after each block, because no later block or endpoint reads them.

        Frees intermediate maps early, which lowers peak memory in inference (autograd keeps what it needs).
        """
        last_use: dict[int, int] = {}
        for block in self.blocks.values():
            for j in (*block.sources, *block.merged):
                last_use[j] = block.index
        kept = {source for _, source in self._endpoint_sources}
        release: dict[int, list[int]] = {}
        for j, user in last_use.items():
            if j not in kept:
                release.setdefault(user, []).append(j)
        return {user: tuple(sorted(js)) for user, js in release.items()}

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """TF initialisation: conv kernels VarianceScaling(1, fan_in, truncated normal), biases 0, BN (1, 0)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                # Keras divides by the std of a unit normal truncated to [-2, 2] so the result has variance 1/fan_in.
                std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
                nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_parameters()

    # -- forward ------------------------------------------------------------------------------------------------

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4:
            raise UsageError(f"SpineNet expects an (N, C, H, W) image batch, got a tensor of shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise UsageError(
                f"SpineNet expects float images, got {x.dtype}: convert (and normalise) first, e.g. "
                "x.float() / 255 for uint8 pixels, then subtract the mean and divide by the std"
            )
        if x.shape[1] != self.in_chans:
            raise UsageError(
                f"SpineNet was built for {self.in_chans} input channels, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}; images must be NCHW)"
            )
        smallest = 2**self.max_block_level
        if x.shape[-2] < smallest or x.shape[-1] < smallest:
            raise UsageError(
                f"input {x.shape[-2]}x{x.shape[-1]} is too small: this SpineNet has level-{self.max_block_level} "
                f"blocks (stride {smallest}), so H and W must be at least {smallest}"
            )

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """Args: x: images ``(N, in_chans, H, W)``, any H, W >= ``2**max_block_level``.

        Returns:
            ``OrderedDict`` ``p{level} -> (N, out_channels, ceil(H / 2**level), ceil(W / 2**level))``, ascending.
        """
        self._check_input(x)
        height, width = x.shape[-2:]
        sizes = {lvl: ((height + 2**lvl - 1) // 2**lvl, (width + 2**lvl - 1) // 2**lvl) for lvl in self._levels}
        x = self.stem_pool(self.stem(x))
        feats: dict[int, Tensor] = {}
        for i, group in enumerate(self.stem_blocks):
            x = group(x)
            feats[i] = x
        for block in self.blocks.values():
            feats[block.index] = block(feats, sizes[block.level])
            for j in self._release.get(block.index, ()):
                del feats[j]
        out: OrderedDict[str, Tensor] = OrderedDict()
        for key, source in self._endpoint_sources:
            out[key] = self.endpoints[key](feats[source])
        return out

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"family={c.family}, levels={c.min_level}..{c.max_level}, endpoints={c.endpoints_num_filters}, "
            f"scale={c.filter_size_scale}, alpha={c.resample_alpha}, repeats={c.block_repeats}, "
            f"semantics={self.semantics}, act={self.act_name}, bn_eps={self.norm_eps}"
        ) + (
            ""
            if self.dropblock_keep_prob is None
            else f", dropblock(keep_prob={self.dropblock_keep_prob}, size={self.dropblock_size}, "
            f"min_level={self.dropblock_min_level})"
        )
