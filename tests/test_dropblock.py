"""Optional DropBlock (paper protocol A): off by default, placed as in tensorflow/tpu ResNet blocks, configurable."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

import torchspine
from torchspine.cli.main import main
from torchspine.config import ConfigError, get_experiment, load_config
from torchspine.engine.build import build_model
from torchspine.layers.blocks import BottleneckBlock, ResidualBlock
from torchspine.layers.drop import DropBlock

SIZE = 128


def _model(seed: int = 0, **kw) -> torchspine.SpineNet:
    torch.manual_seed(seed)
    return torchspine.create_model("test_spinenet", **kw)


def _dropblocks(model: torch.nn.Module) -> list[DropBlock]:
    return [m for m in model.modules() if isinstance(m, DropBlock)]


def test_default_is_off_and_adds_no_state():
    off, on = _model(), _model(dropblock_keep_prob=0.9)
    assert not _dropblocks(off) and "dropblock" not in repr(off)
    assert _dropblocks(on)
    # DropBlock is stateless and draws no random numbers at construction: identical parameters and buffers.
    assert list(off.state_dict()) == list(on.state_dict())
    for key, value in off.state_dict().items():
        torch.testing.assert_close(on.state_dict()[key], value, rtol=0, atol=0)


def test_eval_is_unchanged_and_training_is_regularised():
    off, on = _model(), _model(dropblock_keep_prob=0.8)
    x = torch.randn(2, 3, SIZE, SIZE)
    off.eval(), on.eval()
    with torch.no_grad():
        for a, b in zip(off(x).values(), on(x).values(), strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=0)
    off.train(), on.train()
    with torch.no_grad():
        torch.manual_seed(1)
        ref = off(x)
        torch.manual_seed(1)
        dropped = on(x)
    assert any(not torch.equal(ref[k], dropped[k]) for k in ref)


def test_keep_prob_one_is_the_identity_in_training():
    off, on = _model(), _model(dropblock_keep_prob=1.0)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        for a, b in zip(off(x).values(), on(x).values(), strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=0)


@pytest.mark.parametrize(("block_cls", "calls"), [(BottleneckBlock, 4), (ResidualBlock, 3)])
def test_placement_after_every_bn_and_on_the_shortcut(block_cls, calls):
    # tensorflow/tpu nn_blocks.py: DropBlock after each BN(+act) and on the (identity) shortcut.
    norm = torch.nn.BatchNorm2d
    block = block_cls(16 * block_cls.expansion, 16, norm_layer=norm, act_layer=torch.nn.ReLU, dropblock_keep_prob=0.9)
    seen: list[tuple[int, ...]] = []
    block.dropblock.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape[1:2])))
    block(torch.randn(2, 16 * block_cls.expansion, 12, 12))
    assert len(seen) == calls
    assert seen[0] == (16 * block_cls.expansion,)  # the shortcut first


def test_min_level_selects_blocks():
    model = _model(dropblock_keep_prob=0.9, dropblock_min_level=5)
    for group in model.stem_blocks:
        assert all(getattr(b, "dropblock", None) is None for b in group)
    for block in model.blocks.values():
        has = [getattr(b, "dropblock", None) is not None for b in block.group]
        assert all(has) if block.level >= 5 else not any(has)
    assert len(_dropblocks(_model(dropblock_keep_prob=0.9))) == len(model.stem_blocks) + len(model.blocks)


def test_dropped_fraction_matches_keep_prob():
    layer = DropBlock(0.9, 7).train()
    x = torch.ones(8, 32, 64, 64)
    y = layer(x)
    zeros = (y == 0).float().mean().item()
    assert abs(zeros - 0.1) < 0.015, zeros
    assert y.mean().item() == pytest.approx(1.0, abs=1e-4)  # rescaled by the kept fraction
    assert torch.equal(layer.eval()(x), x)


def test_dropped_regions_are_blocks():
    y = DropBlock(0.8, 5).train()(torch.ones(1, 1, 40, 40))[0, 0]
    assert (y == 0).any()
    # Every dropped pixel lies in some fully dropped 5x5 window.
    dropped = (y == 0).float()[None, None]
    fully_dropped_windows = -F.max_pool2d(-dropped, 5, 1)
    covered = F.max_pool2d(F.pad(fully_dropped_windows, [4] * 4), 5, 1)
    torch.testing.assert_close(covered, dropped)


@pytest.mark.parametrize("hw", [(1, 1), (4, 4), (5, 5), (6, 6), (5, 9)])
def test_maps_smaller_than_the_block(hw):
    torch.manual_seed(0)
    y = DropBlock(0.5, 7).train()(torch.ones(4, 64, *hw))
    assert y.shape == (4, 64, *hw) and (y == 0).any()
    if hw == (5, 5):  # one valid 5x5 centre: whole channels drop, as in tensorflow/tpu
        per_channel = (y == 0).flatten(2).float().mean(-1)
        assert set(per_channel.unique().tolist()) <= {0.0, 1.0}


def test_layer_and_model_argument_errors():
    with pytest.raises(ValueError, match="keep_prob"):
        DropBlock(0.0, 7)
    with pytest.raises(ValueError, match="odd"):
        DropBlock(0.9, 4)
    with pytest.raises(ValueError, match="dropblock_size"):
        _model(dropblock_keep_prob=0.9, dropblock_size=6)
    with pytest.raises(ValueError, match="dropblock_keep_prob"):
        _model(dropblock_keep_prob=1.5)
    with pytest.raises(ValueError, match="ResNet-block"):
        torchspine.create_model("test_spinenet_mobile", dropblock_keep_prob=0.9)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["model.dropblock_keep_prob=0"], "model.dropblock_keep_prob"),
        (["model.dropblock_keep_prob=1.5"], "model.dropblock_keep_prob"),
        (["model.dropblock_size=4"], "model.dropblock_size"),
        (["model.dropblock_size=0"], "model.dropblock_size"),
        (["model.dropblock_min_level=1"], "model.dropblock_min_level"),
        (["model.backbone=test_spinenet_mobile", "model.dropblock_keep_prob=0.9"], "model.dropblock_keep_prob"),
        (
            ["model.backbone=resnet50_fpn", "model.image_size=256", "model.dropblock_keep_prob=0.9"],
            "model.dropblock_keep_prob",
        ),
    ],
)
def test_config_validation_names_the_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        load_config("demo", overrides=overrides)
    assert re.search(rf"^  {re.escape(key)}: ", str(info.value), re.MULTILINE), str(info.value)


def test_config_reaches_the_backbone():
    cfg = load_config("demo", overrides=["model.dropblock_keep_prob=0.8", "model.dropblock_min_level=4"])
    blocks = _dropblocks(build_model(cfg.model, num_classes=3))
    assert blocks and all((b.keep_prob, b.block_size) == (0.8, 7) for b in blocks)
    assert not _dropblocks(build_model(load_config("demo").model, num_classes=3))


def test_only_protocol_a_uses_dropblock():
    a = get_experiment("retinanet_spinenet49_protocol_a").model
    assert (a.dropblock_keep_prob, a.dropblock_size, a.dropblock_min_level) == (0.9, 7, 2)
    for name in ("retinanet_spinenet49_protocol_b", "retinanet_spinenet49_protocol_c", "maskrcnn_spinenet49"):
        assert get_experiment(name).model.dropblock_keep_prob is None


def test_dry_run_of_protocol_a_shows_dropblock(tmp_path, capsys):
    data = tmp_path / "demo"
    assert main(["data", "make-demo", "--out", str(data), "--num-train", "2", "--num-val", "1"]) == 0
    capsys.readouterr()
    argv = ["train", "--experiment", "retinanet_spinenet49_protocol_a", "--data", str(data), "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "dropblock_keep_prob: 0.9" in out and "dropblock_size: 7" in out
    assert "DropBlock(keep_prob=0.9, block_size=7)" in out
    assert "dropblock(keep_prob=0.9, size=7, min_level=2)" in out
