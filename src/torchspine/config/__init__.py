"""Typed run configuration: schema, named experiments, and the experiment -> YAML -> ``--set`` -> validate loader.

Typical use (the ``torchspine train`` command does exactly this)::

    from torchspine.config import load_config, dump_config

    cfg = load_config("retinanet_spinenet49_protocol_c", ["configs/retinanet/spinenet49_640.yaml"],
                      ["train.global_batch_size=64", "train.max_steps=1000"])
    (run_dir / "config.yaml").write_text(dump_config(cfg))
"""

from __future__ import annotations

from torchspine.config.experiments import get_experiment, list_experiments, register_experiment
from torchspine.config.loader import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    dump_config,
    load_config,
    merge_mapping,
    merge_yaml,
    validate,
    validate_world_size,
)
from torchspine.config.schema import (
    DataCfg,
    EvalCfg,
    ExperimentCfg,
    ModelCfg,
    OptimCfg,
    ScheduleCfg,
    TrainCfg,
    derive,
)

__all__ = [
    "ConfigError",
    "DataCfg",
    "EvalCfg",
    "ExperimentCfg",
    "ModelCfg",
    "OptimCfg",
    "ScheduleCfg",
    "TrainCfg",
    "apply_overrides",
    "config_from_dict",
    "derive",
    "dump_config",
    "get_experiment",
    "list_experiments",
    "load_config",
    "merge_mapping",
    "merge_yaml",
    "register_experiment",
    "validate",
    "validate_world_size",
]
