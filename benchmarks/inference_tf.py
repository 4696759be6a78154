"""Timing worker for the official TF Model Garden SpineNet-49 RetinaNet; run by `inference.py` in ``.venv-tf``.

Builds, with tf-models-official (``official/vision/modeling``), the SpineNet-49 backbone (``activation='swish'``,
Model Garden defaults otherwise), the ``RetinaNetHead`` (91 classes, 9 anchors, 4 x 256 tower) and the
``MultilevelDetectionGenerator`` (pre-NMS top-k 5000, score 0.05, IoU 0.5, 100 detections, ``nms_version='v2'``,
the batched NMS of the official configs) with randomly initialised weights, and wraps each of the three workloads
in a ``tf.function``:

* ``backbone``: image -> endpoints P3-P7;
* ``network``: image -> raw class and box outputs of every level;
* ``detector``: image -> decoded, NMS'd detections (no input normalisation: Model Garden does that in the input
  pipeline).

Protocol (one JSON object per line): after tracing and one warm-up call of each workload it prints ``{"ready": ...}``;
then each line read from stdin names a workload and a clock (``wall`` or ``cpu``: this process's CPU time), and it
runs the workload once and answers ``{"ms": ...}``; ``quit`` ends it.
The input is NHWC, batch 1; a result is complete when its first output has been copied to NumPy.

Usage: ``.venv-tf/bin/python benchmarks/inference_tf.py SIZE THREADS``
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np
import tensorflow as tf
from official.vision.modeling.backbones import spinenet
from official.vision.modeling.heads import dense_prediction_heads
from official.vision.modeling.layers import detection_generator
from official.vision.ops import anchor


def build(size: int) -> dict:
    specs = tf.keras.layers.InputSpec(shape=[1, size, size, 3])
    backbone = spinenet.SpineNet(input_specs=specs, min_level=3, max_level=7, activation="swish")
    head = dense_prediction_heads.RetinaNetHead(
        min_level=3, max_level=7, num_classes=91, num_anchors_per_location=9, activation="swish"
    )
    anchors = anchor.Anchor(
        min_level=3, max_level=7, num_scales=3, aspect_ratios=[0.5, 1.0, 2.0], anchor_size=3.0, image_size=(size, size)
    ).multilevel_boxes
    anchors = {k: tf.expand_dims(v, 0) for k, v in anchors.items()}
    generator = detection_generator.MultilevelDetectionGenerator(
        apply_nms=True,
        pre_nms_top_k=5000,
        pre_nms_score_threshold=0.05,
        nms_iou_threshold=0.5,
        max_num_detections=100,
        nms_version="v2",
    )
    image_shape = tf.constant([[size, size]], tf.float32)

    @tf.function
    def run_backbone(x):
        return backbone(x, training=False)

    @tf.function
    def run_network(x):
        return head(backbone(x, training=False), training=False)[:2]

    @tf.function
    def run_detector(x):
        scores, boxes = head(backbone(x, training=False), training=False)[:2]
        return generator(boxes, scores, anchors, image_shape)

    def first(out):  # the first tensor of nested dicts / tuples (the detector's outputs hold an empty dict)
        if isinstance(out, dict):
            out = [out[k] for k in sorted(out)]
        if isinstance(out, (tuple, list)):
            return next((t for t in map(first, out) if t is not None), None)
        return out

    x = tf.constant(np.random.default_rng(0).normal(size=(1, size, size, 3)).astype(np.float32))
    return {
        name: (lambda fn=fn: first(fn(x)).numpy())
        for name, fn in (("backbone", run_backbone), ("network", run_network), ("detector", run_detector))
    }


def main(size: int, threads: int) -> None:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    workloads = build(size)
    for fn in workloads.values():
        fn()  # trace
        fn()
    devices = [d.device_type for d in tf.config.list_logical_devices()]
    print(json.dumps({"ready": True, "tf": tf.__version__, "devices": devices}), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        name, clock_name = line.split()
        clock = time.process_time if clock_name == "cpu" else time.perf_counter
        start = clock()
        workloads[name]()
        print(json.dumps({"ms": (clock() - start) * 1e3}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
