"""The SpineNet input pipeline keeps image, boxes, masks, labels and crowd flags consistent."""

from __future__ import annotations

import pytest
import torch

from torchspine.data.transforms import Compose, RandomHorizontalFlip, RandomResizeCrop, ResizeLongSide


def _sample(h: int = 60, w: int = 100) -> tuple[torch.Tensor, dict]:
    """Three rectangles whose masks, boxes and image pixels (channel 0) coincide; labels 5, 6, 7."""
    boxes = torch.tensor([[4, 6, 20, 30], [50, 10, 90, 50], [70, 40, 100, 60]], dtype=torch.float32)
    masks = torch.zeros((3, h, w), dtype=torch.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        masks[k, y1:y2, x1:x2] = 1
    image = torch.zeros((3, h, w))
    image[0] = masks.amax(0).float()
    target = {
        "boxes": boxes,
        "labels": torch.tensor([5, 6, 7]),
        "iscrowd": torch.tensor([0, 1, 0]),
        "masks": masks,
        "image_id": 3,
    }
    return image, target


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    out = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)


def _check_types(target: dict) -> None:
    n = target["boxes"].shape[0]
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (n, 4)
    assert target["labels"].dtype == torch.int64 and target["labels"].shape == (n,)
    assert target["iscrowd"].dtype == torch.int64 and target["iscrowd"].shape == (n,)
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape[0] == n


def test_flip_twice_is_identity():
    image, target = _sample()
    flip = RandomHorizontalFlip(p=1.0)
    once_image, once = flip(image, target)
    twice_image, twice = flip(once_image, once)
    assert torch.equal(twice_image, image)
    for key in ("boxes", "labels", "iscrowd", "masks"):
        assert torch.equal(twice[key], target[key]), key
    # The flipped boxes still match the flipped masks and image.
    assert torch.equal(once["boxes"], _mask_boxes(once["masks"]))
    assert once["boxes"][0].tolist() == [80, 6, 96, 30]
    assert torch.equal(once_image[0], once["masks"].amax(0).float())
    _check_types(once)


def test_flip_probability_zero_and_input_not_mutated():
    image, target = _sample()
    boxes = target["boxes"].clone()
    out_image, out = RandomHorizontalFlip(p=0.0)(image, target)
    assert out_image is image and torch.equal(out["boxes"], boxes)
    RandomHorizontalFlip(p=1.0)(image, target)
    assert torch.equal(target["boxes"], boxes)


def test_resize_long_side_scale_factors():
    image, target = _sample(60, 100)
    out_image, out = ResizeLongSide(50)(image, target)
    assert out_image.shape == (3, 30, 50) and out["masks"].shape == (3, 30, 50)
    assert torch.allclose(out["boxes"], target["boxes"] * 0.5)
    assert torch.equal(out["boxes"], _mask_boxes(out["masks"]))
    _check_types(out)


def test_random_resize_crop_scale_without_crop():
    # scale 0.5 on a 100-wide image with image_size 100: long side 50, no crop needed.
    image, target = _sample(60, 100)
    out_image, out = RandomResizeCrop(100, scale_range=(0.5, 0.5))(image, target)
    assert out_image.shape == (3, 30, 50)
    assert torch.allclose(out["boxes"], target["boxes"] * 0.5)
    assert out["labels"].tolist() == [5, 6, 7]


