"""Recipes that are ours rather than official (issue 13): labelled as derived, and building what they print."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchspine.config import get_experiment, list_experiments
from torchspine.engine.build import build_model, build_schedule
from torchspine.models.detection.resnet_fpn import ResNetFPN


@pytest.mark.parametrize(
    "name",
    [
        "retinanet_spinenet49_protocol_a",
        "retinanet_spinenet190_protocol_a",
        "retinanet_resnet50_fpn_protocol_b",
        "demo",
        "search_proxy_spinenet49",
    ],
)
def test_recipes_without_an_official_config_say_so(name: str) -> None:
    assert get_experiment(name).provenance.startswith("derived: ")


def test_spinenet190_has_no_protocol_b() -> None:
    # Neither the tensorflow/tpu YAML header nor the paper's Table 2 has a SpineNet-190 protocol-B recipe.
    assert "retinanet_spinenet190_protocol_b" not in list_experiments()
    assert "retinanet_spinenet190_protocol_c" in list_experiments()


@pytest.mark.parametrize("name", ["retinanet_resnet50_fpn_protocol_b", "retinanet_resnet152_fpn_protocol_b"])
def test_resnet_fpn_baselines_build_the_batchnorm_they_print(name: str) -> None:
    cfg = get_experiment(name)
    with torch.device("meta"):
        model = build_model(cfg.model, 91)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) > 50  # the ResNet's and the head's
    for m in norms:
        assert m.eps == cfg.model.norm_eps and m.momentum == pytest.approx(cfg.model.norm_momentum), m
    assert (cfg.model.norm_eps, cfg.model.norm_momentum) == (1e-4, pytest.approx(0.003))  # tensorflow/tpu base
    # The FPN has no BatchNorm (labelled in the provenance): its convs are followed by nothing.
    fpn = model.backbone.body.fpn
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fpn.modules())
    assert "without FPN BatchNorm" in cfg.provenance


def test_resnet_fpn_keeps_pytorch_defaults_without_recipe_values() -> None:
    # Model files record no BN constants: a ResNet-FPN rebuilt from one keeps torchvision's BatchNorm.
    with torch.device("meta"):
        backbone = ResNetFPN("resnet50_fpn")
    bn = backbone.body.body.bn1
    assert (bn.eps, bn.momentum) == (1e-5, 0.1) and not hasattr(backbone, "norm_eps")


def test_protocol_a_keeps_the_epoch_view() -> None:
    # The paper's protocol A is given in epochs (250, 5-epoch warm-up): the trainer converts with its real
    # steps per epoch (462 full batches of 256 on COCO train2017).
    cfg = get_experiment("retinanet_spinenet49_protocol_a")
    assert cfg.schedule.total_steps is None and cfg.schedule.epochs == 250.0
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.28)
    scheduler, total = build_schedule(cfg.schedule, optimizer, 462, 256)
    assert total == 250 * 462
    assert scheduler.lr_lambdas[0](220 * 462 - 1) == pytest.approx(1.0)
    assert scheduler.lr_lambdas[0](220 * 462) == pytest.approx(0.1)


def test_resnet_fpn_model_file_keeps_the_recipe_batchnorm() -> None:
    # What a run exports must rebuild with the BatchNorm it trained with (the file records it as numerics).
    from torchspine.engine.export import describe_model
    from torchspine.loading import build_from_file
    from torchspine.modelfile import ModelFile

    cfg = get_experiment("retinanet_resnet50_fpn_protocol_b")
    with torch.device("meta"):
        trained = build_model(cfg.model, 91)
        info, _ = describe_model(trained, variant=cfg.model.backbone)
        rebuilt = build_from_file(ModelFile.from_json(info.to_json()), "model.safetensors")
    norms = [m for m in rebuilt.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-4 and m.momentum == pytest.approx(0.003) for m in norms)


def test_train_list_prints_each_experiment_with_its_provenance(capsys: pytest.CaptureFixture[str]) -> None:
    from torchspine.cli.main import main

    assert main(["train", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_experiments()
    by_name = {line.split()[0]: line.split(maxsplit=1)[1] for line in lines}
    assert by_name["retinanet_spinenet49_protocol_c"].startswith(
        "tensorflow/tpu models/official/detection/configs/spinenet/spinenet49_retinanet.yaml:"
    )
    assert by_name["retinanet_spinenet49_mg_gpu"].startswith("tensorflow/models official/vision/configs/experiments/")
    assert by_name["retinanet_spinenet49_896_protocol_c"].startswith("paper Table 2")
    assert by_name["retinanet_resnet50_fpn_protocol_b"].startswith("derived: ")
