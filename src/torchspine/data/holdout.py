"""A seeded held-out split of a training set: the search proxy's reward images.

The SpineNet search scores each sampled architecture by its AP on 7,392 images held out from COCO train2017 (Du et
al., CVPR 2020, arXiv 1912.05027 §4.2; the same protocol as NAS-FPN, arXiv 1904.07392), so val2017 never guides the
search.
The split is a pure function of the sorted image ids and a seed: the same seed and annotation file always hold out
the same images, on any machine and in any process, which every worker of a distributed search relies on.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from torchspine.errors import UsageError


def holdout_split(image_ids: Iterable[int], count: int, seed: int) -> tuple[list[int], list[int]]:
    """Split `image_ids` into ``(train_ids, held_out_ids)`` with `count` held-out ids.

    The sorted ids are shuffled with ``random.Random(seed)``; the first `count` are held out. Both lists come back
    in ascending id order.

    Raises:
        UsageError: `count` is not in ``1..len(image_ids) - 1`` (training or evaluation would be empty).
    """
    ids = sorted(set(image_ids))
    if not 0 < count < len(ids):
        raise UsageError(
            f"data.holdout_images={count}: must be between 1 and {len(ids) - 1} for a training split of "
            f"{len(ids)} image(s) (at least one image must stay for training)"
        )
    shuffled = list(ids)
    random.Random(seed).shuffle(shuffled)
    held = set(shuffled[:count])
    return [i for i in ids if i not in held], sorted(held)
