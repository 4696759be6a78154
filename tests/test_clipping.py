"""Gradient clipping: tensorflow/tpu's per-replica clip before the all-reduce vs Model Garden's clip of the mean.

The expected updates are computed here from the formulas (autograd for the local gradients, then norms, clip factors
and sums by hand), not through `GradientClipper`:

* per replica (tensorflow/tpu): ``G = sum_r v_r * c / max(||v_r||, c)`` with ``v_r = (g_r + wd * w) / N``;
* global (Model Garden ``global_clipnorm``): ``G = v * c / max(||v||, c)`` with ``v = mean_r g_r + wd * w``;

and one SGD step (momentum buffer empty) moves the weights by ``-lr * G``.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, Dataset

from torchspine.config import get_experiment
from torchspine.engine.clipping import GradientClipper
from torchspine.engine.distributed import DistInfo, wrap_model
from torchspine.engine.trainer import ResumableSampler, Trainer

LR, WD = 0.1, 0.05


class _Net(nn.Module):
    """A conv and a linear layer, in the detection API (``model(inputs, targets) -> {"loss": ...}``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 3 * 3, 1)

    def forward(self, inputs, targets):
        x = torch.stack(list(inputs))
        pred = self.fc(torch.relu(self.conv(x)).flatten(1)).squeeze(1)
        return {"loss": ((pred - torch.stack([t["y"] for t in targets])) ** 2).mean()}


class _Local(Dataset):
    """Two samples per process; process 1's targets are 30x larger, so its local gradient is much larger."""

    def __init__(self, rank: int) -> None:
        g = torch.Generator().manual_seed(100 + rank)
        self.x = torch.randn(2, 1, 5, 5, generator=g)
        self.y = torch.randn(2, generator=g) * (30.0 if rank == 1 else 1.0)

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        return self.x[i], {"y": self.y[i]}

    @staticmethod
    def collate(batch):
        return tuple(zip(*batch, strict=True))


def _groups(model: nn.Module) -> list[dict]:
    """As `torchspine.engine.build.build_optimizer`: L2 on kernels only."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": WD}, {"params": rest, "weight_decay": 0.0}]


def _local_gradient(rank: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model, data = _Net(), _Local(rank)
    loss = model(list(data.x), [{"y": y} for y in data.y])["loss"]
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _initial() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {name: p.detach().clone() for name, p in _Net().named_parameters()}


def _with_l2(grads: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: g + (WD * weights[k] if weights[k].ndim > 1 else 0.0) for k, g in grads.items()}


def _norm(vector: dict[str, torch.Tensor]) -> float:
    return sum(float((v.double() ** 2).sum()) for v in vector.values()) ** 0.5


def _expected_step(mode: str, clip: float) -> dict[str, torch.Tensor]:
    w = _initial()
    g = [_local_gradient(0), _local_gradient(1)]
    if mode == "per_replica":
        update = {k: torch.zeros_like(v) for k, v in w.items()}
        for g_r in g:
            v_r = {k: t / 2 for k, t in _with_l2(g_r, w).items()}
            factor = clip / max(_norm(v_r), clip)
            update = {k: update[k] + factor * v_r[k] for k in w}
    else:
        v = _with_l2({k: (g[0][k] + g[1][k]) / 2 for k in w}, w)
        factor = clip / max(_norm(v), clip)
        update = {k: factor * t for k, t in v.items()}
    return {k: w[k] - LR * update[k] for k in w}


def _clip_between_replicas() -> float:
    """A clip norm between the two replicas' local norms (process 0 unclipped, process 1 clipped)."""
    w = _initial()
    norms = [_norm({k: t / 2 for k, t in _with_l2(_local_gradient(r), w).items()}) for r in (0, 1)]
    assert norms[1] > 4 * norms[0], norms
    return (norms[0] * norms[1]) ** 0.5


