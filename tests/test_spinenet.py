"""The backbone over the registry: parameter counts, shapes at any size, gradients, determinism, errors, export."""

from __future__ import annotations

import pytest
import torch

import torchspine
from torchspine.specs import SPINENET_MOBILE_BLOCKS, SpineNetCfg
from torchspine.utils.complexity import count_bn_stats, count_params

ALL = torchspine.list_models(include_test=True)
OFFICIAL_MODELS = torchspine.list_models()


def _meta_model(name: str, **kw) -> torchspine.SpineNet:
    with torch.device("meta"):
        return torchspine.create_model(name, **kw)


@pytest.mark.parametrize("name", OFFICIAL_MODELS)
def test_params_equal_official(name):
    # Official counts measured on the TF implementations (tensorflow/tpu and Model Garden).
    assert count_params(_meta_model(name)) == torchspine.variant_info(name).params


# BatchNorm moving statistics of the official models (reference §1.9; mobile from Model Garden builds).
BN_STATS = {
    "spinenet49s": 57_136,
    "spinenet49": 88_704,
    "spinenet96": 122_752,
    "spinenet143": 166_272,
    "spinenet143l": 214_836,
    "spinenet190": 261_552,
}


@pytest.mark.parametrize("name", list(BN_STATS))
def test_bn_statistics_equal_official(name):
    assert count_bn_stats(_meta_model(name)) == BN_STATS[name]


def test_released_49s_endpoints():
    assert count_params(_meta_model("spinenet49s", endpoints_num_filters=256)) == 9_472_959


# Model Garden's spinenet_test.py / spinenet_mobile_test.py cases with their measured trainable params:
# (input, filter_size_scale, block_repeats, resample_alpha, endpoints, min_level, max_level).
MG_CASES = [
    ((128, 0.65, 1, 0.5, 128, 4, 6), 7_913_424),
    ((256, 1.0, 1, 0.5, 256, 3, 6), 19_627_328),
    ((384, 1.0, 2, 0.5, 256, 4, 7), 35_306_688),
    ((512, 1.0, 3, 1.0, 256, 3, 7), 60_247_616),
    ((640, 1.3, 4, 1.0, 384, 3, 7), 125_821_456),
]


