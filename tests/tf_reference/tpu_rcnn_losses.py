"""The tensorflow/tpu Mask R-CNN losses computed with TensorFlow's own ``tf.compat.v1.losses`` (needs TF).

Usage: ``python tpu_rcnn_losses.py IN.npz OUT.npz``. The calls are those of tensorflow/tpu
``models/official/detection/modeling/losses.py`` (``RpnScoreLoss``, ``RpnBoxLoss``, ``FastrcnnClassLoss``,
``FastrcnnBoxLoss``, ``MaskrcnnLoss``), in that file's layouts:

* ``score_l{L}`` ``[N, H, W, A]`` logits and ``score_targets_l{L}`` (1 positive, 0 negative, -1 ignored),
  ``box_l{L}`` / ``box_targets_l{L}`` ``[N, H, W, 4A]``; ``rpn_batch_size_per_im``;
* ``class_outputs`` ``[N, R, K]``, ``class_targets`` ``[N, R]``, ``box_outputs`` ``[N, R, 4K]``, ``box_targets``
  ``[N, R, 4]`` (zeros for background RoIs, as ``maskrcnn_model.py`` sets them);
* ``mask_outputs`` ``[N, M, S, S]`` (already the ground-truth class's mask), ``mask_targets``, ``mask_classes``.

Writes the five scalar losses.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow.compat.v1 as tf

SUM_BY_NONZERO_WEIGHTS = tf.losses.Reduction.SUM_BY_NONZERO_WEIGHTS


def main(in_path: str, out_path: str) -> None:
    raw = dict(np.load(in_path))
    levels = sorted(int(k[len("score_l") :]) for k in raw if k.startswith("score_l"))
    batch = int(raw["rpn_batch_size_per_im"])

    score_losses, box_losses = [], []
    for level in levels:
        logits, targets = tf.constant(raw[f"score_l{level}"]), tf.constant(raw[f"score_targets_l{level}"])
        mask = tf.logical_or(tf.equal(targets, 1), tf.equal(targets, 0))
        loss = tf.losses.sigmoid_cross_entropy(
            tf.maximum(targets, tf.zeros_like(targets)), logits, weights=mask, reduction=tf.losses.Reduction.SUM
        )
        score_losses.append(loss / tf.cast(tf.shape(logits)[0] * batch, tf.float32))
        box_targets = tf.constant(raw[f"box_targets_l{level}"])
        box_losses.append(
            tf.losses.huber_loss(
                box_targets,
                tf.constant(raw[f"box_l{level}"]),
                weights=tf.not_equal(box_targets, 0.0),
                delta=1.0 / 9.0,
                reduction=SUM_BY_NONZERO_WEIGHTS,
            )
        )

    class_targets = tf.cast(tf.constant(raw["class_targets"]), tf.int32)
    class_outputs = tf.constant(raw["class_outputs"])
    num_classes = class_outputs.shape[-1]
    class_loss = tf.losses.softmax_cross_entropy(
        tf.one_hot(class_targets, num_classes), class_outputs, reduction=SUM_BY_NONZERO_WEIGHTS
    )
    # The ground-truth class's box of each RoI (losses.py selects it with a one-hot matmul; a gather is the same).
    n, r = class_targets.shape
    box_outputs = tf.reshape(tf.constant(raw["box_outputs"]), [n, r, num_classes, 4])
    selected = tf.gather(box_outputs, class_targets, axis=2, batch_dims=2)
    box_mask = tf.tile(tf.expand_dims(tf.greater(class_targets, 0), axis=2), [1, 1, 4])
    box_loss = tf.losses.huber_loss(
        tf.constant(raw["box_targets"]), selected, weights=box_mask, delta=1.0, reduction=SUM_BY_NONZERO_WEIGHTS
    )

    mask_outputs = tf.constant(raw["mask_outputs"])
    _, m, height, width = mask_outputs.shape
    weights = tf.tile(tf.reshape(tf.greater(tf.constant(raw["mask_classes"]), 0), [n, m, 1, 1]), [1, 1, height, width])
    mask_loss = tf.losses.sigmoid_cross_entropy(
        tf.constant(raw["mask_targets"]), mask_outputs, weights=weights, reduction=SUM_BY_NONZERO_WEIGHTS
    )
    np.savez(
        out_path,
        rpn_score=np.float64(tf.add_n(score_losses).numpy()),
        rpn_box=np.float64(tf.add_n(box_losses).numpy()),
        class_loss=np.float64(class_loss.numpy()),
        box_loss=np.float64(box_loss.numpy()),
        mask_loss=np.float64(mask_loss.numpy()),
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
