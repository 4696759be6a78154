"""RoI pooling over a backbone's named feature maps, for torchvision's two-stage detectors.

torchvision's ``FasterRCNN`` / ``MaskRCNN`` default to ``MultiScaleRoIAlign(["0", "1", "2", "3"])``, which fits its
ResNet-FPN (keys ``"0".."3"``, ``"pool"``) and silently keeps only those keys of the feature dict; with a SpineNet
(keys ``"p3".."p7"``) nothing matches and the first forward fails with an opaque ``IndexError``. The pooler must
name the backbone's levels, which its static ``feature_info`` gives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign

__all__ = ["TPUMultiLevelRoIAlign", "multiscale_roi_align"]


def multiscale_roi_align(backbone: nn.Module, output_size: int = 7, sampling_ratio: int = 2) -> MultiScaleRoIAlign:
    """torchvision's ``MultiScaleRoIAlign`` over every feature map of `backbone` (``feature_info`` keys).

    Use it as ``box_roi_pool`` (7x7) and ``mask_roi_pool`` (14x14) of torchvision's ``FasterRCNN`` / ``MaskRCNN``
    on a SpineNet. RetinaNet and FCOS need nothing: they use every feature map in order.
    """
    return MultiScaleRoIAlign(
        [f.key for f in backbone.feature_info], output_size=output_size, sampling_ratio=sampling_ratio
    )


class TPUMultiLevelRoIAlign(MultiScaleRoIAlign):
    """tensorflow/tpu's RoIAlign (``ops/spatial_transform_ops.py`` ``multilevel_crop_and_resize``), in
    torchvision's ``MultiScaleRoIAlign`` protocol.

    What the official Mask R-CNN does, and where it differs from torchvision's ``MultiScaleRoIAlign``:

    * level ``floor(log2(sqrt(h * w) / 224)) + 4`` clipped to the feature levels (torchvision adds 1e-6);
    * **one** bilinear sample per output bin, at the bin centre ``y1 / s + (i + 0.5) * h / (s * out)`` (no half-pixel
      shift, no minimum RoI size; torchvision: ``sampling_ratio`` samples and, unaligned, RoIs of at least 1 cell);
    * sample positions outside the map: the lower neighbour is ``clip(floor(y), 0, H - 1)`` and the upper one
      ``min(y0 + 1, H - 1)`` with the *unclipped* fractional weight ``y - y0``, so positions past the last row read
      the last row and positions above the first row extrapolate linearly (torchvision reads zeros beyond ``H``).
      ``H - 1`` is the official ``H_min / 2**(level - min_level) - 1``.

    Subclasses torchvision's ``MultiScaleRoIAlign`` only because ``MaskRCNN`` type-checks its poolers; none of the
    parent's logic is used.

    Args:
        featmap_names: the feature keys, lowest level first (consecutive levels).
        levels: their pyramid levels.
        output_size: bins per side (7 for the box head, 14 for the mask head).
    """

    def __init__(self, featmap_names: Sequence[str], levels: Sequence[int], output_size: int) -> None:
        nn.Module.__init__(self)  # skip MultiScaleRoIAlign.__init__: its level mapper follows torchvision's rules
        if len(featmap_names) != len(levels) or list(levels) != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"need one consecutive ascending level per feature map, got {list(levels)}")
        self.featmap_names = list(featmap_names)
        self.levels = list(levels)
        self.output_size = output_size

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        """``(sum_i R_i, C, out, out)`` features of `boxes` (per image, ``[x1, y1, x2, y2]`` input pixels)."""
        features = [x[name] for name in self.featmap_names]
        rois = torch.cat(boxes)
        batch = torch.cat([torch.full((len(b),), i, dtype=torch.long, device=rois.device) for i, b in enumerate(boxes)])
        x1, y1, x2, y2 = rois.unbind(1)
        w, h = x2 - x1, y2 - y1
        level = torch.floor(torch.log(torch.sqrt(h * w) / 224.0) / math.log(2.0)) + 4.0
        level = level.nan_to_num(float(self.levels[0])).clamp(self.levels[0], self.levels[-1]).long()
        first_h, first_w = features[0].shape[-2:]
        c = features[0].shape[1]
        out = rois.new_zeros((len(rois), c, self.output_size, self.output_size), dtype=features[0].dtype)
        for index, (lvl, feat) in enumerate(zip(self.levels, features, strict=True)):
            keep = torch.nonzero(level == lvl).squeeze(1)
            if keep.numel() == 0:
                continue
            scale = float(2**lvl)
            bound_y, bound_x = first_h / 2**index - 1, first_w / 2**index - 1
            wy, iy = self._grid(y1[keep] / scale, h[keep] / scale, bound_y)
            wx, ix = self._grid(x1[keep] / scale, w[keep] / scale, bound_x)
            # Gather the 2x2 neighbours of every sample point: (R, out, 2, out, 2, C), then weight and sum.
            flat = feat.permute(0, 2, 3, 1).reshape(-1, c)  # NHWC rows, as the official gather
            rows = (batch[keep] * feat.shape[-2])[:, None, None] + iy  # (R, out, 2)
            index_ = (rows * feat.shape[-1])[:, :, :, None, None] + ix[:, None, None, :, :]
            values = flat[index_.reshape(-1)].view(*index_.shape, c)
            weights = wy[:, :, :, None, None] * wx[:, None, None, :, :]
            pooled = (values * weights[..., None].to(values.dtype)).sum(dim=(2, 4))  # (R, out, out, C)
            out[keep] = pooled.permute(0, 3, 1, 2)
        return out

    def extra_repr(self) -> str:  # the parent's reads attributes this class does not have
        return f"featmap_names={self.featmap_names}, levels={self.levels}, output_size={self.output_size}"

    def _grid(self, start: Tensor, size: Tensor, bound: float) -> tuple[Tensor, Tensor]:
        """Bilinear weights ``(R, out, 2)`` and neighbour indices ``(R, out, 2)`` of the bin centres along one axis."""
        steps = torch.arange(self.output_size, device=start.device, dtype=start.dtype) + 0.5
        pos = start[:, None] + steps[None] * size[:, None] / self.output_size
        low = torch.floor(pos).clamp(min=0.0).clamp(max=bound)
        high = torch.clamp(low + 1.0, max=bound)
        frac = pos - low
        weights = torch.stack([1.0 - frac, frac], dim=-1)
        return weights, torch.stack([low, high], dim=-1).long()
