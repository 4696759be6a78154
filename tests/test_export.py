"""Export: the exportable graphs equal the eager models, and exported files equal them in their runtimes.

Fast tests check the graphs eagerly (the batched RetinaNet post-processing against torchvision's per-image loop,
the TF 'SAME' padding formula against TF's). The slow tests export through ``torchspine export`` and run the files
in ONNX Runtime / ``torch.export.load`` / TorchScript at two input sizes from one dynamic file: outputs within
1e-4 relative of eager, detections equal (boxes within 1e-3 px, same classes, same order).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchspine
from torchspine.cli.main import main
from torchspine.deploy.graphs import BackboneGraph, MaskRCNNGraph, RetinaNetGraph
from torchspine.deploy.mask_rcnn import mask_rcnn_detections
from torchspine.deploy.postprocess import retinanet_detections, split_detections
from torchspine.engine.export import export_model
from torchspine.layers.padding import same_pad_amount
from torchspine.models.detection.mask_rcnn import build_mask_rcnn
from torchspine.models.detection.retinanet import build_retinanet

RTOL = 1e-4
BOX_ATOL = 1e-3


def _demo_retinanet(image_size: int = 128, score_thresh: float = 0.05) -> nn.Module:
    """A tiny RetinaNet whose random head gives varied scores (the default init gives ~0.01 everywhere, so no
    detections), with BatchNorm statistics that are not identities."""
    torch.manual_seed(0)
    model = build_retinanet("test_spinenet", num_classes=5, image_size=image_size, score_thresh=score_thresh)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for tower in (model.head.cls, model.head.box):
            for conv in tower.convs:
                conv.weight.normal_(std=0.1, generator=g)
        model.head.cls.predict.weight.normal_(std=0.3, generator=g)
        model.head.box.predict.weight.normal_(std=0.03, generator=g)
        model.head.cls.predict.bias.fill_(-2.0)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1, generator=g)
                m.running_var.uniform_(0.8, 1.2, generator=g)
    return model.eval()


def _assert_same_detections(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual["labels"].tolist() == expected["labels"].tolist()
    assert len(expected["boxes"]) > 0
    torch.testing.assert_close(actual["boxes"], expected["boxes"], rtol=0, atol=BOX_ATOL)
    torch.testing.assert_close(actual["scores"], expected["scores"], rtol=RTOL, atol=1e-6)


def _rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()


def test_same_padding_matches_tf_formula():
    for size in range(1, 200):
        for kernel, stride in [(3, 2), (7, 2), (5, 4), (5, 8), (1, 2), (3, 1)]:
            out = (size + stride - 1) // stride
            total = max((out - 1) * stride + kernel - size, 0)
            assert same_pad_amount(size, kernel, stride) == (total // 2, total - total // 2), (size, kernel, stride)


def test_graph_detections_equal_the_eager_detector():
    model = _demo_retinanet()
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(list(images))
        actual = split_detections(*RetinaNetGraph(model)(images), batch_size=2)
    for a, e in zip(actual, expected, strict=True):
        _assert_same_detections(a, e)


def test_postprocess_caps_per_image_and_handles_no_detections():
    model = _demo_retinanet()
    images = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        boxes, scores = RetinaNetGraph(model, raw=True)(images)
    _, _, _, batch_index = retinanet_detections(boxes, scores, detections_per_img=7)
    assert torch.bincount(batch_index, minlength=3).tolist() == [7, 7, 7]
    out = retinanet_detections(boxes, scores, score_thresh=1.0)
    assert [t.shape[0] for t in out] == [0, 0, 0, 0]


@pytest.fixture(scope="module")
def retinanet_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "retinanet.safetensors"
    export_model(_demo_retinanet(), path, variant="test_spinenet", categories={i: f"c{i}" for i in range(1, 5)})
    return path


@pytest.mark.slow
def test_onnx_retinanet_two_sizes_from_one_file(retinanet_file, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "retinanet.onnx"
    assert main(["export", "--weights", str(retinanet_file), "--format", "onnx", "--dynamic", "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels", "batch_index"]
    for size, batch in [(128, 2), (256, 1)]:
        eager = torchspine.load_model(retinanet_file, image_size=size)
        images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            expected = eager(list(images))
        flat = [torch.from_numpy(a) for a in session.run(None, {"images": images.numpy()})]
        for a, e in zip(split_detections(*flat, batch_size=batch), expected, strict=True):
            _assert_same_detections(a, e)


@pytest.mark.slow
def test_exported_program_backbone_is_dynamic(tmp_path):
    backbone = torchspine.create_model("test_spinenet", semantics="model_garden").eval()
    path = tmp_path / "backbone.safetensors"
    export_model(backbone, path, variant="test_spinenet")
    out = tmp_path / "backbone.pt2"
    args = ["export", "--weights", str(path), "--format", "exported-program", "--dynamic", "--out", str(out)]
    assert main(args) == 0
    program = torch.export.load(out).module()
    # torch.export keeps its 0/1 specialisation as run-time guards: sizes of 1 (batch, or H, W of 128 where P7 is
    # one pixel) are refused by the program (ONNX Runtime runs them; see the ONNX test).
    for shape in [(2, 3, 256, 384), (3, 3, 384, 256)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = BackboneGraph(backbone)(x)
            actual = program(x)
        for a, e in zip(actual, expected, strict=True):
            assert a.shape == e.shape and _rel(a, e) < RTOL


@pytest.mark.slow
def test_torchscript_raw_retinanet_with_postprocess(retinanet_file, tmp_path):
    out = tmp_path / "retinanet.torchscript.pt"
    assert main(["export", "--weights", str(retinanet_file), "--format", "torchscript", "--out", str(out)]) == 0
    traced = torch.jit.load(str(out))
    eager = torchspine.load_model(retinanet_file)
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = eager(list(images))
        boxes, scores = traced(images)
    flat = retinanet_detections(boxes, scores, score_thresh=eager.score_thresh, nms_thresh=eager.nms_thresh)
    for a, e in zip(split_detections(*flat, batch_size=2), expected, strict=True):
        _assert_same_detections(a, e)


def _demo_mask_rcnn() -> nn.Module:
    torch.manual_seed(0)
    model = build_mask_rcnn("test_spinenet", num_classes=4, image_size=128).eval()
    model.roi_heads.score_thresh = 0.0  # random weights: no class reaches the default 0.05
    return model


def _assert_same_mask_detections(actual: list[dict], expected: list[dict]) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        _assert_same_detections(a, e)
        torch.testing.assert_close(a["masks"], e["masks"], rtol=0, atol=1e-3)


def test_mask_rcnn_detections_finish_the_dense_part_like_the_model():
    model = _demo_mask_rcnn()
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(4))  # the model's size: no resize
    with torch.no_grad():
        expected = model(list(images))
        outputs = MaskRCNNGraph(model)(images)
    actual = mask_rcnn_detections(model, [o.numpy() for o in outputs])
    _assert_same_mask_detections(actual, expected)
    with pytest.raises(ValueError, match="expected 15 outputs"):
        mask_rcnn_detections(model, outputs[:-1])


@pytest.mark.slow
def test_onnx_classifier_and_mask_rcnn_dense_part(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    models = {
        "classification": torchspine.create_classifier("test_spinenet", num_classes=6).eval(),
        "maskrcnn": _demo_mask_rcnn(),
    }
    for task, model in models.items():
        path = tmp_path / f"{task}.safetensors"
        export_model(model, path, variant="test_spinenet")
        out = tmp_path / f"{task}.onnx"
        assert main(["export", "--weights", str(path), "--out", str(out), "--image-size", "128"]) == 0
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        images = torch.rand(1, 3, 128, 128)
        with torch.no_grad():
            from torchspine.deploy.exporter import graph_for

            expected = graph_for(model).module(images)
        expected = expected if isinstance(expected, tuple) else (expected,)
        actual = session.run(None, {"images": images.numpy()})
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert _rel(torch.from_numpy(a), e) < RTOL, task
        if task == "maskrcnn":  # ONNX Runtime's dense part, finished in PyTorch, equals the eager model
            with torch.no_grad():
                eager = model(list(images))
            _assert_same_mask_detections(mask_rcnn_detections(model, actual), eager)


def test_export_rejects_dynamic_torchscript(retinanet_file, tmp_path, capsys):
    args = ["export", "--weights", str(retinanet_file), "--format", "torchscript", "--dynamic"]
    assert main([*args, "--out", str(tmp_path / "x.pt")]) == 2
    assert "TorchScript" in capsys.readouterr().err
