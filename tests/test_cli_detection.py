"""``torchspine data make-demo``, ``eval`` and ``predict`` end to end on a tiny generated data set."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import OFFICIAL
from torchspine.cli.main import main
from torchspine.convert.converter import convert_checkpoint
from torchspine.engine.export import export_model
from torchspine.modelfile import save_model_file
from torchspine.models.detection.retinanet import build_retinanet


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["data", "make-demo", "--out", str(out), "--num-train", "2", "--num-val", "3"]) == 0
    return out


def test_eval_and_predict_with_a_plain_state_dict(demo, tmp_path, capsys):
    weights = tmp_path / "model.safetensors"
    save_file(build_retinanet("test_spinenet", num_classes=6).state_dict(), weights)
    args = [
        "--weights",
        str(weights),
        "--model",
        "test_spinenet",
        "--task",
        "retinanet",
        "--num-classes",
        "6",
        "--image-size",
        "256",
    ]
    results = tmp_path / "results.json"
    assert main(["eval", *args, "--data", str(demo), "--split", "val", "--out", str(results)]) == 0
    out = capsys.readouterr().out
    assert "AP50" in out and "bbox" in out
    assert isinstance(json.loads(results.read_text()), list)
    pictures = tmp_path / "pictures"
    assert (
        main(
            [
                "predict",
                *args,
                str(demo / "val"),
                "--out",
                str(pictures),
                "--score-threshold",
                "0.0",
                "--categories",
                str(demo / "annotations" / "instances_val.json"),
            ]
        )
        == 0
    )
    predictions = json.loads((pictures / "predictions.json").read_text())
    assert len(predictions["images"]) == 3 and len(list(pictures.glob("*.png"))) == 3


def test_eval_works_with_converted_official_weights(demo, tmp_path, capsys):
    state, meta, _ = convert_checkpoint(OFFICIAL / "mg_spinenet49_retinanet_tiny")
    weights = save_model_file(state, meta, tmp_path / "official.safetensors")
    assert main(["eval", "--weights", str(weights), "--image-size", "256", "--data", str(demo)]) == 0
    assert "AP75" in capsys.readouterr().out


def test_plain_weights_need_a_task(tmp_path, capsys):
    weights = tmp_path / "model.safetensors"
    save_file(build_retinanet("test_spinenet", num_classes=6).state_dict(), weights)
    assert main(["predict", "--weights", str(weights), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no torchspine metadata" in capsys.readouterr().err


def test_conflicting_num_classes_is_an_error(tmp_path, capsys):
    state, meta, _ = convert_checkpoint(OFFICIAL / "mg_spinenet49_retinanet_tiny")
    weights = save_model_file(state, meta, tmp_path / "official.safetensors")
    code = main(
        ["predict", "--weights", str(weights), "--num-classes", "7", str(tmp_path), "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert "num_classes=7 but the file's retinanet has 5 class outputs" in capsys.readouterr().err


def test_eval_with_winograd_heads_scores_alike(demo, tmp_path, capsys):
    weights = tmp_path / "model.safetensors"
    model = build_retinanet("test_spinenet", num_classes=6, image_size=256)
    with torch.no_grad():
        model.head.cls.predict.bias.zero_()  # scores near 0.5, not the prior's 0.01: detections pass the threshold
    export_model(model, weights, variant="test_spinenet")
    base = ["eval", "--weights", str(weights), "--data", str(demo), "--split", "val"]
    scores = {}
    for flags in ([], ["--winograd"]):  # at 256 px, P3 (32x32) takes the Winograd path
        out = tmp_path / f"results{len(flags)}.json"
        assert main([*base, *flags, "--out", str(out)]) == 0
        scores[bool(flags)] = sorted(d["score"] for d in json.loads(out.read_text()))
    assert len(scores[True]) == len(scores[False]) > 0
    assert max(abs(a - b) for a, b in zip(scores[True], scores[False], strict=True)) < 1e-4
    capsys.readouterr()
    assert main([*base, "--winograd", "--no-fast-path"]) == 2
    assert "--winograd is part of the fast path" in capsys.readouterr().err
