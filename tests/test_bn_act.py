"""Memory-efficient BatchNorm + activation (`torchspine.layers.bn_act`): the same outputs, gradients and running
statistics as the plain modules, with fewer bytes kept for backward."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from torchspine.layers.blocks import BottleneckBlock, ResidualBlock
from torchspine.layers.bn_act import bn_act, set_fused_bn_act
from torchspine.layers.conv import ConvNormAct
from torchspine.models.detection.retinanet import build_retinanet


def _saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps for backward while `fn()` runs."""
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(saved.values())


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str = "", floor: float = 1e-12) -> None:
    """Equal up to float rounding, relative to the tensor's largest value (gradients sum over many positions)."""
    err = ((actual - expected).abs().max() / expected.abs().max().clamp_min(floor)).item()
    assert err < 1e-5, f"{what} relative error {err:.2e}"


def _bn(channels: int, momentum: float | None) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(3)
    bn = nn.BatchNorm2d(channels, eps=1e-3, momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(channels, generator=g) + 0.5)
        bn.bias.copy_(torch.rand(channels, generator=g) - 0.5)
        bn.running_mean.copy_(torch.rand(channels, generator=g))
    return bn


@pytest.mark.parametrize("momentum", [0.01, None])
@pytest.mark.parametrize("with_scale", [False, True], ids=["", "drop-path"])
@pytest.mark.parametrize("with_residual", [False, True], ids=["", "residual"])
@pytest.mark.parametrize("act", [nn.SiLU, nn.ReLU, nn.Identity])
def test_bn_act_equals_the_modules(act, with_residual, with_scale, momentum):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, 6, 5, generator=g) * 3 + 1
    residual = torch.randn(4, 8, 6, 5, generator=g) if with_residual else None
    scale = torch.tensor([2.0, 0.0, 2.0, 2.0]).view(4, 1, 1, 1) if with_scale else None
    grad = torch.randn(4, 8, 6, 5, generator=g)
    bn_ref, bn = _bn(8, momentum), _bn(8, momentum)

    def run(fused: bool, module: nn.BatchNorm2d) -> tuple[torch.Tensor, ...]:
        xi = x.clone().requires_grad_()
        ri = residual.clone().requires_grad_() if residual is not None else None
        for _ in range(2):  # two steps: running statistics and num_batches_tracked accumulate
            if fused:
                y = bn_act(xi, module, act(), residual=ri, scale=scale)
            else:
                z = module(xi)
                z = z * scale if scale is not None else z
                y = act()(z + ri if ri is not None else z)
        y.backward(grad)
        grads = (xi.grad, module.weight.grad, module.bias.grad) + ((ri.grad,) if ri is not None else ())
        return (y.detach(), *grads)

    expected, actual = run(False, bn_ref), run(True, bn)
    for a, e in zip(actual, expected, strict=True):
        _assert_close(a, e)
    assert torch.equal(bn.running_mean, bn_ref.running_mean) and torch.equal(bn.running_var, bn_ref.running_var)
    assert bn.num_batches_tracked.item() == bn_ref.num_batches_tracked.item() == 2


def test_a_conv_layer_keeps_one_map_instead_of_three():
    layer = ConvNormAct(16, 16, 3, norm_layer=nn.BatchNorm2d, act_layer=nn.SiLU).train()
    x = torch.randn(2, 16, 32, 32)
    plain = _saved_bytes(lambda: layer(x))
    layer.fused_bn_act = True
    fused = _saved_bytes(lambda: layer(x))
    one_map = x.numel() * 4
    # plain: the input (for the conv), the conv output (BN), the BN output (SiLU); fused: the input and conv output.
    # (Plus per-channel vectors: the plain BatchNorm also keeps its running statistics, 2 x 16 floats.)
    assert one_map <= plain - fused <= one_map + 1024


@pytest.mark.parametrize("block_type", [BottleneckBlock, ResidualBlock])
def test_residual_blocks_train_alike_and_keep_less(block_type):
    torch.manual_seed(0)
    block = block_type(32, 8 if block_type is BottleneckBlock else 32, norm_layer=nn.BatchNorm2d, act_layer=nn.SiLU)
    block.drop_path.rate = 0.5
    fused = set_fused_bn_act(copy.deepcopy(block))
    x = torch.randn(4, 32, 12, 12)
    outputs = []
    for module in (block, fused):
        torch.manual_seed(1)  # the same drop-path draws
        xi = x.clone().requires_grad_()
        y = module(xi)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outputs.append((y.detach(), xi.grad, *[p.grad for p in module.parameters()]))
    for a, e in zip(outputs[1], outputs[0], strict=True):
        _assert_close(a, e)
    for a, e in zip(fused.buffers(), block.buffers(), strict=True):
        assert torch.equal(a, e)
    assert _saved_bytes(lambda: fused(x)) < _saved_bytes(lambda: block(x))


def test_retinanet_training_step_is_unchanged_and_keeps_less():
    torch.manual_seed(0)
    model = build_retinanet("test_spinenet", num_classes=3, image_size=128).train()
    fused = set_fused_bn_act(copy.deepcopy(model))
    assert sum(getattr(m, "fused_bn_act", False) for m in fused.modules()) > 20
    images = [torch.rand(3, 128, 128), torch.rand(3, 128, 128)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 90.0, 100.0]]), "labels": torch.tensor([1])}] * 2
    results = []
    for m in (model, fused):
        losses = m(images, targets)
        sum(losses.values()).backward()
        results.append((losses, {n: p.grad for n, p in m.named_parameters()}))
    (loss_ref, grads_ref), (loss, grads) = results
    for k in loss_ref:
        torch.testing.assert_close(loss[k], loss_ref[k], rtol=1e-5, atol=0)
    for n, g in grads_ref.items():
        # A conv bias before BatchNorm has a zero gradient in exact arithmetic (here 1e-13 to 1e-6, rounding noise):
        # hence the floor.
        _assert_close(grads[n], g, n, floor=1e-4)
    plain = _saved_bytes(lambda: model(images, targets))
    assert _saved_bytes(lambda: fused(images, targets)) < 0.85 * plain


def test_the_config_switch_turns_it_on_and_refuses_resnet_baselines():
    from torchspine.config.loader import ConfigError, load_config
    from torchspine.engine.build import build_model

    cfg = load_config("demo", overrides=["model.fused_bn_act=true"])
    model = build_model(cfg.model, num_classes=3)
    flags = [m.fused_bn_act for m in model.modules() if hasattr(m, "fused_bn_act")]
    assert len(flags) > 20 and all(flags)
    with pytest.raises(ConfigError, match=r"model\.fused_bn_act: is implemented for SpineNet backbones only"):
        load_config("demo", overrides=["model.fused_bn_act=true", "model.backbone=resnet50_fpn"])
