"""DDP on CPU (gloo): two processes with half the batch each take the same steps as one process.

BatchNorm statistics are per process on CPU (PyTorch's SyncBatchNorm is CUDA-only), so the test model has none.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader

from test_trainer import _Points, _Regressor
from torchspine.engine.distributed import DistInfo, all_reduce_mean, wrap_model
from torchspine.engine.trainer import Hook, NonFiniteLossError, ResumableSampler, Trainer


class _Deterministic(_Regressor):
    """No dropout: the processes' random streams differ from the single process's."""

    def __init__(self) -> None:
        super().__init__()
        self.dropout = nn.Identity()


def _run(rank: int, world_size: int, port: int, steps: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if world_size > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    data = _Points(12)
    data.__class__ = type("_Clean", (_Points,), {"__getitem__": lambda self, i: (self.x[i], {"y": self.y[i]})})
    loader = DataLoader(
        data,
        batch_size=4 // world_size,
        collate_fn=_Points.collate,
        generator=torch.Generator(),
        sampler=ResumableSampler(len(data), seed=5, rank=rank, world_size=world_size),
    )
    model = wrap_model(_Deterministic(), DistInfo(rank, rank, world_size), torch.device("cpu"))
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05), loader, max_steps=steps)
    trainer.train()
    if rank == 0:
        inner = model.module if hasattr(model, "module") else model
        out["state"] = {k: v.clone() for k, v in inner.state_dict().items()}
        out["mean"] = all_reduce_mean(1.0)
    elif world_size > 1:
        all_reduce_mean(1.0)
    if world_size > 1:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    single: dict = {}
    _run(0, 1, _free_port(), 6, single)
    with mp.Manager() as manager:
        shared = manager.dict()
        mp.spawn(_run, args=(2, _free_port(), 6, shared), nprocs=2, join=True)
        double = dict(shared)
    assert double["mean"] == 1.0
    for key, value in single["state"].items():
        if key.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(double["state"][key], value, rtol=1e-5, atol=1e-6, msg=key)


class _Oracle(nn.Module):
    """A fake detector that answers from the ground truth for even image ids and guesses for odd ones.

    Its AP lies strictly between 0 and 1 and depends on every image, so an evaluation that lost or duplicated a
    process's share of the images would score differently.
    """

    def __init__(self, answers: dict[float, tuple[int, dict[str, torch.Tensor]]]) -> None:
        super().__init__()
        self.answers = answers
        self.anchor = nn.Parameter(torch.zeros(()))  # so that .to()/.eval() behave like a model

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = []
        for image in images:
            image_id, target = self.answers[round(float(image.sum()), 2)]
            if image_id % 2 == 0:
                boxes, labels = target["boxes"], target["labels"]
            else:
                boxes, labels = torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.tensor([1])
            outputs.append({"boxes": boxes, "labels": labels, "scores": torch.linspace(0.9, 0.5, len(labels))})
        return outputs


def _evaluate(rank: int, world_size: int, port: int, root: str, out: dict) -> None:
    from torchspine.data import build_dataset
    from torchspine.engine.evaluation import evaluate_detector

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if world_size > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    dataset = build_dataset(root, "val")
    answers = {round(float(image.sum()), 2): (target["image_id"], target) for image, target in dataset}
    assert len(answers) == len(dataset)  # image sums identify the images
    metrics = evaluate_detector(_Oracle(answers), dataset, batch_size=2, progress=False, distributed=world_size > 1)
    out[rank] = metrics["bbox"]
    if world_size > 1:
        dist.destroy_process_group()


def test_distributed_evaluation_equals_single_process(tmp_path):
    from torchspine.data import make_demo_dataset

    make_demo_dataset(tmp_path, num_train=1, num_val=7, image_size=96)
    single: dict = {}
    _evaluate(0, 1, _free_port(), str(tmp_path), single)
    assert 0.2 < single[0]["AP"] < 0.9
    with mp.Manager() as manager:
        shared = manager.dict()
        mp.spawn(_evaluate, args=(2, _free_port(), str(tmp_path), shared), nprocs=2, join=True)
        double = dict(shared)
    assert double[0] == single[0] and double[1] == single[0]  # every process gets the whole set's metrics


class _NanOnRank(Hook):
    """Rank `nan_rank`'s model returns a NaN loss in `count` step attempts from step `first` on (skipped steps do
    not advance ``trainer.step``, so attempts are counted)."""

    def __init__(self, model: nn.Module, rank: int, nan_rank: int, first: int, count: int) -> None:
        self.model, self.poison, self.first, self.count = model, rank == nan_rank, first, count

    def _arm(self, trainer: Trainer) -> None:
        self.model.make_nan = self.poison and trainer.step >= self.first and self.count > 0

    def before_train(self, trainer: Trainer) -> None:
        self._arm(trainer)

    def after_step(self, trainer: Trainer, losses) -> None:
        if self.model.make_nan:
            self.count -= 1
        self._arm(trainer)


def _decide(rank: int, world_size: int, port: int, scenario: str, out: dict) -> None:
    """Two processes train a toy model; only rank 1 sees a stop request or NaN losses."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    data = _Points(12)
    loader = DataLoader(
        data,
        batch_size=2,
        collate_fn=_Points.collate,
        generator=torch.Generator(),
        sampler=ResumableSampler(len(data), seed=5, rank=rank, world_size=world_size),
    )
    inner = _Deterministic()
    model = wrap_model(inner, DistInfo(rank, rank, world_size), torch.device("cpu"))
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05), loader, max_steps=8, max_nonfinite=3)
    if scenario == "stop":
        trainer.stop_requested = lambda: rank == 1 and trainer.step >= 2
        trainer.hooks = [_StopWhenAgreed()]
    elif scenario == "skip":
        trainer.hooks = [_NanOnRank(inner, rank, 1, first=2, count=2)]
    else:  # "abort": rank 1 diverges for good from step 3
        trainer.hooks = [_NanOnRank(inner, rank, 1, first=3, count=100)]
    try:
        trainer.train()
        out[rank] = ("done", trainer.step, [p.detach().clone() for p in inner.parameters()])
    except NonFiniteLossError:
        out[rank] = ("aborted", trainer.step, [p.detach().clone() for p in inner.parameters()])
    dist.destroy_process_group()


class _StopWhenAgreed(Hook):
    # What the checkpoint hook does with the agreed decision (minus the file).
    def after_step(self, trainer: Trainer, losses) -> None:
        trainer.should_stop = trainer.should_stop or trainer.stop_agreed


def _spawn_with_timeout(fn, scenario: str, timeout: float = 300.0) -> dict:
    """Run `fn` on 2 processes; a hang (the bug these tests guard against) fails instead of blocking CI."""
    with mp.Manager() as manager:
        shared = manager.dict()
        context = mp.spawn(fn, args=(2, _free_port(), scenario, shared), nprocs=2, join=False)
        deadline = time.monotonic() + timeout
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                pytest.fail(f"{scenario}: the processes did not finish within {timeout} s (a rank is waiting)")
        return dict(shared)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["stop", "skip", "abort"])
def test_decisions_of_one_rank_are_taken_by_all_ranks(scenario):
    out = _spawn_with_timeout(_decide, scenario)
    (status0, step0, params0), (status1, step1, params1) = out[0], out[1]
    assert (status0, step0) == (status1, step1)
    expected = {"stop": ("done", 3), "skip": ("done", 8), "abort": ("aborted", 3)}[scenario]
    assert (status0, step0) == expected
    for a, b in zip(params0, params1, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # DDP replicas stayed in lock step
