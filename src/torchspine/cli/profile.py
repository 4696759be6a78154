"""``torchspine profile``: parameters and multiply-adds of every variant next to the official numbers."""

from __future__ import annotations

import argparse
import fnmatch
import json
from dataclasses import asdict, dataclass

import torch
from torch import nn

from torchspine.models.classifier import create_classifier
from torchspine.registry import create_model, list_models, variant_info
from torchspine.utils.complexity import measure

# Published ImageNet classifiers (tensorflow/tpu MODEL_ZOO, 1001 classes, 224x224): params, "FLOPs" (= MACs).
CLASSIFICATION_REFERENCE: dict[str, tuple[float, float]] = {
    "spinenet49": (22.1e6, 3.5e9),
    "spinenet96": (36.5e6, 5.7e9),
    "spinenet143": (60.5e6, 9.1e9),
    "spinenet190": (127.1e6, 19.1e9),
}


# RetinaNet (91 classes, 9 anchors): backbone + head params and MACs of the official models, measured on the TF
# implementations (reference spinenet.md §1.9, §3) and matching the published 28.5M/85.4B, 43.0M/265.4B, ...;
# ResNet-50-FPN: tensorflow/tpu MODEL_ZOO. (name, image size, backbone overrides, params, MACs)
RETINANET_REFERENCE: list[tuple[str, int, dict, float, float]] = [
    ("spinenet49s", 640, {"endpoints_num_filters": 256}, 11_944_598, 33.74e9),
    ("spinenet49", 640, {}, 28_543_383, 85.28e9),
    ("spinenet49", 896, {}, 28_543_383, 167.15e9),
    ("spinenet96", 1024, {}, 42_974_871, 265.03e9),
    ("spinenet143", 1280, {}, 66_959_511, 523.3e9),
    ("spinenet190", 1280, {}, 163_637_351, 1881.7e9),
    ("spinenet49_mobile", 384, {}, 2_337_579, 0.981e9),
    ("spinenet49s_mobile", 384, {}, 1_030_653, 0.496e9),
    ("spinenet49xs_mobile", 256, {}, 872_711, 0.166e9),
    ("resnet50_fpn", 640, {}, 34.0e6, 97.0e9),
]


# Mask R-CNN (91 classes): published params / "FLOPs" (tensorflow/tpu MODEL_ZOO; 49S from the paper's Table 6),
# which count the box head on 1000 proposals and the mask head on 100 detections (see MaskRCNNCost).
MASK_RCNN_REFERENCE: list[tuple[str, int, float, float]] = [
    ("spinenet49s", 640, 13.9e6, 60.2e9),
    ("spinenet49", 640, 40.8e6, 215.7e9),
    ("spinenet96", 1024, 55.2e6, 314.6e9),
    ("spinenet143", 1280, 79.2e6, 498.4e9),
    ("spinenet190", 1536, 168.2e6, 1685.7e9),
]


