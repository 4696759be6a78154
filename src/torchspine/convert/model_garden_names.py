"""Variable names of Model Garden (TF2 object-based) SpineNet checkpoints.

Keys are object-graph paths ending in ``/.ATTRIBUTES/VARIABLE_VALUE``. The backbone's layers appear as
``backbone/layer_with_weights-K`` in Keras' topological order, derived from the model's plan by
`torchspine.convert.model_garden_order`; inside a block layer the sub-layers keep their attribute names
(``_conv1``, ``_norm1``, ``_squeeze_excitation/_se_reduce``, ...). The RetinaNet head (``dense_prediction_heads.
RetinaNetHead``) stores ``_cls_convs/{i}``, ``_cls_norms/{level_index}/{i}``, ``_classifier`` and the ``_box_*``
equivalents. Model Garden trainers also reach the same objects as ``model/_backbone/...`` and ``model/_head/...``.
"""

from __future__ import annotations

from torchspine.convert.model_garden_order import model_garden_layer_roles
from torchspine.convert.transforms import BN_SUFFIXES
from torchspine.models.spinenet import SpineNet

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"

# (torch suffix, TF sub-path, transform) for the parts of each Keras layer kind.
_CONV = [("conv.weight", "kernel", "conv")]
_DEPTHWISE = [("conv.weight", "depthwise_kernel", "depthwise")]
_BN = [(f"bn.{t}", f, "copy") for f, t in BN_SUFFIXES.items()]


def _conv_bn(torch_prefix: str, tf_conv: str, tf_norm: str, depthwise: bool = False) -> list[tuple[str, str, str]]:
    kernel = "depthwise_kernel" if depthwise else "kernel"
    parts = [(f"{torch_prefix}.conv.weight", f"{tf_conv}/{kernel}", "depthwise" if depthwise else "conv")]
    parts += [(f"{torch_prefix}.bn.{t}", f"{tf_norm}/{f}", "copy") for f, t in BN_SUFFIXES.items()]
    return parts


def _block_parts(kind: str, has_shortcut: bool) -> list[tuple[str, str, str]]:
    """(torch suffix, TF sub-path, transform) inside one Keras block layer."""
    if kind == "mbconv":
        parts = _conv_bn("expand", "_conv0", "_norm0") + _conv_bn("depthwise", "_conv1", "_norm1", depthwise=True)
        for torch_name, tf_name in (("reduce", "_se_reduce"), ("expand", "_se_expand")):
            parts.append((f"se.{torch_name}.weight", f"_squeeze_excitation/{tf_name}/kernel", "conv"))
            parts.append((f"se.{torch_name}.bias", f"_squeeze_excitation/{tf_name}/bias", "copy"))
        return parts + _conv_bn("project", "_conv2", "_norm2")
    convs = 3 if kind == "bottleneck" else 2
    parts = _conv_bn("shortcut", "_shortcut", "_norm0") if has_shortcut else []
    for n in range(1, convs + 1):
        parts += _conv_bn(f"conv{n}", f"_conv{n}", f"_norm{n}")
    return parts


def model_garden_backbone_names(model: SpineNet, root: str = "backbone") -> list[tuple[str, str, str]]:
    """``(torch key, TF checkpoint key, transform)`` for every backbone weight and BN statistic of `model`."""
    modules = dict(model.named_modules())
    entries: list[tuple[str, str, str]] = []
    for k, role in enumerate(model_garden_layer_roles(model)):
        layer = f"{root}/layer_with_weights-{k}"
        if role.kind == "conv":
            parts = [(f"{role.prefix}.{t}", f, x) for t, f, x in _CONV]
        elif role.kind == "depthwise":
            parts = [(f"{role.prefix}.{t}", f, x) for t, f, x in _DEPTHWISE]
        elif role.kind == "bn":
            parts = [(f"{role.prefix}.{t}", f, x) for t, f, x in _BN]
        else:
            has_shortcut = getattr(modules[role.prefix], "shortcut", None) is not None
            parts = [(f"{role.prefix}.{t}", f, x) for t, f, x in _block_parts(role.kind, has_shortcut)]
        entries += [(torch_key, f"{layer}/{tf_path}{SUFFIX}", transform) for torch_key, tf_path, transform in parts]
    return entries


def model_garden_head_names(num_convs: int, num_levels: int, separable: bool, root: str = "head") -> dict[str, str]:
    """torch key (relative to the head) -> Model Garden key, for ``RetinaNetHead``."""
    names: dict[str, str] = {}
    for tower, tf_tower, predictor in (("cls", "cls", "_classifier"), ("box", "box", "_box_regressor")):
        convs = [(f"{tower}.convs.{i}", f"{root}/_{tf_tower}_convs/{i}") for i in range(num_convs)]
        for torch_prefix, tf_prefix in [*convs, (f"{tower}.predict", f"{root}/{predictor}")]:
            if separable:
                names[f"{torch_prefix}.depthwise.weight"] = f"{tf_prefix}/depthwise_kernel{SUFFIX}"
                names[f"{torch_prefix}.pointwise.weight"] = f"{tf_prefix}/pointwise_kernel{SUFFIX}"
                names[f"{torch_prefix}.pointwise.bias"] = f"{tf_prefix}/bias{SUFFIX}"
            else:
                names[f"{torch_prefix}.weight"] = f"{tf_prefix}/kernel{SUFFIX}"
                names[f"{torch_prefix}.bias"] = f"{tf_prefix}/bias{SUFFIX}"
        for li in range(num_levels):
            for i in range(num_convs):
                for tf_suffix, torch_suffix in BN_SUFFIXES.items():
                    names[f"{tower}.norms.{li}.{i}.{torch_suffix}"] = (
                        f"{root}/_{tf_tower}_norms/{li}/{i}/{tf_suffix}{SUFFIX}"
                    )
    return names
