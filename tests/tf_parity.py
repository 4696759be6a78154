"""Run ``tf_reference/model_garden.py`` with a TensorFlow interpreter and load what it wrote.

TensorFlow lives in its own virtual environment (``.venv-tf``, made by ``make tf-env`` from
``requirements/tf-parity.txt``) so it never shares a process or a dependency set with torch; ``TORCHSPINE_TF_PYTHON``
points elsewhere if needed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).parent / "tf_reference" / "model_garden.py"


def tf_python() -> str | None:
    """The interpreter that has tensorflow + tf-models-official, or None."""
    candidates = [os.environ.get("TORCHSPINE_TF_PYTHON"), str(ROOT / ".venv-tf" / "bin" / "python")]
    for python in filter(None, candidates):
        if Path(python).exists():
            return python
    return None


def require_tf_python() -> str:
    python = tf_python()
    if python is None:
        message = "needs the TensorFlow environment: run `make tf-env` (or set TORCHSPINE_TF_PYTHON)"
        if os.environ.get("TORCHSPINE_REQUIRE_TF") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return python


def run_model_garden(config: dict, tmp_path: Path) -> dict[str, np.ndarray]:
    """Build/restore the official Model Garden backbone described by `config`; return its dump."""
    python = require_tf_python()
    cfg_path, out_path = tmp_path / "config.json", tmp_path / "reference.npz"
    cfg_path.write_text(json.dumps(config))
    proc = subprocess.run(
        [python, str(SCRIPT), str(cfg_path), str(out_path)], capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        raise AssertionError(f"Model Garden reference run failed:\n{proc.stderr[-4000:]}")
    return dict(np.load(out_path))


def write_tf1_checkpoint(arrays: dict[str, np.ndarray], prefix: Path) -> Path:
    """Write `arrays` as a TF1 name-based checkpoint at `prefix` (with the TensorFlow environment)."""
    python = require_tf_python()
    npz = prefix.parent / f"{prefix.name}.arrays.npz"
    np.savez(npz, **arrays)
    script = Path(__file__).parent / "tf_reference" / "write_tf1_checkpoint.py"
    proc = subprocess.run([python, str(script), str(npz), str(prefix)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"writing the TF1 checkpoint failed:\n{proc.stderr[-4000:]}")
    return prefix


def model_garden_postprocess(raw: dict[str, np.ndarray], image_size: tuple[int, int], tmp_path: Path) -> dict:
    """Model Garden's RetinaNet detections (``MultilevelDetectionGenerator``, v2 NMS) for raw NHWC head outputs."""
    python = require_tf_python()
    raw_path, out_path = tmp_path / "raw.npz", tmp_path / "detections.npz"
    np.savez(raw_path, image_size=np.array(image_size), **raw)
    script = Path(__file__).parent / "tf_reference" / "model_garden_postprocess.py"
    proc = subprocess.run(
        [python, str(script), str(raw_path), str(out_path)], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise AssertionError(f"Model Garden post-processing failed:\n{proc.stderr[-4000:]}")
    return dict(np.load(out_path))
