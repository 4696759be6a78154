"""``torchspine convert``: official checkpoints to safetensors, parity of the converted models, and clear failures."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import torchspine
from conftest import OFFICIAL
from tf_parity import write_tf1_checkpoint
from torchspine.cli.main import main
from torchspine.convert.converter import ConversionError, convert_checkpoint
from torchspine.convert.tf_checkpoint import CheckpointError
from torchspine.convert.tpu_names import tpu_backbone_units
from torchspine.modelfile import read_model_file, save_model_file

TOLERANCE = 1e-4
TPU = OFFICIAL / "tpu_spinenet49_retinanet_tiny"


def to_source_order(t: torch.Tensor, per_anchor: int, source: tuple[float, ...]) -> np.ndarray:
    """NCHW predictor output in torchspine's anchor order -> NHWC in the `source` aspect-ratio order."""
    canonical = (0.5, 1.0, 2.0)
    x = t.permute(0, 2, 3, 1).numpy()
    n, h, w, c = x.shape
    x = x.reshape(n, h, w, c // (3 * per_anchor), 3, per_anchor)[:, :, :, :, [canonical.index(r) for r in source]]
    return x.reshape(n, h, w, c)


def retinanet_outputs(model: torch.nn.Module, x: torch.Tensor, source: tuple[float, ...]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        feats = model.backbone(x)
        classes, boxes = model.head.forward_levels(list(feats.values()))
    out = {k: v.permute(0, 2, 3, 1).numpy() for k, v in feats.items()}
    num_classes = model.head.num_classes
    for key, c, b in zip(feats, classes, boxes, strict=True):
        out[f"class_{key}"] = to_source_order(c, num_classes, source)
        out[f"box_{key}"] = to_source_order(b, 4, source)
    return out


def assert_parity(ours: dict[str, np.ndarray], official: dict[str, np.ndarray]) -> dict[str, float]:
    errors = {k: float(np.abs(ours[k] - official[k]).max() / np.abs(official[k]).max()) for k in official}
    assert max(errors.values()) <= TOLERANCE, errors
    return errors


def test_tpu_retinanet_fixture_converts_and_matches(tmp_path):
    out = tmp_path / "tpu.safetensors"
    report_path = tmp_path / "report.json"
    assert (
        main(
            ["convert", "--tf-checkpoint", str(TPU), "--act", "swish", "--out", str(out), "--report", str(report_path)]
        )
        == 0
    )
    meta = read_model_file(out)
    assert meta.task == "retinanet" and meta.backbone.numerics.semantics == "tpu"
    assert meta.backbone.numerics.norm_eps == 1e-4 and meta.backbone.cfg.filter_size_scale == 0.14
    assert meta.num_classes == 5 and meta.head.num_convs == 2
    assert meta.provenance.source == "converted" and meta.provenance.implementation == "tpu"
    report = json.loads(report_path.read_text())
    assert len(report["mapped"]) == 742 and report["missing"] == []
    assert report["skipped"] == [{"tf_name": "global_step", "reason": "training step counter"}]
    model = torchspine.load_model(out)
    x = torch.from_numpy(np.load(TPU / "input.npy")).permute(0, 3, 1, 2)
    assert_parity(retinanet_outputs(model, x, (1.0, 2.0, 0.5)), dict(np.load(TPU / "outputs.npz")))


def test_converted_backbone_loads_with_create_model(tmp_path):
    out = tmp_path / "tpu.safetensors"
    state, meta, _ = convert_checkpoint(TPU, act="swish", task="backbone")
    save_model_file(state, meta, out)
    backbone = torchspine.create_model("spinenet49", weights=out).eval()  # architecture comes from the file
    assert backbone.cfg.filter_size_scale == 0.14 and backbone.norm_eps == 1e-4
    x = torch.from_numpy(np.load(TPU / "input.npy")).permute(0, 3, 1, 2)
    official = dict(np.load(TPU / "outputs.npz"))
    with torch.no_grad():
        ours = {k: v.permute(0, 2, 3, 1).numpy() for k, v in backbone(x).items()}
    assert_parity(ours, {k: official[k] for k in ours})


def test_missing_activation_is_asked_for(tmp_path):
    with pytest.raises(ConversionError, match="does not record its activation; pass --act"):
        convert_checkpoint(TPU)


def test_wrong_model_is_an_error_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    assert (
        main(["convert", "--tf-checkpoint", str(TPU), "--act", "swish", "--model", "spinenet96", "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err
    assert "does not match --model spinenet96" in err and "block_repeats=1" in err
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncate-data", "flip-data", "truncate-index", "missing-data"])
def test_damaged_checkpoints_fail_cleanly(tmp_path, damage, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(TPU, ckpt)
    data = ckpt / "model.ckpt.data-00000-of-00001"
    index = ckpt / "model.ckpt.index"
    if damage == "truncate-data":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif damage == "flip-data":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 3] ^= 0x40
        data.write_bytes(bytes(raw))
    elif damage == "truncate-index":
        index.write_bytes(index.read_bytes()[:-100])
    else:
        data.unlink()
    out = tmp_path / "x.safetensors"
    with pytest.raises(CheckpointError, match=r"model\.ckpt"):
        convert_checkpoint(ckpt, act="swish")
    assert main(["convert", "--tf-checkpoint", str(ckpt), "--act", "swish", "--out", str(out)]) == 2
    assert "model.ckpt" in capsys.readouterr().err
    assert not out.exists()


def test_other_architecture_is_rejected(tmp_path):
    with pytest.raises(ConversionError, match="not a SpineNet checkpoint"):
        convert_checkpoint(OFFICIAL.parent / "tf_checkpoint" / "small")
    with pytest.raises(FileNotFoundError):
        convert_checkpoint(tmp_path)


def _tpu_arrays(model: torchspine.SpineNet, seed: int = 0) -> dict[str, np.ndarray]:
    """A torchspine backbone's weights under tensorflow/tpu names (random BN statistics)."""
    rng = np.random.default_rng(seed)
    state = model.state_dict()
    arrays = {}
    for prefix, conv, bn in tpu_backbone_units(model):
        arrays[f"{conv}/kernel"] = state[f"{prefix}.conv.weight"].permute(2, 3, 1, 0).numpy()
        for tf_name, torch_name in (
            ("gamma", "weight"),
            ("beta", "bias"),
            ("moving_mean", "running_mean"),
            ("moving_variance", "running_var"),
        ):
            value = state[f"{prefix}.bn.{torch_name}"].numpy()
            if tf_name.startswith("moving"):  # make the statistics non-trivial
                value = value + rng.uniform(0.0, 0.2, value.shape)
            arrays[f"{bn}/{tf_name}"] = value.astype(np.float32)
    return arrays


@pytest.mark.tf
def test_tpu_classification_checkpoint(tmp_path):
    classifier = torchspine.create_classifier("test_spinenet", num_classes=11, act="relu").eval()
    arrays = _tpu_arrays(classifier.backbone)
    arrays["classification_head/dense/kernel"] = classifier.fc.weight.detach().numpy().T.copy()
    arrays["classification_head/dense/bias"] = np.linspace(-1, 1, 11, dtype=np.float32)
    arrays["global_step"] = np.array(100, dtype=np.int64)
    arrays["classification_head/dense/kernel/Momentum"] = arrays["classification_head/dense/kernel"] * 0
    prefix = write_tf1_checkpoint(arrays, tmp_path / "model.ckpt-100")
    state, meta, report = convert_checkpoint(tmp_path, act="relu")
    assert meta.task == "classification" and meta.num_classes == 11
    assert meta.backbone.numerics.norm_eps == 1e-5  # the classification recipe's BN
    assert {s["reason"] for s in report.skipped} == {"training step counter", "optimizer slot"}
    out = save_model_file(state, meta, tmp_path / "cls.safetensors")
    converted = torchspine.load_model(out)
    torch.testing.assert_close(converted.fc.bias, torch.from_numpy(arrays["classification_head/dense/bias"]))
    expected = classifier.backbone.state_dict()
    for name, value in converted.backbone.state_dict().items():
        if "running" not in name and "num_batches" not in name:
            torch.testing.assert_close(value, expected[name], msg=name)
    assert prefix.name == "model.ckpt-100"


@pytest.mark.tf
def test_tpu_mask_rcnn_checkpoint_backbone_only(tmp_path):
    backbone = torchspine.create_model("test_spinenet", act="relu")
    arrays = _tpu_arrays(backbone)
    arrays["rpn_head/rpn/kernel"] = np.zeros((3, 3, 32, 32), np.float32)
    arrays["mask_head/mask_fcn_logits/kernel"] = np.zeros((1, 1, 32, 91), np.float32)
    write_tf1_checkpoint(arrays, tmp_path / "model.ckpt")
    with pytest.raises(ConversionError, match="Mask R-CNN head variables incomplete"):
        convert_checkpoint(tmp_path, act="relu")
    _, meta, report = convert_checkpoint(tmp_path, act="relu", task="backbone")
    assert meta.task == "backbone" and meta.backbone.numerics.norm_eps == 1e-3  # Mask R-CNN configs' BN
    assert {s["tf_name"] for s in report.skipped} == {"rpn_head/rpn/kernel", "mask_head/mask_fcn_logits/kernel"}


# --- Model Garden (TF2 object-based) checkpoints -------------------------------------------------------------


@pytest.mark.tf
def test_model_garden_retinanet_fixture(tmp_path):
    root = OFFICIAL / "mg_spinenet49_retinanet_tiny"
    state, meta, report = convert_checkpoint(root)  # activation and numerics inferred for Model Garden
    assert meta.task == "retinanet" and meta.backbone.numerics.semantics == "model_garden"
    assert meta.backbone.numerics.act == "swish" and meta.backbone.numerics.norm_eps == 1e-3
    assert meta.backbone.cfg.filter_size_scale == 0.14 and meta.num_classes == 5
    assert [s["reason"] for s in report.skipped] == ["object graph (metadata)"]
    model = torchspine.load_model(save_model_file(state, meta, tmp_path / "mg.safetensors"))
    x = torch.from_numpy(np.load(root / "input.npy")).permute(0, 3, 1, 2)
    assert_parity(retinanet_outputs(model, x, (0.5, 1.0, 2.0)), dict(np.load(root / "outputs.npz")))


@pytest.mark.tf
def test_model_garden_mobile_fixture(tmp_path):
    root = OFFICIAL / "mg_spinenet49_mobile_tiny"
    state, meta, _ = convert_checkpoint(root, act="swish")
    assert (
        meta.task == "backbone" and meta.backbone.cfg.family == "mobile" and meta.backbone.cfg.filter_size_scale == 0.3
    )
    backbone = torchspine.load_model(save_model_file(state, meta, tmp_path / "m.safetensors"))
    x = torch.from_numpy(np.load(root / "input.npy")).permute(0, 3, 1, 2)
    with torch.no_grad():
        ours = {k: v.permute(0, 2, 3, 1).numpy() for k, v in backbone(x).items()}
    assert_parity(ours, dict(np.load(root / "outputs.npz")))


GENERATED = {
    # name: (family, input size, backbone kwargs, head kwargs or None, expected variant)
    "spinenet49-retinanet": (
        "spinenet",
        [256, 256],
        {
            "endpoints_num_filters": 256,
            "filter_size_scale": 1.0,
            "resample_alpha": 0.5,
            "block_repeats": 1,
            "activation": "swish",
        },
        {"num_classes": 91, "num_convs": 4, "num_filters": 256},
        "spinenet49",
    ),
    "spinenet96": (
        "spinenet",
        [256, 384],
        {
            "endpoints_num_filters": 256,
            "filter_size_scale": 1.0,
            "resample_alpha": 0.5,
            "block_repeats": 2,
            "activation": "swish",
        },
        None,
        "spinenet96",
    ),
    "spinenet49_mobile-retinanet": (
        "mobile",
        [256, 256],
        {
            "endpoints_num_filters": 48,
            "filter_size_scale": 1.0,
            "se_ratio": 0.2,
            "expand_ratio": 6,
            "block_repeats": 1,
            "activation": "hard_swish",
        },
        {"num_classes": 91, "num_convs": 4, "num_filters": 48, "use_separable_conv": True},
        "spinenet49_mobile",
    ),
}


@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.parametrize("name", list(GENERATED))
def test_model_garden_generated_checkpoints(name, tmp_path):
    from tf_parity import run_model_garden

    family, size, kwargs, head, variant = GENERATED[name]
    config = {
        "family": family,
        "input_size": size,
        "kwargs": {"min_level": 3, "max_level": 7, **kwargs},
        "seed": 11,
        "head": head,
        "write_checkpoint": str(tmp_path / "ckpt" / "ckpt-1"),
    }
    dump = run_model_garden(config, tmp_path)
    official = {k[len("out/") :]: v for k, v in dump.items() if k.startswith("out/")}
    out = tmp_path / "converted.safetensors"
    assert main(["convert", "--tf-checkpoint", str(tmp_path / "ckpt"), "--out", str(out)]) == 0
    meta = read_model_file(out)
    assert meta.backbone.variant == variant and meta.backbone.numerics.act == kwargs["activation"]
    model = torchspine.load_model(out)
    x = torch.from_numpy(dump["input"]).permute(0, 3, 1, 2)
    if head is None:
        with torch.no_grad():
            ours = {k: v.permute(0, 2, 3, 1).numpy() for k, v in model(x).items()}
    else:
        ours = retinanet_outputs(model, x, (0.5, 1.0, 2.0))
    assert_parity(ours, official)


def test_tpu_names_reproduce_the_official_graph():
    """The name rules give exactly the conv kernels (names and shapes) of the official SpineNet-49 graph."""
    official = {}
    for line in (OFFICIAL.parent / "tpu_names" / "spinenet49_conv_kernels.txt").read_text().splitlines():
        scope, convs = line.split(": ", 1)
        scope = "spinenet" if scope == "spinenet/" else f"spinenet/{scope}"
        for conv in convs.split(", "):
            name, shape = conv.rstrip("]").split("[")
            k, io = shape.split(" ")
            kh, kw = k.split("x")
            c_in, c_out = io.split("->")
            official[f"{scope}/{name}"] = (int(kh), int(kw), int(c_in), int(c_out))
    with torch.device("meta"):
        model = torchspine.create_model("spinenet49")
    state = model.state_dict()
    ours = {
        conv: tuple(state[f"{prefix}.conv.weight"].permute(2, 3, 1, 0).shape)
        for prefix, conv, _ in tpu_backbone_units(model)
    }
    assert ours == official


@pytest.mark.tf
def test_converted_retinanet_detects_like_the_official_postprocessing(tmp_path):
    """Converted Model Garden RetinaNet + torchspine post-processing == Model Garden's DetectionGenerator."""
    from torchvision.models.detection.image_list import ImageList

    from tf_parity import model_garden_postprocess

    root = OFFICIAL / "mg_spinenet49_retinanet_tiny"
    state, meta, _ = convert_checkpoint(root)
    model = torchspine.load_model(save_model_file(state, meta, tmp_path / "mg.safetensors"), image_size=256)
    x = torch.from_numpy(np.load(root / "input.npy")).permute(0, 3, 1, 2)
    with torch.no_grad():
        feats = list(model.backbone(x).values())
        head = model.head(feats)
        anchors = model.anchor_generator(ImageList(x, [(128, 256)]), feats)
        sizes = [f.shape[-2] * f.shape[-1] * 9 for f in feats]
        split = {k: list(v.split(sizes, dim=1)) for k, v in head.items()}
        ours = model.postprocess_detections(split, [list(anchors[0].split(sizes))], [(128, 256)])[0]
    official_raw = {k: v for k, v in np.load(root / "outputs.npz").items() if k.startswith(("class_", "box_"))}
    official = model_garden_postprocess(official_raw, (128, 256), tmp_path)
    assert len(ours["scores"]) == len(official["scores"]) == 100
    np.testing.assert_allclose(ours["scores"].numpy(), official["scores"], rtol=1e-4)
    np.testing.assert_array_equal(ours["labels"].numpy(), official["classes"])
    np.testing.assert_allclose(ours["boxes"].numpy(), official["boxes"], atol=1e-2)  # pixels; raw outputs agree to 1e-5
