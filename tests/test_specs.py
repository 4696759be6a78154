"""Architecture as data: the tables, the validator, the plan (merges, liveness), YAML/JSON specs."""

from __future__ import annotations

import json

import pytest

from conftest import OFFICIAL
from torchspine.specs import (
    SPINENET_BLOCKS,
    SPINENET_MOBILE_BLOCKS,
    BlockSpec,
    SpecError,
    SpineNetCfg,
    blocks_from_rows,
    cfg_to_dict,
    load_cfg,
    plan_graph,
    validate_blocks,
)


def test_block_table_equals_official_code():
    # meta.json of the tensorflow/tpu fixture holds the 15-entry table as the official code built it.
    meta = json.loads((OFFICIAL / "tpu_spinenet49_retinanet_tiny" / "meta.json").read_text())
    official = blocks_from_rows(meta["backbone"]["block_specs_list"])
    assert SPINENET_BLOCKS[:15] == official
    # Model Garden appends one level-2 output block.
    assert SPINENET_BLOCKS[15] == BlockSpec(2, "bottleneck", (2, 13), True)


def test_mobile_table_is_spinenet49_shifted():
    assert len(SPINENET_MOBILE_BLOCKS) == 16
    assert SPINENET_MOBILE_BLOCKS[0] == BlockSpec(2, "mbconv", (0, 1), False)
    for mobile, resnet in zip(SPINENET_MOBILE_BLOCKS[1:], SPINENET_BLOCKS[:15], strict=True):
        assert (mobile.level, mobile.is_output) == (resnet.level, resnet.is_output)
        assert mobile.input_offsets == tuple(o + 1 for o in resnet.input_offsets)


def test_widths_truncate():
    cfg = SpineNetCfg(filter_size_scale=0.14)
    assert [cfg.width(level) for level in (2, 3, 4)] == [8, 17, 35]


def _bad(rows, **kw):
    blocks = blocks_from_rows(rows)
    validate_blocks(blocks, kw.get("min_level", 3), kw.get("max_level", 4))


GOOD = [[3, "bottleneck", [0, 1], True], [4, "residual", [1, 2], True]]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[3, "bottleneck", [0, 2], True], [4, "residual", [1, 2], True]], "input offset 2 must point to an earlier"),
        ([[3, "bottleneck", [0, -1], True], [4, "residual", [1, 2], True]], "input offset -1"),
        ([[3, "bottleneck", [0, 1], True], [4, "residual", [1, 9], True]], "input offset 9"),
        ([[3, "conv", [0, 1], True], [4, "residual", [1, 2], True]], "unknown block_fn 'conv'"),
        ([[3, "mbconv", [0, 1], True], [4, "residual", [1, 2], True]], "not used by the 'spinenet' family"),
        ([[3, "bottleneck", [0, 1], True], [4, "residual", [1, 2], False]], r"no output block for level\(s\) \[4\]"),
        ([[3, "bottleneck", [0, 1], True], [3, "residual", [1, 2], True]], "duplicate output level 3"),
        ([[8, "bottleneck", [0, 1], True], [4, "residual", [1, 2], True]], "level 8 is outside 1..7"),
        ([[0, "bottleneck", [0, 1], True], [4, "residual", [1, 2], True]], "level 0 is outside 1..7"),
    ],
    ids=[
        "forward",
        "negative",
        "out-of-range",
        "unknown-fn",
        "wrong-family",
        "missing-level",
        "duplicate",
        "level-8",
        "level-0",
    ],
)
def test_validator_rejects(rows, message):
    with pytest.raises(SpecError, match=message):
        _bad(rows)


def test_validator_accepts_good_and_checks_level_range():
    _bad(GOOD)
    with pytest.raises(SpecError, match="min_level=4, max_level=3"):
        validate_blocks(blocks_from_rows(GOOD), 4, 3)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([3, "bottleneck", [0], True], "two integers"),
        ([3.5, "bottleneck", [0, 1], True], "level must be an integer"),
        ([3, "bottleneck", [0, 1], "yes"], "is_output must be true or false"),
        ({"level": 3, "block_fn": "bottleneck", "input_offsets": [0, 1], "is_output": True, "x": 1}, "unknown key"),
        ([3, "bottleneck"], "expected"),
    ],
    ids=["one-offset", "float-level", "str-output", "unknown-key", "short-row"],
)
def test_rows_rejected_with_row_number(row, message):
    with pytest.raises(SpecError, match=rf"block row 0 .*{message}"):
        blocks_from_rows([row])


def test_cfg_fields_validated():
    with pytest.raises(SpecError, match="endpoints_num_filters=0"):
        SpineNetCfg(endpoints_num_filters=0)
    with pytest.raises(SpecError, match="filter_size_scale"):
        SpineNetCfg(filter_size_scale=0.0)
    with pytest.raises(SpecError, match="zero channels"):
        SpineNetCfg(filter_size_scale=0.001)
    with pytest.raises(SpecError, match="no output block for level"):
        SpineNetCfg(min_level=1)


def test_spinenet49_plan_merge_and_liveness():
    plan = plan_graph(SpineNetCfg())
    merged = {node.index - 2: node.merged for node in plan.blocks if node.merged}
    # Block 9 (0-based; level-5 bottleneck feeding nothing) is added raw into output block 12 (level 5).
    assert merged == {12: (11,)}
    assert [node.live for node in plan.blocks] == [True] * 15 + [False]  # the MG level-2 output is pruned
    assert [ep.level for ep in plan.endpoints] == [3, 4, 5, 6, 7]
    assert plan_graph(SpineNetCfg(min_level=2)).blocks[15].live


def test_liveness_prunes_unused_outputs():
    plan = plan_graph(SpineNetCfg(min_level=4, max_level=6))
    dead = [i for i, node in enumerate(plan.blocks) if not node.live]
    assert dead == [11, 13, 15]  # P3, P7 and P2 output blocks feed nothing in range


def test_resample_widths_follow_alpha_rule():
    plan = plan_graph(SpineNetCfg())
    block3 = plan.blocks[3]  # level-4 bottleneck from net2 (L2 bottleneck) and net4 (L3 bottleneck)
    assert [(p.in_channels, p.mid_channels, p.out_channels) for p in block3.parents] == [
        (256, 32, 1024),
        (512, 64, 1024),
    ]
    block1 = plan.blocks[1]  # level-4 residual target
    assert [p.level_diff for p in block1.parents] == [2, 2]
    assert block1.in_channels == 256


def test_drop_path_schedule():
    plan = plan_graph(SpineNetCfg())
    assert [node.drop_path_scale for node in plan.blocks] == [(i + 1) / 16 for i in range(16)]
    assert all(node.drop_path_scale == 0 for node in plan.nodes[:2])


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_spec_file_round_trip(tmp_path, suffix):
    cfg = SpineNetCfg(filter_size_scale=0.5, min_level=2)
    path = tmp_path / f"spec{suffix}"
    data = cfg_to_dict(cfg)
    if suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        import yaml

        path.write_text(yaml.safe_dump(data))
    assert load_cfg(path) == cfg


def test_spec_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("blocks:\n  - [3, bottleneck, [0, 5], true]\n")
    with pytest.raises(SpecError, match=r"bad.yaml: .*input offset 5"):
        load_cfg(path)
    path.write_text("endpoint_num_filters: 3\n")
    with pytest.raises(SpecError, match=r"bad.yaml: unknown SpineNet config key\(s\) \['endpoint_num_filters'\]"):
        load_cfg(path)
    path.write_text("[unclosed\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: cannot parse"):
        load_cfg(path)
