"""Run the official Model Garden SpineNet / SpineNetMobile and dump its weights and endpoints (needs tensorflow).

Used by ``tests/test_parity_model_garden.py`` in a subprocess, so the test process never imports tensorflow.
Builds the backbone with tf-models-official (``official/vision/modeling/backbones``) at a static input size,
either restores a checkpoint written from the same class (the shared fixtures) or randomises every variable,
then writes one ``.npz`` holding:

* ``input``: the NHWC input; ``out/p{level}``: the NHWC endpoints in inference mode;
* the weights of every live layer, keyed by Keras class and *creation order*: ``Conv2D/{k}/kernel``,
  ``BatchNormalization/{k}/gamma``, ``DepthwiseConv2D/{k}/depthwise_kernel``, and for block layers
  ``BottleneckBlock/{k}/_conv1/kernel``, ``InvertedBottleneckBlock/{k}/_squeeze_excitation/_se_reduce/bias``, ...
  Creation order is recovered from Keras' unique layer names (``conv2d``, ``conv2d_1``, ...), which count in the
  order the layers were built; the test maps it onto torchspine's modules.

Usage: ``python model_garden.py CONFIG.json OUT.npz`` (see ``tests/test_parity_model_garden.py`` for the keys).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np
import tensorflow as tf
from official.vision.modeling.backbones import spinenet, spinenet_mobile
from official.vision.modeling.heads import dense_prediction_heads

BLOCK_CLASSES = ("BottleneckBlock", "ResidualBlock", "InvertedBottleneckBlock")
PLAIN_CLASSES = ("Conv2D", "BatchNormalization", "DepthwiseConv2D")
BLOCK_ATTRS = ("_shortcut", "_norm0", "_conv0", "_conv1", "_norm1", "_conv2", "_norm2", "_conv3", "_norm3")


def _order(layer) -> int:
    match = re.search(r"_(\d+)$", layer.name)
    return int(match.group(1)) if match else 0


def _randomize(model, rng: np.random.Generator) -> None:
    """Random but well-scaled values for every variable, BN statistics included (no BN is an identity)."""
    for var in model.variables:
        name, shape = var.name, var.shape.as_list()
        if name.endswith(("kernel:0", "depthwise_kernel:0")):
            fan_in = int(np.prod(shape[:-1])) if "depthwise" not in name else int(np.prod(shape[:2]))
            value = rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)
        elif name.endswith("gamma:0"):
            value = rng.uniform(0.7, 1.3, shape)
        elif name.endswith(("beta:0", "bias:0")) or name.endswith("moving_mean:0"):
            value = rng.normal(0.0, 0.1, shape)
        elif name.endswith("moving_variance:0"):
            value = rng.uniform(0.6, 1.4, shape)
        else:
            raise ValueError(f"unexpected variable {name}")
        var.assign(value.astype(np.float32))


def main(config_path: str, out_path: str) -> None:
    cfg = json.loads(Path(config_path).read_text())
    height, width = cfg["input_size"]
    specs = tf.keras.layers.InputSpec(shape=[1, height, width, 3])
    if cfg["family"] == "mobile":
        model = spinenet_mobile.SpineNetMobile(input_specs=specs, **cfg["kwargs"])
    else:
        model = spinenet.SpineNet(input_specs=specs, **cfg["kwargs"])
    head = None
    if cfg.get("head"):  # RetinaNetHead kwargs: num_classes, num_convs, num_filters, use_separable_conv, ...
        kw = cfg["kwargs"]
        head = dense_prediction_heads.RetinaNetHead(
            min_level=kw["min_level"],
            max_level=kw["max_level"],
            num_anchors_per_location=9,
            activation=kw.get("activation", "relu"),
            **cfg["head"],
        )
    objects = {"backbone": model} if head is None else {"backbone": model, "head": head}
    if cfg.get("checkpoint"):
        tf.train.Checkpoint(**objects).read(cfg["checkpoint"]).expect_partial()
        x = np.load(cfg["input"])
    else:
        rng = np.random.default_rng(cfg["seed"])
        x = rng.normal(0.0, 1.0, (1, height, width, 3)).astype(np.float32)
    outputs = model(x, training=False)
    if head is not None:
        scores, boxes = head(outputs, training=False)[:2]  # builds the head's variables
    if not cfg.get("checkpoint"):
        for obj in objects.values():
            _randomize(obj, rng)
        outputs = model(x, training=False)
        if head is not None:
            scores, boxes = head(outputs, training=False)[:2]
    arrays = {"input": x}
    for level, value in outputs.items():
        arrays[f"out/p{level}"] = value.numpy()
    if head is not None:
        for level in outputs:
            arrays[f"out/class_p{level}"] = scores[level].numpy()
            arrays[f"out/box_p{level}"] = boxes[level].numpy()
    if cfg.get("write_checkpoint"):  # as Model Garden trainers store the model: backbone/..., head/...
        tf.train.Checkpoint(**objects).write(cfg["write_checkpoint"])
    by_class: dict[str, list] = {c: [] for c in PLAIN_CLASSES + BLOCK_CLASSES}
    for layer in model.layers:
        if type(layer).__name__ in by_class and layer.weights:
            by_class[type(layer).__name__].append(layer)
    for cls, layers in by_class.items():
        for k, layer in enumerate(sorted(layers, key=_order)):
            if cls in PLAIN_CLASSES:
                for w in layer.weights:
                    arrays[f"{cls}/{k}/{w.name.split('/')[-1].split(':')[0]}"] = w.numpy()
                continue
            for attr in BLOCK_ATTRS:
                sub = getattr(layer, attr, None)
                if sub is not None and hasattr(sub, "weights"):
                    for w in sub.weights:
                        arrays[f"{cls}/{k}/{attr}/{w.name.split('/')[-1].split(':')[0]}"] = w.numpy()
            se = getattr(layer, "_squeeze_excitation", None)
            if se is not None:
                for part in ("_se_reduce", "_se_expand"):
                    for w in getattr(se, part).weights:
                        arrays[f"{cls}/{k}/_squeeze_excitation/{part}/{w.name.split('/')[-1].split(':')[0]}"] = (
                            w.numpy()
                        )
    arrays["num_weighted_layers"] = np.array(sum(1 for layer in model.layers if layer.weights))
    np.savez(out_path, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:3])
