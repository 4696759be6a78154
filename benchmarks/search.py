"""Architecture search throughput and value: trials/hour with 1 vs 2 workers, controller overhead per proposal, and
evolution vs random search on the real ``search_demo`` proxy.

Usage::

    python benchmarks/search.py [--trials 8] [--out DIR]                  # throughput (1 vs 2 workers) + overhead
    python benchmarks/search.py --compare [--trials 24] [--workers 2]     # best proxy AP: evolution vs random
    python benchmarks/search.py --overhead-only                           # controller overhead alone (seconds)

Throughput runs ``torchspine search start --workers K`` (random search, so every run trains the same kind of
trials) on a journal store in a fresh folder and reads the trials' start/end times back from the store: trials per
hour = finished trials / (last end - first start). The controller overhead is measured in-process with the PPO
searcher on the paper's space: wall time of the controller's steps (propose, decode, enqueue, feed back, PPO
updates every 20 results, checkpoints) divided by the number of proposals, and compared with the mean training
time of a ``search_demo`` trial (which must be over 100x larger: < 1 % overhead).

``--compare`` runs evolution (population 8, tournament 3, so that selection starts within a 24-trial budget) and
random search with the same number of trials, the same proxy config (so the same proxy seeds) and the same
searcher seed, and prints the best held-out proxy AP each found. On 2 CPU cores a ``search_demo`` trial takes about
a minute: 2 x 24 trials take about an hour with 2 workers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna

from torchspine.search import study as st
from torchspine.search.controller import ArchCodec, Controller, ControllerSettings
from torchspine.search.searchers import Proposal, create_searcher
from torchspine.search.space import SearchSpace, arch_key, arch_string, spec_rows

EXPERIMENT = "search_demo"


def run_search(out: Path, searcher: str, trials: int, workers: int, options: list[str], seed: int) -> list[dict]:
    """One ``torchspine search start`` run; returns its trial records."""
    cmd = [sys.executable, "-m", "torchspine.cli.main", "search", "start", "--experiment", EXPERIMENT]
    cmd += ["--searcher", searcher, "--max-trials", str(trials), "--workers", str(workers), "--seed", str(seed)]
    cmd += ["--output-dir", str(out), "--study", searcher, "--poll", "1"]
    for option in options:
        cmd += ["--option", option]
    print(f"$ {' '.join(cmd[2:])}", flush=True)
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if code != 0:
        raise SystemExit(f"search failed ({code}); see {log}")
    storage = st.open_storage(f"journal:{out / 'journal.log'}")
    study, _ = st.join_study(storage, searcher)
    return st.trial_records(study)


def trials_per_hour(records: list[dict]) -> tuple[float, float]:
    """(finished trials per hour, mean train seconds per trial)."""
    done = [r for r in records if r["state"] == "COMPLETE" and r["duplicate_of"] is None]
    start = min(datetime.fromisoformat(r["started"]) for r in done)
    end = max(datetime.fromisoformat(r["finished"]) for r in done)
    hours = max((end - start).total_seconds(), 1.0) / 3600.0
    train = [r["train_seconds"] for r in done if r["train_seconds"] is not None]
    return len(done) / hours, sum(train) / max(len(train), 1)


def controller_overhead(proposals: int = 200) -> float:
    """Seconds of controller work per proposal (PPO, paper space, journal store, results written back at once)."""
    space = SearchSpace.paper()
    with tempfile.TemporaryDirectory() as tmp:
        storage = st.open_storage(f"journal:{tmp}/journal.log")
        meta = st.SearchMeta(
            space=space.to_dict(),
            space_fingerprint=space.fingerprint(),
            experiment=EXPERIMENT,
            overrides=(),
            config_hash="benchmark",
            searcher="ppo",
            searcher_options={},
            output_dir=tmp,
        )
        study = st.create_or_join_study(storage, "overhead", meta)
        codec = ArchCodec(decode=space.decode, key=arch_key, text=arch_string, rows=spec_rows)
        settings = ControllerSettings(max_trials=proposals, queue_depth=22)
        controller = Controller(study, create_searcher("ppo", space, seed=0), codec, Proposal, tmp, settings)
        controller.resume()
        spent = 0.0
        while True:
            begin = time.perf_counter()
            done = controller.step().done
            spent += time.perf_counter() - begin
            if done:
                break
            # Play the workers: claim and complete every waiting trial with a stand-in reward (not timed).
            for t in storage.get_all_trials(study._study_id, states=(optuna.trial.TrialState.WAITING,)):
                storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.RUNNING)
                reward = len(t.user_attrs["arch"]) % 7 / 10.0
                storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.COMPLETE, [reward])
        return spent / controller.proposals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", action="store_true", help="evolution vs random on the real proxy")
    parser.add_argument("--overhead-only", action="store_true")
    parser.add_argument("--trials", type=int, default=None, help="trials per run (default 8; 24 with --compare)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = args.out or Path(tempfile.mkdtemp(prefix="torchspine-search-bench-"))
    results: dict[str, Any] = {"date": datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count()}

    overhead = controller_overhead()
    results["controller_seconds_per_proposal"] = overhead
    print(f"controller overhead: {overhead * 1e3:.1f} ms per proposal (PPO, paper space, journal store)")
    if args.overhead_only:
        print(json.dumps(results, indent=1))
        return

    if args.compare:
        trials = args.trials or 24
        evo = run_search(
            out / "evolution", "evolution", trials, args.workers, ["population_size=8", "sample_size=3"], args.seed
        )
        rnd = run_search(out / "random", "random", trials, args.workers, [], args.seed)
        for name, records in (("evolution", evo), ("random", rnd)):
            rewards = [r["reward"] for r in records if r["reward"] is not None]
            best = max(rewards)
            results[f"best_ap_{name}"] = best
            print(f"{name:>9}: best proxy AP {best:.4f} over {len(rewards)} trials ({out / name})")
    else:
        trials = args.trials or 8
        for workers in (1, 2):
            rate, train = trials_per_hour(run_search(out / f"w{workers}", "random", trials, workers, [], args.seed))
            results[f"trials_per_hour_{workers}_workers"] = rate
            results[f"mean_train_seconds_{workers}_workers"] = train
            print(f"{workers} worker(s): {rate:.1f} trials/hour (mean trial training {train:.1f} s)")
        # Against the uncontended trial time (one worker): the conservative comparison.
        share = overhead / results["mean_train_seconds_1_workers"]
        results["controller_overhead_share"] = share
        print(f"controller overhead: {share:.3%} of a trial's training time (must be < 1 %)")
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
