"""Every task exports a model file with its category names, and detectors follow their backbone's levels.

Trained runs of each task leave ``model.safetensors``; ``load_model``, ``eval`` and ``predict`` work on it and label
the demo's objects by their names ("circle", "square", ...), not COCO's. RetinaNet and Mask R-CNN on P4-P7 and
P2-P6 backbones train a step and predict.
"""

from __future__ import annotations

import json

import pytest
import torch

import torchspine
from torchspine.cli.main import main
from torchspine.data.synthetic import DEMO_CATEGORIES
from torchspine.data.synthetic_classification import DEMO_CLASSES
from torchspine.engine.predict import predict_images
from torchspine.models.detection.mask_rcnn import build_mask_rcnn
from torchspine.models.detection.retinanet import build_retinanet

BUILDERS = {"retinanet": build_retinanet, "maskrcnn": build_mask_rcnn}
LEVELS = [(4, 7), (2, 6)]


def _targets(with_masks: bool) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 128, 128, generator=g) for _ in range(2)]
    targets = []
    for i in range(2):
        target = {"boxes": torch.tensor([[30.0, 20.0, 90.0, 60.0 + 10 * i]]), "labels": torch.tensor([1 + i])}
        if with_masks:
            mask = torch.zeros(1, 128, 128, dtype=torch.uint8)
            mask[0, 20 : 60 + 10 * i, 30:90] = 1
            target["masks"] = mask
        targets.append(target)
    return images, targets


@pytest.mark.parametrize("task", list(BUILDERS))
@pytest.mark.parametrize("levels", LEVELS, ids=[f"P{a}-P{b}" for a, b in LEVELS])
def test_detectors_follow_the_backbone_levels(task, levels):
    torch.manual_seed(0)
    model = BUILDERS[task](
        "test_spinenet",
        backbone_args={"min_level": levels[0], "max_level": levels[1]},
        num_classes=4,
        image_size=128,
    )
    assert [f.level for f in model.backbone.feature_info] == list(range(levels[0], levels[1] + 1))
    assert model.transform.size_divisible == 2 ** levels[1]
    images, targets = _targets(task == "maskrcnn")
    model.train()
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        (out,) = model(images[:1])
    assert out["boxes"].shape[-1] == 4 and ("masks" in out) == (task == "maskrcnn")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["data", "make-demo", "--out", str(out), "--num-train", "4", "--num-val", "2"]) == 0
    return out


def _train_detector(demo, out, *extra: str) -> None:
    args = ["train", "--experiment", "demo", "--data", str(demo), "--output-dir", str(out)]
    for setting in (
        "model.image_size=128",
        "train.global_batch_size=2",
        "train.max_steps=1",
        "train.tensorboard=false",
        "eval.max_images=1",
        *extra,
    ):
        args += ["--set", setting]
    assert main(args) == 0


def test_trained_mask_rcnn_on_p4_p7_exports_and_predicts_by_name(demo, tmp_path, capsys):
    """``--set model.min_level=4`` trains (anchors and padding follow), and the run's file rebuilds the model."""
    _train_detector(demo, tmp_path / "run", "model.task=maskrcnn", "model.min_level=4")
    weights = tmp_path / "run" / "model.safetensors"
    info = torchspine.read_model_file(weights)
    assert info.task == "maskrcnn" and info.backbone.cfg.min_level == 4 and info.provenance.step == 1
    assert info.category_names == DEMO_CATEGORIES
    model = torchspine.load_model(weights)
    assert [f.level for f in model.backbone.feature_info] == [4, 5, 6, 7]

    assert main(["eval", "--weights", str(weights), "--data", str(demo), "--max-images", "1"]) == 0
    assert "segm" in capsys.readouterr().out
    pictures = tmp_path / "pictures"
    args = ["predict", "--weights", str(weights), str(demo / "val"), "--out", str(pictures), "--score-threshold", "0"]
    assert main(args) == 0
    predictions = json.loads((pictures / "predictions.json").read_text())
    assert {c["name"] for c in predictions["categories"]} == set(DEMO_CATEGORIES.values())
    assert predictions["results"], "an untrained Mask R-CNN still scores every class above 0.05"
    assert {r["category_name"] for r in predictions["results"]} <= set(DEMO_CATEGORIES.values())
    assert all("segmentation" in r for r in predictions["results"])


def test_trained_retinanet_labels_the_demo_shapes_by_name(demo, tmp_path):
    _train_detector(demo, tmp_path / "run", "model.min_level=2", "model.max_level=6")
    weights = tmp_path / "run" / "model.safetensors"
    # score_thresh=0: after one step no class is above the 0.05 default yet, and we need detections to read.
    model = torchspine.load_model(weights, score_thresh=0.0)
    assert [f.level for f in model.backbone.feature_info] == [2, 3, 4, 5, 6]
    names = torchspine.read_model_file(weights).category_names
    out = predict_images(
        model, sorted((demo / "val").iterdir()), tmp_path / "pictures", category_names=names, score_threshold=0.0
    )
    results = json.loads(out.read_text())["results"]
    assert results and {r["category_name"] for r in results} <= set(DEMO_CATEGORIES.values())


