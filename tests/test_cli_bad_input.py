"""``eval`` / ``predict`` / ``train`` tried with bad input as a new user would: one clear line, never a traceback."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from torchspine.cli.main import main
from torchspine.data.coco import CocoDetection
from torchspine.data.image_io import ImageError
from torchspine.engine.export import export_model
from torchspine.models.detection.retinanet import build_retinanet


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["data", "make-demo", "--out", str(out), "--num-train", "2", "--num-val", "3"]) == 0
    return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny RetinaNet model file inside a run-like folder (``run/model.safetensors``)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("run") / "model.safetensors"
    return export_model(build_retinanet("test_spinenet", num_classes=6, image_size=128), path, variant="test_spinenet")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("eval:", "predict:"))]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--image-size", "-128"], "--image-size -128: expected a positive number"),
        (["--max-images", "-3"], "--max-images -3: expected a positive number"),
        (["--max-images", "0"], "--max-images 0: expected a positive number"),
        (["--batch-size", "0"], "--batch-size 0: expected a positive number"),
        (["--device", "gpu"], "torch calls a GPU 'cuda'"),
        (["--device", "tpu:x"], "not a device; expected cpu, cuda, cuda:N or mps"),
    ],
    ids=["image-size", "max-images", "max-images-0", "batch-size", "gpu", "nonsense"],
)
def test_eval_rejects_bad_flag_values(extra, message, weights, demo, capsys):
    assert main(["eval", "--weights", str(weights), "--data", str(demo), *extra]) == 2
    assert message in _one_line_error(capsys)


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
@pytest.mark.parametrize("command", ["eval", "predict", "train"])
def test_cuda_without_a_gpu_is_a_clear_error(command, device, weights, demo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = {
        "eval": ["eval", "--weights", str(weights), "--data", str(demo)],
        "predict": ["predict", "--weights", str(weights), str(demo / "val"), "--out", str(tmp_path)],
        "train": ["train", "--experiment", "demo", "--output-dir", str(tmp_path)],
    }[command]
    assert main([*argv, "--device", device]) == 2
    assert f"--device {device}: no CUDA GPU is usable on this machine" in _one_line_error(capsys)
    assert not list(tmp_path.iterdir())  # nothing was started


def test_predict_rejects_a_non_positive_top_k(weights, demo, tmp_path, capsys):
    assert main(["predict", "--weights", str(weights), str(demo / "val"), "--out", str(tmp_path), "--top-k", "0"]) == 2
    assert "--top-k 0: expected a positive number" in _one_line_error(capsys)


# --- weights paths ------------------------------------------------------------------------------------------------


def test_a_run_folder_is_read_through_its_model_file(weights, demo, capsys):
    assert main(["eval", "--weights", str(weights.parent), "--data", str(demo), "--max-images", "1"]) == 0
    assert "AP50" in capsys.readouterr().out


def test_weights_paths_that_are_no_model_file_say_what_they_are(demo, tmp_path, capsys):
    def error(path) -> str:
        assert main(["eval", "--weights", str(path), "--data", str(demo)]) == 2
        return _one_line_error(capsys)

    assert "a folder without a model.safetensors" in error(tmp_path)
    annotations = demo / "annotations" / "instances_val.json"
    assert f"--weights {annotations}: not a weights file" in error(annotations)
    assert f"weights file {tmp_path / 'nope.safetensors'} does not exist" in error(tmp_path / "nope.safetensors")
    # A training checkpoint has no description; the message points to its run's model file.
    checkpoint = tmp_path / "run" / "checkpoints" / "ckpt-00000002.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"model": build_retinanet("test_spinenet", num_classes=6).state_dict(), "step": 2}, checkpoint)
    message = error(checkpoint)
    assert "no torchspine metadata" in message and "--task (classification, retinanet, maskrcnn)" in message
    assert "--num-classes" in message and "run's model file" not in message
    (tmp_path / "run" / "model.safetensors").write_bytes(b"")
    assert f"--weights {tmp_path / 'run' / 'model.safetensors'}" in error(checkpoint)


# --- data sets: empty ground truth, unreadable and mis-sized images ---------------------------------------------


def _copy(demo, tmp_path, edit) -> str:
    """The demo's val split copied, with `edit(annotations, image_dir)` applied."""
    root = tmp_path / "data"
    shutil.copytree(demo / "val", root / "val")
    (root / "annotations").mkdir()
    annotations = json.loads((demo / "annotations" / "instances_val.json").read_text())
    edit(annotations, root / "val")
    (root / "annotations" / "instances_val.json").write_text(json.dumps(annotations))
    return str(root)


def test_eval_on_an_empty_ground_truth_says_so(weights, demo, tmp_path, capsys):
    data = _copy(demo, tmp_path, lambda anns, _: anns.update(annotations=[]))
    assert main(["eval", "--weights", str(weights), "--data", data]) == 2
    assert "the ground truth is empty: none of the 3 evaluated image(s) has an annotation" in _one_line_error(capsys)


