"""End to end: ``torchspine search`` controller + 2 worker processes on a shared store train real ``search_demo``
proxy trials; the controller is killed -9 after its first update and restarted with the same command, a worker is
killed -9 mid-trial; nothing is lost or counted twice, and the exported best spec builds and runs.

Once on the journal file store, once on a PostgreSQL server the test starts itself (skipped, saying how to install
it, only where the PostgreSQL binaries are absent).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import torchspine
from pg_server import INSTALL_HINT, find_bin_dir, postgres_server
from torchspine.engine.checkpoint import load_checkpoint
from torchspine.search import study as st
from torchspine.specs import load_cfg

TESTS = Path(__file__).parent
MAX_TRIALS = 6
WAIT_S = 900.0
# The real proxy, shortened: one epoch of the demo's training images, evaluated once on the held-out split.
PROXY = "torchspine.search.proxy:run_proxy_trial"
PROXY_OVERRIDES = ("schedule.epochs=1.0", "train.eval_every_epochs=1.0")


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {
        **os.environ,
        "PYTHONPATH": path,
        "OMP_NUM_THREADS": "1",
        "TS_TEST_INNER": PROXY,
        **extra,
    }


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "torchspine.cli.main", "search", *args]


def _wait_for(predicate, what: str, procs: list[subprocess.Popen] = ()) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: process {p.args[4:6]} exited with {p.returncode} first")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(params=["journal", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "journal":
        yield f"journal:{tmp_path / 'journal.log'}"
        return
    if find_bin_dir() is None:
        pytest.skip(INSTALL_HINT)
    with postgres_server() as url:
        yield url


@pytest.mark.slow
def test_search_end_to_end_survives_killed_controller_and_worker(storage_url: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    store = ["--storage", storage_url, "--study", "e2e"]
    overrides = [a for o in PROXY_OVERRIDES for a in ("--set", o)]
    controller_cmd = _cli(
        "start", "--experiment", "search_demo", *overrides, "--searcher", "ppo", "--update-batch", "2",
        "--max-trials", str(MAX_TRIALS), "--output-dir", str(run), "--queue", "4", "--poll", "0.5",
        "--stale-after", "30", *store,
    )  # fmt: skip
    worker_cmd = _cli("worker", *store, "--runner", "search_helpers:gated", "--heartbeat", "1", "--poll", "0.5")
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []

    def spawn(cmd: list[str], name: str, **env: str) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen(cmd, env=_env(**env), stdout=log, stderr=subprocess.STDOUT))
        return procs[-1]

    try:
        controller = spawn(controller_cmd, "controller-1")
        _wait_for(lambda: (run / "controller.pt").exists(), "the first controller checkpoint", [controller])
        # Worker A blocks in its first trial (RUNNING, heartbeating) until it is killed; B does the work.
        doomed = spawn(worker_cmd, "worker-a", TS_TEST_GATE="1")
        _wait_for(lambda: any(run.glob("trials/*/running.*")), "worker A to start a trial", [doomed])
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(60)
        killed_trial = int(next(run.glob("trials/*/running.*")).read_text())
        spawn(worker_cmd, "worker-b")

        log1 = logs / "controller-1.log"
        _wait_for(lambda: "searcher update 1 " in log1.read_text(), "the first searcher update", [controller])
        _wait_for(lambda: load_checkpoint(run / "controller.pt", validate=False)["updates"] >= 1, "its checkpoint")
        controller.send_signal(signal.SIGKILL)
        controller.wait(60)
        restarted = spawn(controller_cmd, "controller-2")
        assert restarted.wait(WAIT_S) == 0, (logs / "controller-2.log").read_text()[-3000:]
        assert "resumed from" in (logs / "controller-2.log").read_text()
        for p in procs[2:]:
            assert p.wait(120) == 0, "worker B did not leave after the search finished"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(30)

    storage = st.open_storage(storage_url)
    study, _ = st.join_study(storage, "e2e")
    records = st.trial_records(study)
    states = {r["state"] for r in records}
    assert states <= {"COMPLETE", "FAIL"}, f"unfinished trials left: {states}"
    assert all(r["failure"] for r in records if r["state"] == "FAIL"), "a FAIL without a reason"
    usable = [r for r in records if r["state"] == "COMPLETE" or r["failure"] == "diverged"]
    assert len(usable) == MAX_TRIALS
    # No proposal lost or enqueued twice across the controller kill: originals carry proposals 0..n-1 exactly once.
    originals = sorted(r["number"] for r in records if r["retry_of"] is None)
    proposals = [study.trials[n].user_attrs["proposal"] for n in originals]
    assert proposals == list(range(len(proposals)))
    # The killed worker's trial went stale and was retried.
    killed = records[killed_trial]
    assert killed["state"] == "FAIL" and killed["failure"] == "stale"
    retry = next(r for r in records if r["retry_of"] == killed_trial)
    assert retry["decisions"] == killed["decisions"]
    # Every usable result fed exactly once: with update batch 2, 6 results make exactly 3 PPO updates.
    ckpt = load_checkpoint(run / "controller.pt", validate=False)
    assert sorted(ckpt["consumed"]) == sorted(r["number"] for r in usable)
    assert ckpt["updates"] == MAX_TRIALS // 2

    out = tmp_path / "export"
    subprocess.run(_cli("export", *store, "--top", "2", "--out", str(out)), env=_env(), check=True, timeout=300)
    best = json.loads((out / "index.json").read_text())[0]
    assert best["reward"] == max(r["reward"] for r in usable if r["state"] == "COMPLETE")
    blocks = load_cfg(out / best["file"]).blocks
    model = torchspine.create_model("spinenet49", blocks=blocks, filter_size_scale=0.125, endpoints_num_filters=16)
    with torch.no_grad():
        features = model.eval()(torch.randn(1, 3, 128, 128))
    assert [f.shape[-1] for f in features.values()] == [16, 8, 4, 2, 1]


@pytest.mark.slow
def test_torchrun_worker_trains_each_trial_on_every_rank(tmp_path: Path) -> None:
    from torchspine.search.space import SearchSpace, spec_rows

    space = SearchSpace.tiny()
    url = f"journal:{tmp_path / 'journal.log'}"
    meta = st.SearchMeta(
        space=space.to_dict(),
        space_fingerprint=space.fingerprint(),
        experiment="demo",
        overrides=(),
        config_hash=st.proxy_config_hash("demo", ()),
        searcher="random",
        searcher_options={},
        output_dir=str(tmp_path),
    )
    study = st.create_or_join_study(st.open_storage(url), "ddp", meta)
    rng = random.Random(0)
    for _ in range(3):
        study.enqueue_trial(params={}, user_attrs={"blocks": spec_rows(space.decode(space.random(rng)))})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "torchspine.cli.main"]
    cmd += ["search", "worker", "--storage", url, "--study", "ddp", "--runner", "search_helpers:synthetic"]
    cmd += ["--exit-when-idle", "--poll", "0.2", "--device", "cpu"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=WAIT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"] * 3
    runs = [line.split() for line in (tmp_path / "runs.log").read_text().splitlines()]
    # Every trial ran once on each of the two ranks (two processes), and only rank 0 wrote to the store.
    assert sorted(int(n) for n, _ in runs) == [0, 0, 1, 1, 2, 2]
    assert len({pid for _, pid in runs}) == 2
    assert {t.user_attrs["worker"] for t in study.get_trials()} == {study.get_trials()[0].user_attrs["worker"]}
