"""Read-outs of a search from its trial records: progress for ``search status``, the best architectures for
``search export``. Pure functions over the plain record dicts of `torchspine.search.study.trial_records`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from torchspine.errors import UsageError


@dataclass(frozen=True)
class SearchSummary:
    """Where a search stands.

    Attributes:
        done: finished trials (COMPLETE, duplicates included, plus diverged) — what ``max_trials`` counts.
        complete, diverged, running, waiting, failed: trials per state (failed = infrastructure failures).
        best_reward, best_trial: the best reward so far and its trial (None before the first result).
        trials_per_hour: finished trials per hour of wall time since the first trial started.
        eta_hours: hours to ``max_trials`` at that rate (None when unknown).
        max_trials: the controller's budget (None when no controller has run).
    """

    done: int
    complete: int
    diverged: int
    running: int
    waiting: int
    failed: int
    best_reward: float | None
    best_trial: int | None
    trials_per_hour: float | None
    eta_hours: float | None
    max_trials: int | None


def summarize(records: Sequence[Mapping[str, Any]], max_trials: int | None) -> SearchSummary:
    """Count states, find the best reward and estimate throughput from trial records."""
    count = {s: 0 for s in ("COMPLETE", "RUNNING", "WAITING")}
    diverged = failed = 0
    best: tuple[float, int] | None = None
    starts, ends = [], []
    for r in records:
        state = r["state"]
        if state in count:
            count[state] += 1
        elif r.get("failure") == "diverged":
            diverged += 1
        elif state == "FAIL":
            failed += 1
        reward = r.get("reward")
        if reward is not None and math.isfinite(reward) and (best is None or reward > best[0]):
            best = (float(reward), int(r["number"]))
        if r.get("started"):
            starts.append(datetime.fromisoformat(r["started"]))
        if r.get("finished") and (state == "COMPLETE" or r.get("failure") == "diverged"):
            ends.append(datetime.fromisoformat(r["finished"]))
    done = count["COMPLETE"] + diverged
    rate = eta = None
    if starts and ends:
        hours = (max(ends) - min(starts)).total_seconds() / 3600.0
        if hours > 0:
            rate = len(ends) / hours
            if max_trials is not None:
                eta = max(0, max_trials - done) / rate
    return SearchSummary(
        done=done,
        complete=count["COMPLETE"],
        diverged=diverged,
        running=count["RUNNING"],
        waiting=count["WAITING"],
        failed=failed,
        best_reward=None if best is None else best[0],
        best_trial=None if best is None else best[1],
        trials_per_hour=rate,
        eta_hours=eta,
        max_trials=max_trials,
    )


def format_summary(s: SearchSummary, study: str, *, bar: bool) -> str:
    """Human-readable status lines (with a text progress bar when `bar`)."""
    lines = [f"study {study}"]
    total = s.max_trials
    if bar and total:
        width = 40
        filled = min(width, round(width * s.done / total))
        lines.append(f"[{'#' * filled}{'.' * (width - filled)}] {s.done}/{total}")
    lines.append(
        f"done {s.done}{f'/{total}' if total else ''} ({s.complete} complete, {s.diverged} diverged), "
        f"running {s.running}, waiting {s.waiting}, failed {s.failed} (infrastructure, retried)"
    )
    best = "none yet" if s.best_reward is None else f"{s.best_reward:.4f} (trial {s.best_trial})"
    lines.append(f"best reward {best}")
    rate = "n/a" if s.trials_per_hour is None else f"{s.trials_per_hour:.1f} trials/hour"
    eta = "n/a" if s.eta_hours is None else f"{s.eta_hours:.2f} h"
    lines.append(f"throughput {rate}, ETA {eta}")
    return "\n".join(lines)


def top_architectures(records: Sequence[Mapping[str, Any]], k: int) -> list[Mapping[str, Any]]:
    """The `k` best distinct architectures (by arch key) among COMPLETE trials, best reward first.

    Duplicates share their original's reward, so each architecture appears once, under its first trial.
    """
    if k < 1:
        raise UsageError(f"--top must be >= 1, got {k}")
    best: dict[str, Mapping[str, Any]] = {}
    for r in records:
        if r["state"] != "COMPLETE" or r.get("reward") is None:
            continue
        key = r.get("arch_key") or json.dumps(r["blocks"])
        if key not in best or (r["reward"], -r["number"]) > (best[key]["reward"], -best[key]["number"]):
            best[key] = r
    return sorted(best.values(), key=lambda r: (-r["reward"], r["number"]))[:k]


def write_specs(records: Sequence[Mapping[str, Any]], out_dir: str | Path, study: str) -> list[Path]:
    """Write each record's architecture as a spec file ``rank<i>_trial<n>.yaml`` under `out_dir`.

    The files hold ``blocks:`` rows in the `torchspine.load_cfg` format, so ``torchspine train --set
    model.backbone_spec=FILE`` retrains them and ``torchspine.create_model(name, blocks=...)`` builds them; the
    search's numbers are comments, so the file stays a plain spec. Also writes ``index.json`` with the numbers.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, index = [], []
    for rank, r in enumerate(records, 1):
        path = out / f"rank{rank}_trial{r['number']}.yaml"
        header = [
            f"# torchspine search export: study {study}, trial {r['number']}, rank {rank}",
            f"# reward {r['reward']:.6f}; searcher {r.get('searcher')}; macs {r.get('macs')}; params {r.get('params')}",
            f"# arch {r.get('arch', '')}",
            "# retrain: torchspine train --experiment EXPERIMENT --set model.backbone_spec=" + path.name,
        ]
        # One JSON row per line (JSON is YAML): reads like the block tables of the paper and the official code.
        body = "blocks:\n" + "".join(f"  - {json.dumps(_row(b))}\n" for b in r["blocks"])
        path.write_text("\n".join(header) + "\n" + body)
        paths.append(path)
        index.append({k: r.get(k) for k in ("number", "reward", "searcher", "macs", "params", "arch")})
        index[-1]["file"] = path.name
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return paths


def _row(row: Sequence[Any]) -> list[Any]:
    level, fn, offsets, is_output = row
    return [int(level), str(fn), [int(o) for o in offsets], bool(is_output)]
