"""Array layout transforms from TensorFlow variables to PyTorch parameters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch

BN_SUFFIXES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def conv_kernel(kernel: np.ndarray, depthwise: bool = False) -> torch.Tensor:
    """TF conv kernel ``[kh, kw, in, out]`` -> ``[out, in, kh, kw]``.

    Depthwise kernels ``[kh, kw, C, 1]`` become ``[C, 1, kh, kw]``.
    """
    if kernel.ndim != 4:
        raise ValueError(f"expected a 4-d conv kernel, got shape {kernel.shape}")
    axes = (2, 3, 0, 1) if depthwise else (3, 2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(axes)))


def conv_bn_state(
    units: Iterable[tuple[str, str, str]], tf_vars: Mapping[str, np.ndarray], kernel_suffix: str = "/kernel"
) -> dict[str, torch.Tensor]:
    """State-dict entries of ``ConvNormAct`` units from TF variables named ``{conv}/kernel``, ``{bn}/gamma``, ...

    Raises ``KeyError`` naming the first TF variable that is missing.
    """
    state: dict[str, torch.Tensor] = {}
    for prefix, conv, bn in units:
        name = conv + kernel_suffix
        if name not in tf_vars:
            raise KeyError(f"TF variable {name!r} (for {prefix}.conv.weight) is not in the checkpoint")
        state[f"{prefix}.conv.weight"] = conv_kernel(tf_vars[name])
        for tf_suffix, torch_suffix in BN_SUFFIXES.items():
            name = f"{bn}/{tf_suffix}"
            if name not in tf_vars:
                raise KeyError(f"TF variable {name!r} (for {prefix}.bn.{torch_suffix}) is not in the checkpoint")
            state[f"{prefix}.bn.{torch_suffix}"] = torch.from_numpy(np.array(tf_vars[name]))
    return state


def dense_kernel_from_nhwc(kernel: np.ndarray, height: int, width: int) -> torch.Tensor:
    """TF dense kernel ``[H * W * C, out]`` over NHWC-flattened features -> ``[out, C * H * W]`` for PyTorch's
    channel-major flatten of NCHW features (the Fast R-CNN head's first FC)."""
    rows, out = kernel.shape
    if rows % (height * width):
        raise ValueError(f"dense kernel with {rows} input rows is not over {height}x{width} feature maps")
    channels = rows // (height * width)
    chw = kernel.reshape(height * width, channels, out).transpose(1, 0, 2).reshape(rows, out)
    return torch.from_numpy(np.ascontiguousarray(chw.T))


def transformed_shape(shape: tuple[int, ...], transform: str) -> tuple[int, ...]:
    """Shape of a TF array after the named layout transform (``conv``, ``depthwise``, ``dense[_nhwc]`` or
    ``copy``)."""
    if transform == "conv":
        return (shape[3], shape[2], shape[0], shape[1])
    if transform == "depthwise":
        return (shape[2], shape[3], shape[0], shape[1])
    if transform in ("dense", "dense_nhwc"):
        return (shape[1], shape[0])
    return tuple(shape)