class _BackboneAndHead(nn.Module):
    """Backbone + detection head up to the raw outputs: what the paper's FLOPs count (no NMS)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = model.backbone, model.head

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.head.forward_levels(list(self.backbone(x).values()))


def _retinanet(name: str, overrides: dict) -> nn.Module:
    from torchspine.models.detection.retinanet import RETINANET_DEFAULTS, build_retinanet

    backbone = create_model(name, **overrides) if overrides else name
    return _BackboneAndHead(build_retinanet(backbone, num_classes=91, num_filters=RETINANET_DEFAULTS[name].num_filters))


# SpineNet-49S as released (256-d endpoints): exact params from the checkpoint; MACs "about 12.78B" (§1.9).
RELEASED_49S_PARAMS, RELEASED_49S_MACS = 9_472_959, 12.78e9


@dataclass(frozen=True)
class ProfileRow:
    task: str
    model: str
    image_size: int
    params: int
    macs: int
    reference_params: float | None
    reference_macs: float | None


def profile_rows(tasks: list[str], pattern: str = "*") -> list[ProfileRow]:
    """Measure every registered variant matching `pattern` for each task in `tasks`."""
    rows = []
    if "backbone" in tasks:
        for name in list_models(pattern):
            info = variant_info(name)
            c = measure(lambda n=name: create_model(n), (info.image_size, info.image_size))
            rows.append(ProfileRow("backbone", name, info.image_size, c.params, c.macs, info.params, info.macs))
            if name == "spinenet49s":
                # The released tensorflow/tpu 49S detector has 256-d endpoints (reference spinenet.md §1.9, §4.4).
                c = measure(lambda n=name: create_model(n, endpoints_num_filters=256), (info.image_size,) * 2)
                rows.append(
                    ProfileRow(
                        "backbone",
                        f"{name} (endpoints_num_filters=256)",
                        info.image_size,
                        c.params,
                        c.macs,
                        RELEASED_49S_PARAMS,
                        RELEASED_49S_MACS,
                    )
                )
    if "retinanet" in tasks:
        for name, size, overrides, ref_params, ref_macs in RETINANET_REFERENCE:
            if fnmatch.fnmatch(name, pattern):
                c = measure(lambda n=name, o=overrides: _retinanet(n, o), (size, size))
                label = name + "".join(f" ({k}={v})" for k, v in overrides.items())
                rows.append(ProfileRow("retinanet", label, size, c.params, c.macs, ref_params, ref_macs))
    if "maskrcnn" in tasks:
        from torchspine.models.detection.mask_rcnn import MaskRCNNCost, build_mask_rcnn

        for name, size, ref_params, ref_macs in MASK_RCNN_REFERENCE:
            if fnmatch.fnmatch(name, pattern):
                c = measure(lambda n=name: MaskRCNNCost(build_mask_rcnn(n)), (size, size))
                rows.append(ProfileRow("maskrcnn", name, size, c.params, c.macs, ref_params, ref_macs))
    if "classification" in tasks:
        for name, (ref_params, ref_macs) in CLASSIFICATION_REFERENCE.items():
            if name in list_models(pattern):
                c = measure(lambda n=name: create_classifier(n, num_classes=1001), (224, 224))
                rows.append(ProfileRow("classification", name, 224, c.params, c.macs, ref_params, ref_macs))
    return rows


def _pct(value: float, ref: float | None) -> str:
    return f"{(value / ref - 1) * 100:+.2f}%" if ref else "-"


def format_table(rows: list[ProfileRow]) -> str:
    width = max([len("model")] + [len(r.model) for r in rows])
    header = (
        f"{'task':<15} {'model':<{width}} {'size':>5} {'params':>13} {'official':>13} {'diff':>8} "
        f"{'GMACs':>9} {'official':>9} {'diff':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        ref_p = f"{r.reference_params:,.0f}" if r.reference_params else "-"
        ref_m = f"{r.reference_macs / 1e9:.2f}" if r.reference_macs else "-"
        lines.append(
            f"{r.task:<15} {r.model:<{width}} {r.image_size:>5} {r.params:>13,} {ref_p:>13} "
            f"{_pct(r.params, r.reference_params):>8} {r.macs / 1e9:>9.2f} {ref_m:>9} "
            f"{_pct(r.macs, r.reference_macs):>8}"
        )
    lines.append("")
    lines.append(
        "MACs: multiply-adds of convolutions and linear layers (torch.utils.flop_counter / 2), one image, "
        "eval mode.\nparams: trainable parameters. official: the TF implementations' measured counts "
        "(backbones, RetinaNet with\n91 classes) and the published model-zoo numbers (classification with 1001 "
        "classes, ResNet-50-FPN, Mask R-CNN:\nbox head on 1000 proposals, mask head on 100 detections)."
    )
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="params and MACs of every variant vs. the official numbers")
    p.add_argument("--task", choices=["backbone", "classification", "retinanet", "maskrcnn", "all"], default="all")
    p.add_argument("--model", default="*", help="shell-style filter on variant names")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    tasks = ["backbone", "classification", "retinanet", "maskrcnn"] if args.task == "all" else [args.task]
    rows = profile_rows(tasks, args.model)
    if not rows:
        raise ValueError(f"no variant matches {args.model!r}; see `torchspine list`")
    if args.format == "json":
        print(json.dumps([asdict(r) for r in rows], indent=1))
    else:
        print(format_table(rows))
    return 0
