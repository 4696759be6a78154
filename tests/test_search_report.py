"""Architecture pictures (`torchspine draw`) and the search report (reward curves, best architecture, summary)."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from torchspine.cli.main import main as cli_main
from torchspine.search.draw import draw_architecture
from torchspine.search.report import write_report
from torchspine.specs import SPINENET_BLOCKS, BlockSpec, SpineNetCfg

B = BlockSpec
ODD = (
    B(1, "residual", (0, 1), False),
    B(7, "residual", (2, 1), False),
    B(1, "bottleneck", (3, 2), False),
    B(2, "residual", (2, 3), False),  # feeds nothing: pruned
    B(3, "bottleneck", (4, 3), True),
    B(4, "residual", (6, 4), True),
    B(5, "bottleneck", (7, 2), True),
    B(6, "residual", (8, 3), True),
    B(7, "bottleneck", (9, 4), True),
)


def _rows(blocks) -> list:
    return [[b.level, b.block_fn, list(b.input_offsets), b.is_output] for b in blocks]


def _pixels(path: Path) -> np.ndarray:
    image = Image.open(path)
    assert image.format == "PNG"
    assert 400 <= image.width <= 4000 and 250 <= image.height <= 2000
    return np.asarray(image.convert("RGB"))


def test_two_architectures_give_different_pictures(tmp_path: Path) -> None:
    a = _pixels(draw_architecture(SpineNetCfg(blocks=SPINENET_BLOCKS[:15]), tmp_path / "a.png"))
    b = _pixels(draw_architecture(SpineNetCfg(blocks=ODD), tmp_path / "b.png"))
    a2 = _pixels(draw_architecture(SpineNetCfg(blocks=SPINENET_BLOCKS[:15]), tmp_path / "a2.png"))
    assert np.array_equal(a, a2)  # deterministic
    assert a.shape != b.shape or not np.array_equal(a, b)
    assert (a.std(axis=(0, 1)) > 10).all()  # not a blank canvas


def test_draw_cli_spec_file_and_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "odd.json"
    spec.write_text(json.dumps(_rows(ODD)))
    assert cli_main(["draw", str(spec), "--out", str(tmp_path / "odd.png")]) == 0
    assert cli_main(["draw", "spinenet49", "--out", str(tmp_path / "49.png")]) == 0
    assert not np.array_equal(_pixels(tmp_path / "odd.png")[:50], _pixels(tmp_path / "49.png")[:50])
    assert cli_main(["draw", "spinenet48", "--out", str(tmp_path / "x.png")]) == 2
    assert "did you mean spinenet49" in capsys.readouterr().err


def _records(n: int, rng: random.Random) -> list[dict]:
    records = []
    for number in range(n):
        searcher = "evolution" if number % 2 else "random"
        state = rng.choice(["COMPLETE", "COMPLETE", "COMPLETE", "FAIL", "RUNNING"])
        blocks = ODD if number % 3 else SPINENET_BLOCKS[:15]
        records.append(
            {
                "number": number,
                "state": state,
                "reward": rng.random() * 0.3 if state == "COMPLETE" else None,
                "searcher": searcher,
                "policy_version": 0,
                "decisions": [],
                "blocks": _rows(blocks),
                "arch": f"arch{number % 3}",
                "macs": 1e9 + number,
                "params": 1000 + number,
                "failure": "exception" if state == "FAIL" else None,
                "reason": "",
                "started": None,
                "finished": None,
            }
        )
    return records


def test_report_pictures_and_summary(tmp_path: Path) -> None:
    records = _records(30, random.Random(0))
    paths = write_report(records, tmp_path / "report")
    assert sorted(p.name for p in paths) == ["best_architecture.png", "rewards.png", "summary.json", "trials.csv"]
    for p in paths:
        if p.suffix == ".png":
            _pixels(p)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    done = [r for r in records if r["state"] == "COMPLETE"]
    best = max(done, key=lambda r: r["reward"])
    assert summary["best"]["number"] == best["number"] and summary["best"]["reward"] == best["reward"]
    assert summary["states"]["COMPLETE"] == len(done) and summary["trials"] == 30
    assert summary["searchers"]["random"]["complete"] == sum(r["searcher"] == "random" for r in done)
    assert len((tmp_path / "report" / "trials.csv").read_text().splitlines()) == 31

    # A different best architecture gives a different picture.
    flipped = [
        dict(
            r,
            reward=(
                0.31 if r is not best and r["state"] == "COMPLETE" and r["blocks"] != best["blocks"] else r["reward"]
            ),
        )
        for r in records
    ]
    write_report(flipped, tmp_path / "report2")
    one = _pixels(tmp_path / "report" / "best_architecture.png")
    two = _pixels(tmp_path / "report2" / "best_architecture.png")
    assert one.shape != two.shape or not np.array_equal(one, two)


def test_report_without_complete_trials(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records = [dict(r, state="RUNNING", reward=None) for r in _records(4, random.Random(1))]
    with caplog.at_level(logging.WARNING):
        paths = write_report(records, tmp_path)
    assert sorted(p.name for p in paths) == ["summary.json", "trials.csv"]
    assert "no COMPLETE trial yet (4 RUNNING)" in caplog.text
    assert json.loads((tmp_path / "summary.json").read_text())["best"] is None
    assert write_report([], tmp_path / "empty")[-1].name == "summary.json"


def test_report_of_a_space_with_other_output_levels(tmp_path: Path) -> None:
    # The tiny space's outputs are L3..L5: the best architecture is drawn with those endpoints, not P3..P7.
    from torchspine.search.space import SearchSpace, spec_rows

    space = SearchSpace.tiny()
    blocks = space.decode(space.random(random.Random(0)))
    record = dict(_records(1, random.Random(0))[0], state="COMPLETE", reward=0.2, blocks=spec_rows(blocks))
    paths = write_report([record], tmp_path)
    assert "best_architecture.png" in {p.name for p in paths}
