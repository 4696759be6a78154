"""Ground truth for ``torchspine.convert.model_garden_order``: the ``model.layers`` order of an official Model Garden
SpineNet / SpineNetMobile (needs tensorflow + tf-models-official; run with ``.venv-tf/bin/python``).

Builds the backbone like ``model_garden.py`` (same JSON config: ``family``, ``input_size``, ``kwargs``; no weights are
needed) and writes JSON:

* ``weighted``: for every K of ``layer_with_weights-K`` (the layers of ``model.layers`` that own weights, in order),
  ``[keras_class, creation_index]``. The creation index is the layer's position among the weighted layers of its
  class sorted by the numeric suffix of its unique Keras name (``conv2d``, ``conv2d_1``, ...), i.e. the ``{k}`` of
  ``model_garden.py``'s ``Conv2D/{k}/kernel`` keys, which ``tests/mg_mapping.py`` maps onto torchspine modules.
* ``layers``: every layer of ``model.layers``, weightless ones included: ``class``, ``name``, ``weighted`` and
  ``inputs`` (positions in ``layers`` of the layers its call received, in call order).

Usage: ``python model_garden_order.py CONFIG.json [OUT.json]`` (stdout without ``OUT.json``).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf
from official.vision.modeling.backbones import spinenet, spinenet_mobile


def _suffix(name: str) -> int:
    match = re.search(r"_(\d+)$", name)
    return int(match.group(1)) if match else 0


def layer_order(model) -> dict:
    layers = list(model.layers)
    position = {id(layer): k for k, layer in enumerate(layers)}
    by_class: dict[str, list] = {}
    for layer in layers:
        if layer.weights:
            by_class.setdefault(type(layer).__name__, []).append(layer)
    creation = {
        id(layer): k
        for group in by_class.values()
        for k, layer in enumerate(sorted(group, key=lambda x: _suffix(x.name)))
    }
    described = []
    for layer in layers:
        node = layer._inbound_nodes[0]
        inputs = [] if node.is_input else [position[id(t._keras_history[0])] for t in node.keras_inputs]
        described.append(
            {"class": type(layer).__name__, "name": layer.name, "weighted": bool(layer.weights), "inputs": inputs}
        )
    weighted = [[type(layer).__name__, creation[id(layer)]] for layer in layers if layer.weights]
    return {"weighted": weighted, "layers": described}


def main(config_path: str, out_path: str | None = None) -> None:
    cfg = json.loads(Path(config_path).read_text())
    height, width = cfg["input_size"]
    specs = tf.keras.layers.InputSpec(shape=[1, height, width, 3])
    if cfg["family"] == "mobile":
        model = spinenet_mobile.SpineNetMobile(input_specs=specs, **cfg["kwargs"])
    else:
        model = spinenet.SpineNet(input_specs=specs, **cfg["kwargs"])
    text = json.dumps(layer_order(model))
    if out_path:
        Path(out_path).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main(*sys.argv[1:3])
