"""Checks of operational flags (``--device``, sizes, counts) that turn bad values into one-line `UsageError` messages.

Without them a negative ``--image-size`` surfaces as a resize traceback deep in the model's transform,
``--device gpu`` as torch's list of 20 device types, and ``--device cuda`` on a machine without a GPU as a driver
traceback after the model was built; a negative ``--max-images`` was silently taken as "all but the last 3".
"""

from __future__ import annotations

import torch

from torchspine.errors import UsageError

__all__ = ["check_device", "check_positive"]

# Names people type for a GPU that torch does not know; torch calls every CUDA (and ROCm) GPU "cuda".
_GPU_ALIASES = {"gpu", "gpu0", "nvidia", "rocm"}


def check_device(value: str, option: str = "--device") -> str:
    """`value` if it names a device this machine has; otherwise a `UsageError` that says what to pass instead."""
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        hint = " (torch calls a GPU 'cuda')" if value.lower().split(":")[0] in _GPU_ALIASES else ""
        raise UsageError(f"{option} {value!r}: not a device; expected cpu, cuda, cuda:N or mps{hint}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"{option} {value}: no CUDA GPU is usable on this machine (torch.cuda.is_available() is False: no GPU, "
                "no driver, or a CPU-only torch build); use --device cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UsageError(f"{option} {value}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"{option} {value}: Apple's MPS backend is not available on this machine; use --device cpu")
    return value


def check_positive(option: str, value: int | float | None) -> None:
    """A `UsageError` unless `value` (of `option`) is None (not given) or greater than zero."""
    if value is not None and value <= 0:
        raise UsageError(f"{option} {value}: expected a positive number")
