"""Per-backbone defaults and reference numbers: the one table the registry, builders, experiments and profile read.

For every backbone (the registered SpineNets and the ResNet-FPN baselines): its architecture, the official recipe's
activation, numerics and detection resolution, the paper's RetinaNet and Mask R-CNN head settings, and the official
implementations' parameter and multiply-add counts. Pure data (no torch), like `torchspine.specs`.

Sources: the paper (Du et al., 2020, §5.1, Tables 2-6), the tensorflow/tpu ``configs/spinenet/*.yaml`` and
``MODEL_ZOO.md``, Model Garden's SpineNet(-Mobile) experiment YAMLs; the backbone and RetinaNet parameter and MAC
counts were measured on the official TF implementations (``tests/test_spinenet.py`` checks the backbones' parameter
counts; ``torchspine profile`` compares every row).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from torchspine.errors import UsageError
from torchspine.specs import SPINENET_MOBILE_BLOCKS, SpineNetCfg

__all__ = [
    "BACKBONES",
    "BackboneDefaults",
    "ClassificationReference",
    "MaskRCNNDefaults",
    "RetinaNetDefaults",
    "backbone_defaults",
]


@dataclass(frozen=True)
class RetinaNetDefaults:
    """The paper's RetinaNet head for a backbone, and the official model's size (91 classes, 9 anchors).

    Attributes:
        num_convs: head tower depth.
        num_filters: head tower width.
        anchor_size: anchor base size in strides.
        separable: separable tower convs (the mobile models).
        params: official backbone + head parameters (None where not measured).
        macs: official backbone + head multiply-adds at the backbone's `BackboneDefaults.image_size`.
    """

    num_convs: int = 4
    num_filters: int = 256
    anchor_size: float = 3.0
    separable: bool = False
    params: float | None = None
    macs: float | None = None


@dataclass(frozen=True)
class MaskRCNNDefaults:
    """The paper's Mask R-CNN settings for a backbone (tensorflow/tpu ``spinenet*_mrcnn.yaml``).

    Attributes:
        image_size: detection input size (SpineNet-190 trains Mask R-CNN at 1536, RetinaNet at 1280).
        head_dim: width of the RPN, box-head and mask-head convs.
        num_convs: convs of the box and mask heads.
        fc_dim: width of the box head's FC.
        anchor_size: RPN anchor size in strides.
        rpn_num_convs: convs of the RPN head.
        params: published model-zoo parameters (91 classes).
        macs: published "FLOPs" (multiply-adds; box head on 1000 proposals, mask head on 100 detections).
    """

    image_size: int
    head_dim: int = 256
    num_convs: int = 4
    fc_dim: int = 1024
    anchor_size: float = 3.0
    rpn_num_convs: int = 1
    params: float | None = None
    macs: float | None = None


@dataclass(frozen=True)
class ClassificationReference:
    """Published ImageNet classifier (tensorflow/tpu MODEL_ZOO, 1001 classes, 224x224): params and MACs."""

    params: float
    macs: float


@dataclass(frozen=True)
class BackboneDefaults:
    """A backbone's defaults and reference numbers.

    Attributes:
        cfg: topology and widths (None for the ResNet-FPN baselines, which torchvision builds).
        act: default activation (the official recipe's).
        semantics: default numerics (the implementation that released weights for it).
        image_size: the paper's RetinaNet (detection) input size.
        params: official backbone trainable parameters (None where unknown).
        macs: official backbone multiply-adds at `image_size`, or None where unpublished.
        description: one line for ``torchspine list``.
        retinanet: RetinaNet head defaults and reference.
        mask_rcnn: Mask R-CNN defaults and reference.
        classification: ImageNet reference, where published.
    """

    cfg: SpineNetCfg | None
    act: str
    semantics: str
    image_size: int
    params: int | None
    macs: float | None
    description: str
    retinanet: RetinaNetDefaults
    mask_rcnn: MaskRCNNDefaults
    classification: ClassificationReference | None = None


def _mobile(endpoints: int, scale: float) -> SpineNetCfg:
    return SpineNetCfg(
        family="mobile", blocks=SPINENET_MOBILE_BLOCKS, endpoints_num_filters=endpoints, filter_size_scale=scale
    )


# NOTE: spinenet49s follows SCALING_MAP (128-channel endpoints). The released tensorflow/tpu SpineNet-49S detection
# checkpoint and the published 11.9M params / 33.8B FLOPs use 256: create_model("spinenet49s",
# endpoints_num_filters=256) builds that model; its RetinaNet reference below is that released model's.
BACKBONES: dict[str, BackboneDefaults] = {
    "spinenet49s": BackboneDefaults(
        SpineNetCfg(endpoints_num_filters=128, filter_size_scale=0.65),
        "swish",
        "tpu",
        640,
        9_089_215,
        12.33e9,
        "SpineNet-49 with widths x0.65",
        RetinaNetDefaults(num_filters=128, params=11_944_598, macs=33.74e9),
        MaskRCNNDefaults(640, head_dim=128, fc_dim=512, params=13.9e6, macs=60.2e9),
    ),
    "spinenet49": BackboneDefaults(
        SpineNetCfg(),
        "swish",
        "tpu",
        640,
        21_831_488,
        28.26e9,
        "the NAS-found SpineNet-49",
        RetinaNetDefaults(params=28_543_383, macs=85.28e9),
        MaskRCNNDefaults(640, params=40.8e6, macs=215.7e9),
        ClassificationReference(22.1e6, 3.5e9),
    ),
    "spinenet96": BackboneDefaults(
        SpineNetCfg(block_repeats=2),
        "swish",
        "tpu",
        1024,
        36_262_976,
        119.05e9,
        "SpineNet-49 with every block repeated twice",
        RetinaNetDefaults(params=42_974_871, macs=265.03e9),
        MaskRCNNDefaults(1024, params=55.2e6, macs=314.6e9),
        ClassificationReference(36.5e6, 5.7e9),
    ),
    "spinenet143": BackboneDefaults(
        SpineNetCfg(block_repeats=3, resample_alpha=1.0),
        "swish",
        "tpu",
        1280,
        60_247_616,
        295.26e9,
        "blocks x3, alpha 1.0",
        RetinaNetDefaults(anchor_size=4.0, params=66_959_511, macs=523.3e9),
        MaskRCNNDefaults(1280, params=79.2e6, macs=498.4e9),
        ClassificationReference(60.5e6, 9.1e9),
    ),
    "spinenet143l": BackboneDefaults(
        SpineNetCfg(block_repeats=3, resample_alpha=1.0, filter_size_scale=1.3),
        "swish",
        "tpu",
        1280,
        100_796_257,
        None,
        "SpineNet-143 with widths x1.3 (code only)",
        RetinaNetDefaults(anchor_size=4.0),
        MaskRCNNDefaults(1280),
    ),
    "spinenet190": BackboneDefaults(
        SpineNetCfg(endpoints_num_filters=512, filter_size_scale=1.3, resample_alpha=1.0, block_repeats=4),
        "swish",
        "tpu",
        1280,
        126_587_664,
        620.98e9,
        "blocks x4, widths x1.3, alpha 1.0, 512-d endpoints",
        RetinaNetDefaults(num_convs=7, num_filters=512, anchor_size=4.0, params=163_637_351, macs=1881.7e9),
        MaskRCNNDefaults(1536, head_dim=384, num_convs=7, anchor_size=5.0, params=168.2e6, macs=1685.7e9),
        ClassificationReference(127.1e6, 19.1e9),
    ),
    "spinenet49_mobile": BackboneDefaults(
        _mobile(48, 1.0),
        "hard_swish",
        "model_garden",
        384,
        2_268_708,
        0.785e9,
        "MBConv SpineNet-49 (Model Garden SpineNetMobile)",
        RetinaNetDefaults(num_filters=48, separable=True, params=2_337_579, macs=0.981e9),
        MaskRCNNDefaults(384),
    ),
    "spinenet49s_mobile": BackboneDefaults(
        _mobile(40, 0.65),
        "hard_swish",
        "model_garden",
        384,
        975_678,
        0.341e9,
        "MBConv SpineNet-49, widths x0.65",
        RetinaNetDefaults(num_filters=40, separable=True, params=1_030_653, macs=0.496e9),
        MaskRCNNDefaults(384),
    ),
    "spinenet49xs_mobile": BackboneDefaults(
        _mobile(24, 0.6),
        "swish",
        "model_garden",
        256,
        842_456,
        0.129e9,
        "MBConv SpineNet-49, widths x0.6",
        RetinaNetDefaults(num_filters=24, separable=True, params=872_711, macs=0.166e9),
        MaskRCNNDefaults(256),
    ),
    "test_spinenet": BackboneDefaults(
        SpineNetCfg(endpoints_num_filters=32, filter_size_scale=0.25, resample_alpha=0.5),
        "swish",
        "tpu",
        128,
        None,
        None,
        "tiny SpineNet-49 topology for tests",
        RetinaNetDefaults(num_convs=2, num_filters=32),
        MaskRCNNDefaults(128, head_dim=32, num_convs=1, fc_dim=64),
    ),
    "test_spinenet_mobile": BackboneDefaults(
        _mobile(16, 0.25),
        "swish",
        "model_garden",
        128,
        None,
        None,
        "tiny SpineNet-49 mobile topology for tests",
        RetinaNetDefaults(num_convs=2, num_filters=16, separable=True),
        MaskRCNNDefaults(128, head_dim=16, num_convs=1, fc_dim=64),
    ),
    # torchvision ResNet + FPN baselines of the paper's comparison (BatchNorm trained, P3-P7, 256 channels).
    "resnet50_fpn": BackboneDefaults(
        None,
        "relu",
        "tpu",
        640,
        None,
        None,
        "ResNet-50-FPN baseline (torchvision)",
        RetinaNetDefaults(params=34.0e6, macs=97.0e9),
        MaskRCNNDefaults(640),
    ),
    "resnet101_fpn": BackboneDefaults(
        None,
        "relu",
        "tpu",
        1024,
        None,
        None,
        "ResNet-101-FPN baseline (torchvision)",
        RetinaNetDefaults(),
        MaskRCNNDefaults(1024),
    ),
    "resnet152_fpn": BackboneDefaults(
        None,
        "relu",
        "tpu",
        1280,
        None,
        None,
        "ResNet-152-FPN baseline (torchvision)",
        RetinaNetDefaults(anchor_size=4.0),
        MaskRCNNDefaults(1280),
    ),
}


def backbone_defaults(name: str) -> BackboneDefaults:
    """The `BackboneDefaults` of `name` (``"custom"``: SpineNet-49's); unknown names raise with close matches."""
    if name == "custom":
        return BACKBONES["spinenet49"]
    if name not in BACKBONES:
        close = difflib.get_close_matches(name, list(BACKBONES), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown backbone {name!r}{hint} (available: {', '.join(BACKBONES)})")
    return BACKBONES[name]
