"""``torchspine train`` end to end on a tiny generated data set: outputs, exact resume, SIGTERM, bad configs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from torchspine.cli.main import main
from torchspine.data.synthetic import DEMO_CATEGORIES
from torchspine.engine.checkpoint import load_checkpoint
from torchspine.errors import UsageError

COMMON = [
    "--experiment",
    "demo",
    "--set",
    "train.global_batch_size=4",
    "--set",
    "data.num_workers=0",
    "--set",
    "train.checkpoint_every_steps=2",
    "--set",
    "eval.max_images=2",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["data", "make-demo", "--out", str(out), "--num-train", "8", "--num-val", "2"]) == 0
    return out


def _train(data, out, *extra: str) -> int:
    return main(["train", *COMMON, "--data", str(data), "--output-dir", str(out), *extra])


def test_train_writes_config_metrics_and_checkpoints(data, tmp_path):
    assert _train(data, tmp_path, "--set", "train.max_steps=3") == 0
    assert (tmp_path / "config.yaml").read_text().count("test_spinenet") == 1
    assert (tmp_path / "metrics.jsonl").read_text().count('"bbox/AP":') == 1  # the final evaluation
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "ckpt-00000003.pt")
    assert ckpt["step"] == 3 and ckpt["config"]["model"]["backbone"] == "test_spinenet"
    assert (tmp_path / "checkpoints" / "best.pt").exists()


def test_run_writes_tensorboard_scalars_and_a_self_describing_model(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from torchspine import load_model, read_model_file
    from torchspine.engine.metrics import read_jsonl

    assert _train(data, tmp_path, "--set", "train.max_steps=4", "--set", "train.log_every=2") == 0
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "bbox/AP"} <= set(scalars)
    logged = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "loss" in r]
    assert [e.step for e in events.Scalars("train/loss")] == [r["step"] for r in logged] == [2, 4]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([r["loss"] for r in logged])

    # model.safetensors rebuilds the trained detector with no flags and holds the final checkpoint's weights.
    detector = load_model(tmp_path / "model.safetensors")
    final = load_checkpoint(tmp_path / "checkpoints" / "ckpt-00000004.pt")["model"]
    assert detector.transform.image_size == 256 and detector.head.num_classes == 6
    info = read_model_file(tmp_path / "model.safetensors")
    assert info.provenance.source == "trained" and info.provenance.step == 4
    assert set(info.category_names.values()) == set(DEMO_CATEGORIES.values())
    for key, value in detector.state_dict().items():
        torch.testing.assert_close(value, final[key], rtol=0, atol=0, msg=key)


def test_resume_matches_an_uninterrupted_run(data, tmp_path):
    assert _train(data, tmp_path / "full", "--set", "train.max_steps=5") == 0
    assert _train(data, tmp_path / "split", "--set", "train.max_steps=3") == 0
    assert _train(data, tmp_path / "split", "--set", "train.max_steps=5", "--resume") == 0
    full = load_checkpoint(tmp_path / "full" / "checkpoints" / "ckpt-00000005.pt")
    split = load_checkpoint(tmp_path / "split" / "checkpoints" / "ckpt-00000005.pt")
    for key, value in full["model"].items():
        torch.testing.assert_close(split["model"][key], value, rtol=0, atol=0, msg=key)


def test_resume_checks_the_config_and_that_there_is_a_checkpoint(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data, out, "--set", "train.max_steps=2", "--resume") == 2  # nothing to resume: --resume must fails
    assert "no valid checkpoint" in capsys.readouterr().err and not list(out.glob("checkpoints/ckpt-*"))
    assert _train(data, out, "--set", "train.max_steps=2", "--resume", "auto") == 0  # auto starts from scratch
    changed = ["--set", "optim.lr_per_256=0.5", "--set", "data.hflip=false", "--set", "train.max_steps=3"]
    assert _train(data, out, *changed, "--resume") == 2
    err = capsys.readouterr().err
    assert "optim.lr_per_256: 0.064 in the checkpoint, 0.5 now" in err and "data.hflip: True" in err, err
    assert "max_steps" not in err.split("may only change")[0]  # a whitelisted change is not listed
    assert load_checkpoint(out / "checkpoints" / "ckpt-00000002.pt")["step"] == 2  # and nothing was trained


def test_sigterm_saves_and_exits_cleanly(data, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torchspine.cli.main",
        "train",
        *COMMON,
        "--data",
        str(data),
        "--output-dir",
        str(tmp_path),
        "--set",
        "train.max_steps=10000",
        "--set",
        "train.checkpoint_every_steps=1000",
        "--set",
        "train.log_every=1",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    # The handler is installed before the first step, and every step logs a line: wait for two logged steps.
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if metrics.exists() and metrics.read_text().count('"loss"') >= 2:
            break
        time.sleep(0.1)  # polling interval only: the event is the logged step
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "saving and stopping" in err
    saved = sorted((tmp_path / "checkpoints").glob("ckpt-*.pt"))
    assert saved and 0 < load_checkpoint(saved[-1])["step"] < 10000


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "model.backbon=spinenet49"], "model.backbon"),
        (["--set", "train.max_steps=abc"], "train.max_steps"),
        (["--set", "model.min_level=6", "--set", "model.max_level=5"], "min_level"),
    ],
    ids=["unknown-key", "wrong-type", "impossible"],
)
def test_bad_config_fails_before_work(data, tmp_path, capsys, extra, message):
    assert _train(data, tmp_path, *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


def test_fewer_images_than_a_batch_fails_at_once_with_the_numbers(tmp_path, capsys):
    # Two training images and a batch of 8: the loader drops the partial batch, so every epoch is empty. This used
    # to spin at 100 % CPU forever with no output; it must be an error naming both numbers before any work.
    small = tmp_path / "small"
    assert main(["data", "make-demo", "--out", str(small), "--num-train", "2", "--num-val", "1"]) == 0
    code = main(["train", "--experiment", "demo", "--data", str(small), "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "has 2 usable image(s)" in err and "global batch 8" in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "kinds"),
    [
        (["--set", "model.task=maskrcnn"], {"bbox", "segm"}),
        (["--set", "train.amp=bf16"], {"bbox"}),  # bf16 autocast on CPU
        (
            [
                *("--set", "train.channels_last=true"),
                *("--set", "model.backbone=test_spinenet_mobile"),
                *("--set", "model.semantics=model_garden"),
            ],
            {"bbox"},
        ),
    ],
    ids=["maskrcnn", "bf16-cpu", "channels-last-mobile"],
)
def test_training_variants_run(data, tmp_path, extra, kinds):
    from torchspine.engine.metrics import read_jsonl

    assert _train(data, tmp_path, "--set", "train.max_steps=3", "--set", "train.log_every=1", *extra) == 0
    records = read_jsonl(tmp_path / "metrics.jsonl")
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    evaluated = {key.split("/")[0] for r in records for key in r if key.endswith("/AP")}
    assert evaluated == kinds


def test_resume_logs_settings_the_checkpoint_predates(tmp_path, caplog):
    """A field added to the config after a run started cannot be "restored" by the user: it is logged, not refused,
    while a real difference in an existing field still is."""
    import dataclasses

    from torchspine.config import get_experiment
    from torchspine.engine.run import check_resumable_config

    cfg = get_experiment("demo")
    saved = dataclasses.asdict(cfg)
    del saved["optim"]["clip_mode"]
    with caplog.at_level("WARNING", logger="torchspine.engine.run"):
        check_resumable_config(saved, cfg, tmp_path)
    assert f"optim.clip_mode={cfg.optim.clip_mode!r}" in caplog.text
    saved["optim"]["lr_per_256"] = cfg.optim.lr_per_256 * 2
    with pytest.raises(UsageError, match=r"optim\.lr_per_256"):
        check_resumable_config(saved, cfg, tmp_path)
