"""The table of ``torchspine profile``: parameters and multiply-adds of every variant next to the official numbers."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch
from torch import nn

from torchspine.models.classifier import create_classifier
from torchspine.registry import create_model, list_models, variant_info
from torchspine.utils.complexity import measure
from torchspine.variants import BACKBONES

# Extra RetinaNet rows besides each variant at its paper size (name, image size, backbone overrides, params, MACs):
# SpineNet-49 at 896 (paper Table 2) and SpineNet-49S as released (256-d endpoints; the table's 49S RetinaNet
# reference is that released model's). The per-variant references are in `torchspine.variants`.
EXTRA_RETINANET_ROWS: list[tuple[str, int, dict, float, float]] = [
    ("spinenet49", 896, {}, 28_543_383, 167.15e9),
]


class _BackboneAndHead(nn.Module):
    """Backbone + detection head up to the raw outputs: what the paper's FLOPs count (no NMS)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = model.backbone, model.head

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.head.forward_levels(list(self.backbone(x).values()))


def _retinanet(name: str, overrides: dict) -> nn.Module:
    from torchspine.models.detection.retinanet import build_retinanet

    backbone = create_model(name, **overrides) if overrides else name
    d = BACKBONES[name].retinanet
    return _BackboneAndHead(
        build_retinanet(backbone, num_classes=91, num_filters=d.num_filters, anchor_size=d.anchor_size)
    )


def _retinanet_rows() -> list[tuple[str, int, dict, float, float]]:
    """Each backbone with a RetinaNet reference at its paper size, then `EXTRA_RETINANET_ROWS`."""
    rows = []
    for name, d in BACKBONES.items():
        if d.retinanet.params is not None and d.retinanet.macs is not None:
            # The 49S reference is the released model's, with 256-d endpoints (tensorflow/tpu SpineNet-49S checkpoint).
            overrides = {"endpoints_num_filters": 256} if name == "spinenet49s" else {}
            rows.append((name, d.image_size, overrides, d.retinanet.params, d.retinanet.macs))
    return rows + EXTRA_RETINANET_ROWS


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
                # The released tensorflow/tpu 49S detector has 256-d endpoints (its checkpoint's endpoint convs).
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
        for name, size, overrides, ref_params, ref_macs in _retinanet_rows():
            if fnmatch.fnmatch(name, pattern):
                c = measure(lambda n=name, o=overrides: _retinanet(n, o), (size, size))
                label = name + "".join(f" ({k}={v})" for k, v in overrides.items())
                rows.append(ProfileRow("retinanet", label, size, c.params, c.macs, ref_params, ref_macs))
    if "maskrcnn" in tasks:
        from torchspine.models.detection.mask_rcnn import MaskRCNNCost, build_mask_rcnn

        for name, d in BACKBONES.items():
            m = d.mask_rcnn
            if m.params is not None and fnmatch.fnmatch(name, pattern):
                size, ref_params, ref_macs = m.image_size, m.params, m.macs
                c = measure(lambda n=name: MaskRCNNCost(build_mask_rcnn(n)), (size, size))
                rows.append(ProfileRow("maskrcnn", name, size, c.params, c.macs, ref_params, ref_macs))
    if "classification" in tasks:
        for name, d in BACKBONES.items():
            if d.classification is not None and name in list_models(pattern):
                ref_params, ref_macs = d.classification.params, d.classification.macs
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