def _coordinate_image(h: int, w: int) -> torch.Tensor:
    """Channel 0 holds x, channel 1 holds y (both / 255), so a crop reveals its own offset."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([xs, ys, torch.zeros_like(xs)]).float() / 255.0


@pytest.mark.parametrize("seed", range(8))
def test_crop_keeps_only_visible_boxes(seed: int):
    # scale 2 with image_size 50 resizes 100x60 to itself (exactly), then crops 50x50 at a random offset.
    _, target = _sample(60, 100)
    image = _coordinate_image(60, 100)
    gen = torch.Generator().manual_seed(seed)
    out_image, out = RandomResizeCrop(50, scale_range=(2.0, 2.0), generator=gen)(image, target)
    assert out_image.shape == (3, 50, 50)
    left, top = round(float(out_image[0, 0, 0]) * 255), round(float(out_image[1, 0, 0]) * 255)
    assert 0 <= left <= 50 and 0 <= top <= 10
    shifted = target["boxes"] - torch.tensor([left, top, left, top], dtype=torch.float32)
    shifted[:, 0::2] = shifted[:, 0::2].clamp(0, 50)
    shifted[:, 1::2] = shifted[:, 1::2].clamp(0, 50)
    visible = (shifted[:, 2] > shifted[:, 0]) & (shifted[:, 3] > shifted[:, 1])
    assert torch.equal(out["boxes"], shifted[visible])
    assert torch.equal(out["labels"], target["labels"][visible])
    assert torch.equal(out["iscrowd"], target["iscrowd"][visible])
    assert torch.equal(out["boxes"], _mask_boxes(out["masks"]))  # masks cropped and filtered alike
    _check_types(out)


@pytest.mark.parametrize("seed", range(6))
def test_random_resize_crop_jitter_keeps_image_boxes_and_masks_aligned(seed: int):
    image, target = _sample(60, 100)
    gen = torch.Generator().manual_seed(seed)
    t = RandomResizeCrop(64, scale_range=(0.5, 2.0), generator=gen)
    out_image, out = t(image, target)
    h, w = out_image.shape[1:]
    assert max(h, w) <= 64 and out["masks"].shape[1:] == (h, w)
    _check_types(out)
    # Nearest-neighbour masks sit within one pixel of the bilinearly scaled boxes ...
    assert torch.allclose(out["boxes"], _mask_boxes(out["masks"]), atol=1.0)
    # ... and on the same grid as the image.
    drawn = out_image[0] > 0.5
    union = out["masks"].amax(0).bool() if len(out["masks"]) else torch.zeros_like(drawn)
    assert (drawn ^ union).float().mean() < 0.05


def test_random_resize_crop_output_not_padded_and_long_side_bounded():
    image, target = _sample(60, 100)
    gen = torch.Generator().manual_seed(0)
    t = RandomResizeCrop(40, scale_range=(0.1, 3.0), generator=gen)
    sizes = {tuple(t(image, target)[0].shape[1:]) for _ in range(20)}
    assert all(max(s) <= 40 for s in sizes) and any(s[0] != s[1] for s in sizes)


def test_same_generator_seed_same_output():
    image, target = _sample()
    a = RandomResizeCrop(48, generator=torch.Generator().manual_seed(7))(image, target)
    b = RandomResizeCrop(48, generator=torch.Generator().manual_seed(7))(image, target)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])


def test_global_rng_is_the_default():
    image, target = _sample()
    t = Compose([RandomResizeCrop(48), RandomHorizontalFlip()])
    torch.manual_seed(3)
    a = t(image, target)
    torch.manual_seed(3)
    b = t(image, target)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])


def test_empty_target_and_no_masks():
    image = torch.rand(3, 20, 30)
    target = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64), "image_id": 1}
    t = Compose([RandomResizeCrop(16), RandomHorizontalFlip(p=1.0), ResizeLongSide(24)])
    out_image, out = t(image, target)
    assert out_image.dtype == torch.float32 and max(out_image.shape[1:]) == 24
    assert out["boxes"].shape == (0, 4) and out["labels"].shape == (0,) and out["image_id"] == 1


def test_uint8_images_supported():
    image = torch.full((3, 10, 20), 200, dtype=torch.uint8)
    out, _ = ResizeLongSide(40)(image, {"boxes": torch.zeros((0, 4))})
    assert out.dtype == torch.uint8 and out.shape == (3, 20, 40) and int(out.max()) == 200


@pytest.mark.parametrize(
    "make",
    [lambda: RandomResizeCrop(0), lambda: RandomResizeCrop(10, (2.0, 1.0)), lambda: RandomHorizontalFlip(1.5)],
    ids=["size", "scale-range", "p"],
)
def test_bad_arguments(make):
    with pytest.raises(ValueError):
        make()