def _break_two_images(annotations: dict, image_dir) -> None:
    images = sorted(annotations["images"], key=lambda i: i["id"])
    (image_dir / images[0]["file_name"]).write_bytes(b"not an image")
    images[1]["width"] += 10  # the file no longer has the size the JSON states


def test_eval_and_predict_skip_unreadable_images_only_when_asked(weights, demo, tmp_path, capsys, caplog):
    data = _copy(demo, tmp_path, _break_two_images)
    assert main(["eval", "--weights", str(weights), "--data", data]) == 2
    assert "pass --skip-bad" in _one_line_error(capsys)
    with caplog.at_level("WARNING"):
        assert main(["eval", "--weights", str(weights), "--data", data, "--skip-bad"]) == 0
    skipped = [r.getMessage() for r in caplog.records if "skipping unreadable image" in r.getMessage()]
    assert len(skipped) == 2 and any("not an image file" in m for m in skipped)
    assert any("differs from the annotation file's height x width" in m for m in skipped)
    assert "AP50" in capsys.readouterr().out

    val = tmp_path / "data" / "val"
    assert main(["predict", "--weights", str(weights), str(val), "--out", str(tmp_path / "p")]) == 2
    assert "pass --skip-bad" in _one_line_error(capsys)
    assert main(["predict", "--weights", str(weights), str(val), "--out", str(tmp_path / "p"), "--skip-bad"]) == 0
    document = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert len(document["images"]) == 2 and len(document["skipped"]) == 1


@pytest.mark.parametrize(
    ("file_size", "box", "advice"),
    [
        ((30, 40), [20, 10, 50, 30], "its boxes reach x=70, y=40, beyond the file's pixels"),
        ((30, 40), [2, 2, 10, 10], "the file has the JSON's aspect ratio, so it is a resized copy"),
        ((50, 40), [2, 2, 10, 10], 'if only the JSON is wrong, set "height": 50, "width": 40'),
    ],
    ids=["boxes-beyond-the-file", "resized-copy", "ambiguous"],
)
def test_a_size_mismatch_says_which_of_image_and_json_to_fix(tmp_path, file_size, box, advice):
    from PIL import Image

    (tmp_path / "images").mkdir()
    height, width = file_size
    Image.new("RGB", (width, height)).save(tmp_path / "images" / "a.png")
    annotations = {
        "images": [{"id": 1, "file_name": "a.png", "height": 60, "width": 80}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": box, "area": box[2] * box[3]}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(annotations))
    with pytest.raises(ImageError) as caught:
        CocoDetection(tmp_path / "images", tmp_path / "instances.json")[0]
    message = str(caught.value)
    assert f"decoded size {height}x{width} (HxW) differs from the annotation file's height x width 60x80" in message
    assert advice in message and "--skip-bad (eval, predict), --set data.skip_bad=true (train)" in message


# --- models -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["backbone", "classification", "retinanet", "maskrcnn"])
def test_uint8_images_get_a_clear_error_from_every_task(task):
    """Pixels straight from a decoder (uint8) name the expected dtype and range instead of a conv's dtype error."""
    import torchspine
    from torchspine.models.detection.mask_rcnn import build_mask_rcnn

    pixels = torch.zeros(3, 128, 128, dtype=torch.uint8)
    build = {
        "backbone": lambda: torchspine.create_model("test_spinenet"),
        "classification": lambda: torchspine.create_classifier("test_spinenet", num_classes=3),
        "retinanet": lambda: build_retinanet("test_spinenet", num_classes=3, image_size=128),
        "maskrcnn": lambda: build_mask_rcnn("test_spinenet", num_classes=3, image_size=128),
    }[task]
    model = build().eval()
    with pytest.raises((TypeError, ValueError), match=r"float|floating type") as caught:
        model(pixels[None]) if task in ("backbone", "classification") else model([pixels])
    assert "uint8" in str(caught.value)


def test_classifier_evaluation_leaves_unreadable_images_out(tmp_path, caplog):
    from PIL import Image

    from torchspine.data.classification import ImageFolderClassification
    from torchspine.engine.classification_eval import evaluate_classifier

    for name, grey in [("dark", 0), ("light", 255)]:
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (8, 8), (grey,) * 3).save(tmp_path / name / f"{i}.png")
    (tmp_path / "light" / "1.png").write_bytes(b"broken")

    class AlwaysLight(torch.nn.Module):  # logits (dark, light): right on light images only
        def forward(self, images):
            return torch.tensor([[0.0, 1.0]]).expand(len(images), 2)

    dataset = ImageFolderClassification(tmp_path)
    with pytest.raises(ImageError, match=r"1\.png"):
        evaluate_classifier(AlwaysLight(), dataset, progress=False)
    with caplog.at_level("WARNING"):
        metrics = evaluate_classifier(AlwaysLight(), dataset, batch_size=4, progress=False, skip_bad=True)
    # 1 of the 3 readable images is light; serving a neighbour (dark/0) in place of the broken file would give 1/4.
    assert metrics["cls"]["top1"] == pytest.approx(1 / 3)
    assert any("skipping unreadable image" in r.getMessage() and "1.png" in r.getMessage() for r in caplog.records)
