"""The search proxy trial: spec file, config, reward from the held-out split, divergence, resume, complexity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import torchspine.engine.run
from torchspine.config import load_config
from torchspine.engine.build import build_model
from torchspine.search.proxy import SPEC_FILE, TrialTask, proxy_complexity, run_proxy_trial, write_spec
from torchspine.specs import SPINENET_BLOCKS, BlockSpec, load_cfg

# SpineNet-49 as the paper's search space has it (15 blocks; Model Garden's 16th is a level-2 output).
SPINENET49 = SPINENET_BLOCKS[:15]

# An odd architecture: level-1 blocks (one of them residual and pruned: it feeds nothing), a level-7 block read
# straight from level 1 (2^6 down) and a level-1 parent of the P3 output, residual outputs.
ODD = (
    BlockSpec(1, "residual", (0, 1), False),  # net2, L1
    BlockSpec(1, "bottleneck", (0, 2), False),  # net3, L1
    BlockSpec(7, "residual", (3, 1), False),  # net4, L7 from L1: 2^6 down
    BlockSpec(1, "residual", (2, 3), False),  # net5: feeds nothing -> pruned
    BlockSpec(3, "bottleneck", (3, 4), True),  # P3 from L1 and L7
    BlockSpec(4, "residual", (6, 4), True),
    BlockSpec(5, "bottleneck", (7, 2), True),
    BlockSpec(6, "residual", (8, 3), True),
    BlockSpec(7, "bottleneck", (9, 4), True),
)

FAST = ("train.max_steps=3",)


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torchspine.engine.run, "CACHE_DIR", tmp_path_factory.mktemp("cache"))
        yield


def _task(tmp_path: Path, blocks, overrides=FAST, number: int = 0) -> TrialTask:
    return TrialTask(number, tuple(blocks), "search_demo", tuple(overrides), tmp_path / "trials" / str(number), "cpu")


def test_spec_file_round_trip(tmp_path: Path) -> None:
    path = write_spec(ODD, tmp_path / SPEC_FILE)
    assert load_cfg(path).blocks == ODD
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, no leftovers


def test_complexity_counts_the_pruned_graph(tmp_path: Path) -> None:
    spec = write_spec(ODD, tmp_path / SPEC_FILE)
    cfg = load_config("search_demo", [], [f"model.backbone_spec={spec}"])
    macs, params = proxy_complexity(cfg, num_classes=6)
    model = build_model(cfg.model, 6)
    assert params == sum(p.numel() for p in model.backbone.parameters()) + sum(
        p.numel() for p in model.head.parameters()
    )
    assert "3" not in model.backbone.blocks  # block 3 feeds nothing: not built, not counted
    # Costs equal those of the same network written without the dead block (later offsets renumbered).
    without = ODD[:3] + tuple(
        BlockSpec(b.level, b.block_fn, tuple(o - (o > 5) for o in b.input_offsets), b.is_output) for b in ODD[4:]
    )
    spec2 = write_spec(without, tmp_path / "without.json")
    assert proxy_complexity(load_config("search_demo", [], [f"model.backbone_spec={spec2}"]), 6) == (macs, params)
    assert macs > 0


@pytest.mark.slow
@pytest.mark.parametrize("blocks", [SPINENET49, ODD], ids=["spinenet49", "odd_level1"])
def test_trial_completes_with_held_out_reward(tmp_path: Path, demo_cache, blocks) -> None:
    task = _task(tmp_path, blocks)
    outcome = run_proxy_trial(task)
    assert outcome.status == "complete" and outcome.reason == ""
    assert 0.0 <= outcome.reward <= 1.0 and outcome.reward == outcome.metrics["bbox/AP"]
    assert outcome.metrics["steps"] == 3
    assert outcome.macs > 0 and outcome.params > 0 and outcome.train_seconds > 0
    out = task.output_dir
    assert load_cfg(out / SPEC_FILE).blocks == tuple(blocks)
    held = json.loads((out / "holdout_ids.json").read_text())["image_ids"]
    assert len(held) == 50 == len(set(held))
    # The reward is computed on exactly the held-out images, which training never saw.
    detections = json.loads((out / "detections.json").read_text())
    assert {d["image_id"] for d in detections} <= set(held)
    assert not (out / "tensorboard").exists() and len(list((out / "checkpoints").glob("ckpt-*.pt"))) == 1

    # A retried trial resumes from its finished checkpoint: same reward, no new training steps.
    again = run_proxy_trial(task)
    assert again.status == "complete" and again.reward == outcome.reward


@pytest.mark.slow
def test_diverging_trial_gets_zero_reward(tmp_path: Path, demo_cache) -> None:
    overrides = ("optim.optimizer=sgd", "optim.lr_per_256=1e12", "optim.clip_grad_norm=none", "train.max_steps=30")
    outcome = run_proxy_trial(_task(tmp_path, SPINENET49, overrides))
    assert outcome.status == "diverged" and outcome.reward == 0.0
    assert "non-finite" in outcome.reason
    assert outcome.macs > 0 and outcome.params > 0


def test_interrupted_and_failing_trials_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only divergence is a result: a run stopped by a signal or an error in training is raised (and retried)."""
    from types import SimpleNamespace

    from torchspine.search.proxy import TrialInterrupted

    stopped = SimpleNamespace(step=5, max_steps=72, metrics={})
    monkeypatch.setattr(torchspine.engine.run, "train_experiment", lambda *a, **k: stopped)
    with pytest.raises(TrialInterrupted, match="stopped at step 5 of 72"):
        run_proxy_trial(_task(tmp_path, SPINENET49))

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(torchspine.engine.run, "train_experiment", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"):
        run_proxy_trial(_task(tmp_path, SPINENET49))
    no_ap = SimpleNamespace(step=72, max_steps=72, metrics={"bbox/AP": -1.0})
    monkeypatch.setattr(torchspine.engine.run, "train_experiment", lambda *a, **k: no_ap)
    with pytest.raises(RuntimeError, match="no usable bbox/AP"):
        run_proxy_trial(_task(tmp_path, SPINENET49))
