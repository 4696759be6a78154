"""Anchors and box coding as in the official SpineNet RetinaNet (not torchvision's conventions).

Model Garden ``official/vision/ops/anchor.py`` and tensorflow/tpu ``dataloader/anchor.py`` (Apache-2.0): at level L
(stride ``2**L``) and every location, anchors are centred at ``stride / 2 + k * stride``, have the base size
``anchor_size * stride * 2**(s / num_scales)`` for each intermediate scale s, and for aspect ratio r width
``base * sqrt(r)`` and height ``base / sqrt(r)``; sizes are not rounded. Within a location the order is scale-major,
then aspect ratio, matching the predictor channels ``anchor * K + k``. torchvision's ``AnchorGenerator`` differs in
every one of these points (centres at ``k * stride``, rounded sizes, ratio = height / width, ratio-major order).

Boxes are encoded as ``(ty, tx, th, tw)`` (Faster R-CNN style, unit weights) in that order, clipped at
``log(1000 / 16)`` on decoding, as the official box coders; torchvision's order is ``(dx, dy, dw, dh)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList


def feature_levels(backbone: nn.Module) -> tuple[int, ...]:
    """The pyramid levels of a detection backbone, from its static ``feature_info`` (consecutive, ascending).

    Anchors, head levels and padding divisibility follow these, so the detectors work with any level range.
    """
    levels = tuple(int(f.level) for f in backbone.feature_info)
    if not levels or levels != tuple(range(levels[0], levels[0] + len(levels))):
        raise ValueError(f"detection backbones need consecutive ascending feature levels, got {levels}")
    return levels


# torchspine's canonical aspect-ratio order (Model Garden's); converted tensorflow/tpu heads are permuted to it.
ASPECT_RATIOS = (0.5, 1.0, 2.0)


class TFAnchorGenerator(AnchorGenerator):
    """Official SpineNet anchors for levels ``min_level..max_level``, in torchvision's generator protocol.

    Subclasses torchvision's ``AnchorGenerator`` only because ``RetinaNet`` type-checks its argument; none of the
    parent's anchor logic is used.

    Args:
        min_level: lowest pyramid level.
        max_level: highest pyramid level.
        anchor_size: base anchor size in strides (3 for SpineNet-49S/49/96, 4 for 143/190).
        num_scales: intermediate scales per octave.
        aspect_ratios: width / height ratios, in the order of the head's anchor channels.
    """

    def __init__(
        self,
        min_level: int = 3,
        max_level: int = 7,
        anchor_size: float = 3.0,
        num_scales: int = 3,
        aspect_ratios: Sequence[float] = ASPECT_RATIOS,
    ) -> None:
        nn.Module.__init__(self)  # skip AnchorGenerator.__init__: its cell anchors follow torchvision's rules
        self.levels = tuple(range(min_level, max_level + 1))
        self.anchor_size = anchor_size
        self.num_scales = num_scales
        self.aspect_ratios = tuple(aspect_ratios)
        # Per level: (A, 4) offsets [x1, y1, x2, y2] around a centre, scale-major then aspect ratio.
        for level in self.levels:
            stride = 2**level
            offsets = []
            for s in range(num_scales):
                base = anchor_size * stride * 2 ** (s / num_scales)
                for ratio in self.aspect_ratios:
                    half_w, half_h = base * math.sqrt(ratio) / 2, base / math.sqrt(ratio) / 2
                    offsets.append([-half_w, -half_h, half_w, half_h])
            self.register_buffer(f"offsets_p{level}", torch.tensor(offsets, dtype=torch.float64), persistent=False)

    def num_anchors_per_location(self) -> list[int]:
        return [self.num_scales * len(self.aspect_ratios)] * len(self.levels)

    def grid_anchors(self, sizes: Sequence[tuple[int, int]], device: torch.device, dtype: torch.dtype) -> Tensor:
        """All anchors ``(sum_l H_l * W_l * A, 4)`` xyxy for feature maps of the given sizes (row-major, anchors
        innermost)."""
        per_level = []
        for level, (h, w) in zip(self.levels, sizes, strict=True):
            stride = 2**level
            ys = (torch.arange(h, device=device, dtype=torch.float64) + 0.5) * stride
            xs = (torch.arange(w, device=device, dtype=torch.float64) + 0.5) * stride
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
            offsets = getattr(self, f"offsets_p{level}").to(device)
            per_level.append((centres + offsets[None]).reshape(-1, 4))
        return torch.cat(per_level).to(dtype)

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        if len(feature_maps) != len(self.levels):
            raise ValueError(f"anchor generator has levels {self.levels}, got {len(feature_maps)} feature maps")
        anchors = self.grid_anchors(
            [tuple(f.shape[-2:]) for f in feature_maps], feature_maps[0].device, feature_maps[0].dtype
        )
        return [anchors for _ in range(image_list.tensors.shape[0])]


class TFBoxCoder(BoxCoder):
    """torchvision's ``BoxCoder`` (``log(1000/16)`` clip) with the official ``(ty, tx, th, tw)`` order.

    Args:
        weights: ``(wy, wx, wh, ww)`` code scales (1 for RPN / RetinaNet, ``(10, 10, 5, 5)`` for the Fast R-CNN head).
        encode_offset: added to box sizes and far corners when encoding. tensorflow/tpu's ``box_utils.encode_boxes``
            (Fast R-CNN targets) uses the legacy "+1" pixel convention, ``h = y2 - y1 + 1``.
        decode_offset: the same for decoding: tensorflow/tpu's ``box_utils.decode_boxes`` (RPN proposals and Fast
            R-CNN detections) uses ``h = y2 - y1 + 1`` and ``y2 = y1' + h' - 1``. Its RPN *targets* come from
            ``faster_rcnn_box_coder`` without the offset, so its RPN coder is ``encode_offset=0, decode_offset=1``.
    """

    _SWAP = [1, 0, 3, 2]  # (ty, tx, th, tw) <-> (tx, ty, tw, th)

    def __init__(
        self,
        weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
        *,
        encode_offset: float = 0.0,
        decode_offset: float = 0.0,
    ) -> None:
        wy, wx, wh, ww = weights
        super().__init__(weights=(wx, wy, ww, wh), bbox_xform_clip=math.log(1000.0 / 16))
        self.encode_offset, self.decode_offset = encode_offset, decode_offset

    def _grow(self, boxes: Tensor, offset: float) -> Tensor:
        return boxes if offset == 0.0 else boxes + boxes.new_tensor([0.0, 0.0, offset, offset])

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        grown = self._grow(reference_boxes, self.encode_offset), self._grow(proposals, self.encode_offset)
        return super().encode_single(*grown)[:, self._SWAP]

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        """Codes ``(N, 4 * K)`` (K boxes per reference, e.g. one per class) -> boxes ``(N, 4 * K)`` xyxy."""
        n, k = rel_codes.shape[0], rel_codes.shape[1] // 4  # explicit: reshape cannot infer -1 for zero boxes
        codes = rel_codes.reshape(n, k, 4)[:, :, self._SWAP].reshape(n, 4 * k)
        decoded = super().decode_single(codes, self._grow(boxes, self.decode_offset))
        return self._grow(decoded.reshape(n, k, 4), -self.decode_offset).reshape(n, 4 * k)