def test_trained_classifier_exports_evaluates_and_predicts_class_names(tmp_path, capsys):
    data = tmp_path / "data"
    assert (
        main(
            ["data", "make-demo", "--task", "classification", "--out", str(data), "--num-train", "5", "--num-val", "5"]
        )
        == 0
    )
    args = ["train", "--experiment", "demo_classification", "--data", str(data), "--output-dir", str(tmp_path / "run")]
    for setting in ("train.global_batch_size=4", "train.max_steps=1", "train.tensorboard=false", "eval.batch_size=5"):
        args += ["--set", setting]
    assert main(args) == 0
    weights = tmp_path / "run" / "model.safetensors"
    info = torchspine.read_model_file(weights)
    assert info.task == "classification" and info.image_size == 128
    assert [info.category_names[i] for i in range(len(DEMO_CLASSES))] == list(DEMO_CLASSES)
    model = torchspine.load_model(weights)
    assert isinstance(model, torchspine.ImageClassifier) and model.num_classes == len(DEMO_CLASSES)
    capsys.readouterr()

    assert main(["eval", "--weights", str(weights), "--data", str(data), "--batch-size", "5"]) == 0
    assert "top1" in capsys.readouterr().out
    image = next((data / "val" / DEMO_CLASSES[0]).iterdir())
    assert main(["predict", "--weights", str(weights), str(image), "--out", str(tmp_path / "p"), "--top-k", "2"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "p" / "predictions.json").read_text())["results"][0]
    assert len(result["top"]) == 2 and {t["name"] for t in result["top"]} <= set(DEMO_CLASSES)
    assert result["top"][0]["name"] in printed


def test_torchvision_detectors_run_on_a_spinenet():
    """torchvision's own Faster R-CNN, RetinaNet and FCOS on a SpineNet; the two-stage one needs the RoI pooler that
    names the backbone's levels (`multiscale_roi_align`)."""
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet

    from torchspine.models.detection.roi import multiscale_roi_align

    torch.manual_seed(0)
    backbone = torchspine.create_model("test_spinenet")
    size = {"min_size": 256, "max_size": 256}  # P7 of 2x2: FCOS's GroupNorm needs more than one value
    detectors = {
        "faster_rcnn": FasterRCNN(backbone, num_classes=3, box_roi_pool=multiscale_roi_align(backbone), **size),
        "retinanet": RetinaNet(backbone, num_classes=3, **size),
        "fcos": FCOS(backbone, num_classes=3, **size),
    }
    images, targets = _targets(with_masks=False)
    for name, model in detectors.items():
        model.train()
        losses = model(images, targets)
        assert all(torch.isfinite(v) for v in losses.values()), name
        model.eval()
        with torch.no_grad():
            (out,) = model(images[:1])
        assert set(out) == {"boxes", "labels", "scores"}, name


def test_uint8_images_get_a_clear_error():
    with pytest.raises(ValueError, match=r"expects float images, got torch\.uint8"):
        torchspine.create_model("test_spinenet")(torch.zeros(1, 3, 128, 128, dtype=torch.uint8))


def test_a_classifier_starts_from_a_detection_trained_backbone(tmp_path):
    """``model.init_from``: the paper's transfer, a classifier initialised from a RetinaNet file's backbone."""
    from safetensors.torch import load_file

    from torchspine.config.schema import ModelCfg
    from torchspine.engine.build import build_model
    from torchspine.engine.export import export_model
    from torchspine.modelfile import ModelFileError

    torch.manual_seed(0)
    detector = build_retinanet("test_spinenet", num_classes=4, image_size=128)
    for p in detector.backbone.parameters():  # distinct from any fresh initialisation
        torch.nn.init.normal_(p)
    path = export_model(detector, tmp_path / "det.safetensors", variant="test_spinenet")
    cfg = ModelCfg(task="classification", backbone="test_spinenet", image_size=128, init_from=str(path))
    classifier = build_model(cfg, num_classes=5)
    saved = load_file(path)
    for key, value in classifier.classifier.backbone.state_dict().items():
        assert torch.equal(value, saved[f"backbone.{key}"]), key
    assert classifier.classifier.fc.out_features == 5  # a fresh head
    other = ModelCfg(
        task="classification", backbone="test_spinenet_mobile", semantics="model_garden", init_from=str(path)
    )
    with pytest.raises(ModelFileError, match=r"det\.safetensors does not fit SpineNet"):
        build_model(other, num_classes=5)
