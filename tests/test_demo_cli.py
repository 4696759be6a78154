"""``torchspine demo`` (what ``make demo`` runs), shortened to a few steps: the same path CI can afford."""

from __future__ import annotations

import json

from PIL import Image

import torchspine.engine.run
from torchspine.cli.main import main
from torchspine.engine.metrics import read_jsonl


def test_demo_trains_evaluates_draws_and_says_where(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torchspine.engine.run, "CACHE_DIR", tmp_path / "cache")  # the demo data set goes here
    out = tmp_path / "run"
    overrides = ["train.max_steps=2", "eval.max_images=4", "data.num_workers=0"]
    assert main(["demo", "--output-dir", str(out), *[a for o in overrides for a in ("--set", o)]]) == 0
    printed = capsys.readouterr().out

    assert (tmp_path / "cache" / "demo_data" / "annotations" / "instances_train.json").is_file()
    assert "trained 2 steps" in printed and "AP50" in printed and "bbox" in printed
    for path in ("predictions.png", "detections.json", "model.safetensors", "metrics.jsonl", "config.yaml"):
        assert (out / path).is_file(), path
        assert str(out / path) in printed, f"the summary does not say where {path} is"
    with Image.open(out / "predictions.png") as picture:
        assert picture.width > 4 * 200 and picture.height > 2 * 200  # 8 validation images, 4 per row
    assert any("bbox/AP50" in record for record in read_jsonl(out / "metrics.jsonl"))
    detections = json.loads((out / "detections.json").read_text())
    assert isinstance(detections, list)
