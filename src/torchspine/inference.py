"""Inference fast path: fold every BatchNorm into the convolution (or linear layer) before it.

In eval mode a BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``, so it
can be folded into the weights and bias of the preceding convolution (torch.nn.utils.fusion's
``fuse_conv_bn_eval`` / ``fuse_linear_bn_eval`` do the arithmetic). That removes one full read and write of every
activation map per BN, about a third of SpineNet's layers. The official detectors' heads share their convolutions
across pyramid levels but keep one BatchNorm per level (see `torchspine.models.detection.heads`); folded, each level
gets its own copy of the shared convs (the head's conv parameters grow by the number of levels, the compute does
not change).

Folding is exact in real arithmetic; in float32 it moves outputs by rounding only (about 1e-6 relative, tested to
stay under 1e-5 for every variant family, both numerics and every head).

With BN folded, a scale-permuted block's projections are plain 1x1 convolutions, and the block's merge is
rearranged without changing its function (`FusedScalePermutedBlock`): up-sampled parents are projected before
being up-sampled, and the merge's addition moves into a projection's convolution.

Then, on CPU, each folded convolution runs with its activation, and each residual block's last convolution with its
shortcut addition, as one oneDNN call (`torchspine.layers.fused`): the same fusion TF's grappler applies to the
official code, which removes another read and write of the feature map per layer.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from torchspine.layers.blocks import BottleneckBlock, ResidualBlock
from torchspine.layers.conv import ConvNormAct
from torchspine.layers.fused import ConvAct, FusedResidual, activate_
from torchspine.layers.resample import Resample, ResampleSepConv, fit_size, resize_to
from torchspine.layers.winograd import apply_winograd
from torchspine.models.detection.heads import SeparableConv2d, _Tower
from torchspine.models.detection.mask_rcnn import MaskPredictor, RPNHead
from torchspine.models.spinenet import ScalePermutedBlock

__all__ = [
    "FusedRPNHead",
    "FusedScalePermutedBlock",
    "FusedTower",
    "fuse_activations",
    "fuse_batchnorm",
    "optimize_for_inference",
]

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def _fold(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    """`conv` (a plain, transposed or separable convolution) with `bn` folded in."""
    if isinstance(conv, SeparableConv2d):
        fused = copy.copy(conv)  # shares the depthwise conv; only the pointwise one changes
        fused._modules = dict(conv._modules)
        fused.pointwise = fuse_conv_bn_eval(conv.pointwise, bn)
        return fused
    return fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))


def _per_level_layers(convs: nn.ModuleList, norms: nn.ModuleList, act: nn.Module) -> nn.ModuleList:
    """For each level, the shared `convs` with that level's BatchNorms (``norms[level]``) folded in, as `ConvAct`
    layers (plain operations until `fuse_activations`)."""
    return nn.ModuleList(
        nn.ModuleList(ConvAct(_fold(conv, bn), act, onednn=False) for conv, bn in zip(convs, level, strict=True))
        for level in norms
    )


class FusedTower(nn.Module):
    """A RetinaNet head tower (`_Tower`) with each level's BatchNorms folded into a per-level copy of the convs.

    Same call signature as `_Tower`: ``forward(x, level_index)``.
    """

    def __init__(self, tower: _Tower) -> None:
        super().__init__()
        self.levels = _per_level_layers(tower.convs, tower.norms, tower.act)
        self.predict = tower.predict

    def forward(self, x: Tensor, level_index: int) -> Tensor:
        for layer in self.levels[level_index]:
            x = layer(x)
        return self.predict(x)


class FusedRPNHead(nn.Module):
    """The Mask R-CNN `RPNHead` with its per-level BatchNorms folded into per-level copies of the shared convs."""

    def __init__(self, head: RPNHead) -> None:
        super().__init__()
        self.levels = _per_level_layers(head.convs, head.norms, head.act)
        self.cls_logits = head.cls_logits
        self.bbox_pred = head.bbox_pred

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, boxes = [], []
        for x, layers in zip(features, self.levels, strict=True):
            for layer in layers:
                x = layer(x)
            logits.append(self.cls_logits(x))
            boxes.append(self.bbox_pred(x))
        return logits, boxes


class FusedScalePermutedBlock(nn.Module):
    """A `ScalePermutedBlock` at inference, with its BatchNorms folded: the same function, less work.

    * An up-sampled parent is projected (1x1 conv) at its own resolution, then up-sampled: nearest-neighbour
      up-sampling only repeats pixels, so it commutes with a per-pixel layer, and the projection runs on 4x or 16x
      fewer pixels than the official code's (which up-samples the narrower reduced map, then projects).
    * The other parent's projection adds the remaining inputs of the merge inside its convolution
      (`ConvAct.forward_add`, one oneDNN call on CPU), and the merge's activation runs in place.

    Same call signature as `ScalePermutedBlock`.
    """

    def __init__(self, block: ScalePermutedBlock) -> None:
        super().__init__()
        self.index = block.index
        self.level = block.level
        self.sources = block.sources
        self.merged = block.merged
        self.resample0, self.resample1 = block.resample0, block.resample1
        self.act = block.act
        self.group = block.group

    def forward(self, feats: dict[int, Tensor], size: tuple[int, int], checkpoint: bool = False) -> Tensor:
        del checkpoint  # inference only
        terms: list[Tensor] = []
        fused_add: tuple[nn.Module, Tensor] | None = None  # a projection that will add `terms` in its convolution
        for resample, source in zip((self.resample0, self.resample1), self.sources, strict=True):
            x = resample.pre_project(feats[source])
            if resample.level_diff < 0:
                terms.append(resize_to(resample.project(x), resample.level_diff, size))
            elif fused_add is None:
                fused_add = (resample.project, fit_size(x, size))
            else:
                terms.append(resample.project(fit_size(x, size)))
        terms.extend(feats[j] for j in self.merged)
        x = terms[0]
        for t in terms[1:]:
            x = x + t
        if fused_add is not None:
            project, y = fused_add
            x = project.forward_add(y, x) if isinstance(project, ConvAct) else project(y) + x
        return self.group(activate_(self.act, x))


def _pointwise_projections(block: ScalePermutedBlock) -> bool:
    """Whether both parents' projections are a 1x1 convolution with its BatchNorm folded (nothing spatial)."""
    for resample in (block.resample0, block.resample1):
        project = resample.project
        if not (
            type(resample) in (Resample, ResampleSepConv) and _folded(project) and isinstance(project.pad, nn.Identity)
        ):
            return False
        conv = project.conv
        if not (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride == (1, 1)):
            return False
    return True


