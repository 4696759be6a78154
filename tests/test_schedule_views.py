"""The two views of a schedule (issue 13): official step counts, used as written, and the epoch view of users' own
recipes; exactly one per config, each validated on its own terms."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from torchspine.config import ConfigError, load_config
from torchspine.config.schema import ScheduleCfg
from torchspine.engine.build import build_schedule


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=1.0)


def _step_view(**changes: object) -> ScheduleCfg:
    fields = dict(
        epochs=None,
        warmup_epochs=None,
        decay_epochs=(),
        total_steps=1000,
        warmup_steps=100,
        decay_steps=(800, 900),
        steps_batch_size=256,
        warmup_init_lr_ratio=0.1,
    )
    fields.update(changes)
    return ScheduleCfg(**fields)  # type: ignore[arg-type]


def _factors(scheduler: torch.optim.lr_scheduler.LambdaLR, steps: list[int]) -> list[float]:
    return [scheduler.lr_lambdas[0](s) for s in steps]


def test_step_view_uses_the_counts_as_written_at_the_reference_batch() -> None:
    # steps_per_epoch (7 here) must not matter: the official counts are not re-derived from epochs.
    scheduler, total = build_schedule(_step_view(), _optimizer(), 7, 256)
    assert total == 1000
    assert _factors(scheduler, [0, 99, 100, 799, 800, 899, 900, 999]) == pytest.approx(
        [0.1, 0.1 + 0.9 * 99 / 100, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    )


def test_step_view_scales_to_the_same_number_of_images_at_another_batch() -> None:
    scheduler, total = build_schedule(_step_view(), _optimizer(), 7, 64)  # 4x the steps at a quarter of the batch
    assert total == 4000
    assert _factors(scheduler, [399, 400, 3199, 3200, 3600]) == pytest.approx([0.1 + 0.9 * 399 / 400, 1, 1, 0.1, 0.01])


def test_epoch_view_converts_with_the_real_steps_per_epoch() -> None:
    schedule = ScheduleCfg(epochs=10.0, warmup_epochs=1.0, decay_epochs=(8.0,), warmup_init_lr_ratio=0.0)
    scheduler, total = build_schedule(schedule, _optimizer(), 7, 256)
    assert total == 70
    assert _factors(scheduler, [0, 7, 55, 56]) == pytest.approx([0.0, 1.0, 1.0, 0.1])
    scheduler, total = build_schedule(ScheduleCfg(epochs=2.5, warmup_epochs=0.0, decay_epochs=()), _optimizer(), 7)
    assert total == math.ceil(2.5 * 7)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["schedule.epochs=100"], "schedule.epochs"),  # both views
        (["schedule.total_steps=null"], "schedule.epochs"),  # neither
        (["schedule.warmup_epochs=2"], "schedule.warmup_epochs"),  # an epoch field in the step view
        (["schedule.decay_steps=[217610, 240000]"], "schedule.decay_steps"),  # past the end
        (["schedule.decay_steps=[226870, 217610]"], "schedule.decay_steps"),  # not ascending
        (["schedule.warmup_steps=220000"], "schedule.warmup_steps"),  # past the first decay
        (["schedule.steps_batch_size=0"], "schedule.steps_batch_size"),
    ],
    ids=["both", "neither", "mixed", "decay-past-end", "descending", "warmup-past-decay", "batch-0"],
)
def test_step_view_errors_name_the_field(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{key}:")):
        load_config("retinanet_spinenet49_protocol_c", [], overrides)


def test_switching_an_official_recipe_to_the_epoch_view() -> None:
    switch = ["schedule.total_steps=null", "schedule.warmup_steps=null", "schedule.decay_steps=[]"]
    cfg = load_config(
        "retinanet_spinenet49_protocol_c",
        [],
        [*switch, "schedule.epochs=100", "schedule.warmup_epochs=2", "schedule.decay_epochs=[80,95]"],
    )
    assert cfg.schedule.epochs == 100 and cfg.schedule.total_steps is None
    with pytest.raises(ConfigError, match=r"schedule\.warmup_steps:"):
        load_config("demo", [], ["schedule.warmup_steps=10"])  # a step field in the epoch view
