"""Dependency rules: importing torchspine (every module) never imports TensorFlow; specs stay free of torch."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import torchspine
for info in pkgutil.walk_packages(torchspine.__path__, "torchspine."):
    importlib.import_module(info.name)
heavy = sorted(m for m in ("tensorflow", "keras", "tf_keras", "official") if m in sys.modules)
print(",".join(heavy))
"""

SPECS_ONLY = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("specs", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["specs"] = module
spec.loader.exec_module(module)
print("torch" in sys.modules)
"""


def test_no_tensorflow_import():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_specs_module_is_torch_free():
    import torchspine.specs

    out = subprocess.run(
        [sys.executable, "-c", SPECS_ONLY, torchspine.specs.__file__], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
