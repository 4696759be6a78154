"""The detector can memorise a handful of images: the whole training path works, not just each part alone.

Losses, anchor matching, box coding, the optimizer, the schedule, the data pipeline and post-processing each have
unit tests; a sign error or a mismatch between how boxes are encoded for the loss and decoded for the detections
would pass all of them and still leave a detector that cannot learn. Training the demo RetinaNet on four images
without augmentation must drive the loss near zero and the COCO box AP on those same images near 1.

The evaluation uses BatchNorm's running statistics; a momentum of 0.5 and a cosine schedule that ends at LR 0 let
them settle onto the final weights' batch statistics (every batch is the same four images), so the evaluated model
is the trained one. The images are drawn at 128 px and trained at 256 px, so the smallest shapes (8 px drawn) are
16 px, enough for the level-3 anchors.
"""

from __future__ import annotations

import pytest

from torchspine.cli.main import main
from torchspine.engine.metrics import read_jsonl

STEPS = 250
NUM_IMAGES = 4


@pytest.mark.slow
def test_retinanet_overfits_four_images(tmp_path, capsys):
    data = tmp_path / "data"
    # --num-val 0 and val_split=train: the evaluation sees exactly the training images.
    args = ["data", "make-demo", "--out", str(data), "--num-train", str(NUM_IMAGES), "--num-val", "0"]
    assert main([*args, "--image-size", "128"]) == 0
    overrides = {
        "model.image_size": 256,
        "model.norm_momentum": 0.5,
        "data.val_split": "train",
        "data.scale_min": 1.0,  # no augmentation: the same four inputs every step
        "data.scale_max": 1.0,
        "data.hflip": "false",
        "data.num_workers": 0,
        "train.global_batch_size": NUM_IMAGES,  # one step is one epoch
        "schedule.epochs": STEPS,  # cosine decay to 0 at the last step
        "optim.lr_per_256": 0.64,  # AdamW at 0.01
        "train.log_every": 1,
        "train.eval_every_epochs": STEPS,  # only the final evaluation
        "train.checkpoint_every_steps": STEPS,
        "train.tensorboard": "false",
    }
    sets = [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]
    out = tmp_path / "run"
    assert main(["train", "--experiment", "demo", "--data", str(data), "--output-dir", str(out), *sets]) == 0

    records = read_jsonl(out / "metrics.jsonl")
    losses = [r["loss"] for r in records if "loss" in r]
    evaluation = [r for r in records if "bbox/AP" in r]
    assert len(losses) == STEPS and [r["step"] for r in evaluation] == [STEPS]
    initial, final = losses[0], sum(losses[-5:]) / 5
    with capsys.disabled():
        print(f"\nloss {initial:.4f} -> {final:.4f}; " + ", ".join(f"{k} {v:.3f}" for k, v in evaluation[0].items()))
    assert final < 0.05 * initial
    assert evaluation[0]["bbox/AP50"] >= 0.95
    assert evaluation[0]["bbox/AP"] >= 0.8
