"""A training-mode wrapper that gives `ImageClassifier` the detectors' ``model(images, targets)`` interface.

The Trainer and the evaluation loops speak torchvision's detection API: a list of float ``[0, 1]`` images in, a
dict of scalar losses out in train mode. `ImageClassifier` stays timm-like (a normalised ``(N, 3, H, W)`` tensor
in, logits out, so converted ImageNet weights and timm-style code use it unchanged); this wrapper adds what
training needs around it:

* the ImageNet mean/std normalisation, inside the model as in the detectors (the data pipeline serves ``[0, 1]``
  images for both tasks, and nothing normalises twice). tensorflow/tpu's ``resnet_preprocessing`` uses the same
  ``MEAN_RGB`` / ``STDDEV_RGB`` (on a 0-255 scale);
* the softmax cross-entropy with label smoothing of the official recipe (``label_smoothing: 0.1`` in
  ``spinenet*_classification.yaml``; ``F.cross_entropy``'s smoothing is the same ``(1 - e) * onehot + e / K``).

Its state dict is the classifier's under the ``classifier.`` prefix (the normalisation constants are not saved),
so ``load_weights(create_classifier(...), checkpoint, prefix="classifier.")`` recovers a plain classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchspine.models.classifier import ImageClassifier
from torchspine.models.detection.transform import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["TrainableClassifier"]


class TrainableClassifier(nn.Module):
    """``model(images)`` -> logits ``(N, K)``; in train mode ``model(images, targets)`` -> ``{"loss_cls": loss}``.

    Args:
        classifier: the network; it receives normalised ``(N, 3, H, W)`` batches.
        label_smoothing: the cross-entropy's label smoothing ``e`` in ``[0, 1)``.
        image_mean: RGB mean subtracted from the ``[0, 1]`` images.
        image_std: RGB std the images are divided by.
    """

    def __init__(
        self,
        classifier: ImageClassifier,
        *,
        label_smoothing: float = 0.0,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={label_smoothing}: expected a value in [0, 1)")
        self.classifier = classifier
        self.label_smoothing = label_smoothing
        self.register_buffer("image_mean", torch.tensor(image_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).view(1, -1, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes

    def forward(
        self, images: Sequence[Tensor] | Tensor, targets: Sequence[dict[str, Tensor]] | None = None
    ) -> Tensor | dict[str, Tensor]:
        """Args:
            images: ``(3, H, W)`` float ``[0, 1]`` images of one size (a list, or an ``(N, 3, H, W)`` tensor).
            targets: one dict per image with ``labels`` (a 0-d or ``(1,)`` int64 class index); required in train
                mode, ignored in eval mode.

        Returns:
            Train mode: ``{"loss_cls": mean cross-entropy}``; eval mode: logits ``(N, num_classes)``.
        """
        batch = images if isinstance(images, Tensor) else torch.stack(list(images))
        logits = self.classifier((batch - self.image_mean) / self.image_std)
        if not self.training:
            return logits
        if targets is None:
            raise ValueError("TrainableClassifier in train mode needs targets (one dict with 'labels' per image)")
        labels = torch.stack([t["labels"].reshape(()) for t in targets]).to(logits.device)
        # The loss is taken in float32 even under autocast: bf16 logits lose the small smoothing terms.
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        return {"loss_cls": loss}
