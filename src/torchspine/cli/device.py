"""The default ``--device`` of the commands that run models, resolved when a command runs.

Asking torch whether CUDA is available at parser-building time would import torch for ``torchspine --help``; the
flags default to None and the command calls `resolve_device` first.
"""

from __future__ import annotations

DEVICE_HELP = "where to run, e.g. cpu, cuda, cuda:1 (default: cuda when available, else cpu)"


def resolve_device(device: str | None) -> str:
    """`device`, or ``"cuda"`` when available and ``"cpu"`` otherwise."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
