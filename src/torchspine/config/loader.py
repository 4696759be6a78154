"""Resolve a run's configuration: registered experiment -> YAML files -> ``--set`` overrides -> `validate`.

The order is fixed and the same for every command, after TF Model Garden's
``parse_configuration`` and detectron2's ``apply_overrides``:

1. the registered experiment (`torchspine.config.experiments`);
2. each YAML file, in the order given: **strict**, an unknown key is an error naming the file, the dotted key and
   the closest known key;
3. each ``--set a.b=c`` override, in order: strict too, and the string is parsed by the field's annotation;
4. `validate`: cross-field checks in Python, each message naming the offending key;
5. the result is a frozen dataclass (nothing downstream can mutate it).

The merge engine is written here (about a hundred lines) instead of using OmegaConf: the schema only holds scalars,
``Literal`` strings, ``X | None`` and tuples, which is little enough to type-check by hand, and it keeps the config
system free of a dependency whose objects would otherwise leak into the trainer.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from torchspine.config.experiments import get_experiment
from torchspine.config.schema import RESNET_BACKBONES, ExperimentCfg, ScheduleCfg
from torchspine.errors import TorchspineError

__all__ = [
    "ConfigError",
    "apply_overrides",
    "config_from_dict",
    "dump_config",
    "load_config",
    "merge_mapping",
    "merge_yaml",
    "validate",
    "validate_world_size",
]

_T = TypeVar("_T")
_NULLS = ("none", "null", "~")


class ConfigError(TorchspineError, ValueError):
    """An invalid configuration: unknown key, wrong type, or impossible value. The message names the key."""


def load_config(experiment: str, yaml_files: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> ExperimentCfg:
    """The validated configuration of a run.

    Args:
        experiment: a registered experiment name (`torchspine.config.list_experiments`).
        yaml_files: YAML files applied in order over the experiment; each holds only the keys it changes, nested
            by section (``model: {image_size: 512}``).
        overrides: ``"section.key=value"`` strings applied in order after the files (the CLI's ``--set``).

    Raises:
        ConfigError: unknown experiment or key, a value of the wrong type, or a failed cross-field check.
    """
    try:
        cfg = get_experiment(experiment)
    except KeyError as exc:
        raise ConfigError(exc.args[0]) from None
    for path in yaml_files:
        cfg = merge_yaml(cfg, path)
    cfg = apply_overrides(cfg, overrides)
    return validate(cfg)


def merge_yaml(cfg: _T, path: str | Path) -> _T:
    """`cfg` updated by the YAML file at `path` (strict; an empty file changes nothing)."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # a SafeLoader subclass
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    return cfg if data is None else merge_mapping(cfg, data, source=str(path))


def merge_mapping(cfg: _T, mapping: Any, *, source: str = "<dict>") -> _T:
    """`cfg` with the (nested) `mapping` applied; unknown keys and ill-typed values raise `ConfigError`.

    Args:
        cfg: a (nested) config dataclass.
        mapping: ``{section: {key: value}}``, with YAML-typed values (lists are accepted for tuples).
        source: where the mapping came from, for error messages (a file name).
    """
    return _merge(cfg, mapping, source, "")


def apply_overrides(cfg: _T, overrides: Sequence[str]) -> _T:
    """`cfg` with ``"a.b=value"`` overrides applied in order, each parsed by the annotation of field ``a.b``.

    Values: ``int``/``float`` as Python literals; ``bool`` as true/false/1/0; ``none``/``null`` for optional
    fields; a ``Literal`` must be one of its values; tuples as ``1,2,3`` or ``[1, 2, 3]`` (``[]`` or nothing for
    an empty tuple); strings verbatim.
    """
    for text in overrides:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. optim.lr_per_256=0.1")
        cfg = _set_path(cfg, key.split("."), raw.strip(), f"--set {text!r}", "")
    return cfg


def config_from_dict(mapping: Mapping[str, Any], *, source: str = "<dict>") -> ExperimentCfg:
    """Rebuild a config from ``dataclasses.asdict(cfg)`` or a parsed `dump_config` (e.g. from a checkpoint).

    Keys missing from `mapping` keep the schema defaults, so configs saved before a field was added still load;
    unknown keys are errors. The result is validated.
    """
    return validate(merge_mapping(ExperimentCfg(), mapping, source=source))


def dump_config(cfg: ExperimentCfg) -> str:
    """The resolved config as YAML, in schema order; `config_from_dict` of its ``yaml.safe_load`` equals `cfg`."""
    header = f"# torchspine resolved config (experiment: {cfg.name or 'unnamed'})\n"
    return header + yaml.dump(dataclasses.asdict(cfg), Dumper=_Dumper, sort_keys=False, allow_unicode=True)


# ----------------------------------------------------------------------------------------------------- validation


def validate(cfg: ExperimentCfg) -> ExperimentCfg:
    """Cross-field checks; raises one `ConfigError` listing every problem (``key: reason``), else returns `cfg`."""
    from torchspine.config.backbone import spinenet_cfg
    from torchspine.layers.activations import ACTIVATIONS  # lazy: keeps `import torchspine.config` light
    from torchspine.registry import variant_info
    from torchspine.specs import SpecError, validate_blocks

    problems: list[str] = []

    def check(ok: bool, key: str, reason: str) -> None:
        if not ok:
            problems.append(f"{key}: {reason}")

    m, d, o, s, t, e = cfg.model, cfg.data, cfg.optim, cfg.schedule, cfg.train, cfg.eval
    # --- model
    family = None
    if m.backbone in RESNET_BACKBONES:
        check(m.task != "classification", "model.backbone", f"{m.backbone} is a detection backbone (FPN outputs)")
        check((m.min_level, m.max_level) == (3, 7), "model.min_level", "ResNet-FPN baselines produce P3-P7 only")
        check(not m.grad_checkpointing, "model.grad_checkpointing", "is implemented for SpineNet backbones only")
        check(not m.fused_bn_act, "model.fused_bn_act", "is implemented for SpineNet backbones only")
    else:
        try:
            info = variant_info(m.backbone)
        except ValueError as exc:
            problems.append(f"model.backbone: {exc} (or one of {', '.join(RESNET_BACKBONES)})")
        else:
            family = info.cfg.family
            if m.min_level <= m.max_level:  # the order itself is reported below
                try:
                    validate_blocks(info.cfg.blocks, m.min_level, m.max_level, info.cfg.family)
                except SpecError as exc:
                    if m.backbone_spec is None:  # a spec file brings its own blocks, checked next
                        problems.append(f"model.min_level/model.max_level: {exc}")
                try:
                    spinenet_cfg(m)
                except SpecError as exc:
                    key = "model.backbone_spec" if m.backbone_spec is not None else "model.backbone"
                    problems.append(f"{key}: {exc}")
    for name in ("backbone_spec", "filter_size_scale", "resample_alpha", "endpoints_num_filters"):
        check(
            getattr(m, name) is None or m.backbone not in RESNET_BACKBONES,
            f"model.{name}",
            f"only applies to SpineNet backbones, not {m.backbone}",
        )
    check(
        m.rpn_num_convs is None or (m.task == "maskrcnn" and m.rpn_num_convs >= 1),
        "model.rpn_num_convs",
        f"only applies to task=maskrcnn and must be >= 1, got {m.rpn_num_convs} for task={m.task}",
    )
    check(
        m.anchor_num_scales is None or (m.task == "maskrcnn" and m.anchor_num_scales >= 1),
        "model.anchor_num_scales",
        f"only applies to task=maskrcnn and must be >= 1, got {m.anchor_num_scales} for task={m.task}",
    )
    check(
        m.anchor_size is None or (m.task == "maskrcnn" and m.anchor_size > 0),
        "model.anchor_size",
        f"only applies to task=maskrcnn and must be > 0, got {m.anchor_size} for task={m.task}",
    )
    for name in ("head_num_filters", "head_num_convs"):
        value = getattr(m, name)
        check(value is None or m.task == "retinanet", f"model.{name}", f"only applies to task=retinanet, not {m.task}")
        check(value is None or value >= 1, f"model.{name}", f"must be >= 1 or none, got {value}")
    check(
        m.loss_style == "tpu" or m.task == "maskrcnn",
        "model.loss_style",
        f"only applies to task=maskrcnn (RetinaNet and classifiers have one loss), not {m.task}",
    )
    check(m.min_level <= m.max_level, "model.min_level", f"min_level {m.min_level} > max_level {m.max_level}")
    check(m.image_size > 0, "model.image_size", f"must be positive, got {m.image_size}")
    if m.task != "classification" and m.image_size > 0:
        # Detection inputs are zero-padded to a square multiple of 2**max_level (the coarsest stride); a size that
        # is not one would be padded further, silently changing the effective input size.
        stride = 2**m.max_level
        check(
            m.image_size % stride == 0, "model.image_size", f"{m.image_size} is not a multiple of 2**max_level={stride}"
        )
    check(m.num_classes is None or m.num_classes >= 1, "model.num_classes", f"must be >= 1, got {m.num_classes}")
    check(
        m.act is None or m.act in ACTIVATIONS, "model.act", f"unknown activation {m.act!r}; use {sorted(ACTIVATIONS)}"
    )
    check(0.0 <= m.drop_path_rate < 1.0, "model.drop_path_rate", f"must be in [0, 1), got {m.drop_path_rate}")
    if m.dropblock_keep_prob is not None:
        kp = m.dropblock_keep_prob
        check(0.0 < kp <= 1.0, "model.dropblock_keep_prob", f"must be in (0, 1] or none, got {kp}")
        check(
            m.backbone not in RESNET_BACKBONES and family != "mobile",
            "model.dropblock_keep_prob",
            f"DropBlock is only implemented for the ResNet-block SpineNets, not {m.backbone}",
        )
    check(
        m.dropblock_size >= 1 and m.dropblock_size % 2 == 1,
        "model.dropblock_size",
        f"must be odd and >= 1, got {m.dropblock_size}",
    )
    check(m.dropblock_min_level >= 2, "model.dropblock_min_level", f"must be >= 2, got {m.dropblock_min_level}")
    # NOTE: TF's BN momentum 0.99 is PyTorch's 0.01; a value above 0.5 is almost surely the TF convention.
    check(
        0.0 < m.norm_momentum <= 0.5,
        "model.norm_momentum",
        f"{m.norm_momentum} is outside (0, 0.5]; PyTorch convention (TF 0.99 -> {1 - 0.99:.2f})",
    )
    check(m.norm_eps is None or m.norm_eps > 0, "model.norm_eps", f"must be positive, got {m.norm_eps}")
    # --- data
    check(d.scale_min > 0, "data.scale_min", f"must be positive, got {d.scale_min}")
    check(d.scale_min <= d.scale_max, "data.scale_min", f"scale_min {d.scale_min} > scale_max {d.scale_max}")
    if m.task == "classification":  # crop-area fractions for the random-resized crop
        check(d.scale_max <= 1.0, "data.scale_max", f"a crop-area fraction for classification, got {d.scale_max} > 1")
    check(d.num_workers >= 0, "data.num_workers", f"must be >= 0, got {d.num_workers}")
    check(d.holdout_images >= 0, "data.holdout_images", f"must be >= 0, got {d.holdout_images}")
    check(
        d.holdout_images == 0 or m.task != "classification",
        "data.holdout_images",
        "a held-out split is only implemented for COCO-format detection data",
    )
    check(bool(d.train_split), "data.train_split", "must not be empty")
    check(bool(d.val_split), "data.val_split", "must not be empty")
    # --- optimizer
    check(o.lr_per_256 > 0, "optim.lr_per_256", f"must be positive, got {o.lr_per_256}")
    check(0.0 <= o.momentum < 1.0, "optim.momentum", f"must be in [0, 1), got {o.momentum}")
    check(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    clip = o.clip_grad_norm
    check(clip is None or clip > 0, "optim.clip_grad_norm", f"must be positive or none, got {clip}")
    # --- schedule
    _validate_schedule_length(s, check)
    check(
        0.0 <= s.warmup_init_lr_ratio <= 1.0,
        "schedule.warmup_init_lr_ratio",
        f"must be in [0, 1], got {s.warmup_init_lr_ratio}",
    )
    check(0.0 < s.decay_factor < 1.0, "schedule.decay_factor", f"must be in (0, 1), got {s.decay_factor}")
    check(0.0 <= s.label_smoothing < 1.0, "schedule.label_smoothing", f"must be in [0, 1), got {s.label_smoothing}")
    check(
        s.label_smoothing == 0 or m.task == "classification",
        "schedule.label_smoothing",
        f"only applies to classification, not task={m.task}",
    )
    # --- train
    check(t.global_batch_size >= 1, "train.global_batch_size", f"must be >= 1, got {t.global_batch_size}")
    check(t.grad_accum_steps >= 1, "train.grad_accum_steps", f"must be >= 1, got {t.grad_accum_steps}")
    if t.global_batch_size >= 1 and t.grad_accum_steps >= 1:
        check(
            t.global_batch_size % t.grad_accum_steps == 0,
            "train.global_batch_size",
            f"{t.global_batch_size} is not divisible by grad_accum_steps={t.grad_accum_steps}",
        )
    check(t.seed >= 0, "train.seed", f"must be >= 0, got {t.seed}")
    check(t.log_every >= 1, "train.log_every", f"must be >= 1, got {t.log_every}")
    check(t.eval_every_epochs > 0, "train.eval_every_epochs", f"must be positive, got {t.eval_every_epochs}")
    check(
        t.checkpoint_every_steps >= 1, "train.checkpoint_every_steps", f"must be >= 1, got {t.checkpoint_every_steps}"
    )
    check(t.keep_last >= 1, "train.keep_last", f"must be >= 1, got {t.keep_last}")
    check(t.max_steps is None or t.max_steps >= 1, "train.max_steps", f"must be >= 1 or none, got {t.max_steps}")
    # --- eval
    check(e.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {e.batch_size}")
    check(0.0 <= e.score_thresh < 1.0, "eval.score_thresh", f"must be in [0, 1), got {e.score_thresh}")
    check(e.max_images is None or e.max_images >= 1, "eval.max_images", f"must be >= 1 or none, got {e.max_images}")
    if problems:
        name = f" {cfg.name!r}" if cfg.name else ""
        raise ConfigError(f"invalid config{name}:\n  " + "\n  ".join(problems))
    return cfg


def _validate_schedule_length(s: ScheduleCfg, check: Callable[[bool, str, str], None]) -> None:
    """The schedule's length fields: exactly one view (epochs or official steps), each consistent in itself."""
    steps_view = s.total_steps is not None
    if steps_view == (s.epochs is not None):
        check(
            False,
            "schedule.epochs",
            "set exactly one of schedule.epochs (epoch view) and schedule.total_steps (step view), got "
            f"epochs={s.epochs}, total_steps={s.total_steps} (e.g. --set schedule.total_steps=null "
            "schedule.warmup_steps=null schedule.decay_steps=[] schedule.epochs=...)",
        )
        return
    if steps_view:
        length, warmup, decays, unit = s.total_steps, s.warmup_steps or 0, s.decay_steps, "steps"
        for key, other in (("warmup_epochs", s.warmup_epochs), ("decay_epochs", s.decay_epochs or None)):
            check(other is None, f"schedule.{key}", f"epoch-view field set in a step-view schedule, got {other}")
        check(s.steps_batch_size >= 1, "schedule.steps_batch_size", f"must be >= 1, got {s.steps_batch_size}")
    else:
        length, warmup, decays, unit = s.epochs, s.warmup_epochs or 0.0, s.decay_epochs, "epochs"
        for key, other in (("warmup_steps", s.warmup_steps), ("decay_steps", s.decay_steps or None)):
            check(other is None, f"schedule.{key}", f"step-view field set in an epoch-view schedule, got {other}")
    assert length is not None
    prefix = "steps" if steps_view else "epochs"
    check(length > 0, f"schedule.{'total_steps' if steps_view else 'epochs'}", f"must be positive, got {length}")
    check(warmup >= 0, f"schedule.warmup_{prefix}", f"must be >= 0, got {warmup}")
    check(
        warmup < length or length <= 0,
        f"schedule.warmup_{prefix}",
        f"warm-up ({warmup} {unit}) is not shorter than training ({length} {unit})",
    )
    key = f"schedule.decay_{prefix}"
    if s.type == "step":
        check(all(a < b for a, b in itertools.pairwise(decays)), key, f"must be strictly ascending, got {list(decays)}")
        bad = [x for x in decays if not 0 < x < length]
        check(not bad, key, f"{bad} outside (0, {length} {unit})")
        check(
            not decays or warmup <= decays[0],
            f"schedule.warmup_{prefix}",
            f"warm-up ({warmup} {unit}) runs past the first decay ({decays[0] if decays else 0} {unit})",
        )
    else:
        check(not decays, key, f"only used by type=step, got {list(decays)} with type={s.type} (clear it: {key}=)")


def validate_world_size(cfg: ExperimentCfg, world_size: int) -> int:
    """Check that the global batch splits evenly over processes and accumulation steps (called by the trainer).

    Returns:
        The per-process micro-batch size, ``global_batch_size / (world_size * grad_accum_steps)``.
    """
    if world_size < 1:
        raise ConfigError(f"world_size must be >= 1, got {world_size}")
    t = cfg.train
    parts = world_size * t.grad_accum_steps
    if t.global_batch_size % parts:
        raise ConfigError(
            f"train.global_batch_size: {t.global_batch_size} is not divisible by world_size ({world_size}) x "
            f"train.grad_accum_steps ({t.grad_accum_steps}) = {parts}"
        )
    return t.global_batch_size // parts


# ------------------------------------------------------------------------------------------------- merge engine


def _merge(obj: _T, mapping: Any, source: str, prefix: str) -> _T:
    if not isinstance(mapping, Mapping):
        where = prefix.rstrip(".") or "the top level"
        raise ConfigError(f"{source}: {where} must be a mapping of keys, got {_describe(mapping)}")
    hints = _hints(type(obj))
    changes: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str) or key not in hints:
            raise ConfigError(f"{source}: unknown key {dotted!r}{_suggest(str(key), obj, prefix)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value, source, f"{dotted}.")
        else:
            changes[key] = _coerce(value, hints[key], dotted, source)
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


def _set_path(obj: _T, parts: list[str], raw: str, source: str, prefix: str) -> _T:
    key, rest = parts[0], parts[1:]
    hints = _hints(type(obj))
    dotted = f"{prefix}{key}"
    if key not in hints:
        raise ConfigError(f"{source}: unknown key {dotted!r}{_suggest(key, obj, prefix)}")
    current = getattr(obj, key)
    if dataclasses.is_dataclass(current):
        if not rest:
            fields = ", ".join(hints)
            raise ConfigError(f"{source}: {dotted!r} is a section; set one of its keys ({dotted}.<{fields}>)")
        value = _set_path(current, rest, raw, source, f"{dotted}.")
    elif rest:
        raise ConfigError(f"{source}: {dotted!r} is a value, not a section")
    else:
        value = _parse(raw, hints[key], dotted, source)
    return dataclasses.replace(obj, **{key: value})  # type: ignore[type-var]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # `from __future__ import annotations` leaves the annotations as strings; resolve them once per class.
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


def _split_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported annotation {tp} (only X | None unions)")
        return args[0], len(get_args(tp)) == 2
    return tp, False


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check a YAML-typed `value` against annotation `tp` (lists become tuples, ints widen to float)."""
    inner, optional = _split_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {key}: must not be null (expected {_type_name(tp)})")
    origin = get_origin(inner)
    if origin is Literal:
        if isinstance(value, str) and value in get_args(inner):
            return value
        raise ConfigError(f"{source}: {key}: {value!r} is not one of {', '.join(map(repr, get_args(inner)))}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key}: expected a list ({_type_name(tp)}), got {_describe(value)}")
        return tuple(_coerce(v, et, f"{key}[{i}]", source) for i, (v, et) in enumerate(_elements(inner, value, key)))
    if inner is bool:
        ok = isinstance(value, bool)
    elif inner is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif inner is float:
        if isinstance(value, str):
            # NOTE: PyYAML implements YAML 1.1, where `1e-3` (no dot) is a string, not a float; accept it.
            try:
                return float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif inner is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"{key}: unsupported annotation {tp}")
    if not ok:
        raise ConfigError(f"{source}: {key}: expected {_type_name(tp)}, got {_describe(value)}")
    return value


def _parse(raw: str, tp: Any, key: str, source: str) -> Any:
    """Parse a ``--set`` string by annotation `tp`."""
    inner, optional = _split_optional(tp)
    if optional and raw.lower() in _NULLS:
        return None
    origin = get_origin(inner)
    if origin is tuple:
        if raw.startswith("["):  # YAML list syntax
            try:
                items = yaml.safe_load(raw)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{source}: {key}: invalid list {raw!r}: {exc}") from None
            return _coerce(items, inner, key, source)
        body = raw[1:-1] if raw.startswith("(") and raw.endswith(")") else raw
        items = [p.strip() for p in body.split(",")] if body.strip() else []
        if items and items[-1] == "":  # a trailing comma, as in Python's (1.0,)
            items.pop()
        return tuple(_parse(v, et, f"{key}[{i}]", source) for i, (v, et) in enumerate(_elements(inner, items, key)))
    if origin is Literal:
        if raw in get_args(inner):
            return raw
        raise ConfigError(f"{source}: {key}: {raw!r} is not one of {', '.join(map(repr, get_args(inner)))}")
    try:
        if inner is bool:
            lowered = raw.lower()
            if lowered in ("true", "1"):
                return True
            if lowered in ("false", "0"):
                return False
            raise ValueError(raw)
        if inner is int:
            return int(raw)
        if inner is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
    except ValueError:
        raise ConfigError(f"{source}: {key}: expected {_type_name(tp)}, got {raw!r}") from None
    if inner is str:
        return raw
    raise TypeError(f"{key}: unsupported annotation {tp}")


def _elements(tp: Any, items: Sequence[Any], key: str) -> list[tuple[Any, Any]]:
    args = get_args(tp)
    if len(args) == 2 and args[1] is Ellipsis:
        return [(v, args[0]) for v in items]
    if len(items) != len(args):
        raise ConfigError(f"{key}: expected {len(args)} values, got {len(items)}")
    return list(zip(items, args, strict=True))


def _type_name(tp: Any) -> str:
    inner, optional = _split_optional(tp)
    origin = get_origin(inner)
    if origin is Literal:
        name = "one of " + ", ".join(map(repr, get_args(inner)))
    elif origin is tuple:
        args = get_args(inner)
        name = f"list of {_type_name(args[0])}" if args[-1] is Ellipsis else f"list of {len(args)} values"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name} or none" if optional else name


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _suggest(key: str, obj: Any, prefix: str) -> str:
    """`` (did you mean ...?)`` from the sibling keys, else from same-named keys in other sections."""
    siblings = list(_hints(type(obj)))
    close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {prefix + close[0]!r}?)"
    # A known key put in the wrong section, e.g. model.epochs -> schedule.epochs.
    paths = _leaf_paths(ExperimentCfg)
    elsewhere = [p for p in paths if p.rsplit(".", 1)[-1] == key]
    if not elsewhere:  # or a typo of one, e.g. model.max_step -> train.max_steps
        by_leaf = {p.rsplit(".", 1)[-1]: p for p in paths}
        elsewhere = [by_leaf[k] for k in difflib.get_close_matches(key, list(by_leaf), n=2, cutoff=0.8)]
    if elsewhere:
        return f" (did you mean {' or '.join(map(repr, elsewhere))}?)"
    return f"; known keys here: {', '.join(siblings)}"


def _leaf_paths(cls: type, prefix: str = "") -> list[str]:
    paths = []
    for name, tp in _hints(cls).items():
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            paths += _leaf_paths(tp, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths


# --------------------------------------------------------------------------------------------------------- YAML I/O


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML keeps the last one silently, hiding an edit)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Dumper(yaml.SafeDumper):
    """SafeDumper writing tuples as flow lists (``[320.0, 340.0]``) and sections as block mappings."""


def _represent_sequence(dumper: yaml.SafeDumper, data: Sequence[Any]) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", list(data), flow_style=True)


_Dumper.add_representer(tuple, _represent_sequence)
_Dumper.add_representer(list, _represent_sequence)
