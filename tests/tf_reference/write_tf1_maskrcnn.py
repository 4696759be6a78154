"""Write the ``tpu_spinenet49_maskrcnn_tiny`` fixture with the official tensorflow/tpu Mask R-CNN code (TF1 graph mode).

The official code is run unmodified; this script only builds its pieces on a tiny scaled SpineNet-49, fills the
variables with random values, and saves a ``tf.compat.v1.train.Saver`` checkpoint plus the official outputs.

Reproduce (TensorFlow 2.20 + tf-keras 2.20, e.g. the project's ``.venv-tf``)::

    mkdir -p /tmp/tpu && cd /tmp/tpu
    # tensorflow/tpu at commit 7dc921f846c9e4071f3884b768a7ddf521272a49: models/official/detection/**.py
    git --git-dir=TPU.git archive 7dc921f846c9e4071f3884b768a7ddf521272a49 models/official/detection | tar -x
    cd REPO && TF_USE_LEGACY_KERAS=1 PYTHONPATH=/tmp/tpu/models/official/detection \\
        .venv-tf/bin/python tests/tf_reference/write_tf1_maskrcnn.py \\
        tests/fixtures/official/tpu_spinenet49_maskrcnn_tiny

What is built (``models/official/detection``; settings of ``configs/maskrcnn_config.py`` +
``configs/spinenet/spinenet49_mrcnn.yaml``, scaled down):

* ``modeling/architecture/spinenet.py`` ``SpineNet``: the SpineNet-49 blocks, ``filter_size_scale=0.14``,
  ``endpoints_num_filters=32``, levels 3-7, swish (``spinenet190_mrcnn.yaml``'s activation; the smaller models'
  relu makes this random network amplify float32 rounding above the 1e-4 parity criterion);
* BN ``nn_ops.BatchNormActivation(momentum=0.99, epsilon=1e-3)`` (the mrcnn yamls' values). The yamls train with
  ``use_sync_bn: true``; its ``nn_ops.BatchNormalization`` subclasses ``tf.layers.BatchNormalization`` and gets the
  same variable names, and is the same affine map at inference, so the fused TF1 layer is used here;
* ``heads.RpnHead`` (1 conv, BN per level, 3 anchors: ``num_scales=1`` x aspect ratios ``[1.0, 2.0, 0.5]``),
  ``heads.FastrcnnHead`` (``num_convs=4``, ``num_fcs=1``, BN, class-specific boxes) and ``heads.MaskrcnnHead``
  (4 convs, BN, 28x28 class-specific masks), 16 filters, ``fc_dims=32``, 5 classes;
* ``ops/spatial_transform_ops.py`` ``multilevel_crop_and_resize`` on fixed RoIs (``rois.npz``), 7x7 for the box
  head and 14x14 for the mask head, as ``maskrcnn_model.py`` does;
* ``ops/roi_ops.py`` ``multilevel_propose_rois`` with the test-time proposal settings (1000 / 1000, NMS 0.7) on
  the anchors of ``dataloader/anchor.py``, and ``utils/box_utils.py`` ``decode_boxes`` (weights 10, 10, 5, 5) of
  the box head's outputs on the fixed RoIs, as ``postprocess_ops.py`` decodes them.

Random weights (numpy, fixed seeds) and BatchNorm statistics calibrated on other synthetic images; see
``random_init`` in the written ``meta.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np
import tensorflow as tf

tf.compat.v1.disable_eager_execution()
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from dataloader import anchor as anchor_lib  # noqa: E402  (tensorflow/tpu, on PYTHONPATH)
from modeling.architecture import heads, nn_ops, spinenet  # noqa: E402
from ops import roi_ops, spatial_transform_ops  # noqa: E402
from utils import box_utils  # noqa: E402

COMMIT = "7dc921f846c9e4071f3884b768a7ddf521272a49"
HEIGHT, WIDTH = 128, 256
MIN_LEVEL, MAX_LEVEL = 3, 7
NUM_CLASSES = 5
HEAD_FILTERS, FC_DIMS = 16, 32
ASPECT_RATIOS = [1.0, 2.0, 0.5]
ANCHOR_SIZE = 3.0
BACKBONE = dict(
    min_level=MIN_LEVEL,
    max_level=MAX_LEVEL,
    endpoints_num_filters=32,
    resample_alpha=0.5,
    use_native_resize_op=False,
    block_repeats=1,
    filter_size_scale=0.14,
    activation="swish",
    init_drop_connect_rate=None,
)
ACT = "swish"
BN = dict(momentum=0.99, epsilon=1e-3, trainable=True, use_sync_bn=False, activation=ACT)
PREDICTORS = ("rpn-class", "rpn-box", "class-predict", "box-predict", "mask_fcn_logits")
# Fixed RoIs [y1, x1, y2, x2] in input pixels: small and medium boxes inside the image (level 3, with a 5-pixel box
# smaller than a level-3 cell and boxes touching the borders), and large boxes reaching past it (levels 4-7, whose
# sample points are clamped to the feature map) including one starting above/left of the image.
ROIS = np.array(
    [
        [10.0, 20.0, 60.0, 90.0],
        [0.0, 0.0, 127.0, 255.0],
        [40.5, 100.25, 45.5, 105.75],
        [64.0, 128.0, 127.0, 255.0],
        [3.0, 200.0, 120.0, 250.0],
        [20.0, 30.0, 100.0, 70.0],
        [0.0, 0.0, 260.0, 300.0],
        [-20.0, -10.0, 200.0, 240.0],
        [10.0, 10.0, 500.0, 600.0],
        [0.0, 0.0, 1000.0, 900.0],
        [50.0, 60.0, 1900.0, 2100.0],
        [100.0, 5.0, 127.0, 40.0],
    ],
    dtype=np.float32,
)


def synthetic_images(seed: int, n: int) -> np.ndarray:
    """Smooth random field + noise in [0, 1], 8-bit quantised, ImageNet-normalised (NHWC float32)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, HEIGHT // 16, WIDTH // 16, 3))
    smooth = coarse.repeat(16, axis=1).repeat(16, axis=2)
    img = np.clip(0.7 * smooth + 0.3 * rng.random((n, HEIGHT, WIDTH, 3)), 0, 1)
    img = np.round(img * 255) / 255
    return ((img - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32)


def build(images, rois, classes, bn_records):
    """The official pieces wired as ``maskrcnn_model.py`` wires them at inference; returns named output tensors."""
    bn_act = nn_ops.BatchNormActivation(**BN)
    original_bn = tf.compat.v1.layers.batch_normalization

    def recording_bn(inputs, **kwargs):  # instrumentation only: remembers each BN's input and variables
        before = {v.name for v in tf.compat.v1.global_variables()}
        out = original_bn(inputs, **kwargs)
        created = [v for v in tf.compat.v1.global_variables() if v.name not in before]
        bn_records.append((inputs, {v.name.split("/")[-1].split(":")[0]: v for v in created}))
        return out

    tf.compat.v1.layers.batch_normalization = recording_bn
    try:
        backbone = spinenet.SpineNet(block_specs=spinenet.build_block_specs(), batch_norm_activation=bn_act, **BACKBONE)
        features = backbone(images, is_training=False)
        rpn = heads.RpnHead(
            MIN_LEVEL,
            MAX_LEVEL,
            len(ASPECT_RATIOS),
            num_convs=1,
            num_filters=HEAD_FILTERS,
            activation=ACT,
            use_batch_norm=True,
            batch_norm_activation=bn_act,
        )
        rpn_scores, rpn_boxes = rpn(features, is_training=False)
        roi_features_7 = spatial_transform_ops.multilevel_crop_and_resize(features, rois, output_size=7)
        frcnn = heads.FastrcnnHead(
            NUM_CLASSES,
            num_convs=4,
            num_filters=HEAD_FILTERS,
            num_fcs=1,
            fc_dims=FC_DIMS,
            activation=ACT,
            use_batch_norm=True,
            batch_norm_activation=bn_act,
        )
        class_outputs, box_outputs = frcnn(roi_features_7, is_training=False)
        roi_features_14 = spatial_transform_ops.multilevel_crop_and_resize(features, rois, output_size=14)
        mrcnn = heads.MaskrcnnHead(
            NUM_CLASSES,
            28,
            num_convs=4,
            num_filters=HEAD_FILTERS,
            activation=ACT,
            use_batch_norm=True,
            batch_norm_activation=bn_act,
        )
        mask_outputs = mrcnn(roi_features_14, classes, is_training=False)
    finally:
        tf.compat.v1.layers.batch_normalization = original_bn
    graph = tf.compat.v1.get_default_graph()
    mask_all = tf.reshape(
        graph.get_tensor_by_name("mask_head/mask_fcn_logits/BiasAdd:0"), [-1, rois.shape[1], 28, 28, NUM_CLASSES]
    )
    outputs = {f"p{level}": features[level] for level in range(MIN_LEVEL, MAX_LEVEL + 1)}
    for level in range(MIN_LEVEL, MAX_LEVEL + 1):
        outputs[f"rpn_score_p{level}"] = rpn_scores[level]
        outputs[f"rpn_box_p{level}"] = rpn_boxes[level]
    decoded = box_utils.decode_boxes(
        tf.reshape(box_outputs, [-1, rois.shape[1], NUM_CLASSES, 4]),
        tf.expand_dims(rois, 2),
        weights=[10.0, 10.0, 5.0, 5.0],
    )
    anchors = anchor_lib.Anchor(MIN_LEVEL, MAX_LEVEL, 1, ASPECT_RATIOS, ANCHOR_SIZE, [HEIGHT, WIDTH])
    proposals, proposal_scores = roi_ops.multilevel_propose_rois(
        rpn_boxes,
        rpn_scores,
        {level: tf.expand_dims(boxes, 0) for level, boxes in anchors.multilevel_boxes.items()},
        tf.constant([[HEIGHT, WIDTH]], tf.float32),
        rpn_pre_nms_top_k=1000,
        rpn_post_nms_top_k=1000,
        rpn_nms_threshold=0.7,
        rpn_score_threshold=0.0,
        rpn_min_size_threshold=0.0,
    )
    outputs.update(
        roi_features_7=roi_features_7,
        roi_features_14=roi_features_14,
        class_outputs=class_outputs,
        box_outputs=box_outputs,
        decoded_boxes=decoded,
        mask_logits=mask_all,
        mask_outputs=mask_outputs,
        proposals=proposals,
        proposal_scores=proposal_scores,
    )
    return outputs


class Assigner:
    """One placeholder-fed assign op per variable, built once (``Variable.load`` would add ops on every call)."""

    def __init__(self) -> None:
        self.ops = {}
        for var in tf.compat.v1.global_variables():
            value = tf.compat.v1.placeholder(var.dtype.base_dtype, var.shape)
            self.ops[var.op.name] = (value, var.assign(value))

    def __call__(self, session, values: dict) -> None:
        feed = {self.ops[name][0]: value for name, value in values.items()}
        session.run([self.ops[name][1] for name in values], feed)


def randomise(session, assign, rng) -> None:
    """Trainable variables in creation order: He-normal kernels (predictors: 1/fan_in), noisy biases and BN."""
    values = {}
    for var in tf.compat.v1.global_variables():
        name, shape = var.op.name, var.shape.as_list()
        leaf = name.split("/")[-1]
        predictor = any(f"/{p}/" in name for p in PREDICTORS)
        if leaf == "kernel":
            # A conv2d_transpose kernel is [kh, kw, out, in] and each output pixel sees one input pixel.
            fan_in = shape[3] if "conv5-mask" in name else int(np.prod(shape[:-1]))
            # The RPN predictors are 10x smaller, so that objectness stays off sigmoid saturation (tied scores make
            # the proposal order arbitrary) and boxes stay boxes after decoding.
            gain = 0.1 if "/rpn-class/" in name or "/rpn-box/" in name else 1.0
            value = gain * rng.normal(0.0, np.sqrt((1.0 if predictor else 2.0) / fan_in), shape)
        elif leaf == "bias":
            value = rng.normal(0.0, 0.5 if predictor else 0.1, shape)
        elif leaf == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "beta":
            value = rng.normal(0.0, 0.2, shape)
        else:
            continue  # moving statistics (calibrated) and global_step
        values[name] = value.astype(np.float32)
    assign(session, values)


def calibrate(session, assign, bn_records, feed, rng) -> None:
    """Every BN gets moving statistics near those of its real input (see ``random_init`` in meta.json).

    The statistics of BN k are ``moving_mean = m_k + noise_k * sqrt(v_k)``, ``moving_variance = v_k * scale_k``,
    where ``(m_k, v_k)`` are its input's per-channel moments, which depend on the BNs before it. Instead of one
    session run per BN (slow: a new executor per fetch), all inputs are fetched at once and the statistics set,
    repeatedly, until nothing changes: after t rounds every BN t deep in the graph is final, and the fixed point is
    what a BN-by-BN pass in execution order gives. The noise is drawn once per BN, in execution order.
    """
    noise = []
    for _, variables in bn_records:
        channels = variables["moving_mean"].shape.as_list()
        noise.append((rng.normal(0, 0.1, channels), np.exp(rng.uniform(-0.3, 0.3, channels))))
    inputs = [x for x, _ in bn_records]
    previous = None
    for round_ in range(len(bn_records) + 1):
        values = {}
        for x, (_, variables), (shift, scale) in zip(session.run(inputs, feed), bn_records, noise, strict=True):
            axes = tuple(range(x.ndim - 1))
            mean, var = x.mean(axis=axes, dtype=np.float64), x.var(axis=axes, dtype=np.float64)
            values[variables["moving_mean"].op.name] = (mean + shift * np.sqrt(var)).astype(np.float32)
            values[variables["moving_variance"].op.name] = (var * scale).astype(np.float32)
        if previous is not None and all(np.array_equal(values[k], previous[k]) for k in values):
            print(f"BN statistics settled after {round_} rounds", file=sys.stderr, flush=True)
            return
        assign(session, values)
        previous = values
    raise SystemExit("BN statistics did not settle")


def describe(value: np.ndarray) -> dict:
    return {
        "shape": list(value.shape),
        "dtype": str(value.dtype),
        "mean": float(value.mean()),
        "std": float(value.std()),
        "min": float(value.min()),
        "max": float(value.max()),
    }


DESCRIPTIONS = {
    "p": "backbone endpoint (NHWC)",
    "rpn_score_p": "raw RPN objectness logits (NHWC, channel = anchor, aspect ratios [1.0, 2.0, 0.5])",
    "rpn_box_p": "raw RPN box regressions (NHWC, channel = anchor * 4 + coord, (ty, tx, th, tw), unit weights)",
    "roi_features_7": "multilevel_crop_and_resize(endpoints, rois, 7): [1, R, 7, 7, C]",
    "roi_features_14": "multilevel_crop_and_resize(endpoints, rois, 14): [1, R, 14, 14, C]",
    "class_outputs": "FastrcnnHead class logits [1, R, K]",
    "box_outputs": "FastrcnnHead box regressions [1, R, 4K], channel = class * 4 + coord, (ty, tx, th, tw)",
    "decoded_boxes": "box_utils.decode_boxes(box_outputs, rois, weights [10, 10, 5, 5]): [1, R, K, 4] yxyx",
    "mask_logits": "MaskrcnnHead mask_fcn_logits before the class gather: [1, R, 28, 28, K]",
    "mask_outputs": "MaskrcnnHead output, logits of class rois.npz['classes']: [1, R, 28, 28]",
    "proposals": "roi_ops.multilevel_propose_rois (test settings): [1, N, 4] yxyx, sorted by score",
    "proposal_scores": "sigmoid objectness of `proposals` [1, N]",
}


def _description(key: str) -> str:
    if key in DESCRIPTIONS:
        return DESCRIPTIONS[key]
    return DESCRIPTIONS[key.rstrip("34567")] + f", level {key[-1]}"


def graph(class_indices: np.ndarray, bn_records: list):
    """The image placeholder (any batch size; every image gets the same RoIs) and the output tensors."""
    images = tf.compat.v1.placeholder(tf.float32, [None, HEIGHT, WIDTH, 3], name="images")
    n_img = tf.shape(images)[0]
    rois = tf.tile(tf.constant(ROIS[None]), [n_img, 1, 1])
    classes = tf.tile(tf.constant(class_indices), [n_img, 1])
    tensors = build(images, rois, classes, bn_records)
    tf.compat.v1.train.get_or_create_global_step()
    return images, tensors


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image = synthetic_images(20240601, 1)
    calibration = synthetic_images(777, 8)
    class_indices = np.random.default_rng(5).integers(0, NUM_CLASSES, (1, len(ROIS))).astype(np.int32)
    bn_records: list = []
    with tf.Graph().as_default():
        images, tensors = graph(class_indices, bn_records)
        saver = tf.compat.v1.train.Saver(var_list=tf.compat.v1.global_variables())
        assign = Assigner()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            randomise(session, assign, np.random.default_rng([1234, 0]))
            calibrate(session, assign, bn_records, {images: calibration}, np.random.default_rng([1234, 1]))
            values = session.run(tensors, {images: image})
            saver.save(session, str(out / "model.ckpt"), write_meta_graph=False, write_state=False)
    # A fresh graph restored from the checkpoint must reproduce the outputs bitwise.
    with tf.Graph().as_default():
        images, tensors = graph(class_indices, [])
        with tf.compat.v1.Session() as session:
            tf.compat.v1.train.Saver().restore(session, str(out / "model.ckpt"))
            again = session.run(tensors, {images: image})
    for key, value in values.items():
        if not np.array_equal(value, again[key]):
            raise SystemExit(f"restored model does not reproduce {key}")

    np.save(out / "input.npy", image)
    np.savez(out / "rois.npz", boxes=ROIS[None], classes=class_indices)
    np.savez_compressed(out / "outputs.npz", **{k: v.astype(np.float32) for k, v in values.items()})
    variables = [
        {"name": name, "shape": shape, **({"dtype": "int64"} if name == "global_step" else {})}
        for name, shape in tf.train.list_variables(str(out / "model.ckpt"))
    ]
    meta = {
        "fixture": out.name,
        "implementation": "tensorflow/tpu detection code (TF1 / tf.compat.v1 graph mode; models/official/detection)",
        "source": {"repo": "github.com/tensorflow/tpu", "commit": COMMIT},
        "versions": {"tensorflow": tf.__version__, "numpy": np.__version__, "python": sys.version.split()[0]},
        "generator_script": "tests/tf_reference/write_tf1_maskrcnn.py",
        "checkpoint": {
            "prefix": "model.ckpt",
            "format": "tf.compat.v1.train.Saver(var_list=tf.global_variables()).save(sess, 'model.ckpt')",
            "variables (tf.train.list_variables; dtype float32 unless given)": variables,
        },
        "backbone": {
            "class": "modeling.architecture.spinenet.SpineNet",
            "kwargs": BACKBONE,
            "batch_norm_activation_kwargs": BN,
        },
        "heads": {
            "rpn": {
                "class": "heads.RpnHead",
                "num_convs": 1,
                "num_filters": HEAD_FILTERS,
                "anchors_per_location": len(ASPECT_RATIOS),
                "use_batch_norm": True,
            },
            "frcnn": {
                "class": "heads.FastrcnnHead",
                "num_classes": NUM_CLASSES,
                "num_convs": 4,
                "num_filters": HEAD_FILTERS,
                "num_fcs": 1,
                "fc_dims": FC_DIMS,
                "use_batch_norm": True,
                "class_agnostic_bbox_pred": False,
            },
            "mrcnn": {
                "class": "heads.MaskrcnnHead",
                "num_classes": NUM_CLASSES,
                "mask_target_size": 28,
                "num_convs": 4,
                "num_filters": HEAD_FILTERS,
                "use_batch_norm": True,
                "class_agnostic_mask_pred": False,
            },
            "activation": ACT,
        },
        "anchors": {
            "num_scales": 1,
            "aspect_ratios_order": ASPECT_RATIOS,
            "anchor_size": ANCHOR_SIZE,
            "source": "dataloader/anchor.py Anchor(3, 7, 1, [1.0, 2.0, 0.5], 3.0, [128, 256])",
        },
        "proposals": {
            "function": "ops/roi_ops.py multilevel_propose_rois",
            "rpn_pre_nms_top_k": 1000,
            "rpn_post_nms_top_k": 1000,
            "rpn_nms_threshold": 0.7,
            "rpn_score_threshold": 0.0,
            "rpn_min_size_threshold": 0.0,
            "image_shape": [HEIGHT, WIDTH],
        },
        "rois": {
            "file": "rois.npz",
            "boxes": "[1, R, 4] float32 [y1, x1, y2, x2] in input pixels, fed to multilevel_crop_and_resize",
            "classes": "[1, R] int32, the class_indices fed to MaskrcnnHead",
        },
        "input": {"file": "input.npy", "layout": "NHWC", "shape": list(image.shape), "seed": 20240601},
        "random_init": {
            "seeds": "parameters: numpy default_rng([1234, 0]) in variable-creation order; BN statistics: "
            "default_rng([1234, 1]) in execution order",
            "trainable": "kernels ~ N(0, sqrt(2/fan_in)) (predictors class-predict, box-predict, mask_fcn_logits: "
            "sqrt(1/fan_in); rpn-class, rpn-box: 0.1 * sqrt(1/fan_in)); biases ~ N(0, 0.1) (predictors N(0, 0.5)); "
            "gamma ~ U(0.5, 1.5); "
            "beta ~ N(0, 0.2)",
            "bn_moving_stats": "each BN, on a calibration batch of 8 other synthetic images (seed 777) and the "
            "same RoIs, takes the per-channel mean m and variance v (float64) of its input, with every earlier BN "
            "already set, and stores moving_mean = m + N(0, 0.1) * sqrt(v), moving_variance = v * exp(U(-0.3, 0.3)) "
            "(noise drawn per BN in execution order: N for all channels, then U; computed as a fixed point of "
            "setting all BNs at once, see calibrate())",
        },
        "mode": "inference (is_training=False)",
        "outputs": {
            "file": "outputs.npz",
            "keys": {k: {**describe(v), "description": _description(k)} for k, v in values.items()},
        },
    }
    files = {}
    for path in sorted(out.iterdir()):
        if path.name != "meta.json":
            files[path.name] = {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    meta["files"] = files
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps({k: v["bytes"] for k, v in files.items()}))


if __name__ == "__main__":
    main(sys.argv[1])
