"""Config for searched architectures: spec files over a variant, width and head overrides, the held-out split,
and retraining a spec file with ``torchspine train --set model.backbone_spec=FILE``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from torchspine.cli.main import main as cli_main
from torchspine.config import ConfigError, config_from_dict, dump_config, load_config
from torchspine.engine.build import build_datasets, build_model
from torchspine.modelfile import read_model_file
from torchspine.specs import SPINENET_BLOCKS, BlockSpec

B = BlockSpec
ARCH = (
    B(1, "residual", (0, 1), False),
    B(7, "residual", (2, 1), False),
    B(3, "bottleneck", (2, 3), True),
    B(4, "residual", (4, 3), True),
    B(5, "bottleneck", (5, 2), True),
    B(6, "residual", (6, 3), True),
    B(7, "bottleneck", (7, 4), True),
)


def _write_rows(path: Path, blocks=ARCH) -> Path:
    path.write_text(yaml.safe_dump([[b.level, b.block_fn, list(b.input_offsets), b.is_output] for b in blocks]))
    return path


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert cli_main(["data", "make-demo", "--out", str(out), "--num-train", "12", "--num-val", "2"]) == 0
    return out


def test_spec_file_over_the_variant(tmp_path: Path) -> None:
    spec = _write_rows(tmp_path / "arch.yaml")
    cfg = load_config("demo", [], [f"model.backbone_spec={spec}"])
    model = build_model(cfg.model, num_classes=6)
    backbone = model.backbone.cfg
    assert backbone.blocks == ARCH
    # Everything else is test_spinenet's (the experiment's backbone): widths x0.25, alpha 0.5, 32-d endpoints.
    assert (backbone.filter_size_scale, backbone.resample_alpha, backbone.endpoints_num_filters) == (0.25, 0.5, 32)
    # Without the spec file the official blocks are built, unchanged.
    plain = build_model(load_config("demo").model, num_classes=6).backbone.cfg
    assert plain.blocks == SPINENET_BLOCKS


def test_width_and_head_overrides(tmp_path: Path) -> None:
    spec = tmp_path / "arch.json"
    spec.write_text(json.dumps({"blocks": [[b.level, b.block_fn, list(b.input_offsets), b.is_output] for b in ARCH]}))
    cfg = load_config(
        "demo",
        [],
        [
            f"model.backbone_spec={spec}",
            "model.filter_size_scale=0.125",
            "model.resample_alpha=0.25",
            "model.endpoints_num_filters=16",
            "model.head_num_filters=24",
            "model.head_num_convs=1",
        ],
    )
    model = build_model(cfg.model, num_classes=6)
    b = model.backbone.cfg
    assert (b.filter_size_scale, b.resample_alpha, b.endpoints_num_filters, b.blocks) == (0.125, 0.25, 16, ARCH)
    assert (model.head.num_filters, model.head.num_convs) == (24, 1)
    defaults = build_model(load_config("demo").model, num_classes=6).head
    assert (defaults.num_filters, defaults.num_convs) == (32, 2)  # None keeps test_spinenet's head


def test_bad_spec_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=rf"model.backbone_spec: spec file {missing} does not exist"):
        load_config("demo", [], [f"model.backbone_spec={missing}"])
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("- [3, bottleneck, [0, 1]]\n")
    with pytest.raises(ConfigError, match=rf"model.backbone_spec: {garbage}: block row 0"):
        load_config("demo", [], [f"model.backbone_spec={garbage}"])
    forward = _write_rows(tmp_path / "forward.yaml", (B(3, "bottleneck", (0, 5), True), *ARCH[3:]))
    with pytest.raises(ConfigError, match=rf"{forward}: block 0 .*input offset 5"):
        load_config("demo", [], [f"model.backbone_spec={forward}"])
    conflict = tmp_path / "conflict.yaml"
    conflict.write_text(yaml.safe_dump({"filter_size_scale": 0.5}))
    with pytest.raises(ConfigError, match=r"model.filter_size_scale=0.125 contradicts filter_size_scale=0.5"):
        load_config("demo", [], [f"model.backbone_spec={conflict}", "model.filter_size_scale=0.125"])
    with pytest.raises(ConfigError, match=r"model.head_num_convs: only applies to task=retinanet"):
        load_config("maskrcnn_spinenet49", [], ["model.head_num_convs=2"])
    with pytest.raises(ConfigError, match=r"model.backbone_spec: only applies to SpineNet backbones"):
        load_config("retinanet_resnet50_fpn_protocol_b", [], [f"model.backbone_spec={forward}"])


def test_round_trip_with_spec_and_holdout(tmp_path: Path) -> None:
    spec = _write_rows(tmp_path / "arch.yaml")
    cfg = load_config("search_demo", [], [f"model.backbone_spec={spec}", "data.holdout_seed=7"])
    assert config_from_dict(yaml.safe_load(dump_config(cfg))) == cfg


def test_holdout_split_is_seeded_disjoint_and_evaluated_alone(demo_data: Path) -> None:
    def split(seed: int):
        cfg = load_config(
            "search_demo", [], [f"data.data={demo_data}", "data.holdout_images=4", f"data.holdout_seed={seed}"]
        )
        return build_datasets(cfg.data, cfg.model, demo_data)

    train, val = split(3)
    assert len(val) == 4 and len(train) == 8
    assert set(train.ids).isdisjoint(val.ids) and set(train.ids) | set(val.ids) == set(range(1, 13))
    assert split(3)[1].ids == val.ids and split(4)[1].ids != val.ids
    # The evaluation ground truth holds the held-out images only; training images go through the augmentation.
    assert sorted(val.coco.getImgIds()) == val.ids
    assert {a["image_id"] for a in val.coco.dataset["annotations"]} <= set(val.ids)
    assert val.transforms is None and train.transforms is not None
    _image, target = val[0]
    assert target["image_id"] == val.ids[0]
    cfg = load_config("search_demo", [], [f"data.data={demo_data}", "data.holdout_images=12"])
    with pytest.raises(ValueError, match=r"data.holdout_images=12: must be between 1 and 11"):
        build_datasets(cfg.data, cfg.model, demo_data)


def test_train_retrains_a_spec_file(demo_data: Path, tmp_path: Path) -> None:
    spec = _write_rows(tmp_path / "arch.yaml")
    out = tmp_path / "run"
    argv = ["train", "--experiment", "demo", "--data", str(demo_data), "--output-dir", str(out)]
    sets = [f"model.backbone_spec={spec}", "train.max_steps=2", "train.global_batch_size=4", "eval.max_images=2"]
    assert cli_main([*argv, *[x for s in sets for x in ("--set", s)]]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["backbone_spec"] == str(spec)
    info = read_model_file(out / "model.safetensors")
    assert info.backbone.variant == "custom" and info.backbone.cfg.blocks == ARCH


def test_search_experiments_follow_the_paper_proxy() -> None:
    from torchspine.config import get_experiment

    cfg = get_experiment("search_proxy_spinenet49")
    m, d, o, s, t = cfg.model, cfg.data, cfg.optim, cfg.schedule, cfg.train
    assert (m.backbone, m.image_size, m.filter_size_scale, m.resample_alpha) == ("spinenet49", 512, 0.25, 0.25)
    assert (m.endpoints_num_filters, m.head_num_filters, m.head_num_convs) == (64, 64, 4)
    assert (d.holdout_images, d.scale_min, d.scale_max) == (7392, 0.5, 2.0)
    assert (o.optimizer, o.momentum, t.global_batch_size) == ("sgd", 0.9, 64)
    assert o.lr_per_256 * t.global_batch_size / 256 == pytest.approx(0.08)
    steps_per_epoch = (118_287 - 7_392) // 64
    assert round(s.warmup_epochs * steps_per_epoch) == 500 and s.epochs == 5
    assert s.decay_epochs == (4.0,) and s.decay_factor == 0.1  # x0.1 at 80 %
    assert not t.tensorboard and t.keep_last == 1
    demo = get_experiment("search_demo")
    assert demo.data.holdout_images > 0 and demo.data.data is None and demo.model.image_size == 128
