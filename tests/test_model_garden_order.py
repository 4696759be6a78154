"""The ``layer_with_weights-K`` order of Model Garden SpineNet checkpoints (`torchspine.convert.model_garden_order`).

Without TensorFlow: the simulated order reproduces the tables measured from the official code (reference
Appendix A, ``fixtures/model_garden_order``). With TensorFlow (``-m tf``): it reproduces ``model.layers`` of the
official models built by ``tf_reference/model_garden_order.py``, weightless layers included, for other
configurations (both families, other level ranges and widths).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

import torchspine
from conftest import FIXTURES
from mg_mapping import creation_order_roles
from tf_parity import require_tf_python
from torchspine.convert.model_garden_order import (
    KerasLayer,
    KerasLayerRole,
    keras_functional_order,
    model_garden_keras_layers,
    model_garden_layer_roles,
)
from torchspine.specs import SPINENET_MOBILE_BLOCKS, SpineNetCfg

APPENDIX_A = json.loads((FIXTURES / "model_garden_order" / "appendix_a.json").read_text())["tables"]
ORDER_SCRIPT = Path(__file__).parent / "tf_reference" / "model_garden_order.py"

# Registered variant -> its Appendix A table (49S shares 49's, 143L shares 143's).
VARIANT_TABLES = {
    "spinenet49": "spinenet49",
    "spinenet49s": "spinenet49",
    "spinenet96": "spinenet96",
    "spinenet143": "spinenet143",
    "spinenet143l": "spinenet143",
    "spinenet190": "spinenet190",
}
WEIGHTED_LAYERS = {"spinenet49": 181, "spinenet96": 198, "spinenet143": 215, "spinenet190": 232}
_RESAMPLE_CONVS = {"in1x1": "reduce", "down3x3": "downsample.0", "out1x1": "project"}


def appendix_role(token: str) -> KerasLayerRole:
    """Translate the reference's notation (``R14.p0.in1x1.bn``, ``B2.res1``, ``S1.bneck1+proj``, ``E3.conv``)."""
    if token in ("stem.conv7x7", "stem.bn"):
        return KerasLayerRole("bn" if token == "stem.bn" else "conv", "stem")
    if m := re.fullmatch(r"S(\d+)\.bneck(\d+)(\+proj)?", token):
        return KerasLayerRole("bottleneck", f"stem_blocks.{int(m[1]) - 1}.{int(m[2]) - 1}")
    if m := re.fullmatch(r"B(\d+)\.(bneck|res)(\d+)", token):
        kind = "bottleneck" if m[2] == "bneck" else "residual"
        return KerasLayerRole(kind, f"blocks.{int(m[1]) - 1}.group.{int(m[3]) - 1}")
    if m := re.fullmatch(r"R(\d+)\.p([01])\.(in1x1|down3x3|out1x1)(\.bn)?", token):
        prefix = f"blocks.{int(m[1]) - 1}.resample{m[2]}.{_RESAMPLE_CONVS[m[3]]}"
        return KerasLayerRole("bn" if m[4] else "conv", prefix)
    if m := re.fullmatch(r"E(\d)\.(conv|bn)", token):
        return KerasLayerRole(m[2], f"endpoints.p{m[1]}")  # type: ignore[arg-type]
    raise ValueError(f"unknown Appendix A token {token!r}")


def assert_same_roles(got: list[KerasLayerRole], want: list[KerasLayerRole]) -> None:
    mismatches = [(k, g, w) for k, (g, w) in enumerate(zip(got, want, strict=False)) if g != w]
    assert not mismatches, f"{len(mismatches)} of {len(want)} differ, first (K, got, expected): {mismatches[:4]}"
    assert len(got) == len(want)


