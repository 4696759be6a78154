"""Input transform of the SpineNet detectors: torchvision's, with the official resize-and-pad rule.

The official pipeline resizes the long side to the model's image size and zero-pads the normalised image to a
fixed square (Model Garden: a multiple of ``2**max_level``). Padding every image to the same square, instead of to
the largest image of the batch as torchvision does, makes an image's detections independent of what it is batched
with; torchvision's ``_skip_resize`` leaves training images at the size the data pipeline's scale jitter chose.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from torchspine.errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SquarePadTransform(GeneralizedRCNNTransform):
    """Normalise, resize the long side to `image_size` (eval only), and pad to ``image_size x image_size``.

    Args:
        image_size: the square input size (a multiple of `size_divisible`).
        size_divisible: larger training images are padded to a multiple of this (``2**max_level``).
        image_mean: RGB mean of the normalisation.
        image_std: RGB std of the normalisation.
    """

    def __init__(
        self,
        image_size: int,
        size_divisible: int = 128,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if image_size % size_divisible:
            raise UsageError(f"image_size={image_size} must be a multiple of {size_divisible} (2**max_level)")
        super().__init__(
            image_size, image_size, list(image_mean), list(image_std), size_divisible=size_divisible, _skip_resize=True
        )
        self.image_size = image_size

    def batch_images(self, images: list[Tensor], size_divisible: int = 128) -> Tensor:
        height = max([self.image_size] + [img.shape[-2] for img in images])
        width = max([self.image_size] + [img.shape[-1] for img in images])
        height = int(math.ceil(height / size_divisible) * size_divisible)
        width = int(math.ceil(width / size_divisible) * size_divisible)
        batched = images[0].new_zeros((len(images), images[0].shape[0], height, width))
        for i, img in enumerate(images):
            batched[i, :, : img.shape[-2], : img.shape[-1]].copy_(img)
        return batched
