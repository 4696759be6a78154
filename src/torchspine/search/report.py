"""Pictures and a summary of a search: reward per trial by searcher with the running best, and the best
architecture drawn like the paper's figures.

Input: the search's trial records, plain dicts (built from the Optuna study by the search CLI)::

    {"number", "state": "COMPLETE"|"FAIL"|"RUNNING"|"WAITING", "reward", "searcher", "policy_version",
     "decisions", "blocks" (spec rows), "arch", "macs", "params", "failure", "reason", "started", "finished"}

Output files in ``out_dir``: ``trials.csv`` (one row per trial) and ``summary.json`` (counts per state, best trial,
per-searcher statistics) always; ``rewards.png`` and ``best_architecture.png`` once some trial is COMPLETE.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torchspine.search.draw import draw_architecture, require_matplotlib
from torchspine.specs import SpineNetCfg, blocks_from_rows

logger = logging.getLogger(__name__)

CSV_COLUMNS = (
    "number",
    "state",
    "searcher",
    "reward",
    "macs",
    "params",
    "policy_version",
    "arch",
    "failure",
    "reason",
    "started",
    "finished",
)
_SEARCHER_COLORS = {"ppo": "#4c72b0", "evolution": "#55a868", "random": "#8c8c8c", "seed": "#c44e52"}


def _reward(record: Mapping[str, Any]) -> float | None:
    value = record.get("reward")
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def completed(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """COMPLETE records with a finite reward, by trial number."""
    done = [r for r in records if r.get("state") == "COMPLETE" and _reward(r) is not None]
    return sorted(done, key=lambda r: r["number"])


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts per state, the best COMPLETE trial (None if none) and per-searcher count / best / mean reward."""
    done = completed(records)
    best = max(done, key=lambda r: (_reward(r), -r["number"]), default=None)
    per_searcher: dict[str, dict[str, float]] = {}
    for name in sorted({str(r.get("searcher")) for r in done}):
        rewards = [_reward(r) for r in done if str(r.get("searcher")) == name]
        per_searcher[name] = {"complete": len(rewards), "best": max(rewards), "mean": sum(rewards) / len(rewards)}
    keys = ("number", "reward", "searcher", "arch", "macs", "params", "blocks")
    return {
        "trials": len(records),
        "states": dict(Counter(str(r.get("state")) for r in records)),
        "best": None if best is None else {k: best.get(k) for k in keys},
        "searchers": per_searcher,
    }


def write_report(records: Sequence[Mapping[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write the summary files and, when some trial is COMPLETE, the two pictures; return the paths written.

    With no COMPLETE trial yet the pictures are skipped with a logged message (the summary still lists every
    trial's state); nothing raises.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(records)
    written = [_write_csv(records, out / "trials.csv")]
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    written.append(out / "summary.json")
    done = completed(records)
    if not done:
        states = ", ".join(f"{n} {s}" for s, n in sorted(summary["states"].items())) or "no trials"
        logger.warning("no COMPLETE trial yet (%s): wrote the summary only, no pictures", states)
        return written
    written.append(_plot_rewards(done, out / "rewards.png"))
    best = summary["best"]
    blocks = blocks_from_rows(best["blocks"])
    levels = [b.level for b in blocks if b.is_output]  # a space's outputs need not be L3..L7
    cfg = SpineNetCfg(blocks=blocks, min_level=min(levels), max_level=max(levels))
    macs = f", {best['macs'] / 1e9:.2f} GMACs" if isinstance(best.get("macs"), int | float) else ""
    title = f"best: trial {best['number']} ({best['searcher']}), reward {best['reward']:.4f}{macs}"
    written.append(draw_architecture(cfg, out / "best_architecture.png", title=title))
    return written


def _write_csv(records: Sequence[Mapping[str, Any]], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for record in sorted(records, key=lambda r: r.get("number", -1)):
            writer.writerow({k: record.get(k) for k in CSV_COLUMNS})
    return path


def _plot_rewards(done: Sequence[Mapping[str, Any]], path: Path) -> Path:
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for name in sorted({str(r.get("searcher")) for r in done}):
        mine = [r for r in done if str(r.get("searcher")) == name]
        ax.scatter(
            [r["number"] for r in mine],
            [_reward(r) for r in mine],
            s=18,
            alpha=0.8,
            color=_SEARCHER_COLORS.get(name),
            label=f"{name} ({len(mine)})",
        )
        best, running = -math.inf, []
        for r in mine:
            best = max(best, _reward(r))
            running.append(best)
        ax.step([r["number"] for r in mine], running, where="post", color=_SEARCHER_COLORS.get(name), linewidth=1.5)
    overall, best = [], -math.inf
    for r in done:
        best = max(best, _reward(r))
        overall.append(best)
    ax.step(
        [r["number"] for r in done],
        overall,
        where="post",
        color="black",
        linestyle="--",
        linewidth=1,
        label="best so far (all)",
    )
    ax.set_xlabel("trial number")
    ax.set_ylabel("reward (held-out box AP)")
    ax.set_title("reward per trial (dots) and running best (lines), by searcher", fontsize=10)
    ax.grid(color="#eeeeee")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
