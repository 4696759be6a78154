"""RoI pooling over a backbone's named feature maps, for torchvision's two-stage detectors.

torchvision's ``FasterRCNN`` / ``MaskRCNN`` default to ``MultiScaleRoIAlign(["0", "1", "2", "3"])``, which fits its
ResNet-FPN (keys ``"0".."3"``, ``"pool"``) and silently keeps only those keys of the feature dict; with a SpineNet
(keys ``"p3".."p7"``) nothing matches and the first forward fails with an opaque ``IndexError``. The pooler must
name the backbone's levels, which its static ``feature_info`` gives.
"""

from __future__ import annotations

from torch import nn
from torchvision.ops import MultiScaleRoIAlign

__all__ = ["multiscale_roi_align"]


def multiscale_roi_align(backbone: nn.Module, output_size: int = 7, sampling_ratio: int = 2) -> MultiScaleRoIAlign:
    """torchvision's ``MultiScaleRoIAlign`` over every feature map of `backbone` (``feature_info`` keys).

    Use it as ``box_roi_pool`` (7x7) and ``mask_roi_pool`` (14x14) of torchvision's ``FasterRCNN`` / ``MaskRCNN``
    on a SpineNet. RetinaNet and FCOS need nothing: they use every feature map in order.
    """
    return MultiScaleRoIAlign(
        [f.key for f in backbone.feature_info], output_size=output_size, sampling_ratio=sampling_ratio
    )
