"""The training loop: optimisation, exact resume mid-epoch, non-finite losses, the sampler and LR schedule."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from torchspine.engine.trainer import NonFiniteLossError, ResumableSampler, Trainer, warmup_step_schedule


class _Points(Dataset):
    """(x, {"y": ...}) pairs of a noisy linear map; the noise comes from the global RNG at load time."""

    def __init__(self, n: int = 10) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i] + 0.01 * torch.randn(4), {"y": self.y[i]}

    @staticmethod
    def collate(batch):
        return tuple(zip(*batch, strict=True))


class _Regressor(nn.Module):
    """Follows the detection API: ``model(inputs, targets) -> dict of losses``; dropout uses the RNG too."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.dropout = nn.Dropout(0.1)
        self.make_nan = False

    def forward(self, inputs, targets):
        x = torch.stack(list(inputs))
        pred = self.linear(self.dropout(x)).squeeze(1)
        loss = ((pred - torch.stack([t["y"] for t in targets])) ** 2).mean()
        return {"mse": loss * float("nan") if self.make_nan else loss}


def _trainer(max_steps: int, seed: int = 0, milestones: tuple[int, ...] = (5,), **kw) -> Trainer:
    torch.manual_seed(seed)
    data = _Points()
    loader = DataLoader(
        data,
        batch_size=2,
        sampler=ResumableSampler(len(data), seed=3),
        collate_fn=data.collate,
        generator=torch.Generator(),
    )
    model = _Regressor()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = warmup_step_schedule(
        opt, total_steps=max_steps, warmup_steps=2, warmup_init_ratio=0.1, milestones=milestones
    )
    return Trainer(model, opt, loader, max_steps=max_steps, scheduler=sched, **kw)


def test_training_reduces_the_loss():
    trainer = _trainer(60, milestones=(50,))
    first = trainer.run_step()["mse"]
    trainer.train()
    assert trainer.step == 60 and trainer.run_step()["mse"] < 0.25 * first  # input dropout keeps a floor


@pytest.mark.parametrize("accum", [1, 2])
def test_resume_mid_epoch_is_exact(accum):
    full = _trainer(7, grad_accum_steps=accum, clip_grad_norm=1.0)
    full.train()
    first = _trainer(7, grad_accum_steps=accum, clip_grad_norm=1.0)
    first.max_steps = 3
    first.train()
    state, rng = copy.deepcopy(first.state_dict()), torch.get_rng_state()
    assert state["loop"]["position"] != 0  # the interruption falls inside an epoch
    resumed = _trainer(7, seed=99, grad_accum_steps=accum, clip_grad_norm=1.0)  # different init, then restored
    resumed.load_state_dict(state)
    torch.set_rng_state(rng)
    resumed.train()
    assert (resumed.step, resumed.epoch, resumed.position) == (full.step, full.epoch, full.position)
    for a, b in zip(resumed.model.parameters(), full.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_non_finite_steps_are_skipped_then_stop_the_run():
    trainer = _trainer(10, max_nonfinite=3)
    trainer.model.make_nan = True
    before = copy.deepcopy(trainer.model.state_dict())
    assert trainer.run_step() is None and trainer.step == 0
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps"):
        trainer.train()
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_sampler_shards_and_starts_mid_epoch():
    shards = [list(ResumableSampler(10, seed=1, rank=r, world_size=3)) for r in range(3)]
    seen = [i for shard in shards for i in shard]
    assert len(seen) == len(set(seen)) == 9 and all(len(s) == 3 for s in shards)
    sampler = ResumableSampler(10, seed=1)
    whole = list(sampler)
    sampler.set_epoch(0, start=4)
    assert list(sampler) == whole[4:] and len(sampler) == 6
    sampler.set_epoch(1)
    assert list(sampler) != whole and sorted(sampler) == list(range(10))


def test_warmup_then_step_decay():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_step_schedule(opt, total_steps=10, warmup_steps=4, warmup_init_ratio=0.0, milestones=[6, 8])
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


def test_sampler_required():
    data = _Points()
    with pytest.raises(TypeError, match="ResumableSampler"):
        Trainer(_Regressor(), torch.optim.SGD(_Regressor().parameters(), lr=0.1), DataLoader(data), max_steps=1)


def test_an_epoch_without_a_batch_raises_instead_of_spinning():
    data = _Points(n=3)
    loader = DataLoader(
        data,
        batch_size=4,  # larger than the data set: with drop_last every epoch is empty
        sampler=ResumableSampler(len(data), seed=0),
        collate_fn=data.collate,
        drop_last=True,
        generator=torch.Generator(),
    )
    model = _Regressor()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, max_steps=1)
    with pytest.raises(RuntimeError, match="yielded no batch in epoch 0"):
        trainer.train()
