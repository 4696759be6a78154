"""Map weights dumped by ``tf_reference/model_garden.py`` (Keras classes in creation order) onto a SpineNet.

Model Garden creates its layers in call order: the stem, then for every block the resampling path of parent 0
(1x1, [3x3/2 | depthwise 3x3/2 ...], 1x1, each with its BN), that of parent 1, and the block group; then the
endpoints. Walking torchspine's modules in the same order gives, per Keras class, the torch module of each
creation index. (The object-based checkpoint keys, ``layer_with_weights-K``, use a topological order instead; the
converter derives that one.)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from torchspine.convert.model_garden_order import KerasLayerRole
from torchspine.convert.transforms import BN_SUFFIXES, conv_kernel
from torchspine.models.spinenet import SpineNet


def _bn(state: dict, prefix: str, arrays: Mapping[str, np.ndarray], key: str) -> None:
    for tf_name, torch_name in BN_SUFFIXES.items():
        state[f"{prefix}.{torch_name}"] = torch.from_numpy(np.array(arrays[f"{key}/{tf_name}"]))


def mg_state_dict(model: SpineNet, arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The state dict of `model` from Model Garden arrays; raises KeyError on any missing array."""
    roles = creation_order_roles(model)
    state: dict[str, torch.Tensor] = {}
    for k, role in enumerate(roles["Conv2D"]):
        state[f"{role.prefix}.conv.weight"] = conv_kernel(arrays[f"Conv2D/{k}/kernel"])
    for k, role in enumerate(roles["DepthwiseConv2D"]):
        kernel = arrays[f"DepthwiseConv2D/{k}/depthwise_kernel"]
        state[f"{role.prefix}.conv.weight"] = conv_kernel(kernel, depthwise=True)
    for k, role in enumerate(roles["BatchNormalization"]):
        _bn(state, f"{role.prefix}.bn", arrays, f"BatchNormalization/{k}")
    resnet_parts = {
        "shortcut": ("_shortcut", "_norm0"),
        "conv1": ("_conv1", "_norm1"),
        "conv2": ("_conv2", "_norm2"),
        "conv3": ("_conv3", "_norm3"),
    }
    for cls in ("BottleneckBlock", "ResidualBlock", "InvertedBottleneckBlock"):
        for k, role in enumerate(roles[cls]):
            key, prefix = f"{cls}/{k}", role.prefix
            if cls == "InvertedBottleneckBlock":
                state[f"{prefix}.expand.conv.weight"] = conv_kernel(arrays[f"{key}/_conv0/kernel"])
                _bn(state, f"{prefix}.expand.bn", arrays, f"{key}/_norm0")
                state[f"{prefix}.depthwise.conv.weight"] = conv_kernel(
                    arrays[f"{key}/_conv1/depthwise_kernel"], depthwise=True
                )
                _bn(state, f"{prefix}.depthwise.bn", arrays, f"{key}/_norm1")
                for part, name in (("reduce", "_se_reduce"), ("expand", "_se_expand")):
                    se = f"{key}/_squeeze_excitation/{name}"
                    state[f"{prefix}.se.{part}.weight"] = conv_kernel(arrays[f"{se}/kernel"])
                    state[f"{prefix}.se.{part}.bias"] = torch.from_numpy(np.array(arrays[f"{se}/bias"]))
                state[f"{prefix}.project.conv.weight"] = conv_kernel(arrays[f"{key}/_conv2/kernel"])
                _bn(state, f"{prefix}.project.bn", arrays, f"{key}/_norm2")
                continue
            for part, (conv, norm) in resnet_parts.items():
                if f"{key}/{conv}/kernel" in arrays:
                    state[f"{prefix}.{part}.conv.weight"] = conv_kernel(arrays[f"{key}/{conv}/kernel"])
                    _bn(state, f"{prefix}.{part}.bn", arrays, f"{key}/{norm}")
    return state


def creation_order_roles(model: SpineNet) -> dict[str, list[KerasLayerRole]]:
    """Per Keras class, the torchspine role of each creation index.

    Model Garden creates the stem, then per block the resampling path of parent 0 (1x1, [3x3/2 | depthwise
    3x3/2 ...], 1x1, each with its BN), that of parent 1 and the block group, then the endpoints.
    """
    mobile = model.cfg.family == "mobile"
    roles: dict[str, list[KerasLayerRole]] = {
        "Conv2D": [KerasLayerRole("conv", "stem")],
        "DepthwiseConv2D": [],
        "BatchNormalization": [KerasLayerRole("bn", "stem")],
        "BottleneckBlock": [],
        "ResidualBlock": [],
        "InvertedBottleneckBlock": [],
    }
    block_class = {"BottleneckBlock": "bottleneck", "ResidualBlock": "residual", "MBConvBlock": "mbconv"}
    keras_class = {"bottleneck": "BottleneckBlock", "residual": "ResidualBlock", "mbconv": "InvertedBottleneckBlock"}

    def add_block(prefix: str, block: torch.nn.Module) -> None:
        kind = block_class[type(block).__name__]
        roles[keras_class[kind]].append(KerasLayerRole(kind, prefix))  # type: ignore[arg-type]

    def add_conv(prefix: str, kind: str = "conv") -> None:
        roles["DepthwiseConv2D" if kind == "depthwise" else "Conv2D"].append(KerasLayerRole(kind, prefix))  # type: ignore[arg-type]
        roles["BatchNormalization"].append(KerasLayerRole("bn", prefix))

    for g, group in enumerate(model.stem_blocks):
        for r, block in enumerate(group):
            add_block(f"stem_blocks.{g}.{r}", block)
    for key, block in model.blocks.items():
        for p in (0, 1):
            base = f"blocks.{key}.resample{p}"
            resample = getattr(block, f"resample{p}")
            if mobile:
                for d in range(len(resample.downsample)):
                    add_conv(f"{base}.downsample.{d}", "depthwise")
            else:
                add_conv(f"{base}.reduce")
                if resample.level_diff > 0:
                    add_conv(f"{base}.downsample.0")
            add_conv(f"{base}.project")
        for r, sub in enumerate(block.group):
            add_block(f"blocks.{key}.group.{r}", sub)
    for key in model.endpoints:
        add_conv(f"endpoints.{key}")
    return roles