def _meta_model(name: str, **kwargs) -> torchspine.SpineNet:
    with torch.device("meta"):
        return torchspine.create_model(name, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Without TensorFlow


@pytest.mark.parametrize("name", list(VARIANT_TABLES))
def test_matches_appendix_a(name):
    model = _meta_model(name)
    assert (model.cfg.min_level, model.cfg.max_level) == (3, 7)
    expected = [appendix_role(token) for token in APPENDIX_A[VARIANT_TABLES[name]]]
    assert_same_roles(model_garden_layer_roles(model), expected)


@pytest.mark.parametrize("name", list(WEIGHTED_LAYERS))
def test_number_of_weighted_layers(name):
    assert len(APPENDIX_A[name]) == WEIGHTED_LAYERS[name]
    assert len(model_garden_layer_roles(_meta_model(name))) == WEIGHTED_LAYERS[name]


@pytest.mark.parametrize("name", ["spinenet49_mobile", "spinenet49s_mobile", "spinenet49xs_mobile"])
def test_mobile_roles_cover_the_model(name):
    # 18 MBConv blocks, 27 depthwise + 38 plain convs, one BN each (counts of the official 49 graph).
    roles = model_garden_layer_roles(_meta_model(name))
    kinds = [role.kind for role in roles]
    assert (kinds.count("mbconv"), kinds.count("depthwise"), kinds.count("conv")) == (18, 27, 38)
    assert kinds.count("bn") == 27 + 38
    assert len(set(roles)) == len(roles)


def test_layers_are_topologically_sorted():
    layers = model_garden_keras_layers(_meta_model("spinenet96"))
    assert layers[0].keras_class == "InputLayer"
    for k, layer in enumerate(layers):
        assert all(j < k for j in layer.inputs), (k, layer)
    assert [layer.role for layer in layers if layer.role is not None] == model_garden_layer_roles(
        _meta_model("spinenet96")
    )


def test_keras_functional_order_rule():
    # Depth is the longest path to an output counting every layer; equal depths go to the layer reached first from
    # the outputs (depth-first, inputs in call order); layers that feed no output are left out.
    layers = [KerasLayer("InputLayer", ()), KerasLayer("A", (0,)), KerasLayer("B", (1,)), KerasLayer("C", (0,))]
    layers.append(KerasLayer("Add", (2, 3)))
    assert keras_functional_order(layers, [4]) == [0, 1, 2, 3, 4]
    # C is now reached before A and B, but A is deeper (2 vs 1); B and C tie at depth 1, C was reached first.
    layers[4] = KerasLayer("Add", (3, 2))
    assert keras_functional_order(layers, [4]) == [0, 1, 3, 2, 4]
    layers[2] = KerasLayer("B", (0,))  # A feeds nothing now
    assert keras_functional_order(layers, [4]) == [0, 3, 2, 4]


def test_no_model_garden_equivalent():
    mobile = dict(family="mobile", blocks=SPINENET_MOBILE_BLOCKS, endpoints_num_filters=48)
    with torch.device("meta"):
        repeated = torchspine.SpineNet(SpineNetCfg(**mobile, block_repeats=2), semantics="model_garden")
        clamped = torchspine.SpineNet(SpineNetCfg(**mobile, max_level=6), semantics="model_garden")
    with pytest.raises(ValueError, match="does not chain"):
        model_garden_layer_roles(repeated)
    with pytest.raises(ValueError, match="max_level"):
        model_garden_layer_roles(clamped)
    with pytest.raises(ValueError, match="SpineNetMobile option"):
        model_garden_layer_roles(_meta_model("spinenet49"), use_keras_upsampling_2d=True)


# ---------------------------------------------------------------------------------------------------------------
# Against the official Model Garden models

_SPINENET49 = {"endpoints_num_filters": 256, "filter_size_scale": 1.0, "resample_alpha": 0.5, "block_repeats": 1}
_MOBILE49 = {"endpoints_num_filters": 48, "filter_size_scale": 1.0, "se_ratio": 0.2, "expand_ratio": 6}
# name -> (family, input size, Model Garden kwargs, slow)
TF_CONFIGS: dict[str, tuple[str, list[int], dict, bool]] = {
    "spinenet49": ("spinenet", [256, 256], {**_SPINENET49, "activation": "swish"}, False),
    "spinenet49-tiny": (
        "spinenet",
        [128, 256],
        {**_SPINENET49, "endpoints_num_filters": 16, "filter_size_scale": 0.14},
        False,
    ),
    "spinenet49_mobile": ("mobile", [256, 256], {**_MOBILE49, "activation": "hard_swish"}, False),
    "spinenet96": ("spinenet", [256, 256], {**_SPINENET49, "block_repeats": 2}, True),
    "spinenet49-min2": ("spinenet", [256, 256], {**_SPINENET49, "min_level": 2}, True),
    "spinenet49-max6": ("spinenet", [256, 256], {**_SPINENET49, "max_level": 6}, True),
    "spinenet49-min4": ("spinenet", [256, 256], {**_SPINENET49, "min_level": 4}, True),
    "spinenet49s_mobile": (
        "mobile",
        [256, 256],
        {**_MOBILE49, "endpoints_num_filters": 40, "filter_size_scale": 0.65, "activation": "swish"},
        True,
    ),
    "spinenet49xs_mobile": (
        "mobile",
        [256, 256],
        {**_MOBILE49, "endpoints_num_filters": 24, "filter_size_scale": 0.6, "activation": "hard_swish"},
        True,
    ),
    "spinenet49_mobile-keras-upsampling": (
        "mobile",
        [256, 384],
        {**_MOBILE49, "activation": "swish", "use_keras_upsampling_2d": True},
        True,
    ),
}


def _torch_twin(family: str, kwargs: dict) -> torchspine.SpineNet:
    fields = {
        k: kwargs[k]
        for k in ("endpoints_num_filters", "filter_size_scale", "block_repeats", "min_level", "max_level")
        if k in kwargs
    }
    if family == "mobile":
        cfg = SpineNetCfg(family="mobile", blocks=SPINENET_MOBILE_BLOCKS, se_ratio=kwargs["se_ratio"], **fields)
    else:
        cfg = SpineNetCfg(resample_alpha=kwargs["resample_alpha"], **fields)
    with torch.device("meta"):
        return torchspine.SpineNet(cfg, semantics="model_garden", act=kwargs.get("activation", "relu"))


def _official_order(family: str, size: list[int], kwargs: dict, tmp_path: Path) -> dict:
    python = require_tf_python()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"family": family, "input_size": size, "kwargs": kwargs}))
    out = tmp_path / "order.json"
    proc = subprocess.run(
        [python, str(ORDER_SCRIPT), str(config), str(out)], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise AssertionError(f"Model Garden order extraction failed:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


@pytest.mark.tf
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[pytest.mark.slow] if TF_CONFIGS[n][3] else []) for n in TF_CONFIGS],
)
def test_matches_official_model_layers(name, tmp_path):
    family, size, kwargs, _ = TF_CONFIGS[name]
    kwargs = {"min_level": 3, "max_level": 7, **kwargs}
    official = _official_order(family, size, kwargs, tmp_path)
    model = _torch_twin(family, kwargs)
    upsampling = kwargs.get("use_keras_upsampling_2d", False)

    by_creation = creation_order_roles(model)
    expected = [by_creation[cls][k] for cls, k in official["weighted"]]
    assert_same_roles(model_garden_layer_roles(model, use_keras_upsampling_2d=upsampling), expected)

    # The whole simulated graph, weightless layers and connections included, is Keras' model.layers.
    simulated = [
        (layer.keras_class, list(layer.inputs))
        for layer in model_garden_keras_layers(model, use_keras_upsampling_2d=upsampling)
    ]
    assert simulated == [(layer["class"], layer["inputs"]) for layer in official["layers"]]
