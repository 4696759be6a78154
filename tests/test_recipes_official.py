"""The recipe table: every official experiment against the official config files it transcribes (issue 13).

Each row of `TABLE` is one official value with the file and line it comes from (verbatim copies of the official
files are in ``tests/fixtures/official_recipes``, see its README). Three checks per experiment:

1. the cited line really says that value (so the table cannot drift from the files);
2. the resolved config (`get_experiment`) has it;
3. the built objects do what it says: the optimizer's parameter groups (LR at the official batch, L2 on kernels
   only, momentum), every BatchNorm module's eps/momentum, the DropPath rate of every scale-permuted block (the
   official formula ``rate * (i + 1) / N`` with each code base's own N), the RetinaNet head's depth/width and loss
   constants, the anchors, and the LR schedule (warm-up start and end, each decay boundary and level, the total).

Models are built on the ``meta`` device: no weights are initialised and nothing runs forward, so SpineNet-190
builds in about a second.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from torchspine.config import get_experiment, list_experiments
from torchspine.engine.build import build_model, build_optimizer, build_schedule
from torchspine.layers.drop import DropPath

FIXTURES = Path(__file__).parent / "fixtures" / "official_recipes"


@dataclass(frozen=True)
class Official:
    """One official value and where it is written: ``path:line`` under `FIXTURES` (``path:absent`` when the file
    has no such key and the default applies; ``paper:...`` for the paper), and what that line says (the whole line, or
    the clause of a long header comment)."""

    value: Any
    where: str
    text: str


def o(value: Any, where: str, text: str) -> Official:
    return Official(value, where, text)


# Field names: global_batch_size, total_steps, warmup_steps, decay_steps, lr (peak, at the official batch),
# lr_levels (the LR after each decay), warmup_lr (LR at step 0), momentum, l2, clip (None: off), bn_momentum /
# bn_eps (TF convention), sync_bn, act, drop_connect (None: off), image_size, scale_min / scale_max, anchor_size,
# num_scales, head_convs / head_filters, focal_alpha / focal_gamma / huber_delta / box_loss_weight, drop_path_blocks
# (the N of the stochastic-depth formula), amp, schedule_type, label_smoothing.
TABLE: dict[str, dict[str, Official]] = {
    "retinanet_spinenet49s_protocol_b": {
        "global_batch_size": o(256, "tpu/spinenet/spinenet49S_retinanet.yaml:9", "train_batch_size: 256"),
        "total_steps": o(162050, "tpu/spinenet/spinenet49S_retinanet.yaml:2", "total_steps 162050"),
        "decay_steps": o(
            (148160, 157420), "tpu/spinenet/spinenet49S_retinanet.yaml:2", "learning_rate_steps [148160, 157420]"
        ),
        "lr": o(0.28, "tpu/spinenet/spinenet49S_retinanet.yaml:12", "init_learning_rate: 0.28"),
        "lr_levels": o(
            (0.028, 0.0028), "tpu/spinenet/spinenet49S_retinanet.yaml:13", "learning_rate_levels: [0.028, 0.0028]"
        ),
        "act": o("relu", "tpu/spinenet/spinenet49S_retinanet.yaml:2", "activation 'relu'"),
        "drop_connect": o(
            None, "tpu/spinenet/spinenet49S_retinanet.yaml:2", "# - 39.7% mAP with init_drop_connect_rate null"
        ),
        "warmup_steps": o(2000, "tpu/spinenet/spinenet49S_retinanet.yaml:11", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "tpu/base_config.py:47", "'warmup_learning_rate': 0.0067,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(4e-05, "tpu/spinenet/spinenet49S_retinanet.yaml:15", "l2_weight_decay: 0.00004"),
        "clip": o(10.0, "tpu/spinenet/spinenet49S_retinanet.yaml:16", "gradient_clip_norm: 10.0"),
        "bn_momentum": o(0.997, "tpu/base_config.py:87", "'batch_norm_momentum': 0.997,"),
        "bn_eps": o(0.0001, "tpu/base_config.py:88", "'batch_norm_epsilon': 1e-4,"),
        "sync_bn": o(True, "tpu/spinenet/spinenet49S_retinanet.yaml:18", "use_sync_bn: true"),
        "image_size": o(640, "tpu/spinenet/spinenet49S_retinanet.yaml:28", "output_size: [640, 640]"),
        "scale_min": o(0.5, "tpu/spinenet/spinenet49S_retinanet.yaml:29", "aug_scale_min: 0.5"),
        "scale_max": o(2.0, "tpu/spinenet/spinenet49S_retinanet.yaml:30", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "tpu/spinenet/spinenet49S_retinanet.yaml:26", "anchor_size: 3.0"),
        "num_scales": o(3, "tpu/detection_config.py:50", "'num_scales': 3,"),
        "head_filters": o(128, "tpu/spinenet/spinenet49S_retinanet.yaml:24", "num_filters: 128"),
        "head_convs": o(4, "tpu/retinanet_config.py:45", "'num_convs': 4,"),
        "focal_alpha": o(0.25, "tpu/retinanet_config.py:51", "'focal_loss_alpha': 0.25,"),
        "focal_gamma": o(1.5, "tpu/retinanet_config.py:52", "'focal_loss_gamma': 1.5,"),
        "huber_delta": o(0.1, "tpu/retinanet_config.py:53", "'huber_loss_delta': 0.1,"),
        "box_loss_weight": o(50.0, "tpu/retinanet_config.py:54", "'box_loss_weight': 50,"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "retinanet_spinenet49s_protocol_c": {
        "global_batch_size": o(256, "tpu/spinenet/spinenet49S_retinanet.yaml:9", "train_batch_size: 256"),
        "total_steps": o(231500, "tpu/spinenet/spinenet49S_retinanet.yaml:8", "total_steps: 231500"),
        "decay_steps": o(
            (217610, 226870), "tpu/spinenet/spinenet49S_retinanet.yaml:14", "learning_rate_steps: [217610, 226870]"
        ),
        "lr": o(0.28, "tpu/spinenet/spinenet49S_retinanet.yaml:12", "init_learning_rate: 0.28"),
        "lr_levels": o(
            (0.028, 0.0028), "tpu/spinenet/spinenet49S_retinanet.yaml:13", "learning_rate_levels: [0.028, 0.0028]"
        ),
        "act": o("swish", "tpu/spinenet/spinenet49S_retinanet.yaml:19", "activation: 'swish'"),
        "drop_connect": o(0.2, "tpu/spinenet/spinenet49S_retinanet.yaml:22", "init_drop_connect_rate: 0.2"),
        "warmup_steps": o(2000, "tpu/spinenet/spinenet49S_retinanet.yaml:11", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "tpu/base_config.py:47", "'warmup_learning_rate': 0.0067,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(4e-05, "tpu/spinenet/spinenet49S_retinanet.yaml:15", "l2_weight_decay: 0.00004"),
        "clip": o(10.0, "tpu/spinenet/spinenet49S_retinanet.yaml:16", "gradient_clip_norm: 10.0"),
        "bn_momentum": o(0.997, "tpu/base_config.py:87", "'batch_norm_momentum': 0.997,"),
        "bn_eps": o(0.0001, "tpu/base_config.py:88", "'batch_norm_epsilon': 1e-4,"),
        "sync_bn": o(True, "tpu/spinenet/spinenet49S_retinanet.yaml:18", "use_sync_bn: true"),
        "image_size": o(640, "tpu/spinenet/spinenet49S_retinanet.yaml:28", "output_size: [640, 640]"),
        "scale_min": o(0.5, "tpu/spinenet/spinenet49S_retinanet.yaml:29", "aug_scale_min: 0.5"),
        "scale_max": o(2.0, "tpu/spinenet/spinenet49S_retinanet.yaml:30", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "tpu/spinenet/spinenet49S_retinanet.yaml:26", "anchor_size: 3.0"),
        "num_scales": o(3, "tpu/detection_config.py:50", "'num_scales': 3,"),
        "head_filters": o(128, "tpu/spinenet/spinenet49S_retinanet.yaml:24", "num_filters: 128"),
        "head_convs": o(4, "tpu/retinanet_config.py:45", "'num_convs': 4,"),
        "focal_alpha": o(0.25, "tpu/retinanet_config.py:51", "'focal_loss_alpha': 0.25,"),
        "focal_gamma": o(1.5, "tpu/retinanet_config.py:52", "'focal_loss_gamma': 1.5,"),
        "huber_delta": o(0.1, "tpu/retinanet_config.py:53", "'huber_loss_delta': 0.1,"),
        "box_loss_weight": o(50.0, "tpu/retinanet_config.py:54", "'box_loss_weight': 50,"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "retinanet_spinenet49_protocol_b": {
        "global_batch_size": o(256, "tpu/spinenet/spinenet49_retinanet.yaml:9", "train_batch_size: 256"),
        "total_steps": o(162050, "tpu/spinenet/spinenet49_retinanet.yaml:2", "total_steps 162050"),
        "decay_steps": o(
            (148160, 157420), "tpu/spinenet/spinenet49_retinanet.yaml:2", "learning_rate_steps [148160, 157420]"
        ),
        "lr": o(0.28, "tpu/spinenet/spinenet49_retinanet.yaml:12", "init_learning_rate: 0.28"),
        "lr_levels": o(
            (0.028, 0.0028), "tpu/spinenet/spinenet49_retinanet.yaml:13", "learning_rate_levels: [0.028, 0.0028]"
        ),
        "act": o("relu", "tpu/spinenet/spinenet49_retinanet.yaml:2", "activation 'relu'"),
        "drop_connect": o(
            None, "tpu/spinenet/spinenet49_retinanet.yaml:2", "# - 42.8% mAP with init_drop_connect_rate null"
        ),
        "warmup_steps": o(2000, "tpu/spinenet/spinenet49_retinanet.yaml:11", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "tpu/base_config.py:47", "'warmup_learning_rate': 0.0067,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(4e-05, "tpu/spinenet/spinenet49_retinanet.yaml:15", "l2_weight_decay: 0.00004"),
        "clip": o(10.0, "tpu/spinenet/spinenet49_retinanet.yaml:16", "gradient_clip_norm: 10.0"),
        "bn_momentum": o(0.997, "tpu/base_config.py:87", "'batch_norm_momentum': 0.997,"),
        "bn_eps": o(0.0001, "tpu/base_config.py:88", "'batch_norm_epsilon': 1e-4,"),
        "sync_bn": o(True, "tpu/spinenet/spinenet49_retinanet.yaml:18", "use_sync_bn: true"),
        "image_size": o(640, "tpu/spinenet/spinenet49_retinanet.yaml:26", "output_size: [640, 640]"),
        "scale_min": o(0.5, "tpu/spinenet/spinenet49_retinanet.yaml:27", "aug_scale_min: 0.5"),
        "scale_max": o(2.0, "tpu/spinenet/spinenet49_retinanet.yaml:28", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "tpu/spinenet/spinenet49_retinanet.yaml:24", "anchor_size: 3.0"),
        "num_scales": o(3, "tpu/detection_config.py:50", "'num_scales': 3,"),
        "head_filters": o(256, "tpu/retinanet_config.py:46", "'num_filters': 256,"),
        "head_convs": o(4, "tpu/retinanet_config.py:45", "'num_convs': 4,"),
        "focal_alpha": o(0.25, "tpu/retinanet_config.py:51", "'focal_loss_alpha': 0.25,"),
        "focal_gamma": o(1.5, "tpu/retinanet_config.py:52", "'focal_loss_gamma': 1.5,"),
        "huber_delta": o(0.1, "tpu/retinanet_config.py:53", "'huber_loss_delta': 0.1,"),
        "box_loss_weight": o(50.0, "tpu/retinanet_config.py:54", "'box_loss_weight': 50,"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "retinanet_spinenet49_protocol_c": {
        "global_batch_size": o(256, "tpu/spinenet/spinenet49_retinanet.yaml:9", "train_batch_size: 256"),
        "total_steps": o(231500, "tpu/spinenet/spinenet49_retinanet.yaml:8", "total_steps: 231500"),
        "decay_steps": o(
            (217610, 226870), "tpu/spinenet/spinenet49_retinanet.yaml:14", "learning_rate_steps: [217610, 226870]"
        ),
        "lr": o(0.28, "tpu/spinenet/spinenet49_retinanet.yaml:12", "init_learning_rate: 0.28"),
        "lr_levels": o(
            (0.028, 0.0028), "tpu/spinenet/spinenet49_retinanet.yaml:13", "learning_rate_levels: [0.028, 0.0028]"
        ),
        "act": o("swish", "tpu/spinenet/spinenet49_retinanet.yaml:19", "activation: 'swish'"),
        "drop_connect": o(0.2, "tpu/spinenet/spinenet49_retinanet.yaml:22", "init_drop_connect_rate: 0.2"),
        "warmup_steps": o(2000, "tpu/spinenet/spinenet49_retinanet.yaml:11", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "tpu/base_config.py:47", "'warmup_learning_rate': 0.0067,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(4e-05, "tpu/spinenet/spinenet49_retinanet.yaml:15", "l2_weight_decay: 0.00004"),
        "clip": o(10.0, "tpu/spinenet/spinenet49_retinanet.yaml:16", "gradient_clip_norm: 10.0"),
        "bn_momentum": o(0.997, "tpu/base_config.py:87", "'batch_norm_momentum': 0.997,"),
        "bn_eps": o(0.0001, "tpu/base_config.py:88", "'batch_norm_epsilon': 1e-4,"),
        "sync_bn": o(True, "tpu/spinenet/spinenet49_retinanet.yaml:18", "use_sync_bn: true"),
        "image_size": o(640, "tpu/spinenet/spinenet49_retinanet.yaml:26", "output_size: [640, 640]"),
        "scale_min": o(0.5, "tpu/spinenet/spinenet49_retinanet.yaml:27", "aug_scale_min: 0.5"),
        "scale_max": o(2.0, "tpu/spinenet/spinenet49_retinanet.yaml:28", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "tpu/spinenet/spinenet49_retinanet.yaml:24", "anchor_size: 3.0"),
        "num_scales": o(3, "tpu/detection_config.py:50", "'num_scales': 3,"),
        "head_filters": o(256, "tpu/retinanet_config.py:46", "'num_filters': 256,"),
        "head_convs": o(4, "tpu/retinanet_config.py:45", "'num_convs': 4,"),
        "focal_alpha": o(0.25, "tpu/retinanet_config.py:51", "'focal_loss_alpha': 0.25,"),
        "focal_gamma": o(1.5, "tpu/retinanet_config.py:52", "'focal_loss_gamma': 1.5,"),
        "huber_delta": o(0.1, "tpu/retinanet_config.py:53", "'huber_loss_delta': 0.1,"),
        "box_loss_weight": o(50.0, "tpu/retinanet_config.py:54", "'box_loss_weight': 50,"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "retinanet_spinenet96_protocol_b": {
        "global_batch_size": o(256, "tpu/spinenet/spinenet96_retinanet.yaml:10", "train_batch_size: 256"),
        "total_steps": o(162050, "tpu/spinenet/spinenet96_retinanet.yaml:2", "total_steps 162050"),
        "decay_steps": o(
            (148160, 157420), "tpu/spinenet/spinenet96_retinanet.yaml:2", "learning_rate_steps [148160, 157420]"
        ),
        "lr": o(0.28, "tpu/spinenet/spinenet96_retinanet.yaml:13", "init_learning_rate: 0.28"),
        "lr_levels": o(
            (0.028, 0.0028), "tpu/spinenet/spinenet96_retinanet.yaml:14", "learning_rate_levels: [0.028, 0.0028]"
        ),
        "act": o("relu", "tpu/spinenet/spinenet96_retinanet.yaml:2", "activation 'relu'"),
        "drop_connect": o(
            None, "tpu/spinenet/spinenet96_retinanet.yaml:2", "# - 46.7% mAP with init_drop_connect_rate null"
        ),
        "warmup_steps": o(2000, "tpu/spinenet/spinenet96_retinanet.yaml:12", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "tpu/base_config.py:47", "'warmup_learning_rate': 0.0067,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(4e-05, "tpu/spinenet/spinenet96_retinanet.yaml:16", "l2_weight_decay: 0.00004"),
        "clip": o(10.0, "tpu/spinenet/spinenet96_retinanet.yaml:17", "gradient_clip_norm: 10.0"),
        "bn_momentum": o(0.997, "tpu/base_config.py:87", "'batch_norm_momentum': 0.997,"),
        "bn_eps": o(0.0001, "tpu/base_config.py:88", "'batch_norm_epsilon': 1e-4,"),
        "sync_bn": o(True, "tpu/spinenet/spinenet96_retinanet.yaml:19", "use_sync_bn: true"),
        "image_size": o(1024, "tpu/spinenet/spinenet96_retinanet.yaml:27", "output_size: [1024, 1024]"),
        "scale_min": o(0.5, "tpu/spinenet/spinenet96_retinanet.yaml:28", "aug_scale_min: 0.5"),
        "scale_max": o(2.0, "tpu/spinenet/spinenet96_retinanet.yaml:29", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "tpu/spinenet/spinenet96_retinanet.yaml:25", "anchor_size: 3.0"),
        "num_scales": o(3, "tpu/detection_config.py:50", "'num_scales': 3,"),
        "head_filters": o(256, "tpu/retinanet_config.py:46", "'num_filters': 256,"),
        "head_convs": o(4, "tpu/retinanet_config.py:45", "'num_convs': 4,"),
        "focal_alpha": o(0.25, "tpu/retinanet_config.py:51", "'focal_loss_alpha': 0.25,"),
        "focal_gamma": o(1.5, "tpu/retinanet_config.py:52", "'focal_loss_gamma': 1.5,"),
        "huber_delta": o(0.1, "tpu/retinanet_config.py:53", "'huber_loss_delta': 0.1,"),
        "box_loss_weight": o(50.0, "tpu/retinanet_config.py:54", "'box_loss_weight': 50,"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "retinanet_spinenet96_protocol_c": {
        "global_batch_size": o(256, "tpu/spinenet/spinenet96_retinanet.yaml:10", "train_batch_size: 256"),
        "total_steps": o(231500, "tpu/spinenet/spinenet96_retinanet.yaml:9", "total_steps: 231500"),
        "decay_steps": o(
            (217610, 226870), "tpu/spinenet/spinenet96_retinanet.yaml:15", "learning_rate_steps: [217610, 226870]"
        ),
        "lr": o(0.28, "tpu/spinenet/spinenet96_retinanet.yaml:13", "init_learning_rate: 0.28"),
        "lr_levels": o(
            (0.028, 0.0028), "tpu/spinenet/spinenet96_retinanet.yaml:14", "learning_rate_levels: [0.028, 0.0028]"
        ),
        "act": o("swish", "tpu/spinenet/spinenet96_retinanet.yaml:20", "activation: 'swish'"),
        "drop_connect": o(0.2, "tpu/spinenet/spinenet96_retinanet.yaml:23", "init_drop_connect_rate: 0.2"),
        "warmup_steps": o(2000, "tpu/spinenet/spinenet96_retinanet.yaml:12", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "tpu/base_config.py:47", "'warmup_learning_rate': 0.0067,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(4e-05, "tpu/spinenet/spinenet96_retinanet.yaml:16", "l2_weight_decay: 0.00004"),
        "clip": o(10.0, "tpu/spinenet/spinenet96_retinanet.yaml:17", "gradient_clip_norm: 10.0"),
        "bn_momentum": o(0.997, "tpu/base_config.py:87", "'batch_norm_momentum': 0.997,"),
        "bn_eps": o(0.0001, "tpu/base_config.py:88", "'batch_norm_epsilon': 1e-4,"),
        "sync_bn": o(True, "tpu/spinenet/spinenet96_retinanet.yaml:19", "use_sync_bn: true"),
        "image_size": o(1024, "tpu/spinenet/spinenet96_retinanet.yaml:27", "output_size: [1024, 1024]"),
        "scale_min": o(0.5, "tpu/spinenet/spinenet96_retinanet.yaml:28", "aug_scale_min: 0.5"),
        "scale_max": o(2.0, "tpu/spinenet/spinenet96_retinanet.yaml:29", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "tpu/spinenet/spinenet96_retinanet.yaml:25", "anchor_size: 3.0"),
        "num_scales": o(3, "tpu/detection_config.py:50", "'num_scales': 3,"),
        "head_filters": o(256, "tpu/retinanet_config.py:46", "'num_filters': 256,"),
        "head_convs": o(4, "tpu/retinanet_config.py:45", "'num_convs': 4,"),
        "focal_alpha": o(0.25, "tpu/retinanet_config.py:51", "'focal_loss_alpha': 0.25,"),
        "focal_gamma": o(1.5, "tpu/retinanet_config.py:52", "'focal_loss_gamma': 1.5,"),
        "huber_delta": o(0.1, "tpu/retinanet_config.py:53", "'huber_loss_delta': 0.1,"),
        "box_loss_weight": o(50.0, "tpu/retinanet_config.py:54", "'box_loss_weight': 50,"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "retinanet_spinenet143_protocol_b": {
        "global_batch_size": o(256, "tpu/spinenet/spinenet143_retinanet.yaml:9", "train_batch_size: 256"),
        "total_steps": o(162050, "tpu/spinenet/spinenet143_retinanet.yaml:2", "total_steps 162050"),
        "decay_steps": o(
            (148160, 157420), "tpu/spinenet/spinenet143_retinanet.yaml:2", "learning_rate_steps [148160, 157420]"
        ),
        "lr": o(0.28, "tpu/spinenet/spinenet143_retinanet.yaml:12", "init_learning_rate: 0.28"),
        "lr_levels": o(
            (0.028, 0.0028), "tpu/spinenet/spinenet143_retinanet.yaml:13", "learning_rate_levels: [0.028, 0.0028]"
        ),
        "act": o("relu", "tpu/spinenet/spinenet143_retinanet.yaml:2", "activation 'relu'"),
        "drop_connect": o(
            None, "tpu/spinenet/spinenet143_retinanet.yaml:2", "# - 48.0% mAP with init_drop_connect_rate null"
        ),
        "warmup_steps": o(2000, "tpu/spinenet/spinenet143_retinanet.yaml:11", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "tpu/base_config.py:47", "'warmup_learning_rate': 0.0067,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(4e-05, "tpu/spinenet/spinenet143_retinanet.yaml:15", "l2_weight_decay: 0.00004"),
        "clip": o(10.0, "tpu/spinenet/spinenet143_retinanet.yaml:16", "gradient_clip_norm: 10.0"),
        "bn_momentum": o(0.997, "tpu/base_config.py:87", "'batch_norm_momentum': 0.997,"),
        "bn_eps": o(0.0001, "tpu/base_config.py:88", "'batch_norm_epsilon': 1e-4,"),
        "sync_bn": o(True, "tpu/spinenet/spinenet143_retinanet.yaml:18", "use_sync_bn: true"),
        "image_size": o(1280, "tpu/spinenet/spinenet143_retinanet.yaml:24", "output_size: [1280, 1280]"),
        "scale_min": o(0.5, "tpu/spinenet/spinenet143_retinanet.yaml:2", "aug_scale_min 0.5"),
        "scale_max": o(2.0, "tpu/spinenet/spinenet143_retinanet.yaml:2", "aug_scale_max 2.0"),
        "anchor_size": o(4.0, "tpu/detection_config.py:52", "'anchor_size': 4.0,"),
        "num_scales": o(3, "tpu/detection_config.py:50", "'num_scales': 3,"),
        "head_filters": o(256, "tpu/retinanet_config.py:46", "'num_filters': 256,"),
        "head_convs": o(4, "tpu/retinanet_config.py:45", "'num_convs': 4,"),
        "focal_alpha": o(0.25, "tpu/retinanet_config.py:51", "'focal_loss_alpha': 0.25,"),
        "focal_gamma": o(1.5, "tpu/retinanet_config.py:52", "'focal_loss_gamma': 1.5,"),
        "huber_delta": o(0.1, "tpu/retinanet_config.py:53", "'huber_loss_delta': 0.1,"),
        "box_loss_weight": o(50.0, "tpu/retinanet_config.py:54", "'box_loss_weight': 50,"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "retinanet_spinenet143_protocol_c": {
        "global_batch_size": o(256, "tpu/spinenet/spinenet143_retinanet.yaml:9", "train_batch_size: 256"),
        "total_steps": o(231500, "tpu/spinenet/spinenet143_retinanet.yaml:8", "total_steps: 231500"),
        "decay_steps": o(
            (217610, 226870), "tpu/spinenet/spinenet143_retinanet.yaml:14", "learning_rate_steps: [217610, 226870]"
        ),
        "lr": o(0.28, "tpu/spinenet/spinenet143_retinanet.yaml:12", "init_learning_rate: 0.28"),
        "lr_levels": o(
            (0.028, 0.0028), "tpu/spinenet/spinenet143_retinanet.yaml:13", "learning_rate_levels: [0.028, 0.0028]"
        ),
        "act": o("swish", "tpu/spinenet/spinenet143_retinanet.yaml:19", "activation: 'swish'"),
        "drop_connect": o(0.16, "tpu/spinenet/spinenet143_retinanet.yaml:22", "init_drop_connect_rate: 0.16"),
        "warmup_steps": o(2000, "tpu/spinenet/spinenet143_retinanet.yaml:11", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "tpu/base_config.py:47", "'warmup_learning_rate': 0.0067,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(4e-05, "tpu/spinenet/spinenet143_retinanet.yaml:15", "l2_weight_decay: 0.00004"),
        "clip": o(10.0, "tpu/spinenet/spinenet143_retinanet.yaml:16", "gradient_clip_norm: 10.0"),
        "bn_momentum": o(0.997, "tpu/base_config.py:87", "'batch_norm_momentum': 0.997,"),
        "bn_eps": o(0.0001, "tpu/base_config.py:88", "'batch_norm_epsilon': 1e-4,"),
        "sync_bn": o(True, "tpu/spinenet/spinenet143_retinanet.yaml:18", "use_sync_bn: true"),
        "image_size": o(1280, "tpu/spinenet/spinenet143_retinanet.yaml:24", "output_size: [1280, 1280]"),
        "scale_min": o(0.1, "tpu/spinenet/spinenet143_retinanet.yaml:25", "aug_scale_min: 0.1"),
        "scale_max": o(1.9, "tpu/spinenet/spinenet143_retinanet.yaml:26", "aug_scale_max: 1.9"),
        "anchor_size": o(4.0, "tpu/detection_config.py:52", "'anchor_size': 4.0,"),
        "num_scales": o(3, "tpu/detection_config.py:50", "'num_scales': 3,"),
        "head_filters": o(256, "tpu/retinanet_config.py:46", "'num_filters': 256,"),
        "head_convs": o(4, "tpu/retinanet_config.py:45", "'num_convs': 4,"),
        "focal_alpha": o(0.25, "tpu/retinanet_config.py:51", "'focal_loss_alpha': 0.25,"),
        "focal_gamma": o(1.5, "tpu/retinanet_config.py:52", "'focal_loss_gamma': 1.5,"),
        "huber_delta": o(0.1, "tpu/retinanet_config.py:53", "'huber_loss_delta': 0.1,"),
        "box_loss_weight": o(50.0, "tpu/retinanet_config.py:54", "'box_loss_weight': 50,"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "retinanet_spinenet190_protocol_c": {
        "global_batch_size": o(256, "tpu/spinenet/spinenet190_retinanet.yaml:8", "train_batch_size: 256"),
        "total_steps": o(185200, "tpu/spinenet/spinenet190_retinanet.yaml:7", "total_steps: 185200"),
        "decay_steps": o(
            (171310, 180570), "tpu/spinenet/spinenet190_retinanet.yaml:13", "learning_rate_steps: [171310, 180570]"
        ),
        "lr": o(0.3, "tpu/spinenet/spinenet190_retinanet.yaml:11", "init_learning_rate: 0.3"),
        "lr_levels": o(
            (0.03, 0.003), "tpu/spinenet/spinenet190_retinanet.yaml:12", "learning_rate_levels: [0.03, 0.003]"
        ),
        "act": o("swish", "tpu/spinenet/spinenet190_retinanet.yaml:18", "activation: 'swish'"),
        "drop_connect": o(0.2, "tpu/spinenet/spinenet190_retinanet.yaml:21", "init_drop_connect_rate: 0.2"),
        "warmup_steps": o(2000, "tpu/spinenet/spinenet190_retinanet.yaml:10", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "tpu/base_config.py:47", "'warmup_learning_rate': 0.0067,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(4e-05, "tpu/spinenet/spinenet190_retinanet.yaml:14", "l2_weight_decay: 0.00004"),
        "clip": o(10.0, "tpu/spinenet/spinenet190_retinanet.yaml:15", "gradient_clip_norm: 10.0"),
        "bn_momentum": o(0.997, "tpu/base_config.py:87", "'batch_norm_momentum': 0.997,"),
        "bn_eps": o(0.0001, "tpu/base_config.py:88", "'batch_norm_epsilon': 1e-4,"),
        "sync_bn": o(True, "tpu/spinenet/spinenet190_retinanet.yaml:17", "use_sync_bn: true"),
        "image_size": o(1280, "tpu/spinenet/spinenet190_retinanet.yaml:26", "output_size: [1280, 1280]"),
        "scale_min": o(0.1, "tpu/spinenet/spinenet190_retinanet.yaml:27", "aug_scale_min: 0.1"),
        "scale_max": o(1.9, "tpu/spinenet/spinenet190_retinanet.yaml:28", "aug_scale_max: 1.9"),
        "anchor_size": o(4.0, "tpu/detection_config.py:52", "'anchor_size': 4.0,"),
        "num_scales": o(3, "tpu/detection_config.py:50", "'num_scales': 3,"),
        "head_filters": o(512, "tpu/spinenet/spinenet190_retinanet.yaml:23", "num_filters: 512"),
        "head_convs": o(7, "tpu/spinenet/spinenet190_retinanet.yaml:24", "num_convs: 7"),
        "focal_alpha": o(0.25, "tpu/retinanet_config.py:51", "'focal_loss_alpha': 0.25,"),
        "focal_gamma": o(1.5, "tpu/retinanet_config.py:52", "'focal_loss_gamma': 1.5,"),
        "huber_delta": o(0.1, "tpu/retinanet_config.py:53", "'huber_loss_delta': 0.1,"),
        "box_loss_weight": o(50.0, "tpu/retinanet_config.py:54", "'box_loss_weight': 50,"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "retinanet_spinenet49_896_protocol_b": {
        "global_batch_size": o(256, "tpu/spinenet/spinenet49_retinanet.yaml:9", "train_batch_size: 256"),
        "total_steps": o(162050, "tpu/spinenet/spinenet49_retinanet.yaml:2", "total_steps 162050"),
        "decay_steps": o(
            (148160, 157420), "tpu/spinenet/spinenet49_retinanet.yaml:2", "learning_rate_steps [148160, 157420]"
        ),
        "lr": o(0.28, "tpu/spinenet/spinenet49_retinanet.yaml:12", "init_learning_rate: 0.28"),
        "lr_levels": o(
            (0.028, 0.0028), "tpu/spinenet/spinenet49_retinanet.yaml:13", "learning_rate_levels: [0.028, 0.0028]"
        ),
        "act": o("relu", "tpu/spinenet/spinenet49_retinanet.yaml:2", "activation 'relu'"),
        "drop_connect": o(
            None, "tpu/spinenet/spinenet49_retinanet.yaml:2", "# - 42.8% mAP with init_drop_connect_rate null"
        ),
        "warmup_steps": o(2000, "tpu/spinenet/spinenet49_retinanet.yaml:11", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "tpu/base_config.py:47", "'warmup_learning_rate': 0.0067,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(4e-05, "tpu/spinenet/spinenet49_retinanet.yaml:15", "l2_weight_decay: 0.00004"),
        "clip": o(10.0, "tpu/spinenet/spinenet49_retinanet.yaml:16", "gradient_clip_norm: 10.0"),
        "bn_momentum": o(0.997, "tpu/base_config.py:87", "'batch_norm_momentum': 0.997,"),
        "bn_eps": o(0.0001, "tpu/base_config.py:88", "'batch_norm_epsilon': 1e-4,"),
        "sync_bn": o(True, "tpu/spinenet/spinenet49_retinanet.yaml:18", "use_sync_bn: true"),
        "image_size": o(896, "paper:Table 2", "SpineNet-49 896"),
        "scale_min": o(0.5, "tpu/spinenet/spinenet49_retinanet.yaml:27", "aug_scale_min: 0.5"),
        "scale_max": o(2.0, "tpu/spinenet/spinenet49_retinanet.yaml:28", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "tpu/spinenet/spinenet49_retinanet.yaml:24", "anchor_size: 3.0"),
        "num_scales": o(3, "tpu/detection_config.py:50", "'num_scales': 3,"),
        "head_filters": o(256, "tpu/retinanet_config.py:46", "'num_filters': 256,"),
        "head_convs": o(4, "tpu/retinanet_config.py:45", "'num_convs': 4,"),
        "focal_alpha": o(0.25, "tpu/retinanet_config.py:51", "'focal_loss_alpha': 0.25,"),
        "focal_gamma": o(1.5, "tpu/retinanet_config.py:52", "'focal_loss_gamma': 1.5,"),
        "huber_delta": o(0.1, "tpu/retinanet_config.py:53", "'huber_loss_delta': 0.1,"),
        "box_loss_weight": o(50.0, "tpu/retinanet_config.py:54", "'box_loss_weight': 50,"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "retinanet_spinenet49_896_protocol_c": {
        "global_batch_size": o(256, "tpu/spinenet/spinenet49_retinanet.yaml:9", "train_batch_size: 256"),
        "total_steps": o(231500, "tpu/spinenet/spinenet49_retinanet.yaml:8", "total_steps: 231500"),
        "decay_steps": o(
            (217610, 226870), "tpu/spinenet/spinenet49_retinanet.yaml:14", "learning_rate_steps: [217610, 226870]"
        ),
        "lr": o(0.28, "tpu/spinenet/spinenet49_retinanet.yaml:12", "init_learning_rate: 0.28"),
        "lr_levels": o(
            (0.028, 0.0028), "tpu/spinenet/spinenet49_retinanet.yaml:13", "learning_rate_levels: [0.028, 0.0028]"
        ),
        "act": o("swish", "tpu/spinenet/spinenet49_retinanet.yaml:19", "activation: 'swish'"),
        "drop_connect": o(0.2, "tpu/spinenet/spinenet49_retinanet.yaml:22", "init_drop_connect_rate: 0.2"),
        "warmup_steps": o(2000, "tpu/spinenet/spinenet49_retinanet.yaml:11", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "tpu/base_config.py:47", "'warmup_learning_rate': 0.0067,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(4e-05, "tpu/spinenet/spinenet49_retinanet.yaml:15", "l2_weight_decay: 0.00004"),
        "clip": o(10.0, "tpu/spinenet/spinenet49_retinanet.yaml:16", "gradient_clip_norm: 10.0"),
        "bn_momentum": o(0.997, "tpu/base_config.py:87", "'batch_norm_momentum': 0.997,"),
        "bn_eps": o(0.0001, "tpu/base_config.py:88", "'batch_norm_epsilon': 1e-4,"),
        "sync_bn": o(True, "tpu/spinenet/spinenet49_retinanet.yaml:18", "use_sync_bn: true"),
        "image_size": o(896, "paper:Table 2", "SpineNet-49 896"),
        "scale_min": o(0.5, "tpu/spinenet/spinenet49_retinanet.yaml:27", "aug_scale_min: 0.5"),
        "scale_max": o(2.0, "tpu/spinenet/spinenet49_retinanet.yaml:28", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "tpu/spinenet/spinenet49_retinanet.yaml:24", "anchor_size: 3.0"),
        "num_scales": o(3, "tpu/detection_config.py:50", "'num_scales': 3,"),
        "head_filters": o(256, "tpu/retinanet_config.py:46", "'num_filters': 256,"),
        "head_convs": o(4, "tpu/retinanet_config.py:45", "'num_convs': 4,"),
        "focal_alpha": o(0.25, "tpu/retinanet_config.py:51", "'focal_loss_alpha': 0.25,"),
        "focal_gamma": o(1.5, "tpu/retinanet_config.py:52", "'focal_loss_gamma': 1.5,"),
        "huber_delta": o(0.1, "tpu/retinanet_config.py:53", "'huber_loss_delta': 0.1,"),
        "box_loss_weight": o(50.0, "tpu/retinanet_config.py:54", "'box_loss_weight': 50,"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "retinanet_spinenet49_mg": {
        "global_batch_size": o(256, "mg/retinanet/coco_spinenet49_tpu.yaml:34", "global_batch_size: 256"),
        "total_steps": o(231000, "mg/retinanet/coco_spinenet49_tpu.yaml:59", "train_steps: 231000"),
        "decay_steps": o((219450, 226380), "mg/retinanet/coco_spinenet49_tpu.yaml:51", "boundaries: [219450, 226380]"),
        "lr_levels": o((0.032, 0.0032), "mg/retinanet/coco_spinenet49_tpu.yaml:52", "values: [0.32, 0.032, 0.0032]"),
        "lr": o(0.32, "mg/retinanet/coco_spinenet49_tpu.yaml:52", "values: [0.32, 0.032, 0.0032]"),
        "warmup_steps": o(2000, "mg/retinanet/coco_spinenet49_tpu.yaml:57", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "mg/retinanet/coco_spinenet49_tpu.yaml:56", "warmup_learning_rate: 0.0067"),
        "momentum": o(0.9, "mg/retinanet.py:367", "'momentum': 0.9"),
        "bn_momentum": o(0.99, "mg/retinanet/coco_spinenet49_tpu.yaml:30", "norm_momentum: 0.99"),
        "bn_eps": o(0.001, "mg/retinanet/coco_spinenet49_tpu.yaml:29", "norm_epsilon: 0.001"),
        "sync_bn": o(True, "mg/retinanet/coco_spinenet49_tpu.yaml:31", "use_sync_bn: true"),
        "l2": o(4e-05, "mg/retinanet/coco_spinenet49_tpu.yaml:8", "l2_weight_decay: 4.0e-05"),
        "clip": o(None, "mg/retinanet/coco_spinenet49_tpu.yaml:absent", "gradient_clip_norm"),
        "act": o("swish", "mg/retinanet/coco_spinenet49_tpu.yaml:28", "activation: 'swish'"),
        "drop_connect": o(0.2, "mg/retinanet/coco_spinenet49_tpu.yaml:16", "stochastic_depth_drop_rate: 0.2"),
        "image_size": o(640, "mg/retinanet/coco_spinenet49_tpu.yaml:24", "input_size: [640, 640, 3]"),
        "scale_min": o(0.1, "mg/retinanet/coco_spinenet49_tpu.yaml:40", "aug_scale_min: 0.1"),
        "scale_max": o(2.0, "mg/retinanet/coco_spinenet49_tpu.yaml:39", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "mg/retinanet/coco_spinenet49_tpu.yaml:11", "anchor_size: 3"),
        "num_scales": o(3, "mg/retinanet/coco_spinenet49_tpu.yaml:13", "num_scales: 3"),
        "head_convs": o(4, "mg/retinanet/coco_spinenet49_tpu.yaml:22", "num_convs: 4"),
        "head_filters": o(256, "mg/retinanet/coco_spinenet49_tpu.yaml:23", "num_filters: 256"),
        "focal_alpha": o(0.25, "mg/retinanet.py:102", "focal_loss_alpha: float = 0.25"),
        "focal_gamma": o(1.5, "mg/retinanet.py:103", "focal_loss_gamma: float = 1.5"),
        "huber_delta": o(0.1, "mg/retinanet.py:104", "huber_loss_delta: float = 0.1"),
        "box_loss_weight": o(50.0, "mg/retinanet.py:105", "box_loss_weight: int = 50"),
        "drop_path_blocks": o(
            16, "mg/spinenet.py:393", "self._init_stochastic_depth_rate, i + 1, len(self._block_specs)),"
        ),
        "amp": o("bf16", "mg/retinanet/coco_spinenet49_tpu.yaml:4", "mixed_precision_dtype: 'bfloat16'"),
    },
    "retinanet_spinenet96_mg": {
        "global_batch_size": o(256, "mg/retinanet/coco_spinenet96_tpu.yaml:34", "global_batch_size: 256"),
        "total_steps": o(231000, "mg/retinanet/coco_spinenet96_tpu.yaml:59", "train_steps: 231000"),
        "decay_steps": o((219450, 226380), "mg/retinanet/coco_spinenet96_tpu.yaml:51", "boundaries: [219450, 226380]"),
        "lr_levels": o((0.032, 0.0032), "mg/retinanet/coco_spinenet96_tpu.yaml:52", "values: [0.32, 0.032, 0.0032]"),
        "lr": o(0.32, "mg/retinanet/coco_spinenet96_tpu.yaml:52", "values: [0.32, 0.032, 0.0032]"),
        "warmup_steps": o(2000, "mg/retinanet/coco_spinenet96_tpu.yaml:57", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "mg/retinanet/coco_spinenet96_tpu.yaml:56", "warmup_learning_rate: 0.0067"),
        "momentum": o(0.9, "mg/retinanet.py:367", "'momentum': 0.9"),
        "bn_momentum": o(0.99, "mg/retinanet/coco_spinenet96_tpu.yaml:30", "norm_momentum: 0.99"),
        "bn_eps": o(0.001, "mg/retinanet/coco_spinenet96_tpu.yaml:29", "norm_epsilon: 0.001"),
        "sync_bn": o(True, "mg/retinanet/coco_spinenet96_tpu.yaml:31", "use_sync_bn: true"),
        "l2": o(4e-05, "mg/retinanet/coco_spinenet96_tpu.yaml:8", "l2_weight_decay: 4.0e-05"),
        "clip": o(None, "mg/retinanet/coco_spinenet96_tpu.yaml:absent", "gradient_clip_norm"),
        "act": o("swish", "mg/retinanet/coco_spinenet96_tpu.yaml:28", "activation: 'swish'"),
        "drop_connect": o(0.2, "mg/retinanet/coco_spinenet96_tpu.yaml:16", "stochastic_depth_drop_rate: 0.2"),
        "image_size": o(1024, "mg/retinanet/coco_spinenet96_tpu.yaml:24", "input_size: [1024, 1024, 3]"),
        "scale_min": o(0.1, "mg/retinanet/coco_spinenet96_tpu.yaml:40", "aug_scale_min: 0.1"),
        "scale_max": o(2.0, "mg/retinanet/coco_spinenet96_tpu.yaml:39", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "mg/retinanet/coco_spinenet96_tpu.yaml:11", "anchor_size: 3"),
        "num_scales": o(3, "mg/retinanet/coco_spinenet96_tpu.yaml:13", "num_scales: 3"),
        "head_convs": o(4, "mg/retinanet/coco_spinenet96_tpu.yaml:22", "num_convs: 4"),
        "head_filters": o(256, "mg/retinanet/coco_spinenet96_tpu.yaml:23", "num_filters: 256"),
        "focal_alpha": o(0.25, "mg/retinanet.py:102", "focal_loss_alpha: float = 0.25"),
        "focal_gamma": o(1.5, "mg/retinanet.py:103", "focal_loss_gamma: float = 1.5"),
        "huber_delta": o(0.1, "mg/retinanet.py:104", "huber_loss_delta: float = 0.1"),
        "box_loss_weight": o(50.0, "mg/retinanet.py:105", "box_loss_weight: int = 50"),
        "drop_path_blocks": o(
            16, "mg/spinenet.py:393", "self._init_stochastic_depth_rate, i + 1, len(self._block_specs)),"
        ),
        "amp": o("bf16", "mg/retinanet/coco_spinenet96_tpu.yaml:4", "mixed_precision_dtype: 'bfloat16'"),
    },
    "retinanet_spinenet143_mg": {
        "global_batch_size": o(256, "mg/retinanet/coco_spinenet143_tpu.yaml:35", "global_batch_size: 256"),
        "total_steps": o(231000, "mg/retinanet/coco_spinenet143_tpu.yaml:60", "train_steps: 231000"),
        "decay_steps": o((219450, 226380), "mg/retinanet/coco_spinenet143_tpu.yaml:52", "boundaries: [219450, 226380]"),
        "lr_levels": o((0.032, 0.0032), "mg/retinanet/coco_spinenet143_tpu.yaml:53", "values: [0.32, 0.032, 0.0032]"),
        "lr": o(0.32, "mg/retinanet/coco_spinenet143_tpu.yaml:53", "values: [0.32, 0.032, 0.0032]"),
        "warmup_steps": o(2000, "mg/retinanet/coco_spinenet143_tpu.yaml:58", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "mg/retinanet/coco_spinenet143_tpu.yaml:57", "warmup_learning_rate: 0.0067"),
        "momentum": o(0.9, "mg/retinanet.py:367", "'momentum': 0.9"),
        "bn_momentum": o(0.99, "mg/retinanet/coco_spinenet143_tpu.yaml:31", "norm_momentum: 0.99"),
        "bn_eps": o(0.001, "mg/retinanet/coco_spinenet143_tpu.yaml:30", "norm_epsilon: 0.001"),
        "sync_bn": o(True, "mg/retinanet/coco_spinenet143_tpu.yaml:32", "use_sync_bn: true"),
        "l2": o(4e-05, "mg/retinanet/coco_spinenet143_tpu.yaml:9", "l2_weight_decay: 4.0e-05"),
        "clip": o(10.0, "mg/retinanet/coco_spinenet143_tpu.yaml:7", "gradient_clip_norm: 10.0"),
        "act": o("swish", "mg/retinanet/coco_spinenet143_tpu.yaml:29", "activation: 'swish'"),
        "drop_connect": o(0.2, "mg/retinanet/coco_spinenet143_tpu.yaml:17", "stochastic_depth_drop_rate: 0.2"),
        "image_size": o(1280, "mg/retinanet/coco_spinenet143_tpu.yaml:25", "input_size: [1280, 1280, 3]"),
        "scale_min": o(0.1, "mg/retinanet/coco_spinenet143_tpu.yaml:41", "aug_scale_min: 0.1"),
        "scale_max": o(2.0, "mg/retinanet/coco_spinenet143_tpu.yaml:40", "aug_scale_max: 2.0"),
        "anchor_size": o(4.0, "mg/retinanet/coco_spinenet143_tpu.yaml:12", "anchor_size: 4"),
        "num_scales": o(3, "mg/retinanet/coco_spinenet143_tpu.yaml:14", "num_scales: 3"),
        "head_convs": o(4, "mg/retinanet/coco_spinenet143_tpu.yaml:23", "num_convs: 4"),
        "head_filters": o(256, "mg/retinanet/coco_spinenet143_tpu.yaml:24", "num_filters: 256"),
        "focal_alpha": o(0.25, "mg/retinanet.py:102", "focal_loss_alpha: float = 0.25"),
        "focal_gamma": o(1.5, "mg/retinanet.py:103", "focal_loss_gamma: float = 1.5"),
        "huber_delta": o(0.1, "mg/retinanet.py:104", "huber_loss_delta: float = 0.1"),
        "box_loss_weight": o(50.0, "mg/retinanet.py:105", "box_loss_weight: int = 50"),
        "drop_path_blocks": o(
            16, "mg/spinenet.py:393", "self._init_stochastic_depth_rate, i + 1, len(self._block_specs)),"
        ),
        "amp": o("bf16", "mg/retinanet/coco_spinenet143_tpu.yaml:4", "mixed_precision_dtype: 'bfloat16'"),
    },
    "retinanet_spinenet190_mg": {
        "global_batch_size": o(256, "mg/retinanet/coco_spinenet190_tpu.yaml:32", "global_batch_size: 256"),
        "total_steps": o(231000, "mg/retinanet/coco_spinenet190_tpu.yaml:55", "train_steps: 231000"),
        "decay_steps": o((219450, 226380), "mg/retinanet/coco_spinenet190_tpu.yaml:47", "boundaries: [219450, 226380]"),
        "lr_levels": o((0.032, 0.0032), "mg/retinanet/coco_spinenet190_tpu.yaml:48", "values: [0.32, 0.032, 0.0032]"),
        "lr": o(0.32, "mg/retinanet/coco_spinenet190_tpu.yaml:48", "values: [0.32, 0.032, 0.0032]"),
        "warmup_steps": o(2000, "mg/retinanet/coco_spinenet190_tpu.yaml:53", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "mg/retinanet/coco_spinenet190_tpu.yaml:52", "warmup_learning_rate: 0.0067"),
        "momentum": o(0.9, "mg/retinanet.py:367", "'momentum': 0.9"),
        "bn_momentum": o(0.99, "mg/retinanet/coco_spinenet190_tpu.yaml:28", "norm_momentum: 0.99"),
        "bn_eps": o(0.001, "mg/retinanet/coco_spinenet190_tpu.yaml:27", "norm_epsilon: 0.001"),
        "sync_bn": o(True, "mg/retinanet/coco_spinenet190_tpu.yaml:29", "use_sync_bn: true"),
        "l2": o(4e-05, "mg/retinanet/coco_spinenet190_tpu.yaml:6", "l2_weight_decay: 4.0e-05"),
        "clip": o(None, "mg/retinanet/coco_spinenet190_tpu.yaml:absent", "gradient_clip_norm"),
        "act": o("swish", "mg/retinanet/coco_spinenet190_tpu.yaml:26", "activation: 'swish'"),
        "drop_connect": o(0.2, "mg/retinanet/coco_spinenet190_tpu.yaml:14", "stochastic_depth_drop_rate: 0.2"),
        "image_size": o(1280, "mg/retinanet/coco_spinenet190_tpu.yaml:22", "input_size: [1280, 1280, 3]"),
        "scale_min": o(0.1, "mg/retinanet/coco_spinenet190_tpu.yaml:37", "aug_scale_min: 0.1"),
        "scale_max": o(2.0, "mg/retinanet/coco_spinenet190_tpu.yaml:36", "aug_scale_max: 2.0"),
        "anchor_size": o(4.0, "mg/retinanet/coco_spinenet190_tpu.yaml:9", "anchor_size: 4"),
        "num_scales": o(3, "mg/retinanet/coco_spinenet190_tpu.yaml:11", "num_scales: 3"),
        "head_convs": o(7, "mg/retinanet/coco_spinenet190_tpu.yaml:20", "num_convs: 7"),
        "head_filters": o(512, "mg/retinanet/coco_spinenet190_tpu.yaml:21", "num_filters: 512"),
        "focal_alpha": o(0.25, "mg/retinanet.py:102", "focal_loss_alpha: float = 0.25"),
        "focal_gamma": o(1.5, "mg/retinanet.py:103", "focal_loss_gamma: float = 1.5"),
        "huber_delta": o(0.1, "mg/retinanet.py:104", "huber_loss_delta: float = 0.1"),
        "box_loss_weight": o(50.0, "mg/retinanet.py:105", "box_loss_weight: int = 50"),
        "drop_path_blocks": o(
            16, "mg/spinenet.py:393", "self._init_stochastic_depth_rate, i + 1, len(self._block_specs)),"
        ),
        "amp": o("bf16", "mg/retinanet/coco_spinenet190_tpu.yaml:3", "mixed_precision_dtype: 'bfloat16'"),
    },
    "retinanet_spinenet49_mg_gpu": {
        "global_batch_size": o(
            32, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:36", "global_batch_size: 32"
        ),
        "total_steps": o(23100, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:61", "train_steps: 23100"),
        "schedule_type": o("cosine", "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:55", "type: 'cosine'"),
        "lr": o(0.32, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:54", "initial_learning_rate: 0.32"),
        "warmup_steps": o(2000, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:59", "warmup_steps: 2000"),
        "warmup_lr": o(
            0.0067, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:58", "warmup_learning_rate: 0.0067"
        ),
        "momentum": o(0.9, "mg/retinanet.py:367", "'momentum': 0.9"),
        "bn_momentum": o(0.99, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:32", "norm_momentum: 0.99"),
        "bn_eps": o(0.001, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:31", "norm_epsilon: 0.001"),
        "sync_bn": o(True, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:33", "use_sync_bn: true"),
        "l2": o(4e-05, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:10", "l2_weight_decay: 4.0e-05"),
        "clip": o(None, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:absent", "gradient_clip_norm"),
        "act": o("swish", "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:30", "activation: 'swish'"),
        "drop_connect": o(
            0.2, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:18", "stochastic_depth_drop_rate: 0.2"
        ),
        "image_size": o(
            640, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:26", "input_size: [640, 640, 3]"
        ),
        "scale_min": o(0.1, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:41", "aug_scale_min: 0.1"),
        "scale_max": o(2.0, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:40", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:13", "anchor_size: 3"),
        "num_scales": o(3, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:15", "num_scales: 3"),
        "head_convs": o(4, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:24", "num_convs: 4"),
        "head_filters": o(256, "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:25", "num_filters: 256"),
        "focal_alpha": o(0.25, "mg/retinanet.py:102", "focal_loss_alpha: float = 0.25"),
        "focal_gamma": o(1.5, "mg/retinanet.py:103", "focal_loss_gamma: float = 1.5"),
        "huber_delta": o(0.1, "mg/retinanet.py:104", "huber_loss_delta: float = 0.1"),
        "box_loss_weight": o(50.0, "mg/retinanet.py:105", "box_loss_weight: int = 50"),
        "drop_path_blocks": o(
            16, "mg/spinenet.py:393", "self._init_stochastic_depth_rate, i + 1, len(self._block_specs)),"
        ),
        "amp": o(
            "fp16", "mg/retinanet/coco_spinenet49_gpu_multiworker_mirrored.yaml:7", "mixed_precision_dtype: float16"
        ),
    },
    "retinanet_spinenet96_mg_gpu": {
        "global_batch_size": o(
            16, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:36", "global_batch_size: 16"
        ),
        "total_steps": o(23100, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:61", "train_steps: 23100"),
        "schedule_type": o("cosine", "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:55", "type: 'cosine'"),
        "lr": o(0.032, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:54", "initial_learning_rate: 0.032"),
        "warmup_steps": o(2000, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:59", "warmup_steps: 2000"),
        "warmup_lr": o(
            0.0067, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:58", "warmup_learning_rate: 0.0067"
        ),
        "momentum": o(0.9, "mg/retinanet.py:367", "'momentum': 0.9"),
        "bn_momentum": o(0.99, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:32", "norm_momentum: 0.99"),
        "bn_eps": o(0.001, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:31", "norm_epsilon: 0.001"),
        "sync_bn": o(True, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:33", "use_sync_bn: true"),
        "l2": o(4e-05, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:10", "l2_weight_decay: 4.0e-05"),
        "clip": o(None, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:absent", "gradient_clip_norm"),
        "act": o("swish", "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:30", "activation: 'swish'"),
        "drop_connect": o(
            0.2, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:18", "stochastic_depth_drop_rate: 0.2"
        ),
        "image_size": o(
            1024, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:26", "input_size: [1024, 1024, 3]"
        ),
        "scale_min": o(0.1, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:41", "aug_scale_min: 0.1"),
        "scale_max": o(2.0, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:40", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:13", "anchor_size: 3"),
        "num_scales": o(3, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:15", "num_scales: 3"),
        "head_convs": o(4, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:24", "num_convs: 4"),
        "head_filters": o(256, "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:25", "num_filters: 256"),
        "focal_alpha": o(0.25, "mg/retinanet.py:102", "focal_loss_alpha: float = 0.25"),
        "focal_gamma": o(1.5, "mg/retinanet.py:103", "focal_loss_gamma: float = 1.5"),
        "huber_delta": o(0.1, "mg/retinanet.py:104", "huber_loss_delta: float = 0.1"),
        "box_loss_weight": o(50.0, "mg/retinanet.py:105", "box_loss_weight: int = 50"),
        "drop_path_blocks": o(
            16, "mg/spinenet.py:393", "self._init_stochastic_depth_rate, i + 1, len(self._block_specs)),"
        ),
        "amp": o(
            "fp16", "mg/retinanet/coco_spinenet96_gpu_multiworker_mirrored.yaml:7", "mixed_precision_dtype: float16"
        ),
    },
    "retinanet_spinenet143_mg_gpu": {
        "global_batch_size": o(
            8, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:36", "global_batch_size: 8"
        ),
        "total_steps": o(23100, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:61", "train_steps: 23100"),
        "schedule_type": o(
            "cosine", "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:55", "type: 'cosine'"
        ),
        "lr": o(
            0.032, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:54", "initial_learning_rate: 0.032"
        ),
        "warmup_steps": o(2000, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:59", "warmup_steps: 2000"),
        "warmup_lr": o(
            0.0067, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:58", "warmup_learning_rate: 0.0067"
        ),
        "momentum": o(0.9, "mg/retinanet.py:367", "'momentum': 0.9"),
        "bn_momentum": o(0.99, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:32", "norm_momentum: 0.99"),
        "bn_eps": o(0.001, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:31", "norm_epsilon: 0.001"),
        "sync_bn": o(True, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:33", "use_sync_bn: true"),
        "l2": o(4e-05, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:10", "l2_weight_decay: 4.0e-05"),
        "clip": o(None, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:absent", "gradient_clip_norm"),
        "act": o("swish", "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:30", "activation: 'swish'"),
        "drop_connect": o(
            0.2, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:18", "stochastic_depth_drop_rate: 0.2"
        ),
        "image_size": o(
            1280, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:26", "input_size: [1280, 1280, 3]"
        ),
        "scale_min": o(0.1, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:41", "aug_scale_min: 0.1"),
        "scale_max": o(2.0, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:40", "aug_scale_max: 2.0"),
        "anchor_size": o(4.0, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:13", "anchor_size: 4"),
        "num_scales": o(3, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:15", "num_scales: 3"),
        "head_convs": o(4, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:24", "num_convs: 4"),
        "head_filters": o(256, "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:25", "num_filters: 256"),
        "focal_alpha": o(0.25, "mg/retinanet.py:102", "focal_loss_alpha: float = 0.25"),
        "focal_gamma": o(1.5, "mg/retinanet.py:103", "focal_loss_gamma: float = 1.5"),
        "huber_delta": o(0.1, "mg/retinanet.py:104", "huber_loss_delta: float = 0.1"),
        "box_loss_weight": o(50.0, "mg/retinanet.py:105", "box_loss_weight: int = 50"),
        "drop_path_blocks": o(
            16, "mg/spinenet.py:393", "self._init_stochastic_depth_rate, i + 1, len(self._block_specs)),"
        ),
        "amp": o(
            "fp16", "mg/retinanet/coco_spinenet143_gpu_multiworker_mirrored.yaml:7", "mixed_precision_dtype: float16"
        ),
    },
    "retinanet_spinenet49_mobile": {
        "global_batch_size": o(256, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:36", "global_batch_size: 256"),
        "total_steps": o(277200, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:59", "train_steps: 277200"),
        "decay_steps": o(
            (263340, 272580), "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:51", "boundaries: [263340, 272580]"
        ),
        "lr_levels": o(
            (0.032, 0.0032), "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:52", "values: [0.32, 0.032, 0.0032]"
        ),
        "lr": o(0.32, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:52", "values: [0.32, 0.032, 0.0032]"),
        "warmup_steps": o(2000, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:57", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:56", "warmup_learning_rate: 0.0067"),
        "momentum": o(0.9, "mg/retinanet.py:367", "'momentum': 0.9"),
        "bn_momentum": o(0.99, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:32", "norm_momentum: 0.99"),
        "bn_eps": o(0.001, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:31", "norm_epsilon: 0.001"),
        "sync_bn": o(True, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:33", "use_sync_bn: true"),
        "l2": o(3e-05, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:8", "l2_weight_decay: 3.0e-05"),
        "clip": o(None, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:absent", "gradient_clip_norm"),
        "act": o("hard_swish", "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:30", "activation: 'hard_swish'"),
        "drop_connect": o(0.2, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:16", "stochastic_depth_drop_rate: 0.2"),
        "image_size": o(384, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:26", "input_size: [384, 384, 3]"),
        "scale_min": o(0.5, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:41", "aug_scale_min: 0.5"),
        "scale_max": o(2.0, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:40", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:11", "anchor_size: 3"),
        "num_scales": o(3, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:13", "num_scales: 3"),
        "head_convs": o(4, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:23", "num_convs: 4"),
        "head_filters": o(48, "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:24", "num_filters: 48"),
        "focal_alpha": o(0.25, "mg/retinanet.py:102", "focal_loss_alpha: float = 0.25"),
        "focal_gamma": o(1.5, "mg/retinanet.py:103", "focal_loss_gamma: float = 1.5"),
        "huber_delta": o(0.1, "mg/retinanet.py:104", "huber_loss_delta: float = 0.1"),
        "box_loss_weight": o(50.0, "mg/retinanet.py:105", "box_loss_weight: int = 50"),
        "drop_path_blocks": o(
            16, "mg/spinenet_mobile.py:389", "self._init_stochastic_depth_rate, i + 1, len(self._block_specs)),"
        ),
        "amp": o("bf16", "mg/retinanet/coco_spinenet49_mobile_tpu.yaml:5", "mixed_precision_dtype: 'bfloat16'"),
    },
    "retinanet_spinenet49s_mobile": {
        "global_batch_size": o(256, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:36", "global_batch_size: 256"),
        "total_steps": o(277200, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:60", "train_steps: 277200"),
        "decay_steps": o(
            (263340, 272580), "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:52", "boundaries: [263340, 272580]"
        ),
        "lr_levels": o(
            (0.032, 0.0032), "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:53", "values: [0.32, 0.032, 0.0032]"
        ),
        "lr": o(0.32, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:53", "values: [0.32, 0.032, 0.0032]"),
        "warmup_steps": o(2000, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:58", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:57", "warmup_learning_rate: 0.0067"),
        "momentum": o(0.9, "mg/retinanet.py:367", "'momentum': 0.9"),
        "bn_momentum": o(0.99, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:32", "norm_momentum: 0.99"),
        "bn_eps": o(0.001, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:31", "norm_epsilon: 0.001"),
        "sync_bn": o(True, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:33", "use_sync_bn: true"),
        "l2": o(3e-05, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:8", "l2_weight_decay: 3.0e-05"),
        "clip": o(None, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:absent", "gradient_clip_norm"),
        "act": o("hard_swish", "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:30", "activation: 'hard_swish'"),
        "drop_connect": o(0.2, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:16", "stochastic_depth_drop_rate: 0.2"),
        "image_size": o(384, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:26", "input_size: [384, 384, 3]"),
        "scale_min": o(0.5, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:41", "aug_scale_min: 0.5"),
        "scale_max": o(2.0, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:40", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:11", "anchor_size: 3"),
        "num_scales": o(3, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:13", "num_scales: 3"),
        "head_convs": o(4, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:23", "num_convs: 4"),
        "head_filters": o(40, "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:24", "num_filters: 40"),
        "focal_alpha": o(0.25, "mg/retinanet.py:102", "focal_loss_alpha: float = 0.25"),
        "focal_gamma": o(1.5, "mg/retinanet.py:103", "focal_loss_gamma: float = 1.5"),
        "huber_delta": o(0.1, "mg/retinanet.py:104", "huber_loss_delta: float = 0.1"),
        "box_loss_weight": o(50.0, "mg/retinanet.py:105", "box_loss_weight: int = 50"),
        "drop_path_blocks": o(
            16, "mg/spinenet_mobile.py:389", "self._init_stochastic_depth_rate, i + 1, len(self._block_specs)),"
        ),
        "amp": o("bf16", "mg/retinanet/coco_spinenet49s_mobile_tpu.yaml:5", "mixed_precision_dtype: 'bfloat16'"),
    },
    "retinanet_spinenet49xs_mobile": {
        "global_batch_size": o(256, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:35", "global_batch_size: 256"),
        "total_steps": o(277200, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:58", "train_steps: 277200"),
        "decay_steps": o(
            (263340, 272580), "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:50", "boundaries: [263340, 272580]"
        ),
        "lr_levels": o(
            (0.032, 0.0032), "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:51", "values: [0.32, 0.032, 0.0032]"
        ),
        "lr": o(0.32, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:51", "values: [0.32, 0.032, 0.0032]"),
        "warmup_steps": o(2000, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:56", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:55", "warmup_learning_rate: 0.0067"),
        "momentum": o(0.9, "mg/retinanet.py:367", "'momentum': 0.9"),
        "bn_momentum": o(0.99, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:31", "norm_momentum: 0.99"),
        "bn_eps": o(0.001, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:30", "norm_epsilon: 0.001"),
        "sync_bn": o(True, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:32", "use_sync_bn: true"),
        "l2": o(3e-05, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:7", "l2_weight_decay: 3.0e-05"),
        "clip": o(None, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:absent", "gradient_clip_norm"),
        "act": o("swish", "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:29", "activation: 'swish'"),
        "drop_connect": o(0.2, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:15", "stochastic_depth_drop_rate: 0.2"),
        "image_size": o(256, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:25", "input_size: [256, 256, 3]"),
        "scale_min": o(0.5, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:40", "aug_scale_min: 0.5"),
        "scale_max": o(2.0, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:39", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:10", "anchor_size: 3"),
        "num_scales": o(3, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:12", "num_scales: 3"),
        "head_convs": o(4, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:22", "num_convs: 4"),
        "head_filters": o(24, "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:23", "num_filters: 24"),
        "focal_alpha": o(0.25, "mg/retinanet.py:102", "focal_loss_alpha: float = 0.25"),
        "focal_gamma": o(1.5, "mg/retinanet.py:103", "focal_loss_gamma: float = 1.5"),
        "huber_delta": o(0.1, "mg/retinanet.py:104", "huber_loss_delta: float = 0.1"),
        "box_loss_weight": o(50.0, "mg/retinanet.py:105", "box_loss_weight: int = 50"),
        "drop_path_blocks": o(
            16, "mg/spinenet_mobile.py:389", "self._init_stochastic_depth_rate, i + 1, len(self._block_specs)),"
        ),
        "amp": o("bf16", "mg/retinanet/coco_spinenet49xs_mobile_tpu.yaml:4", "mixed_precision_dtype: 'bfloat16'"),
    },
    "maskrcnn_spinenet49s": {
        "global_batch_size": o(256, "tpu/spinenet/spinenet49s_mrcnn.yaml:10", "train_batch_size: 256"),
        "total_steps": o(162050, "tpu/spinenet/spinenet49s_mrcnn.yaml:9", "total_steps: 162050"),
        "decay_steps": o(
            (148160, 157420), "tpu/spinenet/spinenet49s_mrcnn.yaml:15", "learning_rate_steps: [148160, 157420]"
        ),
        "lr": o(0.28, "tpu/spinenet/spinenet49s_mrcnn.yaml:13", "init_learning_rate: 0.28"),
        "lr_levels": o(
            (0.028, 0.0028), "tpu/spinenet/spinenet49s_mrcnn.yaml:14", "learning_rate_levels: [0.028, 0.0028]"
        ),
        "warmup_steps": o(2000, "tpu/spinenet/spinenet49s_mrcnn.yaml:12", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "tpu/base_config.py:47", "'warmup_learning_rate': 0.0067,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(4e-05, "tpu/spinenet/spinenet49s_mrcnn.yaml:16", "l2_weight_decay: 0.00004"),
        "clip": o(None, "tpu/base_config.py:64", "'gradient_clip_norm': 0.0,"),
        "bn_momentum": o(0.99, "tpu/spinenet/spinenet49s_mrcnn.yaml:21", "batch_norm_momentum: 0.99"),
        "bn_eps": o(0.001, "tpu/spinenet/spinenet49s_mrcnn.yaml:20", "batch_norm_epsilon: 0.001"),
        "sync_bn": o(True, "tpu/spinenet/spinenet49s_mrcnn.yaml:22", "use_sync_bn: true"),
        "act": o("relu", "tpu/base_config.py:91", "'activation': 'relu',"),
        "drop_connect": o(None, "tpu/spinenet/spinenet49s_mrcnn.yaml:absent", "init_drop_connect_rate"),
        "image_size": o(640, "tpu/spinenet/spinenet49s_mrcnn.yaml:26", "output_size: [640, 640]"),
        "scale_min": o(0.5, "tpu/spinenet/spinenet49s_mrcnn.yaml:27", "aug_scale_min: 0.5"),
        "scale_max": o(2.0, "tpu/spinenet/spinenet49s_mrcnn.yaml:28", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "tpu/spinenet/spinenet49s_mrcnn.yaml:18", "anchor_size: 3.0"),
        "num_scales": o(1, "tpu/maskrcnn_config.py:55", "'num_scales': 1,"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "maskrcnn_spinenet49": {
        "global_batch_size": o(256, "tpu/spinenet/spinenet49_mrcnn.yaml:10", "train_batch_size: 256"),
        "total_steps": o(162050, "tpu/spinenet/spinenet49_mrcnn.yaml:9", "total_steps: 162050"),
        "decay_steps": o(
            (148160, 157420), "tpu/spinenet/spinenet49_mrcnn.yaml:15", "learning_rate_steps: [148160, 157420]"
        ),
        "lr": o(0.28, "tpu/spinenet/spinenet49_mrcnn.yaml:13", "init_learning_rate: 0.28"),
        "lr_levels": o(
            (0.028, 0.0028), "tpu/spinenet/spinenet49_mrcnn.yaml:14", "learning_rate_levels: [0.028, 0.0028]"
        ),
        "warmup_steps": o(2000, "tpu/spinenet/spinenet49_mrcnn.yaml:12", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "tpu/base_config.py:47", "'warmup_learning_rate': 0.0067,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(4e-05, "tpu/spinenet/spinenet49_mrcnn.yaml:16", "l2_weight_decay: 0.00004"),
        "clip": o(None, "tpu/base_config.py:64", "'gradient_clip_norm': 0.0,"),
        "bn_momentum": o(0.99, "tpu/spinenet/spinenet49_mrcnn.yaml:21", "batch_norm_momentum: 0.99"),
        "bn_eps": o(0.001, "tpu/spinenet/spinenet49_mrcnn.yaml:20", "batch_norm_epsilon: 0.001"),
        "sync_bn": o(True, "tpu/spinenet/spinenet49_mrcnn.yaml:22", "use_sync_bn: true"),
        "act": o("relu", "tpu/base_config.py:91", "'activation': 'relu',"),
        "drop_connect": o(None, "tpu/spinenet/spinenet49_mrcnn.yaml:absent", "init_drop_connect_rate"),
        "image_size": o(640, "tpu/spinenet/spinenet49_mrcnn.yaml:26", "output_size: [640, 640]"),
        "scale_min": o(0.5, "tpu/spinenet/spinenet49_mrcnn.yaml:27", "aug_scale_min: 0.5"),
        "scale_max": o(2.0, "tpu/spinenet/spinenet49_mrcnn.yaml:28", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "tpu/spinenet/spinenet49_mrcnn.yaml:18", "anchor_size: 3.0"),
        "num_scales": o(1, "tpu/maskrcnn_config.py:55", "'num_scales': 1,"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "maskrcnn_spinenet96": {
        "global_batch_size": o(256, "tpu/spinenet/spinenet96_mrcnn.yaml:10", "train_batch_size: 256"),
        "total_steps": o(162050, "tpu/spinenet/spinenet96_mrcnn.yaml:9", "total_steps: 162050"),
        "decay_steps": o(
            (148160, 157420), "tpu/spinenet/spinenet96_mrcnn.yaml:15", "learning_rate_steps: [148160, 157420]"
        ),
        "lr": o(0.28, "tpu/spinenet/spinenet96_mrcnn.yaml:13", "init_learning_rate: 0.28"),
        "lr_levels": o(
            (0.028, 0.0028), "tpu/spinenet/spinenet96_mrcnn.yaml:14", "learning_rate_levels: [0.028, 0.0028]"
        ),
        "warmup_steps": o(2000, "tpu/spinenet/spinenet96_mrcnn.yaml:12", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "tpu/base_config.py:47", "'warmup_learning_rate': 0.0067,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(4e-05, "tpu/spinenet/spinenet96_mrcnn.yaml:16", "l2_weight_decay: 0.00004"),
        "clip": o(None, "tpu/base_config.py:64", "'gradient_clip_norm': 0.0,"),
        "bn_momentum": o(0.99, "tpu/spinenet/spinenet96_mrcnn.yaml:21", "batch_norm_momentum: 0.99"),
        "bn_eps": o(0.001, "tpu/spinenet/spinenet96_mrcnn.yaml:20", "batch_norm_epsilon: 0.001"),
        "sync_bn": o(True, "tpu/spinenet/spinenet96_mrcnn.yaml:22", "use_sync_bn: true"),
        "act": o("relu", "tpu/base_config.py:91", "'activation': 'relu',"),
        "drop_connect": o(None, "tpu/spinenet/spinenet96_mrcnn.yaml:absent", "init_drop_connect_rate"),
        "image_size": o(1024, "tpu/spinenet/spinenet96_mrcnn.yaml:26", "output_size: [1024, 1024]"),
        "scale_min": o(0.5, "tpu/spinenet/spinenet96_mrcnn.yaml:27", "aug_scale_min: 0.5"),
        "scale_max": o(2.0, "tpu/spinenet/spinenet96_mrcnn.yaml:28", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "tpu/spinenet/spinenet96_mrcnn.yaml:18", "anchor_size: 3.0"),
        "num_scales": o(1, "tpu/maskrcnn_config.py:55", "'num_scales': 1,"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "maskrcnn_spinenet143": {
        "global_batch_size": o(256, "tpu/spinenet/spinenet143_mrcnn.yaml:10", "train_batch_size: 256"),
        "total_steps": o(162050, "tpu/spinenet/spinenet143_mrcnn.yaml:9", "total_steps: 162050"),
        "decay_steps": o(
            (148160, 157420), "tpu/spinenet/spinenet143_mrcnn.yaml:15", "learning_rate_steps: [148160, 157420]"
        ),
        "lr": o(0.28, "tpu/spinenet/spinenet143_mrcnn.yaml:13", "init_learning_rate: 0.28"),
        "lr_levels": o(
            (0.028, 0.0028), "tpu/spinenet/spinenet143_mrcnn.yaml:14", "learning_rate_levels: [0.028, 0.0028]"
        ),
        "warmup_steps": o(2000, "tpu/spinenet/spinenet143_mrcnn.yaml:12", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "tpu/base_config.py:47", "'warmup_learning_rate': 0.0067,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(4e-05, "tpu/spinenet/spinenet143_mrcnn.yaml:16", "l2_weight_decay: 0.00004"),
        "clip": o(None, "tpu/base_config.py:64", "'gradient_clip_norm': 0.0,"),
        "bn_momentum": o(0.99, "tpu/spinenet/spinenet143_mrcnn.yaml:21", "batch_norm_momentum: 0.99"),
        "bn_eps": o(0.001, "tpu/spinenet/spinenet143_mrcnn.yaml:20", "batch_norm_epsilon: 0.001"),
        "sync_bn": o(True, "tpu/spinenet/spinenet143_mrcnn.yaml:22", "use_sync_bn: true"),
        "act": o("relu", "tpu/base_config.py:91", "'activation': 'relu',"),
        "drop_connect": o(None, "tpu/spinenet/spinenet143_mrcnn.yaml:absent", "init_drop_connect_rate"),
        "image_size": o(1280, "tpu/spinenet/spinenet143_mrcnn.yaml:26", "output_size: [1280, 1280]"),
        "scale_min": o(0.5, "tpu/spinenet/spinenet143_mrcnn.yaml:27", "aug_scale_min: 0.5"),
        "scale_max": o(2.0, "tpu/spinenet/spinenet143_mrcnn.yaml:28", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "tpu/spinenet/spinenet143_mrcnn.yaml:18", "anchor_size: 3.0"),
        "num_scales": o(1, "tpu/maskrcnn_config.py:55", "'num_scales': 1,"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "maskrcnn_spinenet190": {
        "global_batch_size": o(256, "tpu/spinenet/spinenet190_mrcnn.yaml:10", "train_batch_size: 256"),
        "total_steps": o(187600, "tpu/spinenet/spinenet190_mrcnn.yaml:9", "total_steps: 187600"),
        "decay_steps": o(
            (173530, 182910), "tpu/spinenet/spinenet190_mrcnn.yaml:15", "learning_rate_steps: [173530, 182910]"
        ),
        "lr": o(0.28, "tpu/spinenet/spinenet190_mrcnn.yaml:13", "init_learning_rate: 0.28"),
        "lr_levels": o(
            (0.028, 0.0028), "tpu/spinenet/spinenet190_mrcnn.yaml:14", "learning_rate_levels: [0.028, 0.0028]"
        ),
        "warmup_steps": o(2000, "tpu/spinenet/spinenet190_mrcnn.yaml:12", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "tpu/base_config.py:47", "'warmup_learning_rate': 0.0067,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(4e-05, "tpu/spinenet/spinenet190_mrcnn.yaml:16", "l2_weight_decay: 0.00004"),
        "clip": o(None, "tpu/base_config.py:64", "'gradient_clip_norm': 0.0,"),
        "bn_momentum": o(0.99, "tpu/spinenet/spinenet190_mrcnn.yaml:21", "batch_norm_momentum: 0.99"),
        "bn_eps": o(0.001, "tpu/spinenet/spinenet190_mrcnn.yaml:20", "batch_norm_epsilon: 0.001"),
        "sync_bn": o(True, "tpu/spinenet/spinenet190_mrcnn.yaml:22", "use_sync_bn: true"),
        "act": o("swish", "tpu/spinenet/spinenet190_mrcnn.yaml:23", "activation: 'swish'"),
        "drop_connect": o(0.2, "tpu/spinenet/spinenet190_mrcnn.yaml:26", "init_drop_connect_rate: 0.2"),
        "image_size": o(1536, "tpu/spinenet/spinenet190_mrcnn.yaml:28", "output_size: [1536, 1536]"),
        "scale_min": o(0.1, "tpu/spinenet/spinenet190_mrcnn.yaml:29", "aug_scale_min: 0.1"),
        "scale_max": o(2.0, "tpu/spinenet/spinenet190_mrcnn.yaml:30", "aug_scale_max: 2.0"),
        "anchor_size": o(5.0, "tpu/spinenet/spinenet190_mrcnn.yaml:18", "anchor_size: 5.0"),
        "rpn_convs": o(7, "tpu/spinenet/spinenet190_mrcnn.yaml:32", "num_convs: 7"),
        "rpn_filters": o(384, "tpu/spinenet/spinenet190_mrcnn.yaml:33", "num_filters: 384"),
        "box_convs": o(7, "tpu/spinenet/spinenet190_mrcnn.yaml:36", "num_convs: 7"),
        "box_filters": o(384, "tpu/spinenet/spinenet190_mrcnn.yaml:37", "num_filters: 384"),
        "box_fcs": o(1, "tpu/spinenet/spinenet190_mrcnn.yaml:38", "num_fcs: 1"),
        "mask_convs": o(7, "tpu/spinenet/spinenet190_mrcnn.yaml:41", "num_convs: 7"),
        "mask_filters": o(384, "tpu/spinenet/spinenet190_mrcnn.yaml:42", "num_filters: 384"),
        "num_scales": o(1, "tpu/maskrcnn_config.py:55", "'num_scales': 1,"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "maskrcnn_spinenet49_mg": {
        "global_batch_size": o(256, "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:8", "global_batch_size: 256"),
        "total_steps": o(231000, "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:36", "train_steps: 231000"),
        "decay_steps": o(
            (219450, 226380), "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:41", "boundaries: [219450, 226380]"
        ),
        "lr_levels": o(
            (0.032, 0.0032), "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:42", "values: [0.32, 0.032, 0.0032]"
        ),
        "lr": o(0.32, "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:42", "values: [0.32, 0.032, 0.0032]"),
        "warmup_steps": o(2000, "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:46", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:47", "warmup_learning_rate: 0.0067"),
        "momentum": o(0.9, "mg/maskrcnn.py:458", "'momentum': 0.9"),
        "bn_momentum": o(0.99, "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:31", "norm_momentum: 0.99"),
        "bn_eps": o(0.001, "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:30", "norm_epsilon: 0.001"),
        "sync_bn": o(True, "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:32", "use_sync_bn: true"),
        "l2": o(4e-05, "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:14", "l2_weight_decay: 0.00004"),
        "clip": o(None, "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:absent", "clipnorm"),
        "act": o("relu", "mg/common.py:156", "activation: str = 'relu'"),
        "drop_connect": o(0.2, "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:24", "stochastic_depth_drop_rate: 0.2"),
        "image_size": o(640, "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:21", "input_size: [640, 640, 3]"),
        "scale_min": o(0.1, "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:11", "aug_scale_min: 0.1"),
        "scale_max": o(2.0, "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:12", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:17", "anchor_size: 3.0"),
        "num_scales": o(3, "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:18", "num_scales: 3"),
        "rpn_convs": o(1, "mg/maskrcnn.py:92", "num_convs: int = 1"),
        "rpn_filters": o(256, "mg/maskrcnn.py:93", "num_filters: int = 256"),
        "box_convs": o(4, "mg/maskrcnn.py:99", "num_convs: int = 4"),
        "box_filters": o(256, "mg/maskrcnn.py:100", "num_filters: int = 256"),
        "box_fcs": o(1, "mg/maskrcnn.py:102", "num_fcs: int = 1"),
        "box_fc_dim": o(1024, "mg/maskrcnn.py:103", "fc_dims: int = 1024"),
        "mask_convs": o(4, "mg/maskrcnn.py:160", "num_convs: int = 4"),
        "mask_filters": o(256, "mg/maskrcnn.py:161", "num_filters: int = 256"),
        "rpn_pre_nms_top_n": o(2000, "mg/maskrcnn.py:112", "pre_nms_top_k: int = 2000"),
        "rpn_post_nms_top_n": o(1000, "mg/maskrcnn.py:116", "num_proposals: int = 1000"),
        "rpn_test_pre_nms_top_n": o(1000, "mg/maskrcnn.py:117", "test_pre_nms_top_k: int = 1000"),
        "rpn_test_post_nms_top_n": o(1000, "mg/maskrcnn.py:121", "test_num_proposals: int = 1000"),
        "drop_path_blocks": o(
            16, "mg/spinenet.py:393", "self._init_stochastic_depth_rate, i + 1, len(self._block_specs)),"
        ),
        "amp": o("bf16", "mg/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml:4", "mixed_precision_dtype: 'bfloat16'"),
    },
    "maskrcnn_spinenet96_mg": {
        "global_batch_size": o(256, "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:8", "global_batch_size: 256"),
        "total_steps": o(231000, "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:36", "train_steps: 231000"),
        "decay_steps": o(
            (219450, 226380), "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:41", "boundaries: [219450, 226380]"
        ),
        "lr_levels": o(
            (0.032, 0.0032), "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:42", "values: [0.32, 0.032, 0.0032]"
        ),
        "lr": o(0.32, "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:42", "values: [0.32, 0.032, 0.0032]"),
        "warmup_steps": o(2000, "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:46", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:47", "warmup_learning_rate: 0.0067"),
        "momentum": o(0.9, "mg/maskrcnn.py:458", "'momentum': 0.9"),
        "bn_momentum": o(0.99, "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:31", "norm_momentum: 0.99"),
        "bn_eps": o(0.001, "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:30", "norm_epsilon: 0.001"),
        "sync_bn": o(True, "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:32", "use_sync_bn: true"),
        "l2": o(4e-05, "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:14", "l2_weight_decay: 0.00004"),
        "clip": o(None, "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:absent", "clipnorm"),
        "act": o("relu", "mg/common.py:156", "activation: str = 'relu'"),
        "drop_connect": o(0.2, "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:24", "stochastic_depth_drop_rate: 0.2"),
        "image_size": o(1024, "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:21", "input_size: [1024, 1024, 3]"),
        "scale_min": o(0.1, "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:11", "aug_scale_min: 0.1"),
        "scale_max": o(2.0, "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:12", "aug_scale_max: 2.0"),
        "anchor_size": o(3.0, "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:17", "anchor_size: 3.0"),
        "num_scales": o(3, "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:18", "num_scales: 3"),
        "rpn_convs": o(1, "mg/maskrcnn.py:92", "num_convs: int = 1"),
        "rpn_filters": o(256, "mg/maskrcnn.py:93", "num_filters: int = 256"),
        "box_convs": o(4, "mg/maskrcnn.py:99", "num_convs: int = 4"),
        "box_filters": o(256, "mg/maskrcnn.py:100", "num_filters: int = 256"),
        "box_fcs": o(1, "mg/maskrcnn.py:102", "num_fcs: int = 1"),
        "box_fc_dim": o(1024, "mg/maskrcnn.py:103", "fc_dims: int = 1024"),
        "mask_convs": o(4, "mg/maskrcnn.py:160", "num_convs: int = 4"),
        "mask_filters": o(256, "mg/maskrcnn.py:161", "num_filters: int = 256"),
        "rpn_pre_nms_top_n": o(2000, "mg/maskrcnn.py:112", "pre_nms_top_k: int = 2000"),
        "rpn_post_nms_top_n": o(1000, "mg/maskrcnn.py:116", "num_proposals: int = 1000"),
        "rpn_test_pre_nms_top_n": o(1000, "mg/maskrcnn.py:117", "test_pre_nms_top_k: int = 1000"),
        "rpn_test_post_nms_top_n": o(1000, "mg/maskrcnn.py:121", "test_num_proposals: int = 1000"),
        "drop_path_blocks": o(
            16, "mg/spinenet.py:393", "self._init_stochastic_depth_rate, i + 1, len(self._block_specs)),"
        ),
        "amp": o("bf16", "mg/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml:4", "mixed_precision_dtype: 'bfloat16'"),
    },
    "maskrcnn_spinenet143_mg": {
        "global_batch_size": o(256, "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:8", "global_batch_size: 256"),
        "total_steps": o(231000, "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:36", "train_steps: 231000"),
        "decay_steps": o(
            (219450, 226380), "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:41", "boundaries: [219450, 226380]"
        ),
        "lr_levels": o(
            (0.032, 0.0032), "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:42", "values: [0.32, 0.032, 0.0032]"
        ),
        "lr": o(0.32, "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:42", "values: [0.32, 0.032, 0.0032]"),
        "warmup_steps": o(2000, "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:46", "warmup_steps: 2000"),
        "warmup_lr": o(0.0067, "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:47", "warmup_learning_rate: 0.0067"),
        "momentum": o(0.9, "mg/maskrcnn.py:458", "'momentum': 0.9"),
        "bn_momentum": o(0.99, "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:31", "norm_momentum: 0.99"),
        "bn_eps": o(0.001, "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:30", "norm_epsilon: 0.001"),
        "sync_bn": o(True, "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:32", "use_sync_bn: true"),
        "l2": o(4e-05, "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:14", "l2_weight_decay: 0.00004"),
        "clip": o(None, "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:absent", "clipnorm"),
        "act": o("relu", "mg/common.py:156", "activation: str = 'relu'"),
        "drop_connect": o(0.2, "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:24", "stochastic_depth_drop_rate: 0.2"),
        "image_size": o(1280, "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:21", "input_size: [1280, 1280, 3]"),
        "scale_min": o(0.1, "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:11", "aug_scale_min: 0.1"),
        "scale_max": o(2.0, "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:12", "aug_scale_max: 2.0"),
        "anchor_size": o(4.0, "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:17", "anchor_size: 4.0"),
        "num_scales": o(3, "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:18", "num_scales: 3"),
        "rpn_convs": o(1, "mg/maskrcnn.py:92", "num_convs: int = 1"),
        "rpn_filters": o(256, "mg/maskrcnn.py:93", "num_filters: int = 256"),
        "box_convs": o(4, "mg/maskrcnn.py:99", "num_convs: int = 4"),
        "box_filters": o(256, "mg/maskrcnn.py:100", "num_filters: int = 256"),
        "box_fcs": o(1, "mg/maskrcnn.py:102", "num_fcs: int = 1"),
        "box_fc_dim": o(1024, "mg/maskrcnn.py:103", "fc_dims: int = 1024"),
        "mask_convs": o(4, "mg/maskrcnn.py:160", "num_convs: int = 4"),
        "mask_filters": o(256, "mg/maskrcnn.py:161", "num_filters: int = 256"),
        "rpn_pre_nms_top_n": o(2000, "mg/maskrcnn.py:112", "pre_nms_top_k: int = 2000"),
        "rpn_post_nms_top_n": o(1000, "mg/maskrcnn.py:116", "num_proposals: int = 1000"),
        "rpn_test_pre_nms_top_n": o(1000, "mg/maskrcnn.py:117", "test_pre_nms_top_k: int = 1000"),
        "rpn_test_post_nms_top_n": o(1000, "mg/maskrcnn.py:121", "test_num_proposals: int = 1000"),
        "drop_path_blocks": o(
            16, "mg/spinenet.py:393", "self._init_stochastic_depth_rate, i + 1, len(self._block_specs)),"
        ),
        "amp": o("bf16", "mg/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml:4", "mixed_precision_dtype: 'bfloat16'"),
    },
    "classification_spinenet49": {
        "global_batch_size": o(4096, "tpu/spinenet/spinenet49_classification.yaml:11", "train_batch_size: 4096"),
        "total_steps": o(62557, "tpu/spinenet/spinenet49_classification.yaml:10", "total_steps: 62557"),
        "schedule_type": o("cosine", "tpu/spinenet/spinenet49_classification.yaml:13", "type: cosine"),
        "warmup_steps": o(1564, "tpu/spinenet/spinenet49_classification.yaml:14", "warmup_steps: 1564"),
        "lr": o(1.6, "tpu/spinenet/spinenet49_classification.yaml:15", "init_learning_rate: 1.6"),
        "warmup_lr": o(0.0, "tpu/classification_config.py:38", "'warmup_learning_rate': 0.0,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(0.0001, "tpu/spinenet/spinenet49_classification.yaml:16", "l2_weight_decay: 0.0001"),
        "label_smoothing": o(0.1, "tpu/spinenet/spinenet49_classification.yaml:17", "label_smoothing: 0.1"),
        "clip": o(None, "tpu/base_config.py:64", "'gradient_clip_norm': 0.0,"),
        "bn_momentum": o(0.9, "tpu/spinenet/spinenet49_classification.yaml:20", "batch_norm_momentum: 0.9"),
        "bn_eps": o(1e-05, "tpu/spinenet/spinenet49_classification.yaml:19", "batch_norm_epsilon: 1.0e-05"),
        "sync_bn": o(False, "tpu/spinenet/spinenet49_classification.yaml:21", "use_sync_bn: false"),
        "act": o("swish", "tpu/spinenet/spinenet49_classification.yaml:22", "activation: 'swish'"),
        "drop_connect": o(0.2, "tpu/spinenet/spinenet49_classification.yaml:25", "init_drop_connect_rate: 0.2"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "classification_spinenet96": {
        "global_batch_size": o(4096, "tpu/spinenet/spinenet96_classification.yaml:11", "train_batch_size: 4096"),
        "total_steps": o(62557, "tpu/spinenet/spinenet96_classification.yaml:10", "total_steps: 62557"),
        "schedule_type": o("cosine", "tpu/spinenet/spinenet96_classification.yaml:13", "type: cosine"),
        "warmup_steps": o(1564, "tpu/spinenet/spinenet96_classification.yaml:14", "warmup_steps: 1564"),
        "lr": o(1.6, "tpu/spinenet/spinenet96_classification.yaml:15", "init_learning_rate: 1.6"),
        "warmup_lr": o(0.0, "tpu/classification_config.py:38", "'warmup_learning_rate': 0.0,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(0.0001, "tpu/spinenet/spinenet96_classification.yaml:16", "l2_weight_decay: 0.0001"),
        "label_smoothing": o(0.1, "tpu/spinenet/spinenet96_classification.yaml:17", "label_smoothing: 0.1"),
        "clip": o(None, "tpu/base_config.py:64", "'gradient_clip_norm': 0.0,"),
        "bn_momentum": o(0.9, "tpu/spinenet/spinenet96_classification.yaml:20", "batch_norm_momentum: 0.9"),
        "bn_eps": o(1e-05, "tpu/spinenet/spinenet96_classification.yaml:19", "batch_norm_epsilon: 1.0e-05"),
        "sync_bn": o(False, "tpu/spinenet/spinenet96_classification.yaml:21", "use_sync_bn: false"),
        "act": o("swish", "tpu/spinenet/spinenet96_classification.yaml:22", "activation: 'swish'"),
        "drop_connect": o(0.2, "tpu/spinenet/spinenet96_classification.yaml:25", "init_drop_connect_rate: 0.2"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "classification_spinenet143": {
        "global_batch_size": o(4096, "tpu/spinenet/spinenet143_classification.yaml:11", "train_batch_size: 4096"),
        "total_steps": o(62557, "tpu/spinenet/spinenet143_classification.yaml:10", "total_steps: 62557"),
        "schedule_type": o("cosine", "tpu/spinenet/spinenet143_classification.yaml:13", "type: cosine"),
        "warmup_steps": o(1564, "tpu/spinenet/spinenet143_classification.yaml:14", "warmup_steps: 1564"),
        "lr": o(1.6, "tpu/spinenet/spinenet143_classification.yaml:15", "init_learning_rate: 1.6"),
        "warmup_lr": o(0.0, "tpu/classification_config.py:38", "'warmup_learning_rate': 0.0,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(0.0001, "tpu/spinenet/spinenet143_classification.yaml:16", "l2_weight_decay: 0.0001"),
        "label_smoothing": o(0.1, "tpu/spinenet/spinenet143_classification.yaml:17", "label_smoothing: 0.1"),
        "clip": o(None, "tpu/base_config.py:64", "'gradient_clip_norm': 0.0,"),
        "bn_momentum": o(0.9, "tpu/spinenet/spinenet143_classification.yaml:20", "batch_norm_momentum: 0.9"),
        "bn_eps": o(1e-05, "tpu/spinenet/spinenet143_classification.yaml:19", "batch_norm_epsilon: 1.0e-05"),
        "sync_bn": o(False, "tpu/spinenet/spinenet143_classification.yaml:21", "use_sync_bn: false"),
        "act": o("swish", "tpu/spinenet/spinenet143_classification.yaml:22", "activation: 'swish'"),
        "drop_connect": o(0.2, "tpu/spinenet/spinenet143_classification.yaml:25", "init_drop_connect_rate: 0.2"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
    "classification_spinenet190": {
        "global_batch_size": o(4096, "tpu/spinenet/spinenet190_classification.yaml:10", "train_batch_size: 4096"),
        "total_steps": o(62557, "tpu/spinenet/spinenet190_classification.yaml:9", "total_steps: 62557"),
        "schedule_type": o("cosine", "tpu/spinenet/spinenet190_classification.yaml:12", "type: cosine"),
        "warmup_steps": o(1564, "tpu/spinenet/spinenet190_classification.yaml:13", "warmup_steps: 1564"),
        "lr": o(1.6, "tpu/spinenet/spinenet190_classification.yaml:14", "init_learning_rate: 1.6"),
        "warmup_lr": o(0.0, "tpu/classification_config.py:38", "'warmup_learning_rate': 0.0,"),
        "momentum": o(0.9, "tpu/base_config.py:43", "'momentum': 0.9,"),
        "l2": o(0.0001, "tpu/spinenet/spinenet190_classification.yaml:15", "l2_weight_decay: 0.0001"),
        "label_smoothing": o(0.1, "tpu/spinenet/spinenet190_classification.yaml:16", "label_smoothing: 0.1"),
        "clip": o(None, "tpu/base_config.py:64", "'gradient_clip_norm': 0.0,"),
        "bn_momentum": o(0.9, "tpu/spinenet/spinenet190_classification.yaml:19", "batch_norm_momentum: 0.9"),
        "bn_eps": o(1e-05, "tpu/spinenet/spinenet190_classification.yaml:18", "batch_norm_epsilon: 1.0e-05"),
        "sync_bn": o(False, "tpu/spinenet/spinenet190_classification.yaml:20", "use_sync_bn: false"),
        "act": o("swish", "tpu/spinenet/spinenet190_classification.yaml:21", "activation: 'swish'"),
        "drop_connect": o(0.2, "tpu/spinenet/spinenet190_classification.yaml:24", "init_drop_connect_rate: 0.2"),
        "drop_path_blocks": o(15, "tpu/spinenet.py:474", "self._init_drop_connect_rate, i, len(self._block_specs)),"),
        "amp": o("bf16", "tpu/base_config.py:26", "'use_bfloat16': True,"),
    },
}


# ------------------------------------------------------------------------------------------ 1. the table vs the files


@cache
def _lines(path: str) -> tuple[str, ...]:
    return tuple((FIXTURES / path).read_text().split("\n"))


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?", text)]


def _says(row: Official, field: str) -> bool:
    """Whether the cited line's text states the row's value (in the file's own notation)."""
    value, line = row.value, row.text
    if field == "drop_path_blocks":
        return "len(self._block_specs)" in line
    if isinstance(value, bool):
        return str(value).lower() in line.lower()
    if value is None:
        return any(word in line.lower() for word in ("null", "0.0"))
    if isinstance(value, str):
        return {"bf16": "bfloat16", "fp16": "float16"}.get(value, value) in line
    expected = value if isinstance(value, tuple) else (value,)
    found = _numbers(line)
    return all(any(math.isclose(v, f, rel_tol=1e-9) for f in found) for v in expected)


def _block_table_rows(path: str) -> int:
    """Rows of the ``SPINENET_BLOCK_SPECS = [...]`` table of an official ``spinenet*.py``."""
    text = (FIXTURES / path).read_text()
    body = text.split("SPINENET_BLOCK_SPECS = [", 1)[1].split("\n]", 1)[0]
    return len(re.findall(r"^\s*\(\d+, '", body, flags=re.M))


@pytest.mark.parametrize("name", sorted(TABLE))
def test_cited_lines_state_the_values(name: str) -> None:
    wrong = []
    for field, row in TABLE[name].items():
        path, _, line = row.where.rpartition(":")
        if path == "paper":
            continue  # the paper is not a fixture; `provenance` names the table
        if line == "absent":
            key = row.text
            if any(key in text for text in _lines(path)):
                wrong.append(f"{field}: {path} has {key!r}")
            continue
        text = _lines(path)[int(line) - 1].strip()
        if row.text not in text:
            wrong.append(f"{field}: {row.where} reads {text!r}, the table quotes {row.text!r}")
        elif not _says(row, field):
            wrong.append(f"{field}: {row.where} ({text!r}) does not state {row.value!r}")
        if field == "drop_path_blocks" and _block_table_rows(path) != row.value:
            wrong.append(f"{field}: {path} has {_block_table_rows(path)} block specs, not {row.value}")
    assert not wrong, "\n".join(wrong)


def test_table_covers_every_official_experiment() -> None:
    official = {n for n in list_experiments() if not get_experiment(n).provenance.startswith("derived:")}
    assert official == set(TABLE)
    for name in list_experiments():
        assert get_experiment(name).provenance, f"{name} has no provenance"


# --------------------------------------------------------------------------------------- 2. the resolved config


def _tf_momentum(pytorch_momentum: float) -> float:
    return 1.0 - pytorch_momentum


@pytest.mark.parametrize("name", sorted(TABLE))
def test_resolved_config_matches_the_table(name: str) -> None:
    cfg = get_experiment(name)
    rows = {field: row.value for field, row in TABLE[name].items()}
    s = cfg.schedule
    resolved = {
        "global_batch_size": cfg.train.global_batch_size,
        "total_steps": s.total_steps,
        "warmup_steps": s.warmup_steps,
        "decay_steps": s.decay_steps,
        "lr": cfg.optim.lr_per_256 * cfg.train.global_batch_size / 256,
        "lr_levels": tuple(
            cfg.optim.lr_per_256 * cfg.train.global_batch_size / 256 * s.decay_factor ** (k + 1)
            for k in range(len(s.decay_steps))
        ),
        "warmup_lr": s.warmup_init_lr_ratio * cfg.optim.lr_per_256 * cfg.train.global_batch_size / 256,
        "momentum": cfg.optim.momentum,
        "l2": cfg.optim.weight_decay,
        "clip": cfg.optim.clip_grad_norm,
        "bn_momentum": _tf_momentum(cfg.model.norm_momentum),
        "bn_eps": cfg.model.norm_eps,
        "sync_bn": cfg.train.sync_bn,
        "act": cfg.model.act,
        "drop_connect": cfg.model.drop_path_rate or None,
        "image_size": cfg.model.image_size,
        "scale_min": cfg.data.scale_min,
        "scale_max": cfg.data.scale_max,
        "amp": cfg.train.amp,
        "schedule_type": s.type,
        "label_smoothing": s.label_smoothing,
    }
    assert s.steps_batch_size == cfg.train.global_batch_size  # the official counts apply unscaled
    wrong = [
        f"{field}: config {resolved[field]!r}, official {value!r} ({TABLE[name][field].where})"
        for field, value in rows.items()
        if field in resolved and not _equal(resolved[field], value)
    ]
    assert not wrong, "\n".join(wrong)


def _equal(ours: Any, official: Any) -> bool:
    if isinstance(official, tuple):
        return len(ours) == len(official) and all(_equal(a, b) for a, b in zip(ours, official, strict=True))
    if isinstance(official, float) and not isinstance(official, bool) and ours is not None:
        return math.isclose(ours, official, rel_tol=1e-6, abs_tol=1e-12)
    return ours == official


# ------------------------------------------------------------------------------------------ 3. the built objects


@cache
def _built(name: str) -> tuple[nn.Module, torch.optim.Optimizer, Any, int]:
    cfg = get_experiment(name)
    num_classes = 1000 if cfg.model.task == "classification" else 91
    with torch.device("meta"):
        model = build_model(cfg.model, num_classes, label_smoothing=cfg.schedule.label_smoothing)
    optimizer = build_optimizer(cfg.optim, model, cfg.train.global_batch_size)
    # steps_per_epoch only matters for epoch-view schedules; the official ones are in steps.
    scheduler, total = build_schedule(cfg.schedule, optimizer, 462, cfg.train.global_batch_size)
    return model, optimizer, scheduler, total


def _lr_at(scheduler: Any, step: int) -> float:
    return scheduler.base_lrs[0] * scheduler.lr_lambdas[0](step)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_built_optimizer_and_schedule_match_the_table(name: str) -> None:
    rows = {field: row.value for field, row in TABLE[name].items()}
    model, optimizer, scheduler, total = _built(name)
    decay, no_decay = optimizer.param_groups
    # L2 on conv / dense kernels only (TF's regulariser on ``kernel`` variables); BN and biases undecayed.
    assert decay["weight_decay"] == pytest.approx(rows["l2"]) and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    bn_params = {
        id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()
    }
    assert bn_params <= {id(p) for p in no_decay["params"]}
    assert decay["momentum"] == pytest.approx(rows["momentum"])
    peak = rows["lr"]
    assert scheduler.base_lrs[0] == pytest.approx(peak)
    assert total == rows["total_steps"]
    warmup = rows["warmup_steps"]
    assert _lr_at(scheduler, 0) == pytest.approx(rows["warmup_lr"], abs=1e-12)
    assert _lr_at(scheduler, warmup - 1) < peak and _lr_at(scheduler, warmup) == pytest.approx(peak)
    if rows.get("schedule_type", "step") == "step":
        levels = (peak, *rows["lr_levels"])
        for k, boundary in enumerate(rows["decay_steps"]):
            assert _lr_at(scheduler, boundary - 1) == pytest.approx(levels[k]), f"before decay {boundary}"
            assert _lr_at(scheduler, boundary) == pytest.approx(levels[k + 1]), f"at decay {boundary}"
        assert _lr_at(scheduler, total - 1) == pytest.approx(levels[-1])
    else:
        # tensorflow/tpu learning_rates.py:57-60: lr * (cos(pi * (step - warmup) / (total - warmup)) + 1) / 2.
        for step in (warmup + 1, (warmup + total) // 2, total - 1):
            tpu = peak * (math.cos(math.pi * (step - warmup) / (total - warmup)) + 1.0) / 2.0
            assert _lr_at(scheduler, step) == pytest.approx(tpu)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_built_model_matches_the_table(name: str) -> None:
    rows = {field: row.value for field, row in TABLE[name].items()}
    model, _, _, _ = _built(name)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms
    for m in norms:
        assert m.eps == rows["bn_eps"] and m.momentum == pytest.approx(1 - rows["bn_momentum"]), m
    backbone = model.classifier.backbone if hasattr(model, "classifier") else model.backbone
    assert backbone.act_name == rows["act"]
    # Stochastic depth: block i (0-based, in the official table's order) drops with rate * (i + 1) / N.
    rate, n = rows["drop_connect"] or 0.0, rows["drop_path_blocks"]
    seen = 0
    for key, block in backbone.blocks.items():
        for m in block.modules():
            if isinstance(m, DropPath):
                assert m.rate == pytest.approx(rate * (int(key) + 1) / n), f"block {key}"
                seen += 1
    assert seen > 0
    for m in backbone.stem_blocks.modules():
        if isinstance(m, DropPath):
            assert m.rate == 0.0
    if "label_smoothing" in rows:
        assert model.label_smoothing == rows["label_smoothing"]
    anchors = model.rpn.anchor_generator if hasattr(model, "rpn") else getattr(model, "anchor_generator", None)
    if "anchor_size" in rows:
        assert anchors.anchor_size == rows["anchor_size"] and anchors.num_scales == rows["num_scales"]
    if "rpn_convs" in rows:  # Mask R-CNN heads: RPN, box head (convs + FCs), mask head (convs, then the deconv)
        rpn = model.rpn.head
        assert len(rpn.convs) == rows["rpn_convs"] and {c.out_channels for c in rpn.convs} == {rows["rpn_filters"]}
        box = model.roi_heads.box_head
        assert len(box.convs) == rows["box_convs"] and len(box.fcs) == rows["box_fcs"]
        assert {layer[0].out_channels for layer in box.convs} == {rows["box_filters"]}
        mask_convs = [m for m in model.roi_heads.mask_head.modules() if type(m) is nn.Conv2d]
        assert len(mask_convs) == rows["mask_convs"] and {c.out_channels for c in mask_convs} == {rows["mask_filters"]}
    if "box_fc_dim" in rows:
        assert {layer[0].out_features for layer in model.roi_heads.box_head.fcs} == {rows["box_fc_dim"]}
    if "rpn_pre_nms_top_n" in rows:  # proposal counts (train, then eval mode)
        rpn = model.rpn
        assert (rpn._pre_nms_top_n["training"], rpn._post_nms_top_n["training"]) == (
            rows["rpn_pre_nms_top_n"],
            rows["rpn_post_nms_top_n"],
        )
        assert (rpn._pre_nms_top_n["testing"], rpn._post_nms_top_n["testing"]) == (
            rows["rpn_test_pre_nms_top_n"],
            rows["rpn_test_post_nms_top_n"],
        )
    if "head_convs" in rows:
        tower = model.head.cls
        assert len(tower.norms[0]) == rows["head_convs"] and tower.norms[0][0].num_features == rows["head_filters"]
        head = model.head
        assert (head.focal_alpha, head.focal_gamma) == (rows["focal_alpha"], rows["focal_gamma"])
        assert (head.huber_delta, head.box_loss_weight) == (rows["huber_delta"], rows["box_loss_weight"])


def test_tensorflow_tpu_drop_path_ends_at_the_full_rate() -> None:
    """The last tensorflow/tpu block drops with the full rate (15/15), Model Garden's with 15/16 of it, because the
    TPU table has one row fewer (the audit's 0.1875-instead-of-0.2 bug)."""
    tpu, _, _, _ = _built("retinanet_spinenet49_protocol_c")
    mg, _, _, _ = _built("retinanet_spinenet49_mg")
    last = str(max(int(k) for k in tpu.backbone.blocks))

    def rates(model: nn.Module) -> list[float]:
        return [m.rate for m in model.backbone.blocks[last].modules() if isinstance(m, DropPath)]

    assert last == "14" and rates(tpu) and rates(mg)
    assert all(r == pytest.approx(0.2) for r in rates(tpu))
    assert all(r == pytest.approx(0.2 * 15 / 16) for r in rates(mg))


@pytest.mark.parametrize("name", [n for n in sorted(TABLE) if n.startswith("maskrcnn_") and n.endswith("_mg")])
def test_model_garden_mask_rcnn_rpn_has_nine_anchors_per_location(name: str) -> None:
    """Model Garden's Mask R-CNN anchors: 3 scales x 3 aspect ratios per location, and an RPN head predicting one
    objectness and 4 box codes for each of them (tensorflow/tpu's Mask R-CNN has 3)."""
    model, _, _, _ = _built(name)
    rpn = model.rpn
    assert rpn.anchor_generator.num_anchors_per_location() == [9] * 5
    assert rpn.head.cls_logits.out_channels == 9 and rpn.head.bbox_pred.out_channels == 36
    # the anchors themselves: at one location, 3 octave scales of the base size for each aspect ratio
    gen = rpn.anchor_generator  # built on the meta device: rebuild its twin on the CPU to read the anchors
    size, levels = gen.anchor_size, gen.levels
    cpu = type(gen)(levels[0], levels[-1], size, num_scales=gen.num_scales, aspect_ratios=gen.aspect_ratios)
    offsets = cpu.grid_anchors([(1, 1)] * len(levels), torch.device("cpu"), torch.float64)[:9]
    widths = (offsets[:, 2] - offsets[:, 0]).tolist()
    heights = (offsets[:, 3] - offsets[:, 1]).tolist()
    areas = sorted({round(w * h, 6) for w, h in zip(widths, heights, strict=True)})
    expected = sorted(round((size * 2 ** levels[0] * 2 ** (s / 3)) ** 2, 6) for s in range(3))
    assert areas == pytest.approx(expected)
