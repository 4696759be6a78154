"""Write arrays from an ``.npz`` as a TF1 name-based checkpoint (``tf.compat.v1.train.Saver``), with TensorFlow.

Used by the converter tests to produce tensorflow/tpu-style checkpoints (classification and Mask R-CNN variable
names, optimizer slots) that the shared fixtures do not cover. Usage: ``python write_tf1_checkpoint.py IN.npz PREFIX``.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf


def main(npz_path: str, prefix: str) -> None:
    arrays = dict(np.load(npz_path))
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in arrays.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, prefix, write_meta_graph=False)


if __name__ == "__main__":
    main(*sys.argv[1:3])