def _train_one_step(rank: int, port: int, mode: str, accum: int, clip: float, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        data = _Local(rank)
        loader = DataLoader(
            data,
            batch_size=2 // accum,
            collate_fn=_Local.collate,
            generator=torch.Generator(),
            sampler=ResumableSampler(2, shuffle=False),  # each process reads its own two samples
        )
        model = wrap_model(_Net(), DistInfo(rank, rank, 2), torch.device("cpu"))
        optimizer = torch.optim.SGD(_groups(model), lr=LR, momentum=0.9)
        trainer = Trainer(
            model, optimizer, loader, max_steps=1, grad_accum_steps=accum, clip_grad_norm=clip, clip_mode=mode
        )
        result = trainer.run_step()
        out[rank] = {
            "weights": {k: v.detach().clone() for k, v in model.module.named_parameters()},
            "grad_norm": result["grad_norm"],
        }
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "accum"), [("per_replica", 1), ("global", 1), ("per_replica", 2)], ids=["per_replica", "global", "accum"]
)
def test_two_process_clipped_step_equals_the_official_formula(mode: str, accum: int):
    """With ``accum`` 2 each process accumulates two one-sample micro-batches under ``no_sync`` before clipping:
    the same local gradient as one two-sample batch, so the same expected step."""
    clip = _clip_between_replicas()
    with mp.Manager() as manager:
        shared = manager.dict()
        mp.spawn(_train_one_step, args=(_free_port(), mode, accum, clip, shared), nprocs=2, join=True)
        results = dict(shared)
    expected = _expected_step(mode, clip)
    other = _expected_step("global" if mode == "per_replica" else "per_replica", clip)
    for key, value in expected.items():
        # The two semantics differ clearly at this clip norm, so the comparison can tell them apart.
        assert (value - other[key]).abs().max() > 1e-3 or key.endswith("bias")
        for rank in (0, 1):
            torch.testing.assert_close(results[rank]["weights"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    if mode == "per_replica":  # each process reports its own local norm: process 1's is above the clip norm
        assert results[0]["grad_norm"] < clip < results[1]["grad_norm"]


def _single_process_grads(scale: float) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model, data = _Net(), _Local(1)
    optimizer = torch.optim.SGD(_groups(model), lr=LR)
    (model(list(data.x), [{"y": y} for y in data.y])["loss"] * scale).backward()
    return model, optimizer


@pytest.mark.parametrize("mode", ["per_replica", "global"])
def test_single_process_step_clips_the_gradient_with_its_l2_term(mode: str):
    """One process: both modes are ``clip(g + wd * w)``; SGD's own decay then completes the update."""
    model, optimizer = _single_process_grads(1.0)
    w, g = _initial(), _local_gradient(1)
    v = _with_l2(g, w)
    clip = _norm(v) / 3
    norm = GradientClipper(clip, mode).clip_(model, optimizer)
    optimizer.step()
    assert norm == pytest.approx(_norm(v), rel=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), w[name] - LR * v[name] / 3, rtol=1e-5, atol=1e-6, msg=name)


def test_loss_scaled_gradients_clip_as_unscaled():
    """fp16 loss scaling: gradients multiplied by S are clipped to S x (the unscaled result)."""
    plain, plain_opt = _single_process_grads(1.0)
    scaled, scaled_opt = _single_process_grads(1024.0)
    clip = 1.0
    n1 = GradientClipper(clip).clip_(plain, plain_opt)
    n2 = GradientClipper(clip).clip_(scaled, scaled_opt, scale=1024.0)
    assert n1 == pytest.approx(n2, rel=1e-5) and n1 > clip
    for p, q in zip(plain.parameters(), scaled.parameters(), strict=True):
        torch.testing.assert_close(q.grad / 1024.0, p.grad, rtol=1e-5, atol=1e-7)


def test_clipper_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_norm"):
        GradientClipper(0.0)
    with pytest.raises(ValueError, match="mode"):
        GradientClipper(1.0, "local")  # type: ignore[arg-type]


def test_recipes_clip_with_their_code_base_semantics():
    # tensorflow/tpu RetinaNet recipes (base_model.py: clip the local gradient before cross_replica_sum).
    tpu = get_experiment("retinanet_spinenet49_protocol_c").optim
    assert (tpu.clip_grad_norm, tpu.clip_mode) == (10.0, "per_replica")
    # Model Garden recipes: the optimizer's global_clipnorm acts on the aggregated gradient.
    assert get_experiment("retinanet_spinenet49_mobile").optim.clip_mode == "global"
