"""Run the multi-process and kill tests N times in a row and print how often each passed.

Usage::

    python benchmarks/stress_distributed.py [--runs 10] [--tests tests/test_torchrun.py ...] [-k EXPR]

Each round is one fresh ``pytest`` process over the tests (default: ``tests/test_torchrun.py``, the gloo decision
tests of ``tests/test_distributed.py`` and the kill -9 test of ``tests/test_train_crash.py``), with the slow
marker enabled and ``OMP_NUM_THREADS=1``. Per test id it prints passes / runs, and exits non-zero unless every
round passed: the issue's bar is ten consecutive passing rounds on a 2-core CPU. A JUnit XML per round goes to
``--out`` (a temporary folder by default) for post-mortems.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TESTS = (
    "tests/test_torchrun.py",
    "tests/test_distributed.py",
    "tests/test_train_crash.py::test_kill_9_at_random_moments_then_resume_matches_an_uninterrupted_run",
)


def _outcomes(junit: Path) -> dict[str, bool]:
    """Test id -> passed, from a pytest JUnit XML report."""
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        outcomes[name] = not any(child.tag in ("failure", "error", "skipped") for child in case)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="rounds (default: %(default)s)")
    parser.add_argument("--tests", nargs="+", default=list(DEFAULT_TESTS), help="pytest node ids or files")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    parser.add_argument("--out", type=Path, help="folder for the per-round JUnit reports")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="stress_distributed-"))
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    passes: collections.Counter[str] = collections.Counter()
    runs: collections.Counter[str] = collections.Counter()
    clean_rounds = 0
    for round_ in range(1, args.runs + 1):
        junit = out / f"round-{round_:02d}.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", f"--junitxml={junit}", *args.tests]
        if args.keyword:
            cmd += ["-k", args.keyword]
        start = time.monotonic()
        code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        outcomes = _outcomes(junit) if junit.exists() else {}
        for name, passed in outcomes.items():
            runs[name] += 1
            passes[name] += passed
        clean_rounds += code == 0 and bool(outcomes)
        failed = sorted(name for name, passed in outcomes.items() if not passed)
        status = "pass" if code == 0 and outcomes else f"FAIL (exit {code}) {failed}"
        print(
            f"round {round_}/{args.runs}: {len(outcomes)} tests, {time.monotonic() - start:.0f} s, {status}", flush=True
        )
    print(f"\n{clean_rounds}/{args.runs} rounds passed completely (reports in {out})")
    for name in sorted(runs):
        print(f"{passes[name]:3d}/{runs[name]:<3d} {name}")
    return 0 if clean_rounds == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
