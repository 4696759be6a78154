"""The SpineNet search space: encoding, masks, sizes, errors, and that sampled architectures build and run."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest

from search_helpers import SMALL, SPINENET49, enumerate_sequences
from torchspine.search import (
    SearchSpace,
    SearchSpaceError,
    SyntheticReward,
    arch_key,
    arch_string,
    resource_aware_reward,
    spec_rows,
)
from torchspine.specs import SPINENET_BLOCKS, BlockSpec, SpineNetCfg, blocks_from_rows, plan_graph, validate_blocks


@pytest.mark.parametrize("window", [5, 4, -1], ids=["window5", "window4", "all"])
def test_spinenet49_encodes_and_decodes_exactly(window):
    space = SearchSpace(parent_window=window)
    decisions = space.encode(SPINENET49)
    assert len(decisions) == 70
    assert space.decode(decisions) == SPINENET49
    assert space.encode(space.decode(decisions)) == decisions


def test_spinenet49_is_in_the_paper_space_and_window3_rejects_it():
    assert SearchSpace.paper() == SearchSpace()
    assert SearchSpace().decode(SearchSpace().encode(SPINENET49)) == SPINENET49
    # Block 5 (net 7) takes net 3 as a parent: outside a window of the last 3 features.
    with pytest.raises(SearchSpaceError, match=r"block 5 .*both in 4\.\.6 \(window 3\)"):
        SearchSpace(parent_window=3).encode(SPINENET49)
    # Vertex's 11-block space holds 16 blocks, not 15.
    with pytest.raises(SearchSpaceError, match="11 intermediate"):
        SearchSpace.vertex_spinenet().encode(SPINENET49)


def test_decision_layout_matches_the_design():
    space = SearchSpace()
    slots = space.decisions
    assert [s.kind for s in slots[:15]] == ["level"] * 10 + ["out_level"] * 5
    assert [s.kind for s in slots[15:19]] == ["delta", "fn", "in0", "in1"]
    assert [s.kind for s in slots[-3:]] == ["fn", "in0", "in1"]
    assert slots[17].name == "block[0].in0" and slots[-1].name == "output[4].in1"
    assert space.kinds == {"level": 4, "out_level": 5, "delta": 4, "fn": 2, "in0": 16, "in1": 16}
    # Mask sizes of the output-level permutation and of the first blocks' parents (window 5).
    decisions = space.encode(SPINENET49)
    masks = space.masks(decisions)
    assert [len(m) for m in masks[10:15]] == [5, 4, 3, 2, 1]
    in0_sizes = [len(masks[17 + 4 * i]) for i in range(10)]
    assert in0_sizes == [1, 2, 3, 4, 4, 4, 4, 4, 4, 4]
    out_in0_sizes = [len(masks[55 + 3 * j + 1]) for j in range(5)]
    assert out_in0_sizes == [11, 12, 13, 14, 15]
    assert masks[17] == [0] and masks[18] == [1]  # the first block's parents are forced to the stems


def test_sizes_match_the_paper_formula_and_exact_counts():
    size = SearchSpace().size()
    assert size.paper_permutations == math.factorial(10) * math.factorial(5) == 435_456_000
    assert size.distinct_permutations == 604_800
    assert size.paper_connections == math.prod(math.comb(i, 2) for i in range(2, 17))
    assert f"{size.paper_connections:.2e}" == "8.35e+20"
    assert f"{size.connections:.2e}" == "1.06e+18"
    assert f"{SearchSpace(parent_window=4).size().connections:.2e}" == "2.97e+16"
    assert size.adjustments == size.paper_adjustments == 4**10 * 2**15
    assert f"{size.adjustments:.2e}" == "3.44e+10"
    assert f"{size.decision_sequences:.1e}" == "2.2e+34"
    assert size.distinct_architectures < size.decision_sequences
    assert "paper formula" in size.format()


def test_exact_counts_by_brute_force_on_a_small_space():
    sequences = enumerate_sequences(SMALL)
    size = SMALL.size()
    assert len(sequences) == size.decision_sequences
    assert len({arch_key(SMALL.decode(d)) for d in sequences}) == size.distinct_architectures
    assert size.distinct_architectures < size.decision_sequences  # (3, -1) and (2, 0) both give level 2


def test_random_samples_decode_to_valid_specs_and_round_trip():
    space = SearchSpace()
    rng = random.Random(0)
    keys = set()
    for _ in range(1000):
        decisions = space.random(rng)
        blocks = space.decode(decisions)
        validate_blocks(blocks, 3, 7)
        plan_graph(SpineNetCfg(blocks=blocks))
        assert space.decode(space.encode(blocks)) == blocks
        keys.add(arch_key(blocks))
    assert len(keys) == 1000


@pytest.mark.parametrize(
    "space",
    [
        SearchSpace.vertex_spinenet(),
        SearchSpace.permuted_resnet(),
        SearchSpace.permuted_resnet((1, 2, 4, 1, 1, 1)),
        SearchSpace.tiny(),
        SearchSpace(block_fns=("mbconv",), parent_window=-1),
        SearchSpace(intermediate_base_alloc=((6, 2), (7, 1)), level_deltas=(-2, 0, 1)),
    ],
    ids=["vertex", "R0-SP53", "R23-SP30", "tiny", "mbconv", "masked-deltas"],
)
def test_presets_and_configurations_sample_valid_specs(space):
    rng = random.Random(1)
    for _ in range(200):
        blocks = space.decode(space.random(rng))
        validate_blocks(blocks, space.min_level, space.max_level, space.family)  # type: ignore[arg-type]
        assert space.decode(space.encode(blocks)) == blocks
        assert all(1 <= b.level <= 7 for b in blocks)


def test_permuted_resnet_is_permutation_and_connections_only():
    space = SearchSpace.permuted_resnet((1, 4, 6, 2, 1, 1))
    assert dict(space.intermediate_base_alloc) == {2: 1, 3: 3, 4: 5, 5: 1}
    assert space.level_deltas == (0,) and space.block_fns == ("bottleneck",)
    size = space.size()
    assert size.adjustments == 1 and size.distinct_architectures == size.decision_sequences


def test_encode_prefers_the_base_level():
    # Every SpineNet-49 intermediate block whose level is in the allocation keeps delta 0 where counts allow.
    space = SearchSpace()
    decisions = space.encode(SPINENET49)
    bases = [space.base_levels[v] for v in decisions[:10]]
    deltas = [space.level_deltas[decisions[15 + 4 * i]] for i in range(10)]
    assert [b + d for b, d in zip(bases, deltas, strict=True)] == [b.level for b in SPINENET49[:10]]
    assert sorted(bases) == [2, 3, 3, 3, 4, 4, 4, 4, 4, 5]
    assert deltas[0] == 0  # the L2 block takes the L2 base


def test_uniform_log_probs_sum_to_one_on_an_enumerable_space():
    sequences = enumerate_sequences(SMALL)
    assert len(sequences) > 1000
    total = math.fsum(math.exp(SMALL.uniform_log_prob(d)) for d in sequences)
    assert total == pytest.approx(1.0, abs=1e-9)


def test_decision_errors_name_the_decision_and_the_legal_values():
    space = SearchSpace()
    decisions = space.encode(SPINENET49)
    with pytest.raises(SearchSpaceError, match=r"expected 70 decisions .* got 69"):
        space.decode(decisions[:-1])
    bad = list(decisions)
    bad[17] = 99
    with pytest.raises(SearchSpaceError, match=r"decision 17 \(block\[0\]\.in0\) = 99: expected an integer in 0..15"):
        space.decode(bad)
    bad = list(decisions)
    bad[1] = 0  # a second level-2 base: the allocation has one
    with pytest.raises(
        SearchSpaceError, match=r"decision 1 \(base\[1\]\) = 0 is masked out .* legal values: \[1, 2, 3\]"
    ):
        space.decode(bad)
    bad = list(decisions)
    bad[18] = 0  # in1 must exceed in0
    with pytest.raises(SearchSpaceError, match=r"block\[0\]\.in1"):
        space.check(bad)
    with pytest.raises(SearchSpaceError, match="expected an integer"):
        space.check([True, *decisions[1:]])
    with pytest.raises(SearchSpaceError, match="expected a list"):
        space.check("0" * 70)


def test_encode_errors_name_the_block():
    space = SearchSpace()
    rows = spec_rows(SPINENET49)
    with pytest.raises(SearchSpaceError, match="16 blocks"):
        space.encode(SPINENET_BLOCKS)
    swapped = blocks_from_rows([*rows[:2], [rows[2][0], rows[2][1], [3, 2], False], *rows[3:]])
    with pytest.raises(SearchSpaceError, match=r"block 2 .*in0 < in1"):
        space.encode(swapped)
    mbconv = blocks_from_rows([*rows[:3], [4, "mbconv", [2, 4], False], *rows[4:]])
    with pytest.raises(SearchSpaceError, match=r"block 3 .*block_fn 'mbconv'"):
        space.encode(mbconv)
    too_high = blocks_from_rows([[7, "bottleneck", [0, 1], False], *rows[1:]])  # no base 5+ for a 2nd L7
    with pytest.raises(SearchSpaceError, match="cannot be written as a permutation"):
        space.encode(too_high)
    early_output = blocks_from_rows([[*rows[0][:3], True], *rows[1:]])
    with pytest.raises(SearchSpaceError, match=r"block 0 .*expected an intermediate block"):
        space.encode(early_output)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"num_stem_blocks": 1}, "num_stem_blocks=1"),
        ({"intermediate_base_alloc": ((8, 1),)}, "level 8"),
        ({"intermediate_base_alloc": ((3, 0),)}, "count 0 must be positive"),
        ({"intermediate_base_alloc": ((3, 1), (3, 2))}, "repeated level"),
        ({"level_deltas": ()}, "level_deltas"),
        ({"level_deltas": (0, 0)}, "unique"),
        ({"intermediate_base_alloc": ((7, 1),), "level_deltas": (1, 2)}, "base level 7"),
        ({"block_fns": ("bottleneck", "mbconv")}, "one family"),
        ({"block_fns": ("conv",)}, "one family"),
        ({"output_levels": (3, 4, 4)}, "unique"),
        ({"output_levels": (3, 5)}, "contiguous"),
        ({"output_levels": (0, 1)}, "levels in 1..7"),
        ({"parent_window": 1}, "parent_window=1"),
        ({"parent_window": 0}, "parent_window=0"),
        ({"level_deltas": "01"}, "expected a list"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_space_fields_raise(fields, match):
    with pytest.raises(SearchSpaceError, match=match):
        SearchSpace(**fields)


def test_serialisation_and_fingerprint():
    space = SearchSpace.vertex_spinenet()
    data = json.loads(json.dumps(space.to_dict()))
    assert SearchSpace.from_dict(data) == space
    assert SearchSpace.from_dict(data).fingerprint() == space.fingerprint()
    assert SearchSpace().fingerprint() != space.fingerprint()
    assert SearchSpace(intermediate_base_alloc={4: 5, 2: 1, 3: 3, 5: 1}) == SearchSpace()
    with pytest.raises(SearchSpaceError, match=r"unknown key\(s\) \['window'\]"):
        SearchSpace.from_dict({"window": 5})


def test_arch_identity_and_strings():
    rows = spec_rows(SPINENET49)
    assert rows[0] == [2, "bottleneck", [0, 1], False] and rows[-1] == [6, "bottleneck", [12, 14], True]
    assert blocks_from_rows(json.loads(json.dumps(rows))) == SPINENET49
    assert arch_string(SPINENET49) == "L2b L4r L3b L4b L6r L4b L5r L7r L5b L5b | out L4b L3b L5b L7b L6b"
    other = (*SPINENET49[:-1], BlockSpec(6, "residual", (12, 14), True))
    assert arch_key(other) != arch_key(SPINENET49) and len(arch_key(other)) == 40


def test_space_module_does_not_import_torch():
    # torchspine/__init__ builds models (torch); bypass it with a bare package so only search/ and specs load.
    import torchspine

    code = (
        "import sys, types; pkg = types.ModuleType('torchspine'); pkg.__path__ = [sys.argv[1]]; "
        "sys.modules['torchspine'] = pkg; import torchspine.search.space, torchspine.search.synthetic; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, torchspine.__path__[0]], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_resource_aware_reward():
    assert resource_aware_reward(0.4, 2e9, 2e9, -0.07) == pytest.approx(0.4)
    assert resource_aware_reward(0.4, 4e9, 2e9, -0.07) == pytest.approx(0.4 * 2**-0.07)
    assert resource_aware_reward(0.4, 1e9, 2e9, -0.07) > 0.4
    assert resource_aware_reward(0.4, 4e9, 2e9, 0.0, w_over=-1.0) == pytest.approx(0.2)
    assert resource_aware_reward(0.4, 1e9, 2e9, 0.0, w_over=-1.0) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="macs"):
        resource_aware_reward(0.4, 0.0, 2e9, -0.07)
    with pytest.raises(ValueError, match="ap=nan"):
        resource_aware_reward(float("nan"), 1e9, 2e9, -0.07)


def test_synthetic_reward_scores_decoded_specs():
    space = SearchSpace()
    reward = SyntheticReward(space, SPINENET49)
    assert reward(space.encode(SPINENET49)) == 1.0
    rng = random.Random(0)
    values = [reward(space.random(rng)) for _ in range(200)]
    assert 0.0 < sum(values) / len(values) < 0.5
    # Two encodings of one network (different base/delta pairs) score the same.
    pairs = [(d, space.encode(space.decode(d))) for d in (space.random(rng) for _ in range(50))]
    pairs = [(d, e) for d, e in pairs if d != e]
    assert pairs
    assert all(reward(d) == reward(e) for d, e in pairs)


def _build_and_run(blocks) -> None:
    import torch

    import torchspine

    model = torchspine.create_model("test_spinenet", blocks=blocks, filter_size_scale=0.125).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 128, 128))
    for level in range(3, 8):
        assert out[f"p{level}"].shape[-1] == 128 // 2**level


@pytest.mark.slow
def test_1000_random_samples_build_and_run():
    """Every sampled architecture of the paper space builds as a x0.125-width model and runs at 128 px.

    If this fails, the failing rows are printed: builder robustness belongs to the model code, not the space.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny models: threads only add overhead; restored below for later tests
    try:
        _build_and_run_samples()
    finally:
        torch.set_num_threads(threads)


