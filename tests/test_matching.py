"""Bounded-memory anchor matching: the same matches as torchvision's ``Matcher``, and flat memory on crowded images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models.detection._utils import Matcher
from torchvision.ops import box_iou

from torchspine.models.detection.matching import match_anchors


def _boxes(n: int, generator: torch.Generator, grid: bool = False) -> torch.Tensor:
    if grid:  # integer corners on a coarse grid: many exact IoU ties between boxes and between anchors
        xy = torch.randint(0, 8, (n, 2), generator=generator).float() * 8
        wh = torch.randint(1, 4, (n, 2), generator=generator).float() * 8
    else:
        xy = torch.rand(n, 2, generator=generator) * 100
        wh = 2 + torch.rand(n, 2, generator=generator) * 40
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("grid", [False, True], ids=["random", "ties"])
@pytest.mark.parametrize(("low", "high", "low_quality"), [(0.5, 0.5, True), (0.4, 0.5, True), (0.4, 0.5, False)])
def test_chunked_matching_equals_torchvision(grid, low, high, low_quality):
    generator = torch.Generator().manual_seed(0)
    matcher = Matcher(high, low, allow_low_quality_matches=low_quality)
    for trial in range(5):
        boxes = _boxes(37 + trial, generator, grid)
        if grid:
            boxes = torch.cat([boxes, boxes[:5]])  # duplicate boxes: the first index must win, as in max(dim=0)
        anchors = _boxes(300, generator, grid)
        expected = matcher(box_iou(boxes, anchors))
        for max_pairs in (1, 300, 7 * 300 + 5, 10**9):  # one box per chunk ... a single chunk
            got = match_anchors(boxes, anchors, matcher, max_pairs=max_pairs)
            assert torch.equal(got, expected), (trial, max_pairs)
        assert (expected >= 0).any() and (expected == Matcher.BELOW_LOW_THRESHOLD).any()


def test_no_boxes_leaves_every_anchor_unmatched():
    anchors = _boxes(10, torch.Generator().manual_seed(0))
    got = match_anchors(torch.zeros(0, 4), anchors, Matcher(0.5, 0.5, allow_low_quality_matches=True))
    assert got.tolist() == [Matcher.BELOW_LOW_THRESHOLD] * 10


def _peak_mib(num_boxes: int) -> float:
    script = Path(__file__).parent / "engine_helpers" / "crowded_step.py"
    out = subprocess.run(
        [sys.executable, str(script), str(num_boxes)], capture_output=True, text=True, check=True, timeout=600
    )
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_an_image_with_20000_boxes_trains_in_bounded_memory():
    # Measured: 755 MiB peak with 10 boxes, 832 MiB with 20,000 (torchvision's full IoU matrix: 2,844 MiB).
    few, crowded = _peak_mib(10), _peak_mib(20_000)
    assert crowded < 1.25 * few, (few, crowded)
