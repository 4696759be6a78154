"""Shared fixtures. Tests run on CPU. ``TORCHSPINE_REQUIRE_TF=1`` (set by ``make test`` and CI) turns a missing
TensorFlow environment into a failure instead of a skip, so the parity tests cannot be skipped silently."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL = FIXTURES / "official"


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
