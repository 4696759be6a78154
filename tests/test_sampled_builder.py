"""Sampled architectures build and run: level-1 blocks, 2^6 resampling both ways, residual outputs, dead blocks
(pruned and reported), and widths that truncate to zero (a clear error before any conv is built).

Hand-written specs at x0.125 widths and 128 px (level 7 is 1x1 there), in both numerics semantics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from torchspine.cli.main import main as cli_main
from torchspine.config import ConfigError, load_config
from torchspine.layers.resample import Resample
from torchspine.models.spinenet import SpineNet
from torchspine.specs import SPINENET_BLOCKS, BlockSpec, SpecError, SpineNetCfg, plan_graph

B = BlockSpec

CASES = {
    # Level-1 blocks of both kinds, one fed by the stem (L2 -> L1 up) and one feeding every later level.
    "level1": (
        B(1, "residual", (0, 1), False),
        B(1, "bottleneck", (2, 1), False),
        B(3, "bottleneck", (3, 2), True),
        B(4, "bottleneck", (3, 4), True),
        B(5, "bottleneck", (5, 3), True),
        B(6, "bottleneck", (6, 2), True),
        B(7, "bottleneck", (7, 3), True),
    ),
    # L1 -> L7 (64x down) and L7 -> L1 (64x up), for residual and bottleneck parents.
    "resample_2pow6": (
        B(1, "residual", (0, 1), False),
        B(7, "residual", (2, 1), False),
        B(1, "bottleneck", (3, 2), False),
        B(7, "bottleneck", (4, 2), True),
        B(3, "bottleneck", (5, 4), True),
        B(4, "bottleneck", (6, 5), True),
        B(5, "bottleneck", (7, 3), True),
        B(6, "bottleneck", (8, 4), True),
    ),
    # Every output block residual (C-wide, not 4C).
    "residual_outputs": (
        B(2, "bottleneck", (0, 1), False),
        B(4, "residual", (0, 1), False),
        B(3, "residual", (2, 3), True),
        B(4, "residual", (2, 4), True),
        B(5, "residual", (3, 4), True),
        B(6, "residual", (5, 6), True),
        B(7, "residual", (6, 7), True),
    ),
    # Blocks 1 and 3 feed nothing: pruned. Block 0 feeds only block 1, so it is dead too.
    "dead_blocks": (
        B(2, "residual", (0, 1), False),
        B(5, "bottleneck", (2, 1), False),
        B(3, "bottleneck", (0, 1), True),
        B(1, "residual", (4, 1), False),
        B(4, "bottleneck", (4, 0), True),
        B(5, "residual", (4, 6), True),
        B(6, "bottleneck", (7, 1), True),
        B(7, "residual", (8, 6), True),
    ),
}
PRUNED = {"level1": (), "resample_2pow6": (), "residual_outputs": (), "dead_blocks": (0, 1, 3)}


def _cfg(blocks, scale: float = 0.125, alpha: float = 0.25, endpoints: int = 16) -> SpineNetCfg:
    return SpineNetCfg(blocks=blocks, filter_size_scale=scale, resample_alpha=alpha, endpoints_num_filters=endpoints)


@pytest.mark.parametrize("semantics", ["tpu", "model_garden"])
@pytest.mark.parametrize("name", list(CASES))
def test_sampled_architecture_builds_and_runs(name: str, semantics: str) -> None:
    model = SpineNet(_cfg(CASES[name]), semantics=semantics)
    assert model.plan.pruned == PRUNED[name]
    assert sorted(int(k) for k in model.blocks) == [i for i in range(len(CASES[name])) if i not in PRUNED[name]]
    out = model(torch.randn(2, 3, 128, 128))
    assert list(out) == ["p3", "p4", "p5", "p6", "p7"]
    for level in range(3, 8):
        assert out[f"p{level}"].shape == (2, 16, 128 // 2**level, 128 // 2**level)
    sum(o.square().mean() for o in out.values()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []  # nothing dead was built


@pytest.mark.parametrize("pool_mode", ["chain", "single"])
@pytest.mark.parametrize("level_diff", [6, -6], ids=["L1_to_L7", "L7_to_L1"])
@pytest.mark.parametrize("side", [128, 200], ids=["128px", "200px"])
def test_resample_over_2pow6(level_diff: int, pool_mode: str, side: int) -> None:
    src_level, dst_level = (1, 7) if level_diff > 0 else (7, 1)
    src = -(-side // 2**src_level)
    dst = -(-side // 2**dst_level)
    resample = Resample(
        8, 2, 12, level_diff, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU, pad_mode="same", pool_mode=pool_mode
    )
    y = resample(torch.randn(2, 8, src, src), (dst, dst))
    assert y.shape == (2, 12, dst, dst)


def test_zero_block_width_names_level_and_scale() -> None:
    with pytest.raises(SpecError, match=r"filter_size_scale=0\.03.*level\(s\) \[1\].*level 1: int\(32 \* scale\)"):
        _cfg(CASES["level1"], scale=0.03)


def test_zero_resample_width_names_block_level_and_scale() -> None:
    # x0.0625: level-1 C = 2 (valid), but its resampling path is int(2 * 0.25) = 0 channels wide.
    cfg = _cfg(CASES["level1"], scale=0.0625)
    with pytest.raises(SpecError, match=r"block 1 \(level 1\).*int\(2 \* 0\.25\) = 0.*level 1.*0\.0625"):
        plan_graph(cfg)
    with pytest.raises(SpecError, match="endpoints_num_filters=0"):
        _cfg(CASES["level1"], endpoints=0)


def _spec_file(tmp_path: Path, blocks) -> Path:
    path = tmp_path / "arch.yaml"
    path.write_text(
        "".join(f"- [{b.level}, {b.block_fn}, {list(b.input_offsets)}, {str(b.is_output).lower()}]\n" for b in blocks)
    )
    return path


def test_zero_widths_fail_at_config_time(tmp_path: Path) -> None:
    spec = _spec_file(tmp_path, CASES["level1"])
    base = [f"model.backbone_spec={spec}"]
    with pytest.raises(ConfigError, match=rf"model.backbone_spec: spec file {spec}.*level 1"):
        load_config("search_demo", [], [*base, "model.filter_size_scale=0.0625"])
    with pytest.raises(ConfigError, match=r"model.backbone: backbone spinenet49.*zero channels at level\(s\) \[2"):
        load_config("search_demo", [], ["model.filter_size_scale=0.01"])
    with pytest.raises(ConfigError, match="endpoints_num_filters=0"):
        load_config("search_demo", [], ["model.endpoints_num_filters=0"])


def test_list_plan_reports_pruned_blocks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec_file(tmp_path, CASES["dead_blocks"])
    assert cli_main(["list", "--plan", str(spec)]) == 0
    assert "pruned blocks (feed no endpoint, not built): 0, 1, 3" in capsys.readouterr().out
    # The official SpineNet-49 table: Model Garden's level-2 output block (15) feeds no P3-P7 endpoint.
    assert plan_graph(SpineNetCfg(blocks=SPINENET_BLOCKS)).pruned == (15,)
