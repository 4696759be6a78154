"""Run Model Garden's RetinaNet post-processing (anchors + ``DetectionGenerator``) on raw head outputs (needs TF).

Usage: ``python model_garden_postprocess.py RAW.npz OUT.npz`` where RAW.npz holds ``class_p{L}``/``box_p{L}``
(NHWC raw outputs, Model Garden anchor order) and ``image_size`` ([H, W]). Writes ``boxes`` (x1, y1, x2, y2),
``scores``, ``classes`` of the valid detections, with the official defaults: pre-NMS top-k 5000, score threshold
0.05, NMS IoU 0.5, 100 detections, ``nms_version='v2'``, anchor size 3, 3 scales, aspect ratios 0.5/1/2.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np
import tensorflow as tf
from official.vision.modeling.layers import detection_generator
from official.vision.ops import anchor


def main(raw_path: str, out_path: str) -> None:
    raw = dict(np.load(raw_path))
    height, width = (int(v) for v in raw["image_size"])
    levels = sorted(int(k[len("class_p") :]) for k in raw if k.startswith("class_p"))
    anchors = anchor.Anchor(
        min_level=levels[0],
        max_level=levels[-1],
        num_scales=3,
        aspect_ratios=[0.5, 1.0, 2.0],
        anchor_size=3.0,
        image_size=(height, width),
    ).multilevel_boxes
    generator = detection_generator.MultilevelDetectionGenerator(
        apply_nms=True,
        pre_nms_top_k=5000,
        pre_nms_score_threshold=0.05,
        nms_iou_threshold=0.5,
        max_num_detections=100,
        nms_version="v2",
    )
    out = generator(
        {str(lv): tf.constant(raw[f"box_p{lv}"]) for lv in levels},
        {str(lv): tf.constant(raw[f"class_p{lv}"]) for lv in levels},
        {str(lv): tf.expand_dims(anchors[str(lv)], 0) for lv in levels},
        tf.constant([[height, width]], tf.float32),
    )
    n = int(out["num_detections"][0])
    boxes = out["detection_boxes"][0, :n].numpy()[:, [1, 0, 3, 2]]  # y1 x1 y2 x2 -> x1 y1 x2 y2
    np.savez(
        out_path,
        boxes=boxes,
        scores=out["detection_scores"][0, :n].numpy(),
        classes=out["detection_classes"][0, :n].numpy(),
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
