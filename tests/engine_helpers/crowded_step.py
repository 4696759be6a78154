"""One RetinaNet training step on two 128 px images, one with N ground-truth boxes; prints the peak RSS in MiB.

Run as a fresh process per measurement (``python crowded_step.py N [torchvision]``) so peaks do not mix. With
``torchvision`` the step uses torchvision's own matching (one full IoU matrix), for comparison.
"""

from __future__ import annotations

import resource
import sys

import torch
from torchvision.models.detection import RetinaNet

from torchspine.models.detection.retinanet import build_retinanet


def main() -> None:
    num_boxes = int(sys.argv[1])
    torch.manual_seed(0)
    model = build_retinanet("test_spinenet", num_classes=3, image_size=128)
    if len(sys.argv) > 2 and sys.argv[2] == "torchvision":
        model.compute_loss = RetinaNet.compute_loss.__get__(model)
    xy = torch.rand(num_boxes, 2) * 100
    boxes = torch.cat([xy, xy + 4 + torch.rand(num_boxes, 2) * 20], dim=1)
    crowded = {"boxes": boxes, "labels": torch.randint(1, 3, (num_boxes,))}
    single = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]]), "labels": torch.tensor([1])}
    # Two images: BatchNorm needs more than one value per channel at level 7 (1x1 at 128 px).
    losses = model([torch.rand(3, 128, 128), torch.rand(3, 128, 128)], [crowded, single])
    sum(losses.values()).backward()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


if __name__ == "__main__":
    main()
