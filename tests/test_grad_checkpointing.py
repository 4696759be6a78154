"""Activation checkpointing: same gradients and BatchNorm statistics as without it, and it really recomputes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import torchspine
from torchspine.config.loader import ConfigError, load_config
from torchspine.engine.build import build_model
from torchspine.models.detection.retinanet import build_retinanet


def _count_calls(module: nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _step(model: nn.Module, loss_fn, seed: int) -> None:
    torch.manual_seed(seed)  # the same drop-path / DropBlock masks in both runs
    loss_fn(model).backward()


def _assert_same_training_state(a: nn.Module, b: nn.Module) -> None:
    grads_a = {n: p.grad for n, p in a.named_parameters()}
    grads_b = {n: p.grad for n, p in b.named_parameters()}
    assert all(g is not None for g in grads_a.values())
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, rtol=1e-5, atol=1e-7, msg=name)
    for (name, buf_a), (_, buf_b) in zip(a.named_buffers(), b.named_buffers(), strict=True):
        # Recomputation with frozen statistics: the running stats must be *exactly* those of a plain step.
        assert torch.equal(buf_a, buf_b), name


@pytest.mark.parametrize("semantics", ["tpu", "model_garden"])
def test_backbone_checkpointing_same_gradients_and_bn_stats(semantics):
    torch.manual_seed(0)
    plain = torchspine.create_model(
        "test_spinenet", semantics=semantics, drop_path_rate=0.2, dropblock_keep_prob=0.9, dropblock_size=3
    ).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing()
    x = torch.randn(2, 3, 128, 128)

    def loss(model):
        return sum((f * f).mean() for f in model(x).values())

    group = next(iter(ckpt.blocks.values())).group
    calls = _count_calls(group)
    for seed in (1, 2):  # two steps: running statistics accumulate
        _step(plain, loss, seed)
        _step(ckpt, loss, seed)
    assert calls[0] == 4  # forward + recomputation, twice: it does checkpoint
    _assert_same_training_state(plain, ckpt)


def test_retinanet_checkpointing_same_gradients_and_bn_stats():
    torch.manual_seed(0)
    plain = build_retinanet("test_spinenet", num_classes=5, image_size=128).train()
    ckpt = copy.deepcopy(plain)
    for module in (ckpt.backbone, ckpt.head):
        module.set_grad_checkpointing()
    gen = torch.Generator().manual_seed(3)
    images = [torch.rand(3, 128, 128, generator=gen) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 70.0, 90.0], [40.0, 30.0, 120.0, 100.0]]), "labels": torch.tensor([1, 4])},
        {"boxes": torch.tensor([[5.0, 5.0, 50.0, 40.0]]), "labels": torch.tensor([2])},
    ]

    def loss(model):
        return sum(model(images, targets).values())

    calls = _count_calls(ckpt.head.cls.convs[0])
    _step(plain, loss, 0)
    _step(ckpt, loss, 0)
    assert calls[0] == 2 * ckpt.head.num_levels
    _assert_same_training_state(plain, ckpt)


def test_checkpointing_off_in_eval_and_no_grad():
    model = torchspine.create_model("test_spinenet").eval()
    model.set_grad_checkpointing()
    calls = _count_calls(next(iter(model.blocks.values())).group)
    out = model(torch.randn(1, 3, 128, 128))
    assert calls[0] == 1 and all(not t.requires_grad or t.grad_fn is not None for t in out.values())


def test_config_switch_enables_it_and_rejects_resnet():
    cfg = load_config("demo", overrides=["model.grad_checkpointing=true"])
    model = build_model(cfg.model, num_classes=5)
    assert model.backbone.grad_checkpointing and model.head.cls.grad_checkpointing
    with pytest.raises(ConfigError, match=r"model\.grad_checkpointing"):
        load_config("demo", overrides=["model.backbone=resnet50_fpn", "model.grad_checkpointing=true"])
