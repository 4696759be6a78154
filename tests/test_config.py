"""The configuration system: precedence, strictness, type coercion, validation, round trips, registered recipes."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from torchspine.config import (
    ConfigError,
    ExperimentCfg,
    ScheduleCfg,
    apply_overrides,
    config_from_dict,
    derive,
    dump_config,
    get_experiment,
    list_experiments,
    load_config,
    register_experiment,
    validate,
    validate_world_size,
)
from torchspine.config.schema import RESNET_BACKBONES

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _yaml(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------- precedence


def test_precedence_experiment_then_yaml_in_order_then_set(tmp_path: Path) -> None:
    base = get_experiment("retinanet_spinenet49_protocol_c")
    a = _yaml(tmp_path, "a.yaml", "model:\n  image_size: 512\ntrain:\n  global_batch_size: 64\n  seed: 1\n")
    b = _yaml(tmp_path, "b.yaml", "train:\n  global_batch_size: 32\n")
    cfg = load_config("retinanet_spinenet49_protocol_c", [a, b], ["train.seed=7", "train.seed=8"])
    assert cfg.model.image_size == 512  # from a.yaml
    assert cfg.train.global_batch_size == 32  # b.yaml after a.yaml
    assert cfg.train.seed == 8  # --set after the files, later --set wins
    assert cfg.schedule == base.schedule  # untouched keys keep the experiment's values
    assert cfg.name == "retinanet_spinenet49_protocol_c"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.seed = 3  # type: ignore[misc]


def test_empty_yaml_changes_nothing(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "empty.yaml", "# nothing\n")
    assert load_config("demo", [path]) == get_experiment("demo")


# ----------------------------------------------------------------------------------------------------- strictness


def test_unknown_yaml_key_names_file_key_and_suggestion(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "typo.yaml", "optim:\n  lr_per256: 0.1\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml.*'optim\.lr_per256'.*did you mean 'optim\.lr_per_256'"):
        load_config("demo", [path])


def test_unknown_section_and_misplaced_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'optimizer'.*did you mean 'optim'"):
        load_config("demo", [_yaml(tmp_path, "a.yaml", "optimizer:\n  lr_per_256: 0.1\n")])
    with pytest.raises(ConfigError, match=r"'model\.epochs'.*'schedule\.epochs'"):
        load_config("demo", [_yaml(tmp_path, "b.yaml", "model:\n  epochs: 3\n")])


def test_yaml_structure_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bad\.yaml: model must be a mapping"):
        load_config("demo", [_yaml(tmp_path, "bad.yaml", "model: 3\n")])
    with pytest.raises(ConfigError, match=r"dup\.yaml.*duplicate key 'seed'"):
        load_config("demo", [_yaml(tmp_path, "dup.yaml", "train:\n  seed: 1\n  seed: 2\n")])
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        load_config("demo", [tmp_path / "missing.yaml"])
    with pytest.raises(ConfigError, match=r"broken\.yaml: invalid YAML"):
        load_config("demo", [_yaml(tmp_path, "broken.yaml", "model: [1,\n")])


def test_unknown_set_key_and_malformed_set() -> None:
    with pytest.raises(ConfigError, match=r"--set.*'train\.max_step'.*did you mean 'train\.max_steps'"):
        load_config("demo", overrides=["train.max_step=3"])
    with pytest.raises(ConfigError, match=r"'model\.max_step'.*did you mean 'train\.max_steps'"):
        load_config("demo", overrides=["model.max_step=3"])
    with pytest.raises(ConfigError, match=r"'nope'"):
        load_config("demo", overrides=["nope.x=3"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config("demo", overrides=["train.seed"])
    with pytest.raises(ConfigError, match=r"'train' is a section"):
        load_config("demo", overrides=["train=3"])
    with pytest.raises(ConfigError, match=r"'train\.seed' is a value"):
        load_config("demo", overrides=["train.seed.x=3"])


def test_unknown_experiment_suggests() -> None:
    with pytest.raises(KeyError, match="did you mean retinanet_spinenet49_protocol_c"):
        get_experiment("retinanet_spinenet49_protocl_c")
    with pytest.raises(ConfigError, match="unknown experiment"):
        load_config("nope_nothing_like_it")


# --------------------------------------------------------------------------------------------- types and coercion


@pytest.mark.parametrize(
    ("override", "path", "expected"),
    [
        ("train.seed=5", "train.seed", 5),
        ("optim.lr_per_256=1e-3", "optim.lr_per_256", 1e-3),
        ("optim.weight_decay=0", "optim.weight_decay", 0.0),
        ("train.channels_last=true", "train.channels_last", True),
        ("train.channels_last=1", "train.channels_last", True),
        ("data.hflip=False", "data.hflip", False),
        ("data.hflip=0", "data.hflip", False),
        ("model.backbone=spinenet96", "model.backbone", "spinenet96"),
        ("optim.optimizer=sgd", "optim.optimizer", "sgd"),
        ("train.max_steps=none", "train.max_steps", None),
        ("train.max_steps=null", "train.max_steps", None),
        ("train.max_steps=12", "train.max_steps", 12),
        ("optim.clip_grad_norm=None", "optim.clip_grad_norm", None),
        ("data.data=none", "data.data", None),
        ("data.data=/x/coco", "data.data", "/x/coco"),
        ("schedule.decay_epochs=2,4", "schedule.decay_epochs", (2.0, 4.0)),
        ("schedule.decay_epochs=[2, 4.5]", "schedule.decay_epochs", (2.0, 4.5)),
        ("schedule.decay_epochs=(3,)", "schedule.decay_epochs", (3.0,)),
        ("schedule.decay_epochs=", "schedule.decay_epochs", ()),
        ("schedule.decay_epochs=[]", "schedule.decay_epochs", ()),
    ],
)
def test_set_coercion(override: str, path: str, expected: object) -> None:
    cfg = apply_overrides(get_experiment("demo"), [override])
    section, key = path.split(".")
    value = getattr(getattr(cfg, section), key)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("train.seed=1.5", r"train\.seed: expected int"),
        ("train.seed=none", r"train\.seed: expected int"),  # not optional
        ("optim.lr_per_256=fast", r"optim\.lr_per_256: expected float"),
        ("optim.lr_per_256=nan", r"optim\.lr_per_256: expected float"),
        ("train.channels_last=yes please", r"train\.channels_last: expected bool"),
        ("optim.optimizer=adam", r"optim\.optimizer: 'adam' is not one of 'sgd', 'adamw'"),
        ("train.amp=float16", r"train\.amp: 'float16' is not one of"),
        ("model.semantics=none", r"model\.semantics: 'none' is not one of"),
        ("schedule.decay_epochs=1,x", r"schedule\.decay_epochs\[1\]: expected float"),
        ("schedule.decay_epochs=[1, [2]]", r"schedule\.decay_epochs\[1\]: expected float"),
    ],
)
def test_set_type_errors(override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        apply_overrides(get_experiment("demo"), [override])


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("train:\n  seed: '3'\n", r"train\.seed: expected int, got str"),
        ("train:\n  seed: true\n", r"train\.seed: expected int, got bool"),
        ("train:\n  seed: 2.0\n", r"train\.seed: expected int, got float"),
        ("data:\n  hflip: 1\n", r"data\.hflip: expected bool"),
        ("model:\n  backbone: 49\n", r"model\.backbone: expected str"),
        ("model:\n  task: detection\n", r"model\.task: 'detection' is not one of"),
        ("model:\n  image_size: null\n", r"model\.image_size: must not be null"),
        ("schedule:\n  decay_epochs: 3\n", r"schedule\.decay_epochs: expected a list"),
        ("optim:\n  lr_per_256: [1]\n", r"optim\.lr_per_256: expected float"),
    ],
)
def test_yaml_type_errors(tmp_path: Path, text: str, pattern: str) -> None:
    path = _yaml(tmp_path, "t.yaml", text)
    with pytest.raises(ConfigError, match=rf"t\.yaml: {pattern}"):
        load_config("demo", [path])


def test_yaml_coercions(tmp_path: Path) -> None:
    text = (
        "optim:\n  lr_per_256: 1e-3\n  weight_decay: 0\n  clip_grad_norm: null\n"  # YAML 1.1: 1e-3 is a string
        "schedule:\n  type: step\n  decay_epochs: [2, 4]\n"
        "train:\n  max_steps: ~\n"
    )
    cfg = load_config("demo", [_yaml(tmp_path, "ok.yaml", text)])
    assert cfg.optim.lr_per_256 == 1e-3 and isinstance(cfg.optim.weight_decay, float)
    assert cfg.optim.clip_grad_norm is None and cfg.train.max_steps is None
    assert cfg.schedule.decay_epochs == (2.0, 4.0) and cfg.schedule.type == "step"


# ------------------------------------------------------------------------------------------------------ validate


@pytest.mark.parametrize("name", list_experiments())
def test_every_experiment_validates_and_round_trips(name: str) -> None:
    cfg = validate(get_experiment(name))
    assert cfg.name == name
    text = dump_config(cfg)
    assert config_from_dict(yaml.safe_load(text)) == cfg
    assert config_from_dict(dataclasses.asdict(cfg)) == cfg  # what checkpoints store


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["model.min_level=6", "model.max_level=5"], "model.min_level"),
        (["model.image_size=200"], "model.image_size"),
        (["model.image_size=0"], "model.image_size"),
        (["model.max_level=8", "model.image_size=512"], "model.min_level/model.max_level"),
        (["model.backbone=spinenet50"], "model.backbone"),
        (["model.task=classification", "model.backbone=resnet50_fpn"], "model.backbone"),
        (["model.act=gelu"], "model.act"),
        (["model.num_classes=0"], "model.num_classes"),
        (["model.drop_path_rate=1"], "model.drop_path_rate"),
        (["model.norm_momentum=0.99"], "model.norm_momentum"),
        (["model.norm_eps=0"], "model.norm_eps"),
        (["data.scale_min=2", "data.scale_max=1"], "data.scale_min"),
        (["data.scale_min=0"], "data.scale_min"),
        (["data.num_workers=-1"], "data.num_workers"),
        (["optim.lr_per_256=0"], "optim.lr_per_256"),
        (["optim.lr_per_256=-0.1"], "optim.lr_per_256"),
        (["optim.momentum=1"], "optim.momentum"),
        (["optim.weight_decay=-1"], "optim.weight_decay"),
        (["optim.clip_grad_norm=0"], "optim.clip_grad_norm"),
        (["schedule.epochs=0"], "schedule.epochs"),
        (["schedule.warmup_epochs=41"], "schedule.warmup_epochs"),
        (["schedule.warmup_init_lr_ratio=2"], "schedule.warmup_init_lr_ratio"),
        (["schedule.type=step", "schedule.decay_epochs=4,2"], "schedule.decay_epochs"),
        (["schedule.type=step", "schedule.decay_epochs=2,41"], "schedule.decay_epochs"),
        (["schedule.type=step", "schedule.decay_epochs=0.2,4"], "schedule.warmup_epochs"),
        (["schedule.decay_epochs=2,4"], "schedule.decay_epochs"),  # cosine ignores them
        (["schedule.decay_factor=1"], "schedule.decay_factor"),
        (["schedule.label_smoothing=0.1"], "schedule.label_smoothing"),  # detection task
        (["train.global_batch_size=0"], "train.global_batch_size"),
        (["train.grad_accum_steps=0"], "train.grad_accum_steps"),
        (["train.grad_accum_steps=3"], "train.global_batch_size"),  # 8 % 3
        (["train.log_every=0"], "train.log_every"),
        (["train.eval_every_epochs=0"], "train.eval_every_epochs"),
        (["train.checkpoint_every_steps=0"], "train.checkpoint_every_steps"),
        (["train.keep_last=0"], "train.keep_last"),
        (["train.max_steps=0"], "train.max_steps"),
        (["train.seed=-1"], "train.seed"),
        (["eval.batch_size=0"], "eval.batch_size"),
        (["eval.score_thresh=1"], "eval.score_thresh"),
        (["eval.max_images=0"], "eval.max_images"),
        (["model.anchor_num_scales=3"], "model.anchor_num_scales"),  # RetinaNet: not a Mask R-CNN
        (["model.anchor_size=4"], "model.anchor_size"),
        (["model.task=maskrcnn", "model.anchor_num_scales=0"], "model.anchor_num_scales"),
        (["model.task=maskrcnn", "model.anchor_size=0"], "model.anchor_size"),
    ],
)
def test_validate_catches_impossible_values(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("demo", overrides=overrides)
    assert re.search(rf"^  {re.escape(key)}: ", str(info.value), re.MULTILINE), str(info.value)


def test_unknown_backbone_suggests() -> None:
    with pytest.raises(ConfigError, match=r"model\.backbone: unknown model 'spinenet4'; did you mean spinenet49"):
        load_config("demo", overrides=["model.backbone=spinenet4"])


def test_validate_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("demo", overrides=["optim.lr_per_256=0", "eval.batch_size=0"])
    assert "optim.lr_per_256" in str(info.value) and "eval.batch_size" in str(info.value)


def test_classification_is_exempt_from_level_multiple() -> None:
    cfg = get_experiment("classification_spinenet49")
    assert cfg.model.image_size % 2**cfg.model.max_level != 0  # 224 px, as in the paper
    validate(cfg)


def test_resnet_backbones_match_the_detection_builders() -> None:
    from torchspine.models.detection.resnet_fpn import RESNET_FPN_BACKBONES

    assert set(RESNET_BACKBONES) == set(RESNET_FPN_BACKBONES)


def test_validate_world_size() -> None:
    cfg = load_config("demo", overrides=["train.global_batch_size=16", "train.grad_accum_steps=2"])
    assert validate_world_size(cfg, 1) == 8
    assert validate_world_size(cfg, 4) == 2
    with pytest.raises(ConfigError, match=r"train\.global_batch_size: 16 is not divisible by world_size \(3\)"):
        validate_world_size(cfg, 3)
    with pytest.raises(ConfigError, match=r"train\.global_batch_size"):
        validate_world_size(cfg, 16)  # 16 processes x 2 accumulation steps
    with pytest.raises(ConfigError, match="world_size"):
        validate_world_size(cfg, 0)


# ------------------------------------------------------------------------------------------- round trip, registry


def test_dump_round_trip_after_overrides() -> None:
    cfg = load_config(
        "retinanet_spinenet143_protocol_c",
        overrides=["train.max_steps=10", "optim.clip_grad_norm=none", "schedule.decay_steps=100000,200500"],
    )
    text = dump_config(cfg)
    assert "decay_steps: [100000, 200500]" in text
    assert config_from_dict(yaml.safe_load(text)) == cfg


def test_config_from_dict_is_strict_and_fills_defaults() -> None:
    assert config_from_dict({}) == ExperimentCfg()
    partial = config_from_dict({"train": {"seed": 3}})
    assert partial.train.seed == 3 and partial.model == ExperimentCfg().model
    with pytest.raises(ConfigError, match=r"ckpt: unknown key 'train\.sed'"):
        config_from_dict({"train": {"sed": 3}}, source="ckpt")


def test_list_experiments_and_register() -> None:
    names = list_experiments()
    for expected in (
        "demo",
        "retinanet_spinenet49_protocol_a",
        "retinanet_spinenet190_protocol_c",
        "retinanet_spinenet49s_protocol_b",
        "retinanet_resnet50_fpn_protocol_b",
        "retinanet_spinenet49xs_mobile",
        "maskrcnn_spinenet190",
        "classification_spinenet143",
    ):
        assert expected in names
    assert len(names) == len(set(names))
    assert list_experiments("maskrcnn_*") == [n for n in names if n.startswith("maskrcnn_")]
    with pytest.raises(ValueError, match="already registered"):
        register_experiment("demo")(lambda: ExperimentCfg())


def test_derive_replaces_nested_fields() -> None:
    base = ExperimentCfg()
    cfg = derive(base, model={"image_size": 1024}, schedule=ScheduleCfg(epochs=3.0, decay_epochs=(1.0,)))
    assert cfg.model.image_size == 1024 and cfg.model.backbone == base.model.backbone
    assert cfg.schedule.epochs == 3.0
    with pytest.raises(TypeError):
        derive(base, model={"imagesize": 1})


def test_experiments_are_fresh_objects() -> None:
    assert get_experiment("demo") == get_experiment("demo")
    assert get_experiment("demo") is not get_experiment("demo")


# ------------------------------------------------------------------------------------------------- paper recipes


def test_protocol_recipes_follow_the_paper() -> None:
    a = get_experiment("retinanet_spinenet49_protocol_a")
    b = get_experiment("retinanet_spinenet49_protocol_b")
    c = get_experiment("retinanet_spinenet49_protocol_c")
    # Protocol A has no official config (the paper's epochs); B and C use the tensorflow/tpu step counts.
    assert (a.schedule.epochs, b.schedule.total_steps, c.schedule.total_steps) == (250, 162_050, 231_500)
    assert (a.data.scale_min, a.data.scale_max) == (0.8, 1.2)
    assert (b.data.scale_min, b.data.scale_max) == (c.data.scale_min, c.data.scale_max) == (0.5, 2.0)
    assert c.schedule.decay_steps == (217_610, 226_870) and b.schedule.decay_steps == (148_160, 157_420)
    assert a.schedule.decay_epochs == (220, 240) and c.schedule.epochs is None
    assert (b.model.act, c.model.act, b.model.drop_path_rate, c.model.drop_path_rate) == ("relu", "swish", 0, 0.2)
    assert c.optim.lr_per_256 == 0.28 and c.optim.weight_decay == 4e-5 and c.optim.clip_grad_norm == 10
    assert c.model.norm_momentum == pytest.approx(0.003) and c.model.norm_eps == 1e-4 and c.model.semantics == "tpu"
    assert c.schedule.warmup_init_lr_ratio * c.optim.lr_per_256 == pytest.approx(0.0067)
    c143, c190 = get_experiment("retinanet_spinenet143_protocol_c"), get_experiment("retinanet_spinenet190_protocol_c")
    assert c143.model.drop_path_rate == 0.16 and (c143.data.scale_min, c143.data.scale_max) == (0.1, 1.9)
    assert c190.schedule.total_steps == 185_200 and c190.optim.lr_per_256 == 0.3 and c190.model.image_size == 1280
    assert get_experiment("retinanet_spinenet96_protocol_b").model.image_size == 1024
    mobile = get_experiment("retinanet_spinenet49xs_mobile")
    assert mobile.model.semantics == "model_garden" and mobile.model.image_size == 256
    cls = get_experiment("classification_spinenet49")
    assert cls.schedule.type == "cosine" and cls.schedule.label_smoothing == 0.1 and cls.schedule.total_steps == 62_557
    assert cls.optim.lr_per_256 * cls.train.global_batch_size / 256 == pytest.approx(1.6)
    demo = get_experiment("demo")
    assert demo.data.data is None and demo.model.backbone == "test_spinenet" and demo.optim.optimizer == "adamw"
    assert demo.model.norm_momentum == 0.1 and demo.train.max_steps is None


# --------------------------------------------------------------------------------------------- example YAML files


def _examples() -> list[Path]:
    return sorted(CONFIGS.rglob("*.yaml"))


def test_there_are_example_configs() -> None:
    assert {p.parent.name for p in _examples()} >= {"retinanet", "mask_rcnn", "classification"}


@pytest.mark.parametrize("path", _examples(), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_example_configs_load(path: Path) -> None:
    # Convention: the first line names the experiment the file is a delta over.
    match = re.match(r"# experiment: (\S+)", path.read_text())
    assert match, f"{path} must start with '# experiment: NAME'"
    cfg = load_config(match.group(1), [path])
    assert cfg != get_experiment(match.group(1))  # the file changes something
    validate_world_size(cfg, 8 if cfg.train.global_batch_size >= 8 else 1)
