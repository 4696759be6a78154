"""Shared fixtures. Tests run on CPU; ``TORCHSPINE_REQUIRE_TF=1`` (set by CI) turns a missing TensorFlow into a
failure instead of a skip, so the parity tests can never be skipped silently where they must run."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL = FIXTURES / "official"


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


def require_tensorflow() -> None:
    """Skip (or fail under CI) when tensorflow + tf-models-official are not importable."""
    missing = [m for m in ("tensorflow", "official") if importlib.util.find_spec(m) is None]
    if missing:
        message = f"needs {', '.join(missing)} (pip install -r requirements/tf-parity.txt)"
        if os.environ.get("TORCHSPINE_REQUIRE_TF") == "1":
            pytest.fail(message)
        pytest.skip(message)
