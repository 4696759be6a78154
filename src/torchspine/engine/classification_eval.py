"""Top-1 / top-5 accuracy of a classifier over a data set (the paper's ImageNet metrics, Du et al. 2020 Table 4).

Kept apart from `torchspine.engine.evaluation` (the pycocotools module): classification needs no COCO machinery.
The result has the same ``{kind: {name: value}}`` shape as the COCO metrics, as fractions in ``[0, 1]``, so the
training hooks, metrics.jsonl (``cls/top1``, ``cls/top5``) and `format_metrics` handle both tasks alike.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from torchspine.data.batching import list_collate
from torchspine.data.image_io import SkipUnreadable, collate_readable
from torchspine.engine.distributed import gather_to_all, shard_dataset
from torchspine.errors import UsageError

__all__ = ["CLS_METRIC_NAMES", "evaluate_classifier"]

logger = logging.getLogger(__name__)

CLS_METRIC_NAMES = ("top1", "top5")


def evaluate_classifier(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = True,
    num_workers: int = 0,
    distributed: bool = False,
    skip_bad: bool = False,
) -> dict[str, dict[str, float]]:
    """Run `model` over `dataset` and count correct top-1 and top-k predictions.

    With ``distributed=True`` in a ``torch.distributed`` process group, each process classifies every
    ``world_size``-th image and the counts are summed, so every process returns the whole set's accuracy.

    Args:
        model: ``model(list_of_images)`` returns logits ``(N, K)`` in eval mode
            (`torchspine.models.classifier_train.TrainableClassifier`). It is moved to `device`, run in eval mode
            under ``torch.inference_mode()`` and put back in its previous mode.
        dataset: yields ``(image, target)`` with ``target["labels"]`` the class index (the
            `ImageFolderClassification` contract), e.g. with `eval_transform` so all images have one size.
        batch_size: images per forward pass.
        device: where the model runs.
        progress: show a tqdm progress bar.
        num_workers: ``DataLoader`` worker processes.
        distributed: share the images out among the processes of the default process group.
        skip_bad: leave out images that cannot be read (the dataset raises `torchspine.data.image_io.ImageError`
            for them, i.e. it was built with ``skip_bad=False``), each logged with its reason, instead of stopping.

    Returns:
        ``{"cls": {"top1": ..., "top5": ...}}``, fractions of the data set; "top5" counts the top ``min(5, K)``
        classes (with fewer than 5 classes it is trivially 1).
    """
    num_images = len(dataset)  # type: ignore[arg-type]
    if num_images == 0:
        raise UsageError("the dataset is empty: nothing to evaluate")
    if distributed:
        dataset = shard_dataset(dataset)
        num_images = len(dataset)  # type: ignore[arg-type]
    loader = DataLoader(
        SkipUnreadable(dataset) if skip_bad else dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_readable if skip_bad else list_collate,
    )
    correct1 = correct5 = seen = 0
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.inference_mode(), tqdm(total=num_images, desc="eval", unit="img", disable=not progress) as bar:
            for batch in loader:
                images, targets = batch[0], batch[1]
                for reason in batch[2] if skip_bad else ():
                    logger.warning("skipping unreadable image (left out of the evaluation): %s", reason)
                    bar.update(1)
                if not images:
                    continue
                logits = model([image.to(device) for image in images])
                labels = torch.stack([t["labels"].reshape(()) for t in targets]).to(logits.device)
                top = logits.topk(min(5, logits.shape[1]), dim=1).indices
                hits = top == labels[:, None]
                correct1 += int(hits[:, 0].sum())
                correct5 += int(hits.any(dim=1).sum())
                seen += len(targets)
                bar.update(len(targets))
    finally:
        model.train(was_training)
    if distributed:
        counts = gather_to_all((correct1, correct5, seen))
        correct1, correct5, seen = (sum(column) for column in zip(*counts, strict=True))
    if seen == 0:
        raise UsageError(f"none of the {len(dataset)} image(s) could be read: nothing to evaluate")  # type: ignore[arg-type]
    return {"cls": {"top1": correct1 / seen, "top5": correct5 / seen}}
