"""``torchspine --help`` and ``--version`` answer without importing torch (lazy imports per subcommand).

Asserted on imports, not on time: ``python -X importtime`` lists every module a process imports.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import torchspine
from torchspine.cli.evaluate import HEAD_TASKS
from torchspine.modelfile import TASKS

HEAVY = ("torch", "torchvision", "numpy", "optuna", "pycocotools")


def _imported(args: list[str]) -> tuple[set[str], str]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "torchspine.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    modules = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return modules, proc.stdout


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["eval", "--help"], ["export", "--help"]])
def test_cli_answers_without_heavy_imports(args):
    modules, stdout = _imported(args)
    assert "torchspine.cli.export" in modules  # the subcommand parsers were really built in this process
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert heavy == [], f"torchspine {' '.join(args)} imported {heavy[:5]}"
    assert stdout.strip()


def test_version_is_printed():
    _, stdout = _imported(["--version"])
    assert stdout.strip() == f"torchspine {torchspine.__version__}"


def test_lazy_package_exports_resolve():
    for name in torchspine.__all__:
        assert getattr(torchspine, name) is not None
    assert set(torchspine.__all__) == set(torchspine._EXPORTS)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        torchspine.nope  # noqa: B018


def test_head_tasks_match_the_model_file_tasks():
    assert set(HEAD_TASKS) == set(TASKS) - {"backbone"}
