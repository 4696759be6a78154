"""Per-sample augmentation seeds: the same augmentation for a sample whatever the workers, so resume is exact."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from torchspine.cli.main import main
from torchspine.data.batching import list_collate
from torchspine.data.transforms import Compose, RandomHorizontalFlip, RandomResizeCrop
from torchspine.engine.checkpoint import load_checkpoint
from torchspine.engine.sample_seeds import SeededSampler, SeededSamples, sample_seed


class _Augmented(Dataset):
    """Eight distinct 40x60 images with one box each, through the training pipeline's random transforms."""

    def __init__(self) -> None:
        self.transforms = Compose([RandomResizeCrop(32, (0.5, 2.0)), RandomHorizontalFlip()])

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image = torch.arange(3 * 40 * 60, dtype=torch.float32).reshape(3, 40, 60) / 7200 + index
        target = {"boxes": torch.tensor([[5.0, 5.0, 30.0, 20.0]]), "labels": torch.tensor([1]), "index": index}
        return self.transforms(image, target)


def _augmentations(num_workers: int, epoch: int, start: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    sampler = SeededSampler(8, seed=3)
    sampler.set_epoch(epoch, start=start)
    loader = DataLoader(
        SeededSamples(_Augmented()), batch_size=2, sampler=sampler, num_workers=num_workers, collate_fn=list_collate
    )
    return {t["index"]: (im, t["boxes"]) for images, targets in loader for im, t in zip(images, targets, strict=True)}


def test_a_samples_augmentation_does_not_depend_on_workers_or_where_the_epoch_started():
    reference = _augmentations(num_workers=0, epoch=1, start=0)
    assert len(reference) == 8
    # The augmentations really are random: they differ between samples and between epochs.
    assert len({tuple(b.flatten().tolist()) for _, b in reference.values()}) > 1
    other_epoch = _augmentations(num_workers=0, epoch=2, start=0)
    assert any(not torch.equal(reference[i][1], other_epoch[i][1]) for i in reference)
    for num_workers, start in [(2, 0), (2, 3), (0, 5)]:  # other workers, other first batch (a resumed epoch)
        got = _augmentations(num_workers=num_workers, epoch=1, start=start)
        assert len(got) == 8 - start
        for index, (image, boxes) in got.items():
            assert torch.equal(image, reference[index][0]) and torch.equal(boxes, reference[index][1]), (
                num_workers,
                start,
                index,
            )


def test_loading_a_sample_leaves_the_callers_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    SeededSamples(_Augmented())[(0, sample_seed(0, 0, 0))]
    assert torch.equal(torch.rand(4), expected)


def test_sample_seeds_differ_by_seed_epoch_and_index():
    seeds = {sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(50)}
    assert len(seeds) == 3 * 3 * 50
    assert sample_seed(1, 2, 3) == sample_seed(1, 2, 3)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["data", "make-demo", "--out", str(out), "--num-train", "8", "--num-val", "2"]) == 0
    return out


@pytest.mark.slow
def test_resume_with_two_workers_matches_an_uninterrupted_run(data, tmp_path):
    """A run with ``num_workers=2`` stopped at step 3 (mid-epoch: 2 batches per epoch) and resumed ends with the
    parameters of the uninterrupted run, bit for bit."""
    common = [
        "train",
        "--experiment",
        "demo",
        "--data",
        str(data),
        "--set",
        "train.global_batch_size=4",
        "--set",
        "data.num_workers=2",
        "--set",
        "train.checkpoint_every_steps=3",
        "--set",
        "eval.max_images=1",
    ]
    assert main([*common, "--output-dir", str(tmp_path / "full"), "--set", "train.max_steps=5"]) == 0
    assert main([*common, "--output-dir", str(tmp_path / "split"), "--set", "train.max_steps=3"]) == 0
    assert main([*common, "--output-dir", str(tmp_path / "split"), "--set", "train.max_steps=5", "--resume"]) == 0
    full = load_checkpoint(tmp_path / "full" / "checkpoints" / "ckpt-00000005.pt")["model"]
    split = load_checkpoint(tmp_path / "split" / "checkpoints" / "ckpt-00000005.pt")["model"]
    for key, value in full.items():
        torch.testing.assert_close(split[key], value, rtol=0, atol=0, msg=key)