@pytest.mark.parametrize(("case", "params"), MG_CASES, ids=[str(c[0]) for c in MG_CASES])
def test_model_garden_test_cases(case, params):
    size, scale, repeats, alpha, endpoints, min_level, max_level = case
    cfg = SpineNetCfg(
        filter_size_scale=scale,
        block_repeats=repeats,
        resample_alpha=alpha,
        endpoints_num_filters=endpoints,
        min_level=min_level,
        max_level=max_level,
    )
    with torch.device("meta"):
        model = torchspine.SpineNet(cfg, semantics="model_garden").eval()
        out = model(torch.empty(1, 3, size, size))
    assert count_params(model) == params
    assert list(out) == [f"p{level}" for level in range(min_level, max_level + 1)]
    for level, t in zip(range(min_level, max_level + 1), out.values(), strict=True):
        assert tuple(t.shape) == (1, endpoints, size // 2**level, size // 2**level)


@pytest.mark.parametrize(
    ("scale", "endpoints", "params"), [(0.6, 24, 842_456), (0.65, 40, 975_678), (1.0, 48, 2_268_708)]
)
def test_model_garden_mobile_cases(scale, endpoints, params):
    cfg = SpineNetCfg(
        family="mobile", blocks=SPINENET_MOBILE_BLOCKS, filter_size_scale=scale, endpoints_num_filters=endpoints
    )
    with torch.device("meta"):
        assert count_params(torchspine.SpineNet(cfg, semantics="model_garden")) == params


SIZES = [(128, 128), (128, 256), (224, 224), (513, 513), (600, 1000)]


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
@pytest.mark.parametrize("name", ALL)
def test_output_shapes_any_size(name, size):
    model = _meta_model(name).eval()
    with torch.no_grad():
        out = model(torch.empty(2, 3, *size, device="meta"))
    info = model.feature_info
    assert list(out) == [f.key for f in info]
    assert [f.level for f in info] == list(range(3, 8))
    for f, t in zip(info, out.values(), strict=True):
        assert f.stride == 2**f.level and f.channels == model.out_channels
        assert tuple(t.shape) == (2, model.out_channels, -(-size[0] // f.stride), -(-size[1] // f.stride))


@pytest.mark.parametrize("semantics", ["tpu", "model_garden"])
@pytest.mark.parametrize("size", [(128, 128), (160, 200), (513, 513)], ids=["128", "160x200", "513"])
def test_real_forward_any_size(semantics, size):
    model = torchspine.create_model("test_spinenet", semantics=semantics).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    for level, t in zip(range(3, 8), out.values(), strict=True):
        assert t.shape[-2:] == (-(-size[0] // 2**level), -(-size[1] // 2**level))
        assert torch.isfinite(t).all()


def test_level2_output():
    model = torchspine.create_model("test_spinenet", min_level=2).eval()
    assert "blocks.15.group.0.conv1.conv.weight" in model.state_dict()
    out = model(torch.randn(1, 3, 128, 128))
    assert list(out) == ["p2", "p3", "p4", "p5", "p6", "p7"]
    assert out["p2"].shape[-2:] == (32, 32)
    assert "blocks.15.group.0.conv1.conv.weight" not in torchspine.create_model("test_spinenet").state_dict()


@pytest.mark.parametrize(
    "name",
    [
        "test_spinenet",
        "test_spinenet_mobile",
        pytest.param("spinenet49", marks=pytest.mark.slow),
        pytest.param("spinenet49_mobile", marks=pytest.mark.slow),
    ],
)
def test_every_parameter_gets_a_gradient(name):
    model = torchspine.create_model(name, drop_path_rate=0.2, min_level=3, max_level=7)
    out = model(torch.randn(2, 3, 128, 160))
    sum(t.float().mean() for t in out.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_same_seed_same_model_and_outputs():
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = torchspine.create_model("test_spinenet").eval()
        with torch.no_grad():
            outs.append(model(torch.ones(1, 3, 128, 128)))
    for a, b in zip(outs[0].values(), outs[1].values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_drop_path_only_in_training():
    model = torchspine.create_model("test_spinenet", drop_path_rate=0.5)
    rates = [m.rate for m in model.modules() if isinstance(m, torchspine.layers.DropPath)]
    # tensorflow/tpu divides by its table's 15 blocks (the last built block drops with the full rate), Model Garden
    # by its 16; stem blocks never drop.
    assert max(rates) == pytest.approx(0.5) and min(rates) == 0.0
    mg = torchspine.create_model("test_spinenet", drop_path_rate=0.5, semantics="model_garden")
    assert max(m.rate for m in mg.modules() if isinstance(m, torchspine.layers.DropPath)) == pytest.approx(
        0.5 * 15 / 16
    )
    x = torch.randn(2, 3, 128, 128)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    torch.testing.assert_close(a["p3"], b["p3"], rtol=0, atol=0)


def test_bn_numerics_follow_semantics():
    tpu = torchspine.create_model("test_spinenet", semantics="tpu")
    mg = torchspine.create_model("test_spinenet", semantics="model_garden", norm_eps=1e-5)
    assert tpu.stem.bn.eps == 1e-4 and tpu.stem.bn.momentum == pytest.approx(0.003)
    assert mg.stem.bn.eps == 1e-5 and mg.stem.bn.momentum == pytest.approx(0.01)


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match="did you mean spinenet49"):
        torchspine.create_model("spinenet-49")


def test_unknown_override_is_an_error():
    with pytest.raises(TypeError, match="did you mean 'endpoints_num_filters'"):
        torchspine.create_model("test_spinenet", endpoint_num_filters=64)
    with pytest.raises(ValueError, match="activation 'gelu'"):
        torchspine.create_model("test_spinenet", act="gelu")
    with pytest.raises(ValueError, match="semantics='keras'"):
        torchspine.create_model("test_spinenet", semantics="keras")
    with pytest.raises(ValueError, match="tensorflow/tpu's SpineNet-MBConv"):
        torchspine.create_model("test_spinenet_mobile", semantics="tpu")


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 1, 128, 128), "built for 3 input channels, got 1"),
        ((1, 3, 100, 128), "too small.*at least 128"),
        ((3, 128, 128), r"expects an \(N, C, H, W\)"),
        ((1, 128, 128, 3), "built for 3 input channels, got 128"),
    ],
    ids=["gray", "small", "3d", "nhwc"],
)
def test_bad_input_errors(shape, message):
    with pytest.raises(ValueError, match=message):
        torchspine.create_model("test_spinenet")(torch.randn(*shape))


def test_max_level_6_allows_smaller_inputs():
    model = torchspine.create_model("test_spinenet", max_level=6).eval()
    # Level-7 blocks feed the level-5 path, so they stay and keep the 128-pixel minimum.
    assert model.max_block_level == 7


def test_torch_export_matches_eager():
    model = torchspine.create_model("test_spinenet").eval()
    x = torch.randn(1, 3, 128, 192)
    exported = torch.export.export(model, (x,))
    eager = model(x)
    for key, value in exported.module()(x).items():
        torch.testing.assert_close(value, eager[key])


@pytest.mark.slow
def test_torch_compile_matches_eager():
    model = torchspine.create_model("test_spinenet").eval()
    x = torch.randn(1, 3, 128, 128)
    compiled = torch.compile(model)
    eager = model(x)
    with torch.no_grad():
        for key, value in compiled(x).items():
            torch.testing.assert_close(value, eager[key], rtol=1e-4, atol=1e-4)


def test_model_from_user_spec_file(tmp_path):
    # A hand-written (or searched) topology: one block per output level plus an intermediate one.
    path = tmp_path / "mine.yaml"
    path.write_text(
        "filter_size_scale: 0.25\nendpoints_num_filters: 16\nblocks:\n"
        "  - [4, residual, [0, 1], false]\n"
        "  - [3, bottleneck, [1, 2], true]\n"
        "  - [4, bottleneck, [2, 3], true]\n"
        "  - [5, bottleneck, [3, 4], true]\n"
        "  - [7, residual, [4, 5], true]\n"
        "  - [6, bottleneck, [5, 6], true]\n"
    )
    model = torchspine.SpineNet(torchspine.load_cfg(path)).eval()
    out = model(torch.randn(1, 3, 128, 128))
    assert [tuple(t.shape) for t in out.values()] == [(1, 16, 128 // 2**lv, 128 // 2**lv) for lv in range(3, 8)]