def _build_and_run_samples() -> None:
    space = SearchSpace()
    rng = random.Random(2026)
    failures = []
    for k in range(1000):
        blocks = space.decode(space.random(rng))
        try:
            _build_and_run(blocks)
        except Exception as err:  # collect them all, then report
            failures.append((k, spec_rows(blocks), f"{type(err).__name__}: {err}"))
    assert not failures, f"{len(failures)} of 1000 sampled architectures fail to build or run; first: {failures[:3]}"


def test_a_few_random_samples_build_and_run():
    space = SearchSpace()
    rng = random.Random(7)
    for _ in range(3):
        _build_and_run(space.decode(space.random(rng)))


def test_extreme_architecture_of_the_space_builds_and_runs():
    """A level-1 block feeding the L7 output (2^6 downsampling), an L7 block feeding the L3 output (2^4
    upsampling) and residual output blocks: all inside the paper space."""
    rows = spec_rows(SPINENET49)
    rows[0] = [1, "bottleneck", [0, 1], False]  # base 2, delta -1
    rows[11] = [3, "residual", [2, 9], True]  # net 2 = the L1 block, net 9 = the L7 block 7
    rows[13] = [7, "residual", [2, 14], True]
    blocks = blocks_from_rows(rows)
    space = SearchSpace()
    assert space.decode(space.encode(blocks)) == blocks
    _build_and_run(blocks)
