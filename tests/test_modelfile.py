"""Model files (`torchspine.modelfile`) and `torchspine.load_model`: round trips per task, old files, bad files,
and the precedence of explicit arguments over the file."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

import torchspine
from torchspine.engine.export import describe_model, export_model
from torchspine.modelfile import FORMAT_VERSION, ModelFileError, Provenance, read_model_file, save_model_file
from torchspine.models.detection.mask_rcnn import build_mask_rcnn
from torchspine.models.detection.retinanet import build_retinanet
from torchspine.specs import cfg_to_dict

CATEGORIES = {1: "circle", 2: "square", 4: "cross"}


def _randomise_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, so a round trip that dropped them would change the outputs."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def _build(task: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if task == "backbone":
        return torchspine.create_model("test_spinenet")
    if task == "classification":
        return torchspine.create_classifier("test_spinenet", num_classes=3)
    if task == "retinanet":
        return build_retinanet("test_spinenet", num_classes=5, image_size=128)
    return build_mask_rcnn("test_spinenet", num_classes=5, image_size=128)


def _outputs(model: torch.nn.Module, task: str) -> object:
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(x) if task in ("backbone", "classification") else model(list(x))


def _assert_identical(a: object, b: object) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_identical(a[k], b[k])
    else:
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_identical(x, y)


@pytest.mark.parametrize("task", ["backbone", "classification", "retinanet", "maskrcnn"])
def test_round_trip_is_bit_identical(task, tmp_path):
    model = _randomise_bn(_build(task)).eval()
    path = export_model(model, tmp_path / "m.safetensors", variant="test_spinenet", categories=CATEGORIES)
    loaded = torchspine.load_model(path)
    assert not loaded.training and type(loaded) is type(model)
    _assert_identical(_outputs(model, task), _outputs(loaded, task))
    info = read_model_file(path)
    assert info.task == task and info.format_version == FORMAT_VERSION
    if task != "backbone":
        assert info.category_names == CATEGORIES


def test_custom_architecture_round_trips(tmp_path):
    """A configuration that is no registered variant (as a search produces) is rebuilt from the file alone."""
    cfg = dataclasses.replace(
        torchspine.variant_info("test_spinenet").cfg, filter_size_scale=0.2, endpoints_num_filters=24, min_level=4
    )
    model = _randomise_bn(build_retinanet(torchspine.SpineNet(cfg, act="relu"), num_classes=3, image_size=128)).eval()
    path = export_model(model, tmp_path / "custom.safetensors", variant="custom")
    loaded = torchspine.load_model(path)
    assert loaded.backbone.cfg == cfg and loaded.backbone.act_name == "relu"
    assert [f.level for f in loaded.backbone.feature_info] == [4, 5, 6, 7]
    _assert_identical(_outputs(model, "retinanet"), _outputs(loaded, "retinanet"))


def test_provenance_and_description_round_trip(tmp_path):
    model = _build("retinanet").eval()
    prov = Provenance("trained", experiment="demo", step=12, metrics=(("bbox/AP", 0.25),))
    info, _ = describe_model(model, variant="test_spinenet", categories=CATEGORIES, provenance=prov)
    path = save_model_file(model.state_dict(), info, tmp_path / "m.safetensors")
    assert read_model_file(path) == info


def _format1_retinanet(tmp_path):
    """A RetinaNet file exactly as the format-1 exporter (``engine/export.py`` before format 2) wrote it."""
    model = _randomise_bn(_build("retinanet")).eval()
    backbone, head = model.backbone, model.head
    meta = {
        "format_version": 1,
        "task": "retinanet",
        "variant": "test_spinenet",
        "cfg": cfg_to_dict(backbone.cfg),
        "backbone_args": {
            "semantics": backbone.semantics,
            "act": backbone.act_name,
            "norm_eps": backbone.norm_eps,
            "norm_momentum": backbone.norm_momentum,
        },
        "head": {
            "num_classes": head.num_classes,
            "num_anchors": head.num_anchors,
            "num_convs": head.num_convs,
            "num_filters": head.num_filters,
            "separable": head.separable,
            "num_levels": head.num_levels,
            "anchor_aspect_ratios": [0.5, 1.0, 2.0],
        },
        "image_size": 128,
        "source": {"format": "torchspine-train"},
    }
    path = tmp_path / "old.safetensors"
    save_file(model.state_dict(), path, metadata={"torchspine": json.dumps(meta)})
    return model, path


def test_format1_files_still_load(tmp_path):
    model, path = _format1_retinanet(tmp_path)
    info = read_model_file(path)
    assert info.format_version == 1 and info.provenance.source == "trained" and info.head.anchor_size == 3.0
    _assert_identical(_outputs(model, "retinanet"), _outputs(torchspine.load_model(path), "retinanet"))
    # A format-1 converted backbone (the converter's dict) loads through create_model too.
    backbone = _randomise_bn(torchspine.create_model("test_spinenet")).eval()
    meta = {
        "format_version": 1,
        "task": "backbone",
        "variant": "test_spinenet",
        "cfg": cfg_to_dict(backbone.cfg),
        "backbone_args": {"semantics": "tpu", "act": "swish", "norm_eps": 1e-4, "norm_momentum": 0.003},
        "source": {"checkpoint": "model.ckpt-1", "format": "tpu", "variables_mapped": 3},
    }
    old = tmp_path / "old_backbone.safetensors"
    save_file(backbone.state_dict(), old, metadata={"torchspine": json.dumps(meta)})
    loaded = torchspine.create_model("test_spinenet", weights=old).eval()
    assert loaded.norm_eps == 1e-4 and read_model_file(old).provenance.implementation == "tpu"
    _assert_identical(backbone.state_dict(), loaded.state_dict())


# ------------------------------------------------------------------------------------------------- bad files


@pytest.fixture
def good_file(tmp_path):
    return export_model(_build("retinanet").eval(), tmp_path / "good.safetensors", variant="test_spinenet")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        torchspine.load_model(tmp_path / "nope.safetensors")


def test_not_safetensors(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all, just text")
    with pytest.raises(ModelFileError, match=r"junk\.safetensors: not a safetensors file"):
        torchspine.load_model(junk)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    with pytest.raises(ModelFileError, match=r"tiny\.safetensors: not a safetensors file \(only 3 bytes\)"):
        torchspine.load_model(tiny)


def test_truncated(good_file, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good_file.read_bytes()[:-1000])
    with pytest.raises(ModelFileError, match=r"cut\.safetensors: truncated"):
        torchspine.load_model(cut)


def test_newer_format(good_file, tmp_path):
    from safetensors.torch import load_file

    data = json.loads(read_model_file(good_file).to_json())
    data["format_version"] = FORMAT_VERSION + 1
    newer = tmp_path / "newer.safetensors"
    save_file(load_file(good_file), newer, metadata={"torchspine": json.dumps(data)})
    with pytest.raises(
        ModelFileError, match=rf"newer\.safetensors: written in torchspine model-file format {FORMAT_VERSION + 1}"
    ):
        torchspine.load_model(newer)


def test_missing_and_misshaped_tensors_are_named(good_file, tmp_path):
    from safetensors.torch import load_file

    info = read_model_file(good_file)
    state = load_file(good_file)
    missing = dict(state)
    del missing["head.cls.predict.weight"]
    save_model_file(missing, info, tmp_path / "missing.safetensors")
    with pytest.raises(
        ModelFileError, match=r"missing\.safetensors does not fit .*missing \(1\): head\.cls\.predict\.weight"
    ):
        torchspine.load_model(tmp_path / "missing.safetensors")
    shaped = dict(state)
    shaped["backbone.endpoints.p3.conv.weight"] = torch.zeros(1, 1, 1, 1)
    save_model_file(shaped, info, tmp_path / "shaped.safetensors")
    with pytest.raises(
        ModelFileError, match=r"shape mismatch \(1\): backbone\.endpoints\.p3\.conv\.weight: file \(1, 1, 1, 1\)"
    ):
        torchspine.load_model(tmp_path / "shaped.safetensors")


def test_corrupt_description(good_file, tmp_path):
    from safetensors.torch import load_file

    bad = tmp_path / "bad.safetensors"
    save_file(load_file(good_file), bad, metadata={"torchspine": json.dumps({"format_version": 2, "task": "x"})})
    with pytest.raises(ModelFileError, match=r"bad\.safetensors: invalid torchspine metadata"):
        torchspine.load_model(bad)


def test_pickles_are_refused(tmp_path):
    pickled = tmp_path / "evil.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "fn": print}, pickled)
    with pytest.raises(ModelFileError, match="weights_only=True"):
        torchspine.create_model("test_spinenet", weights=pickled)


# ------------------------------------------------------------------------------------------------ precedence


def test_conflicting_overrides_are_errors(good_file):
    with pytest.raises(ModelFileError, match="num_classes=7 but the file's retinanet has 5 class outputs"):
        torchspine.load_model(good_file, num_classes=7)
    with pytest.raises(ModelFileError, match="num_filters=64 but the file's head has 32"):
        torchspine.load_model(good_file, num_filters=64)
    with pytest.raises(ModelFileError, match="task='maskrcnn' but the file holds a retinanet model"):
        torchspine.load_model(good_file, task="maskrcnn")
    with pytest.raises(ModelFileError, match="backbone='spinenet49' but the file's backbone is test_spinenet"):
        torchspine.load_model(good_file, backbone="spinenet49")
    with pytest.raises(ModelFileError, match=r"endpoints_num_filters=16 \(the file's is 32\)"):
        torchspine.load_model(good_file, endpoints_num_filters=16)
    with pytest.raises(ModelFileError, match="holds test_spinenet weights, not spinenet49"):
        torchspine.create_model("spinenet49", weights=good_file)


def test_compatible_overrides_win(good_file):
    model = torchspine.load_model(good_file, image_size=256, num_classes=5, drop_path_rate=0.1, score_thresh=0.2)
    assert model.transform.image_size == 256 and model.backbone.drop_path_rate == 0.1 and model.score_thresh == 0.2


def test_create_model_loads_the_backbone_of_a_detector_file(good_file):
    from safetensors.torch import load_file

    backbone = torchspine.create_model("test_spinenet", weights=good_file)
    state = load_file(good_file)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, state[f"backbone.{key}"]), key


def test_plain_state_dicts_need_their_description(tmp_path):
    model = _randomise_bn(_build("maskrcnn")).eval()
    path = tmp_path / "plain.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ModelFileError, match=r"no torchspine metadata.*pass task= and backbone="):
        torchspine.load_model(path)
    with pytest.raises(ModelFileError, match="needs num_classes"):
        torchspine.load_model(path, task="maskrcnn", backbone="test_spinenet")
    loaded = torchspine.load_model(path, task="maskrcnn", backbone="test_spinenet", num_classes=5, image_size=128)
    _assert_identical(_outputs(model, "maskrcnn"), _outputs(loaded, "maskrcnn"))
