"""Dependency rules: importing torchspine (every module) never imports TensorFlow; specs stay free of torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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


# --- layering (STYLE §3): read off the source, function-level (lazy) imports included -------------------------


def _module_graph() -> dict[str, set[str]]:
    """torchspine module -> the torchspine modules it imports anywhere in its source."""
    import torchspine

    root = Path(torchspine.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycles():
    graph = _module_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == [], " ; ".join(" -> ".join(c) for c in cycles)


# (importer layer, imported layers it must not use); only the CLI imports `search`, nothing imports `cli`.
FORBIDDEN = [
    ("specs", {"layers", "models", "registry", "modelfile", "loading", "config", "engine", "convert", "cli", "data"}),
    ("variants", {"layers", "models", "registry", "modelfile", "loading", "config", "engine", "convert", "cli"}),
    ("layers", {"models", "registry", "modelfile", "loading", "config", "engine", "convert", "cli", "data"}),
    ("modelfile", {"layers", "models", "registry", "loading", "config", "engine", "convert", "cli", "data"}),
    ("models", {"engine", "cli", "convert", "config", "loading", "search"}),
    ("engine", {"convert", "cli", "search"}),
    ("convert", {"engine", "cli", "config", "search"}),
    ("data", {"models", "engine", "cli", "convert", "search"}),
]


@pytest.mark.parametrize(("layer", "forbidden"), FORBIDDEN, ids=[f[0] for f in FORBIDDEN])
def test_layering(layer, forbidden):
    graph = _module_graph()
    bad = sorted(
        f"{m} imports {dep}"
        for m, deps in graph.items()
        if _layer(m) == layer
        for dep in deps
        if _layer(dep) in forbidden
    )
    assert bad == []


def test_only_the_cli_imports_search_and_nothing_imports_the_cli():
    graph = _module_graph()
    bad = sorted(
        f"{m} imports {dep}"
        for m, deps in graph.items()
        for dep in deps
        if (_layer(dep) == "cli" and _layer(m) != "cli")
        or (_layer(dep) == "search" and _layer(m) not in ("cli", "search"))
    )
    assert bad == []