def _fuse_sequential(seq: nn.Sequential) -> None:
    """Fold each ``BatchNorm2d`` that directly follows a convolution, and each ``BatchNorm1d`` that directly follows
    a linear layer (the Mask R-CNN box head's FCs), inside `seq` (the BatchNorm is replaced by an identity)."""
    children = list(seq._modules)
    for prev, cur in itertools.pairwise(children):
        layer, bn = seq._modules[prev], seq._modules[cur]
        if isinstance(layer, _CONVS) and type(bn) is nn.BatchNorm2d:
            seq._modules[prev] = _fold(layer, bn)
            seq._modules[cur] = nn.Identity()
        elif type(layer) is nn.Linear and type(bn) is nn.BatchNorm1d:
            seq._modules[prev] = fuse_linear_bn_eval(layer, bn)
            seq._modules[cur] = nn.Identity()


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm of `model` (which must be in eval mode) into its convolution or linear layer, in place.

    Handles the SpineNet blocks and resampling paths (`ConvNormAct`), the RetinaNet head (per-level BN), the Mask
    R-CNN RPN, box, mask heads and mask predictor, and any ``nn.Sequential`` of conv then BN. Other modules are left
    as they are. Scale-permuted blocks whose projections are then plain 1x1 convs become
    `FusedScalePermutedBlock`. Returns `model`.
    """
    if model.training:
        raise ValueError("fuse_batchnorm needs a model in eval mode (BatchNorm running statistics), call .eval() first")
    replacements: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, ConvNormAct) and type(module.bn) is nn.BatchNorm2d:
            module.conv = _fold(module.conv, module.bn)
            module.bn = nn.Identity()
        elif isinstance(module, _Tower):
            replacements.append((name, FusedTower(module)))
        elif isinstance(module, RPNHead):
            replacements.append((name, FusedRPNHead(module)))
        elif isinstance(module, MaskPredictor) and type(module.norm) is nn.BatchNorm2d:
            module.upsample = _fold(module.upsample, module.norm)
            module.norm = nn.Identity()
        elif isinstance(module, nn.Sequential):
            _fuse_sequential(module)
    for name, module in model.named_modules():  # after folding: the projections are then plain 1x1 convs
        if type(module) is ScalePermutedBlock and _pointwise_projections(module):
            replacements.append((name, FusedScalePermutedBlock(module)))
    for name, new in replacements:
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
    return model


def _replace(model: nn.Module, convert: Callable[[nn.Module], nn.Module | None]) -> None:
    """Replace each submodule of `model` for which `convert` returns a module (matches must not nest)."""
    found = [(name, new) for name, module in model.named_modules() if name and (new := convert(module)) is not None]
    for name, new in found:
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def _folded(layer: nn.Module) -> bool:
    return isinstance(layer, ConvNormAct) and isinstance(layer.bn, nn.Identity)


def _conv_act(layer: ConvNormAct) -> ConvAct:
    return ConvAct(layer.conv, layer.act, layer.pad)


def _fused_block(block: nn.Module) -> FusedResidual | None:
    if isinstance(block, BottleneckBlock):
        convs = (block.conv1, block.conv2, block.conv3)
    elif isinstance(block, ResidualBlock):
        convs = (block.conv1, block.conv2)
    else:
        return None
    if not all(_folded(c) for c in convs) or (block.shortcut is not None and not _folded(block.shortcut)):
        return None
    *body, last = convs
    shortcut = None if block.shortcut is None else _conv_act(block.shortcut)
    return FusedResidual(nn.Sequential(*map(_conv_act, body)), _conv_act(last), shortcut, block.act)


def fuse_activations(model: nn.Module) -> nn.Module:
    """After `fuse_batchnorm`: make each folded convolution run with its activation, and each residual block's last
    convolution with its shortcut addition, as one oneDNN call on CPU (`torchspine.layers.fused`), in place.

    On other devices, under tracing, ``torch.compile`` or export, the new modules run the plain operations.
    Returns `model`.
    """
    if model.training:
        raise ValueError("fuse_activations needs a model in eval mode, call .eval() first")
    _replace(model, _fused_block)
    _replace(model, lambda m: _conv_act(m) if _folded(m) else None)
    _replace(model, lambda m: ConvAct(m.conv, m.act, m.pad) if isinstance(m, ConvAct) and m.attr is None else None)
    return model


_fuse_activations = fuse_activations  # optimize_for_inference's keyword argument shadows the name


def optimize_for_inference(
    model: nn.Module,
    *,
    channels_last: bool | None = None,
    fuse_activations: bool = True,
    winograd: bool = False,
    inplace: bool = False,
) -> nn.Module:
    """The inference fast path of any torchspine model: eval mode, BatchNorm folded, gradients off.

    Args:
        model: a SpineNet, classifier, RetinaNet or Mask R-CNN (as `torchspine.load_model` returns them).
        channels_last: also convert the weights to the channels-last memory format (convolutions then run NHWC,
            and their outputs stay NHWC whatever the input's format). None (default): when the model is on CPU and
            `fuse_activations` is on, where oneDNN then skips a reorder of every feature map before and after each
            convolution (SpineNet-49 backbone at 640: about 10 % faster). On GPUs it helps with tensor cores (fp16,
            bf16); measure for yours.
        fuse_activations: on CPU, run each convolution with its activation (and each residual block's last one
            with its addition) as one oneDNN call; elsewhere the plain operations run. Off for export, so the
            exported graph holds only standard operations.
        winograd: on CPU, run the 3x3 stride-1 convolutions on maps of at least 32x32 pixels (the detection heads'
            P3/P4 towers and predictors) as Winograd F(6x6, 3x3) through NNPACK (`torchspine.layers.winograd`):
            RetinaNet-SpineNet-49 at 640 on a 2-core CPU: network 12 %, whole detector 18 % less time, but ~1e-5
            relative error per such convolution instead of ~1e-6, so off by default.
        inplace: modify `model` itself instead of a copy (saves the copy's memory; `model` is unusable for training
            afterwards).

    Returns:
        The optimised model, in eval mode; outputs equal the original's up to float rounding (< 1e-5 relative;
        < 1e-4 with `winograd`).
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    fuse_batchnorm(model)
    if fuse_activations:
        _fuse_activations(model)
    model.requires_grad_(False)
    if channels_last is None:
        channels_last = fuse_activations and all(p.device.type == "cpu" for p in model.parameters())
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if winograd:  # the heads only: the backbones' 3x3 convolutions are narrower, and faster fused in oneDNN
        heads = [m for m in model.modules() if isinstance(m, FusedTower | FusedRPNHead)]  # before replacing any
        for head in heads:
            apply_winograd(head)
    return model
