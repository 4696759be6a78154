"""Variable names of tensorflow/tpu SpineNet checkpoints, derived from a model's plan.

tensorflow/tpu builds its graph with ``tf.layers`` in ``tf.compat.v1`` variable scopes, so a variable's name is
fixed by the order in which convolutions are created within a scope (``conv2d``, ``conv2d_1``, ...), each followed
by exactly one batch norm with the same suffix (``batch_normalization_k``). The rules (reference
tensorflow/tpu variable names; verified against the fixtures written by the official code):

* ``spinenet/``: the stem 7x7 conv, then the stem bottleneck groups (projection shortcut first, then conv1..3,
  for every repeat), then the endpoint 1x1 convs, ascending level.
* ``spinenet/sub_policy{i}/resample_with_alpha_resample_{i}_{p}/``: resampling path of parent p of block i:
  1x1 reduce, [3x3/2], 1x1 project.
* ``spinenet/sub_policy{i}/scale_permuted_block_{i+2}/``: the block group, numbering continued across repeats.
"""

from __future__ import annotations

from torchspine.convert.transforms import BN_SUFFIXES
from torchspine.models.spinenet import SpineNet


def _suffix(k: int) -> str:
    return "" if k == 0 else f"_{k}"


class _Scope:
    """Numbers ``conv2d``/``batch_normalization`` pairs in creation order inside one variable scope."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    def next(self) -> tuple[str, str]:
        k = self.count
        self.count += 1
        return f"{self.name}/conv2d{_suffix(k)}", f"{self.name}/batch_normalization{_suffix(k)}"


def tpu_backbone_units(model: SpineNet, root: str = "spinenet") -> list[tuple[str, str, str]]:
    """``(torch ConvNormAct prefix, tf conv scope, tf batch-norm scope)`` for every conv of `model`.

    Only the ResNet-block family exists in tensorflow/tpu's ``spinenet.py``.
    """
    if model.cfg.family != "spinenet":
        raise ValueError("tensorflow/tpu names are defined for the ResNet-block SpineNet family only")
    units: list[tuple[str, str, str]] = []
    top = _Scope(root)
    units.append(("stem", *top.next()))
    for g, group in enumerate(model.stem_blocks):
        for r, block in enumerate(group):
            prefix = f"stem_blocks.{g}.{r}"
            if block.shortcut is not None:
                units.append((f"{prefix}.shortcut", *top.next()))
            for conv in ("conv1", "conv2", "conv3"):
                units.append((f"{prefix}.{conv}", *top.next()))
    for key in model.endpoints:
        units.append((f"endpoints.{key}", *top.next()))
    for key, block in model.blocks.items():
        i = int(key)
        policy = f"{root}/sub_policy{i}"
        for p in (0, 1):
            resample = getattr(block, f"resample{p}")
            scope = _Scope(f"{policy}/resample_with_alpha_resample_{i}_{p}")
            units.append((f"blocks.{i}.resample{p}.reduce", *scope.next()))
            if resample.level_diff > 0:
                units.append((f"blocks.{i}.resample{p}.downsample.0", *scope.next()))
            units.append((f"blocks.{i}.resample{p}.project", *scope.next()))
        scope = _Scope(f"{policy}/scale_permuted_block_{i + model.plan.num_stem}")
        for r, sub in enumerate(block.group):
            convs = ("conv1", "conv2", "conv3") if hasattr(sub, "conv3") else ("conv1", "conv2")
            for conv in convs:
                units.append((f"blocks.{i}.group.{r}.{conv}", *scope.next()))
    return units


def tpu_retinanet_head_names(num_convs: int, levels: range) -> dict[str, str]:
    """torch key (relative to the head) -> tensorflow/tpu variable name, for ``heads.RetinanetHead``.

    ``retinanet/{class,box}_net/{class,box}-{i}`` are the shared tower convs, ``...-{i}-{level}`` their per-level
    batch norms and ``...-predict`` the predictors (tensorflow/tpu ``heads.py``).
    """
    names: dict[str, str] = {}
    for tower, net, short in (("cls", "class_net", "class"), ("box", "box_net", "box")):
        scope = f"retinanet/{net}/{short}"
        for i in range(num_convs):
            names[f"{tower}.convs.{i}.weight"] = f"{scope}-{i}/kernel"
            names[f"{tower}.convs.{i}.bias"] = f"{scope}-{i}/bias"
            for li, level in enumerate(levels):
                for tf_suffix, torch_suffix in BN_SUFFIXES.items():
                    names[f"{tower}.norms.{li}.{i}.{torch_suffix}"] = f"{scope}-{i}-{level}/{tf_suffix}"
        names[f"{tower}.predict.weight"] = f"{scope}-predict/kernel"
        names[f"{tower}.predict.bias"] = f"{scope}-predict/bias"
    return names


def tpu_maskrcnn_head_names(
    *, rpn_num_convs: int, num_convs: int, num_fcs: int, levels: range
) -> list[tuple[str, str, str]]:
    """``(torch key, tensorflow/tpu variable, transform)`` of the Mask R-CNN heads (torch keys of torchvision's
    ``MaskRCNN`` with torchspine's heads; tensorflow/tpu ``heads.RpnHead`` / ``FastrcnnHead`` / ``MaskrcnnHead``).

    * ``rpn_head/rpn[-i]``: the shared convs; ``rpn_head/rpn-l{level}-bn[-i]`` their per-level BNs;
      ``rpn_head/rpn-class`` and ``rpn_head/rpn-box`` the 1x1 predictors.
    * ``fast_rcnn_head/conv_{i}`` then ``fc{6 + j}``, each followed by an unnamed BN, numbered in creation order
      (``batch_normalization[_k]``); ``class-predict`` and ``box-predict`` are dense layers.
    * ``mask_head/mask-conv-l{i}``, the transposed conv ``conv5-mask``, each with an unnamed BN, and the 1x1
      ``mask_fcn_logits``.

    Transforms: ``conv`` (HWIO kernels; the transposed conv's ``[kh, kw, out, in]`` takes the same permutation to
    PyTorch's ``[in, out, kh, kw]``), ``dense``, ``dense_nhwc`` (the first FC: the official head flattens NHWC RoI
    features), ``copy``.
    """
    entries: list[tuple[str, str, str]] = []

    def conv(torch_prefix: str, tf_scope: str, transform: str = "conv") -> None:
        entries.append((f"{torch_prefix}.weight", f"{tf_scope}/kernel", transform))
        entries.append((f"{torch_prefix}.bias", f"{tf_scope}/bias", "copy"))

    def bn(torch_prefix: str, tf_scope: str) -> None:
        entries.extend((f"{torch_prefix}.{t}", f"{tf_scope}/{f}", "copy") for f, t in BN_SUFFIXES.items())

    for i in range(rpn_num_convs):
        conv(f"rpn.head.convs.{i}", "rpn_head/rpn" + ("" if i == 0 else f"-{i}"))
        for li, level in enumerate(levels):
            bn(f"rpn.head.norms.{li}.{i}", f"rpn_head/rpn-l{level}-bn" + ("" if i == 0 else f"-{i}"))
    conv("rpn.head.cls_logits", "rpn_head/rpn-class")
    conv("rpn.head.bbox_pred", "rpn_head/rpn-box")

    box = _Scope("fast_rcnn_head")
    for i in range(num_convs):
        conv(f"roi_heads.box_head.convs.{i}.0", f"fast_rcnn_head/conv_{i}")
        bn(f"roi_heads.box_head.convs.{i}.1", box.next()[1])
    for j in range(num_fcs):
        conv(f"roi_heads.box_head.fcs.{j}.0", f"fast_rcnn_head/fc{6 + j}", "dense_nhwc" if j == 0 else "dense")
        bn(f"roi_heads.box_head.fcs.{j}.1", box.next()[1])
    conv("roi_heads.box_predictor.cls_score", "fast_rcnn_head/class-predict", "dense")
    conv("roi_heads.box_predictor.bbox_pred", "fast_rcnn_head/box-predict", "dense")

    mask = _Scope("mask_head")
    for i in range(num_convs):
        conv(f"roi_heads.mask_head.{i}.0", f"mask_head/mask-conv-l{i}")
        bn(f"roi_heads.mask_head.{i}.1", mask.next()[1])
    conv("roi_heads.mask_predictor.upsample", "mask_head/conv5-mask")
    bn("roi_heads.mask_predictor.norm", mask.next()[1])
    conv("roi_heads.mask_predictor.logits", "mask_head/mask_fcn_logits")
    return entries
