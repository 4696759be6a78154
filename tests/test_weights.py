"""Loading local weight files: round trips and clear errors, never unpickling code."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import torchspine


def test_safetensors_round_trip(tmp_path):
    model = torchspine.create_model("test_spinenet").eval()
    path = tmp_path / "w.safetensors"
    save_file(model.state_dict(), path)
    torch.manual_seed(1)
    loaded = torchspine.create_model("test_spinenet", weights=path).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["p3"], model(x)["p3"], rtol=0, atol=0)


def test_wrong_architecture_is_named(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(torchspine.create_model("test_spinenet", endpoints_num_filters=16).state_dict(), path)
    with pytest.raises(ValueError, match=r"shape mismatch .*endpoints.p3.conv.weight"):
        torchspine.create_model("test_spinenet", weights=path)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        torchspine.create_model("test_spinenet", weights=tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        torchspine.create_model("test_spinenet", weights=junk)
    pickled = tmp_path / "evil.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "fn": print}, pickled)
    with pytest.raises(ValueError, match="weights_only=True"):
        torchspine.create_model("test_spinenet", weights=pickled)
