"""Searchers on the synthetic reward: PPO vs regularized evolution vs random search, and PPO controller overhead.

Usage: ``python benchmarks/search_synthetic.py [--samples 2000] [--repeats 3] [--window 100] [--out DIR]``

The reward is `torchspine.search.SyntheticReward`: the fraction of decoded block attributes (level, block fn, both
parents) equal to a hidden target architecture drawn from the paper's space, so no network is trained and the
optimum (1.0) is known. Every searcher sees the same targets (one per repeat) and its own fixed seed. PPO runs twice:
with NASNet's learning rate 3.5e-4 (the paper recipe, sized for ~10k samples) and with 1e-2 (what the learning test
uses). The table gives the mean reward of a sliding window of the last ``window`` samples at a few sample counts,
averaged over the repeats; with matplotlib installed (``pip install torchspine[report]``) the curves are written to
``OUT/search_synthetic.png``. `controller_overhead_ms` measures one PPO proposal plus its feedback, the update cost
amortised over its batch of 20.

`benchmarks/search.py` (trials per hour on the real proxy) can call `synthetic_curves` and `controller_overhead_ms`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from torchspine.search import SearchSpace, SyntheticReward, create_searcher

CONFIGS: dict[str, tuple[str, dict]] = {
    "random": ("random", {}),
    "evolution (P=100, S=25)": ("evolution", {}),
    "ppo (lr 3.5e-4)": ("ppo", {}),
    "ppo (lr 1e-2)": ("ppo", {"lr": 1e-2}),
}


def sliding_mean(values: list[float], window: int) -> list[float]:
    """Mean of the last `window` values at every position (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def synthetic_curves(
    samples: int = 2000, repeats: int = 3, window: int = 100, space: SearchSpace | None = None
) -> dict[str, list[float]]:
    """Sliding-window mean reward vs samples for each searcher config, averaged over `repeats` targets/seeds."""
    space = space or SearchSpace()
    curves: dict[str, list[float]] = {}
    for label, (name, options) in CONFIGS.items():
        runs = []
        for repeat in range(repeats):
            reward = SyntheticReward.from_seed(space, 1000 + repeat)
            searcher = create_searcher(name, space, seed=repeat, **options)
            values = []
            for _ in range(samples):
                proposal = searcher.propose()
                values.append(reward(proposal.decisions))
                searcher.feedback(proposal, values[-1])
            runs.append(sliding_mean(values, window))
        curves[label] = [statistics.fmean(step) for step in zip(*runs, strict=True)]
    return curves


def controller_overhead_ms(proposals: int = 200, space: SearchSpace | None = None) -> float:
    """Mean wall time (ms) of one PPO ``propose`` + ``feedback``, updates included (one per 20 results)."""
    space = space or SearchSpace()
    searcher = create_searcher("ppo", space, seed=0)
    reward = SyntheticReward.from_seed(space, 0)
    start = time.perf_counter()
    for _ in range(proposals):
        proposal = searcher.propose()
        searcher.feedback(proposal, reward(proposal.decisions))
    return (time.perf_counter() - start) / proposals * 1000


def write_plot(curves: dict[str, list[float]], path: Path, window: int) -> bool:
    """Write the curves as a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), curve, label=label)
    ax.set_xlabel("samples")
    ax.set_ylabel(f"mean synthetic reward (last {window})")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    overhead = controller_overhead_ms()
    curves = synthetic_curves(args.samples, args.repeats, args.window)
    marks = sorted({m for m in (250, 500, 1000, 1500, 2000, args.samples) if m <= args.samples})
    print(f"mean synthetic reward of the last {args.window} samples (paper space, {args.repeats} targets)")
    print(f"{'searcher':<26}" + "".join(f"{m:>8}" for m in marks))
    for label, curve in curves.items():
        print(f"{label:<26}" + "".join(f"{curve[m - 1]:>8.3f}" for m in marks))
    print(f"PPO controller overhead per proposal + feedback: {overhead:.1f} ms")
    path = args.out / "search_synthetic.png"
    if write_plot(curves, path, args.window):
        print(f"wrote {path}")
    else:
        print("matplotlib not installed (pip install torchspine[report]): no picture")


if __name__ == "__main__":
    main()
