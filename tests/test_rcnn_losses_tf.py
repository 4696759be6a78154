"""The Mask R-CNN losses against TensorFlow's ``tf.compat.v1.losses`` called as tensorflow/tpu's ``losses.py`` does.

Random inputs in the official per-level NHWC layouts go to ``tf_reference/tpu_rcnn_losses.py`` (TensorFlow
environment); the same numbers, flattened the way torchvision's heads flatten them, go to
`torchspine.models.detection.rcnn_losses`. Inputs the official code never sees (targets of unmatched anchors and
background RoIs, the masks of other classes) are filled with garbage on the torch side.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tf_parity import require_tf_python
from torchspine.models.detection.rcnn_losses import (
    fastrcnn_box_loss,
    fastrcnn_class_loss,
    mask_loss,
    rpn_box_loss,
    rpn_score_loss,
)

SCRIPT = Path(__file__).parent / "tf_reference" / "tpu_rcnn_losses.py"
N, A, K = 2, 3, 4
SIZES = {3: (4, 4), 4: (2, 2), 5: (1, 1)}


def _inputs(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    tf_in: dict[str, np.ndarray] = {"rpn_batch_size_per_im": np.int64(8)}
    logits, labels, deltas, targets, positive, per_level = [], [], [], [], [], []
    for level, (h, w) in SIZES.items():
        score = rng.normal(size=(N, h, w, A)).astype(np.float32)
        score_targets = rng.choice([-1, 0, 1], size=(N, h, w, A)).astype(np.float32)
        matched = rng.random((N, h, w, A)) < 0.4
        matched[:, 0, 0, 0] = True  # at least one matched anchor per level
        box_targets = rng.normal(size=(N, h, w, A, 4)).astype(np.float32) * matched[..., None]
        box_targets[matched & (rng.random((N, h, w, A)) < 0.3), 1] = 0.0  # some exact-zero target coordinates
        box = rng.normal(scale=0.2, size=(N, h, w, A, 4)).astype(np.float32)
        tf_in |= {
            f"score_l{level}": score,
            f"score_targets_l{level}": score_targets,
            f"box_l{level}": box.reshape(N, h, w, 4 * A),
            f"box_targets_l{level}": box_targets.reshape(N, h, w, 4 * A),
        }
        logits.append(score.reshape(N, -1))
        labels.append(score_targets.reshape(N, -1))
        deltas.append(box.reshape(N, -1, 4))
        targets.append(np.where(matched[..., None], box_targets, 9.0).reshape(N, -1, 4))  # garbage when unmatched
        positive.append(matched.reshape(N, -1))
        per_level.append(h * w * A)

    r = 6
    class_targets = rng.integers(0, K, size=(N, r))
    class_targets[0, 0], class_targets[1, 0] = 2, 0
    class_outputs = rng.normal(size=(N, r, K)).astype(np.float32)
    box_outputs = rng.normal(size=(N, r, 4 * K)).astype(np.float32)
    roi_targets = rng.normal(size=(N, r, 4)).astype(np.float32) * (class_targets > 0)[..., None]
    m, s = 3, 4
    mask_classes = np.array([[1, 3, 0], [2, 0, 0]])
    mask_selected = rng.normal(size=(N, m, s, s)).astype(np.float32)
    mask_targets = rng.random((N, m, s, s)).astype(np.float32)
    tf_in |= {
        "class_outputs": class_outputs,
        "class_targets": class_targets.astype(np.float32),
        "box_outputs": box_outputs,
        "box_targets": roi_targets,
        "mask_outputs": mask_selected,
        "mask_targets": mask_targets,
        "mask_classes": mask_classes,
    }
    fg = mask_classes.reshape(-1) > 0
    fg_classes = mask_classes.reshape(-1)[fg]
    all_masks = rng.normal(loc=5.0, size=(int(fg.sum()), K, s, s)).astype(np.float32)
    all_masks[np.arange(len(fg_classes)), fg_classes] = mask_selected.reshape(-1, s, s)[fg]
    torch_in = {
        "objectness": torch.from_numpy(np.concatenate(logits, axis=1)),
        "labels": torch.from_numpy(np.concatenate(labels, axis=1)).long(),
        "deltas": torch.from_numpy(np.concatenate(deltas, axis=1)),
        "targets": torch.from_numpy(np.concatenate(targets, axis=1)),
        "positive": torch.from_numpy(np.concatenate(positive, axis=1)),
        "per_level": per_level,
        "class_logits": torch.from_numpy(class_outputs.reshape(N * r, K)),
        "roi_labels": torch.from_numpy(class_targets.reshape(-1)).long(),
        "box_regression": torch.from_numpy(box_outputs.reshape(N * r, 4 * K)),
        "roi_targets": torch.from_numpy(np.where(class_targets[..., None] > 0, roi_targets, -np.inf).reshape(-1, 4)),
        "mask_logits": torch.from_numpy(all_masks),
        "mask_labels": torch.from_numpy(fg_classes).long(),
        "mask_targets": torch.from_numpy(mask_targets.reshape(-1, s, s)[fg]),
    }
    return tf_in, torch_in


@pytest.mark.tf
@pytest.mark.parametrize("seed", [0, 1])
def test_losses_match_tensorflow(seed: int, tmp_path: Path):
    python = require_tf_python()
    tf_in, t = _inputs(np.random.default_rng(seed))
    np.savez(tmp_path / "in.npz", **tf_in)
    proc = subprocess.run(
        [python, str(SCRIPT), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ref = dict(np.load(tmp_path / "out.npz"))
    ours = {
        "rpn_score": rpn_score_loss(t["objectness"], t["labels"], batch_size_per_image=8),
        "rpn_box": rpn_box_loss(t["deltas"], t["targets"], t["positive"], t["per_level"]),
        "class_loss": fastrcnn_class_loss(t["class_logits"], t["roi_labels"]),
        "box_loss": fastrcnn_box_loss(t["box_regression"], t["roi_labels"], t["roi_targets"]),
        "mask_loss": mask_loss(t["mask_logits"], t["mask_labels"], t["mask_targets"]),
    }
    for key, value in ours.items():
        assert float(value) == pytest.approx(float(ref[key]), rel=1e-5), key
