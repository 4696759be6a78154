"""Drawing detections: what is drawn where, in which colour, with which label, and PNG round trips."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import torchspine.visualize as visualize
from torchspine.visualize import category_color, draw_detections, save_png

NAMES = {1: "circle", 2: "square"}


def _image(height: int = 60, width: int = 80) -> torch.Tensor:
    return torch.full((3, height, width), 40, dtype=torch.uint8)


def _output(boxes, labels, scores, masks=None) -> dict[str, torch.Tensor]:
    output = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }
    if masks is not None:
        output["masks"] = masks
    return output


def _pixel(image: torch.Tensor, y: int, x: int) -> tuple[int, ...]:
    return tuple(image[:, y, x].tolist())


@pytest.fixture
def recorded_labels(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Capture the label texts handed to torchvision's box drawer (rendered text cannot be read back)."""
    calls: list[list[str]] = []
    real = visualize.draw_bounding_boxes

    def spy(image, boxes, **kwargs):
        calls.append(kwargs["labels"])
        return real(image, boxes, **kwargs)

    monkeypatch.setattr(visualize, "draw_bounding_boxes", spy)
    return calls


def test_zero_detections_return_an_unchanged_copy():
    image = _image()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchvision warns when asked to draw zero boxes; we must not ask
        drawn = draw_detections(image, _output([], [], []))
    assert drawn.dtype == torch.uint8 and torch.equal(drawn, image) and drawn.data_ptr() != image.data_ptr()


def test_boxes_below_the_threshold_are_not_drawn(recorded_labels: list[list[str]]):
    image = _image()
    drawn = draw_detections(image, _output([[10, 10, 50, 40]], [1], [0.29]), score_threshold=0.3)
    assert torch.equal(drawn, image) and recorded_labels == []


def test_box_outline_has_the_category_colour_and_the_rest_is_untouched(recorded_labels: list[list[str]]):
    image = _image()
    output = _output([[10, 20, 70, 50], [0, 0, 5, 5]], [2, 7], [0.87, 0.5])
    drawn = draw_detections(image, output, category_names=NAMES)
    assert recorded_labels == [["7 0.50", "square 0.87"]]  # ascending score; unnamed ids shown as numbers
    assert _pixel(drawn, 50, 40) == category_color(2)  # bottom edge of the first box
    assert _pixel(drawn, 35, 70) == category_color(2)  # right edge
    assert _pixel(drawn, 55, 75) == (40, 40, 40)  # outside every box
    assert torch.equal(image, _image())  # the input is not modified


def test_masks_are_blended_in_the_category_colour():
    masks = torch.zeros(1, 1, 60, 80)
    masks[0, 0, 25:45, 20:60] = 0.9
    masks[0, 0, 0:10, 0:10] = 0.4  # below mask_threshold
    drawn = draw_detections(_image(), _output([[20, 25, 60, 45]], [1], [0.9], masks), mask_threshold=0.5)
    inside = np.array(_pixel(drawn, 42, 40))  # below the label, which sits in the top-left corner
    expected = 0.45 * np.array(category_color(1)) + 0.55 * 40
    np.testing.assert_allclose(inside, expected, atol=1)
    assert _pixel(drawn, 5, 5) == (40, 40, 40)


def test_mask_size_must_match_the_image():
    output = _output([[1, 1, 5, 5]], [1], [0.9], torch.ones(1, 1, 30, 40))
    with pytest.raises(ValueError, match="masks are"):
        draw_detections(_image(), output)


def test_colours_are_stable_and_distinct():
    assert category_color(3) == category_color(3)
    colors = [category_color(i) for i in range(1, 92)]
    assert all(0 <= c <= 255 for rgb in colors for c in rgb)
    assert len(set(colors)) == len(colors)
    # The same category gets the same colour in different images.
    first = draw_detections(_image(), _output([[10, 10, 30, 30]], [5], [0.9]))
    second = draw_detections(_image(80, 100), _output([[40, 40, 70, 70]], [5], [0.6]))
    assert _pixel(first, 30, 20) == _pixel(second, 70, 55) == category_color(5)


def test_float_images_are_rejected():
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(torch.zeros(3, 8, 8), _output([], [], []))


def test_save_png_round_trips(tmp_path: Path):
    image = torch.randint(0, 256, (3, 7, 11), dtype=torch.uint8)
    path = save_png(image, tmp_path / "sub" / "out.png")
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.mode == "RGB"
        assert torch.equal(torch.from_numpy(np.array(saved)).permute(2, 0, 1), image)
