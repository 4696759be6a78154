"""Named experiments: the paper's training recipes as `ExperimentCfg` factories.

Du et al., "SpineNet: Learning Scale-Permuted Backbone for Recognition and Localization", CVPR 2020 (arXiv
1912.05027), §5.1 protocols A/B/C. The values come from the two official code bases (both Apache-2.0):

* tensorflow/tpu ``models/official/detection/configs/spinenet/*.yaml`` over ``configs/base_config.py`` ("TPU"
  below): the paper's own recipes (RetinaNet protocols B and C, Mask R-CNN, ImageNet);
* TF Model Garden ``official/vision/configs/experiments/{retinanet,maskrcnn}/*.yaml`` over
  ``official/vision/configs/retinanet.py`` ("MG"): the recipes behind the Model Garden checkpoints, the mobile
  models and the only official GPU recipes.

Every experiment carries a ``provenance``: the official file and lines it transcribes, the paper table, or
``derived: how`` where no official config exists (``torchspine train --list`` prints it). Official recipes give
their schedule in optimizer **steps**, as the files write them (``total_steps`` / ``learning_rate_steps`` /
``warmup_steps`` or ``train_steps`` / ``boundaries``), so no steps-per-epoch rounding can move a decay; derived
recipes from the paper's text use the epoch view. Where the two official code bases differ for the same model, both
are registered (``retinanet_spinenet49_protocol_c`` is TPU, ``retinanet_spinenet49_mg`` is MG) and the README's
training section lists the differences.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable

from torchspine.config.schema import DataCfg, EvalCfg, ExperimentCfg, ModelCfg, OptimCfg, ScheduleCfg, TrainCfg, derive
from torchspine.errors import UnknownNameError
from torchspine.variants import BACKBONES

__all__ = ["get_experiment", "list_experiments", "register_experiment"]

ExperimentFn = Callable[[], ExperimentCfg]
_EXPERIMENTS: dict[str, ExperimentFn] = {}


def register_experiment(name: str) -> Callable[[ExperimentFn], ExperimentFn]:
    """Decorator registering a zero-argument factory returning an `ExperimentCfg` under `name`."""

    def decorator(fn: ExperimentFn) -> ExperimentFn:
        if name in _EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is already registered")
        _EXPERIMENTS[name] = fn
        return fn

    return decorator


def list_experiments(pattern: str = "*") -> list[str]:
    """Registered experiment names matching the shell-style `pattern`, in registration order."""
    return [n for n in _EXPERIMENTS if fnmatch.fnmatch(n, pattern)]


def get_experiment(name: str) -> ExperimentCfg:
    """A fresh `ExperimentCfg` of experiment `name` (its ``name`` field set); unknown names raise ``KeyError`` with
    close matches."""
    fn = _EXPERIMENTS.get(name)
    if fn is None:
        close = difflib.get_close_matches(name, list(_EXPERIMENTS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownNameError(f"unknown experiment {name!r}{hint} (see `torchspine train --list`)")
    return derive(fn(), name=name)


# ------------------------------------------------------------------------------------------------ shared constants

_TPU = "tensorflow/tpu models/official/detection/configs/"
_MG = "tensorflow/models official/vision/configs/"
_TF_WARMUP_STEPS = 2000  # every official detection YAML: warmup_steps 2000
_TF_WARMUP_INIT_LR = 0.0067  # both official code bases start the linear warm-up at this absolute LR
# TPU base_config.py:87-88 (batch_norm_momentum 0.997, batch_norm_epsilon 1e-4); the TPU RetinaNet YAMLs set only
# use_sync_bn and activation, so these apply. PyTorch momentum = 1 - TF momentum.
_TPU_BN = {"norm_momentum": 1 - 0.997, "norm_eps": 1e-4}
# Model Garden common.py NormActivation (norm_momentum 0.99, norm_epsilon 0.001), written out in every MG YAML; also
# the TPU Mask R-CNN YAMLs' explicit batch_norm_momentum 0.99 / batch_norm_epsilon 0.001.
_MG_BN = {"norm_momentum": 1 - 0.99, "norm_eps": 1e-3}


def _steps(
    total: int, decays: tuple[int, ...], lr: float, *, warmup: int = _TF_WARMUP_STEPS, batch: int = 256
) -> ScheduleCfg:
    """A step schedule in the official configs' own units: steps at the config's global `batch`."""
    return ScheduleCfg(
        type="step",
        epochs=None,
        warmup_epochs=None,
        decay_epochs=(),
        total_steps=total,
        warmup_steps=warmup,
        decay_steps=decays,
        steps_batch_size=batch,
        warmup_init_lr_ratio=_TF_WARMUP_INIT_LR / lr,
    )


def _epochs(epochs: float, lr: float, warmup_epochs: float) -> ScheduleCfg:
    """The epoch view with the paper's decays (x0.1 for the last 30 epochs, x0.01 for the last 10)."""
    return ScheduleCfg(
        type="step",
        epochs=epochs,
        warmup_epochs=warmup_epochs,
        warmup_init_lr_ratio=_TF_WARMUP_INIT_LR / lr,
        decay_epochs=(epochs - 30.0, epochs - 10.0),
    )


# ----------------------------------------------------------------------------------------- RetinaNet (TPU)

# The paper's RetinaNet backbones; input sizes (paper §5.1 / tensorflow/tpu YAMLs) from `torchspine.variants`.
_RETINANET_BACKBONES = ("spinenet49s", "spinenet49", "spinenet96", "spinenet143", "spinenet190")
# tensorflow/tpu file names and the lines of their recipe body (after the header comments).
_TPU_RETINANET_YAML = {
    "spinenet49s": ("spinenet49S_retinanet.yaml", "4-30"),
    "spinenet49": ("spinenet49_retinanet.yaml", "4-28"),
    "spinenet96": ("spinenet96_retinanet.yaml", "5-29"),
    "spinenet143": ("spinenet143_retinanet.yaml", "4-26"),
    "spinenet190": ("spinenet190_retinanet.yaml", "3-28"),
}

# TPU protocol B (header line 2 of each YAML) and C (the YAML body): total_steps, learning_rate_steps.
_TPU_B_STEPS = (162_050, (148_160, 157_420))
_TPU_C_STEPS = (231_500, (217_610, 226_870))
_TPU_190_C_STEPS = (185_200, (171_310, 180_570))


def _retinanet_base() -> ExperimentCfg:
    """tensorflow/tpu RetinaNet base: batch 256, SGD 0.9, L2 4e-5, clip 10, sync BN 0.997/1e-4, bf16 (TPU)."""
    return ExperimentCfg(
        model=ModelCfg(task="retinanet", backbone="spinenet49", image_size=640, semantics="tpu", **_TPU_BN),
        data=DataCfg(scale_min=0.5, scale_max=2.0, hflip=True),
        optim=OptimCfg(optimizer="sgd", lr_per_256=0.28, momentum=0.9, weight_decay=4e-5, clip_grad_norm=10.0),
        schedule=_steps(*_TPU_B_STEPS, 0.28),
        train=TrainCfg(global_batch_size=256, amp="bf16"),
    )


def _retinanet_protocol(backbone: str, protocol: str) -> ExperimentCfg:
    """RetinaNet + `backbone` under the paper's protocol A, B or C (§6.3)."""
    big = backbone in ("spinenet143", "spinenet190")
    yaml_name, body = _TPU_RETINANET_YAML[backbone]
    src = f"{_TPU}spinenet/{yaml_name}"
    lr = 0.3 if backbone == "spinenet190" and protocol == "c" else 0.28  # 190: init_learning_rate 0.3 (line 11)
    dropblock: dict = {}
    bn: dict = {}
    if protocol == "a":
        # Paper protocol A: 250 epochs, 5-epoch warm-up, scale [0.8, 1.2], SyncBN momentum 0.99, ReLU, DropBlock.
        # No official config: clipping 10 is the TPU base's RetinaNet value, and the DropBlock values are assumed
        # (keep_prob 0.9; size 7, the default of tensorflow/tpu's ImageNet ResNet config; on every block, as the TPU
        # detection ResNet; constant over training, see `torchspine.layers.drop`).
        schedule = _epochs(250.0, lr, 5.0)
        act, dp, scale = "relu", 0.0, (0.8, 1.2)
        dropblock = {"dropblock_keep_prob": 0.9, "dropblock_size": 7, "dropblock_min_level": 2}
        bn = {"norm_momentum": 0.01}
        provenance = (
            "derived: paper §5.1 protocol A text (250 epochs, scale 0.8-1.2, SyncBN 0.99, DropBlock) on the "
            f"tensorflow/tpu base recipe of {yaml_name}; the paper ran protocol A only at 640 px (Tables 3-4)"
        )
    elif protocol == "b":
        # Header line 2: init_drop_connect_rate null, relu, total_steps 162050, learning_rate_steps [148160, 157420]
        # (143 also: aug_scale 0.5-2.0).
        schedule = _steps(*_TPU_B_STEPS, lr)
        act, dp, scale = "relu", 0.0, (0.5, 2.0)
        provenance = f"{src}:2 (protocol-B header line) over lines {body}; BN {_TPU}base_config.py:87-88"
    else:
        total, decays = _TPU_190_C_STEPS if backbone == "spinenet190" else _TPU_C_STEPS
        schedule = _steps(total, decays, lr)
        act = "swish"
        dp = 0.16 if backbone == "spinenet143" else 0.2
        scale = (0.1, 1.9) if big else (0.5, 2.0)
        provenance = f"{src}:{body}; BN {_TPU}base_config.py:87-88"
    return derive(
        _retinanet_base(),
        provenance=provenance,
        model={
            "backbone": backbone,
            "image_size": BACKBONES[backbone].image_size,
            "act": act,
            "drop_path_rate": dp,
            **dropblock,
            **bn,
        },
        data={"scale_min": scale[0], "scale_max": scale[1]},
        optim={"lr_per_256": lr},
        schedule=schedule,
    )


def _register_retinanet(backbone: str, protocol: str) -> None:
    name = f"retinanet_{backbone}_protocol_{protocol}"
    register_experiment(name)(lambda: _retinanet_protocol(backbone, protocol))


for _backbone in _RETINANET_BACKBONES:
    # SpineNet-190 has no protocol-B recipe: its YAML header has only the protocol-C line, and the paper's Table 2
    # no 190 protocol-B row.
    for _protocol in ("a", "b", "c") if _backbone != "spinenet190" else ("a", "c"):
        _register_retinanet(_backbone, _protocol)


def _register_spinenet49_896(protocol: str) -> None:
    """SpineNet-49 at 896 px (paper Table 2: protocol B 45.3 AP, C 46.7 AP): the 640-px TPU recipe at 896 px."""

    def factory() -> ExperimentCfg:
        base = _retinanet_protocol("spinenet49", protocol)
        return derive(
            base,
            provenance=f"paper Table 2 (SpineNet-49, 896 px); derived: {base.provenance} with output_size 896",
            model={"image_size": 896},
        )

    register_experiment(f"retinanet_spinenet49_896_protocol_{protocol}")(factory)


for _protocol in ("b", "c"):
    _register_spinenet49_896(_protocol)


def _register_resnet_baseline(backbone: str, image_size: int) -> None:
    """ResNet-FPN baselines of the paper's comparison, on the protocol-B recipe (ReLU, no stochastic depth)."""

    def factory() -> ExperimentCfg:
        # No official RetinaNet ResNet-FPN-from-scratch config exists; the paper trains its baselines with the same
        # protocol as SpineNet, so the SpineNet-49 protocol-B values are used, BN 0.997/1e-4 on the ResNet. The FPN
        # has no BN (torchvision's FPN), unlike tensorflow/tpu's FPN default (use_batch_norm: True).
        return derive(
            _retinanet_protocol("spinenet49", "b"),
            provenance=(
                "derived: the SpineNet-49 protocol-B recipe (tensorflow/tpu spinenet49_retinanet.yaml:2) on a "
                "torchvision ResNet-FPN without FPN BatchNorm; no official RetinaNet ResNet-FPN-from-scratch config"
            ),
            model={"backbone": backbone, "image_size": image_size, "act": "relu", "drop_path_rate": 0.0},
        )

    register_experiment(f"retinanet_{backbone}_protocol_b")(factory)


for _backbone in ("resnet50_fpn", "resnet101_fpn", "resnet152_fpn"):
    _register_resnet_baseline(_backbone, BACKBONES[_backbone].image_size)


# ------------------------------------------------------------------------------------------ RetinaNet (MG)

# Model Garden coco_spinenet{49,96,143,190}_tpu.yaml (the recipes behind the Model Garden checkpoints): LR 0.32,
# 231,000 steps, boundaries 219,450 / 226,380, scale 0.1-2.0, stochastic depth 0.2, BN 0.99/1e-3; gradient clipping
# only in the 143 file. The 49/96/143 files live in official/vision/beta/configs/experiments/retinanet/ in older
# releases. That clip is the task's gradient_clip_norm, which the beta RetinaNetTask.train_step applies to each
# replica's gradient of loss / num_replicas before apply_gradients all-reduces it: tensorflow/tpu's per-replica
# semantics. (tf-models-official 2.20's RetinaNetTask no longer has the field.)
_MG_RETINANET = {
    "spinenet49": ("experiments/retinanet/coco_spinenet49_tpu.yaml", None),
    "spinenet96": ("experiments/retinanet/coco_spinenet96_tpu.yaml", None),
    "spinenet143": ("experiments/retinanet/coco_spinenet143_tpu.yaml", 10.0),
    "spinenet190": ("experiments/retinanet/coco_spinenet190_tpu.yaml", None),
}


def _mg_retinanet(backbone: str) -> ExperimentCfg:
    path, clip = _MG_RETINANET[backbone]
    return derive(
        _retinanet_base(),
        provenance=f"{_MG}{path} over {_MG}retinanet.py retinanet_spinenet_coco",
        model={
            "backbone": backbone,
            "image_size": BACKBONES[backbone].image_size,
            "act": "swish",
            "drop_path_rate": 0.2,
            "semantics": "model_garden",
            **_MG_BN,
        },
        data={"scale_min": 0.1, "scale_max": 2.0},
        optim={"lr_per_256": 0.32, "clip_grad_norm": clip},
        schedule=_steps(231_000, (219_450, 226_380), 0.32),
    )


# Model Garden coco_spinenet{49,96,143}_gpu_multiworker_mirrored.yaml: the only official GPU recipes. fp16, cosine
# to step 23,100 after a 2000-step warm-up, no clipping; LR and batch per file ("a demonstration only, not a full
# training to reproduce numbers reported in the paper").
_MG_GPU = {
    "spinenet49": (32, 0.32),
    "spinenet96": (16, 0.032),
    "spinenet143": (8, 0.032),
}


def _mg_gpu(backbone: str) -> ExperimentCfg:
    batch, lr = _MG_GPU[backbone]
    base = _mg_retinanet(backbone)
    schedule = derive(_steps(23_100, (), lr, batch=batch), type="cosine")
    return derive(
        base,
        provenance=(
            f"{_MG}experiments/retinanet/coco_{backbone}_gpu_multiworker_mirrored.yaml over "
            f"{_MG}retinanet.py retinanet_spinenet_coco; cosine restarts after the warm-up (tensorflow/tpu "
            "learning_rates.py), Model Garden evaluates it from step 0"
        ),
        optim={"lr_per_256": lr * 256 / batch, "clip_grad_norm": None},
        schedule=schedule,
        train={"global_batch_size": batch, "amp": "fp16"},
    )


# -------------------------------------------------------------------------------------------------- Mobile (MG)

# Model Garden coco_spinenet49{,s,xs}_mobile_tpu.yaml; input size and activation from `torchspine.variants`.
_MOBILE = ("spinenet49_mobile", "spinenet49s_mobile", "spinenet49xs_mobile")


def _mobile_recipe(backbone: str) -> ExperimentCfg:
    """Model Garden SpineNet-Mobile RetinaNet: 277,200 steps, boundaries 263,340 / 272,580, LR 0.32, L2 3e-5,
    stochastic depth 0.2, scale 0.5-2.0, BN 0.99/1e-3, no clipping."""
    size, act = BACKBONES[backbone].image_size, BACKBONES[backbone].act
    stem = backbone.removesuffix("_mobile")
    return derive(
        _retinanet_base(),
        provenance=f"{_MG}experiments/retinanet/coco_{stem}_mobile_tpu.yaml over {_MG}retinanet.py "
        "retinanet_mobile_coco",
        model={
            "backbone": backbone,
            "image_size": size,
            "act": act,
            "drop_path_rate": 0.2,
            "semantics": "model_garden",
            **_MG_BN,
        },
        data={"scale_min": 0.5, "scale_max": 2.0},
        # Model Garden clips (when a recipe sets global_clipnorm) the all-reduced gradient: "global".
        optim={"lr_per_256": 0.32, "weight_decay": 3e-5, "clip_grad_norm": None, "clip_mode": "global"},
        schedule=_steps(277_200, (263_340, 272_580), 0.32),
    )


# ------------------------------------------------------------------------------------------------- Mask R-CNN

_MASK_RCNN_BACKBONES = ("spinenet49s", "spinenet49", "spinenet96", "spinenet143", "spinenet190")
# Length of each tensorflow/tpu spinenet*_mrcnn.yaml: the whole file is the recipe (line 1: the expected AP).
_TPU_MRCNN_LINES = {"spinenet49s": 40, "spinenet49": 36, "spinenet96": 36, "spinenet143": 36, "spinenet190": 43}


def _mask_rcnn_recipe(backbone: str) -> ExperimentCfg:
    """tensorflow/tpu Mask R-CNN (``spinenet*_mrcnn.yaml``): batch 256, 162,050 steps, LR 0.28 decayed at 148,160 /
    157,420, 2000-step warm-up from 0.0067 (base_config.py:47), L2 4e-5, scale 0.5-2.0, BN 0.99/1e-3, ReLU (the
    base default; the YAMLs set no activation), no clipping (base 0.0). SpineNet-190: 1536 px, scale 0.1-2.0, swish,
    drop connect 0.2, 187,600 steps decayed at 173,530 / 182,910, RPN head of 7 convs (``rpn_head: num_convs: 7``;
    the model zoo's 168.2M parameters count a 1-conv RPN, which is the variant's default for converted files)."""
    is_190 = backbone == "spinenet190"
    yaml_name = f"spinenet{backbone.removeprefix('spinenet')}_mrcnn.yaml"
    return derive(
        _retinanet_base(),
        provenance=f"{_TPU}spinenet/{yaml_name}:1-{_TPU_MRCNN_LINES[backbone]}",
        model={
            "task": "maskrcnn",
            "backbone": backbone,
            "image_size": BACKBONES[backbone].mask_rcnn.image_size,
            "act": "swish" if is_190 else "relu",
            "drop_path_rate": 0.2 if is_190 else 0.0,
            "rpn_num_convs": 7 if is_190 else None,
            **_MG_BN,
        },
        data={"scale_min": 0.1 if is_190 else 0.5, "scale_max": 2.0},
        optim={"clip_grad_norm": None},
        schedule=_steps(187_600, (173_530, 182_910), 0.28) if is_190 else _steps(*_TPU_B_STEPS, 0.28),
    )


# Model Garden coco_spinenet{49,96,143}_mrcnn_tpu.yaml (box / mask AP 43.2 / 38.3, 48.1 / 42.4, 49.3 / 43.4) over
# maskrcnn.py maskrcnn_spinenet_coco: all three files are the same 47 lines but for the expected AP (line 1),
# anchor_size (line 17) and input_size (line 21). The 49/96 files live in official/vision/beta/configs/experiments/
# maskrcnn/, the 143 file in official/vision/configs/experiments/maskrcnn/.
_MG_MASK_RCNN = {
    "spinenet49": ("beta/configs/experiments/maskrcnn/coco_spinenet49_mrcnn_tpu.yaml", 3.0),
    "spinenet96": ("beta/configs/experiments/maskrcnn/coco_spinenet96_mrcnn_tpu.yaml", 3.0),
    "spinenet143": ("configs/experiments/maskrcnn/coco_spinenet143_mrcnn_tpu.yaml", 4.0),
}


def _mg_mask_rcnn_recipe(backbone: str) -> ExperimentCfg:
    """Model Garden Mask R-CNN (``coco_spinenet*_mrcnn_tpu.yaml``): batch 256, 231,000 steps, LR 0.32 decayed at
    219,450 / 226,380, 2000-step warm-up from 0.0067, L2 4e-5, scale 0.1-2.0, stochastic depth 0.2 (Model Garden's
    16-block rule), sync BN 0.99/1e-3, ReLU (``common.NormActivation``'s default: the files set no activation), no
    clipping (no ``global_clipnorm``), bf16; anchors of size 3 (4 for 143) with 3 scales per octave, so 9 anchors per
    location; heads of ``maskrcnn.py``'s defaults, which are ours: RPN 1 conv of 256, box head 4 convs of 256 + 1 FC
    of 1024 with class-specific boxes, mask head 4 convs of 256, no separable convs, BN in every head.

    RPN proposals (2000 -> 1000 in training, 1000 -> 1000 in evaluation, NMS 0.7: ``ROIGenerator``'s defaults,
    maskrcnn.py:111-121) are selected per level, then the best over all levels: Model Garden's
    ``roi_generator.py`` rule, which is tensorflow/tpu's.

    Not expressed (the README says so too), each a small numeric difference from Model Garden:

    * the final detection generator's ``pre_nms_top_k: 1000`` (line 34): torchvision's post-processing keeps every
      box above the 0.05 score threshold before its per-class NMS;
    * box coding and proposal clipping are tensorflow/tpu's (``box_ops="tpu"``: the legacy "+1" box sizes, proposals
      clipped to ``[0, W - 1]``); Model Garden's ``ops/box_ops.py`` encodes and decodes without the +1 and clips to
      ``[0, W]``;
    * the losses are tensorflow/tpu's (``loss_style="tpu"``); Model Garden's ``losses/maskrcnn_losses.py`` divides
      the RPN and box-head box losses by the cross-replica *mean* of the non-zero target counts plus 0.01 (ours:
      each process's own count, the same in one process) and counts an RPN anchor valid when any of its four
      targets is non-zero.
    """
    path, anchor_size = _MG_MASK_RCNN[backbone]
    return derive(
        _retinanet_base(),
        provenance=(
            f"tensorflow/models official/vision/{path}:1-47 over {_MG}maskrcnn.py:405-484 maskrcnn_spinenet_coco "
            f"(heads: maskrcnn.py:90-163 defaults; activation: {_MG}common.py:156)"
        ),
        model={
            "task": "maskrcnn",
            "backbone": backbone,
            "image_size": BACKBONES[backbone].mask_rcnn.image_size,
            "act": "relu",
            "drop_path_rate": 0.2,
            "semantics": "model_garden",
            "anchor_size": anchor_size,
            "anchor_num_scales": 3,
            **_MG_BN,
        },
        data={"scale_min": 0.1, "scale_max": 2.0},
        optim={"lr_per_256": 0.32, "clip_grad_norm": None, "clip_mode": "global"},
        schedule=_steps(231_000, (219_450, 226_380), 0.32),
    )


# ---------------------------------------------------------------------------------------------- classification


def _classification_recipe(backbone: str) -> ExperimentCfg:
    """tensorflow/tpu ImageNet recipe (``spinenet*_classification.yaml``): 224 px, batch 4096, 62,557 steps, cosine
    LR peaking at 1.6 (0.1 per 256) after a 1,564-step warm-up from 0 (classification_config.py), L2 1e-4, label
    smoothing 0.1, BN 0.9/1e-5 without sync (``use_sync_bn: false``), swish, drop connect 0.2."""
    # The crop-scale jitter is the Inception crop of tensorflow/tpu utils/input_utils.py (area [0.08, 1]); for
    # classification, scale_min/scale_max are crop-area fractions.
    name = f"spinenet{backbone.removeprefix('spinenet')}_classification.yaml"
    return ExperimentCfg(
        provenance=f"{_TPU}spinenet/{name}:{'1-26' if backbone == 'spinenet190' else '1-27'}",
        model=ModelCfg(
            task="classification",
            backbone=backbone,
            image_size=224,
            act="swish",
            drop_path_rate=0.2,
            norm_momentum=0.1,
            norm_eps=1e-5,
            semantics="tpu",
        ),
        data=DataCfg(scale_min=0.08, scale_max=1.0, hflip=True),
        optim=OptimCfg(
            optimizer="sgd", lr_per_256=1.6 * 256 / 4096, momentum=0.9, weight_decay=1e-4, clip_grad_norm=None
        ),
        schedule=derive(
            _steps(62_557, (), 1.6, warmup=1_564, batch=4096),
            type="cosine",
            warmup_init_lr_ratio=0.0,
            label_smoothing=0.1,
        ),
        train=TrainCfg(global_batch_size=4096, amp="bf16", eval_every_epochs=5.0, sync_bn=False),
    )


def _register(name: str, factory: Callable[[str], ExperimentCfg], backbone: str) -> None:
    register_experiment(name)(lambda: factory(backbone))


for _backbone in _MG_RETINANET:
    _register(f"retinanet_{_backbone}_mg", _mg_retinanet, _backbone)
for _backbone in _MG_GPU:
    _register(f"retinanet_{_backbone}_mg_gpu", _mg_gpu, _backbone)
for _backbone in _MOBILE:
    _register(f"retinanet_{_backbone}", _mobile_recipe, _backbone)
for _backbone in _MASK_RCNN_BACKBONES:
    _register(f"maskrcnn_{_backbone}", _mask_rcnn_recipe, _backbone)
for _backbone in _MG_MASK_RCNN:
    _register(f"maskrcnn_{_backbone}_mg", _mg_mask_rcnn_recipe, _backbone)
for _backbone in ("spinenet49", "spinenet96", "spinenet143", "spinenet190"):
    _register(f"classification_{_backbone}", _classification_recipe, _backbone)


# ---------------------------------------------------------------------------------------------------------- demo


@register_experiment("demo")
def demo() -> ExperimentCfg:
    """A CPU-sized RetinaNet on the built-in demo shapes data set (`torchspine.data.make_demo_dataset`).

    Not a paper recipe: the tiny ``test_spinenet`` backbone at 256 px with AdamW (robust at small batches) and
    PyTorch's usual BN momentum 0.1 (statistics must settle within a few hundred steps). Measured on a 2-core CPU:
    1000 steps in 8.6 min reach box AP 42.5 / AP50 58.9 on the demo validation split (`make demo`: 11 min from a
    fresh clone, set-up included).
    """
    return ExperimentCfg(
        provenance="derived: a CPU demo, not a paper recipe",
        model=ModelCfg(task="retinanet", backbone="test_spinenet", image_size=256, norm_momentum=0.1),
        # num_workers=0: on 2 cores loading in-process is faster than forked workers, and resumes are exact.
        data=DataCfg(data=None, scale_min=0.8, scale_max=1.25, num_workers=0),
        optim=OptimCfg(optimizer="adamw", lr_per_256=0.064, momentum=0.9, weight_decay=1e-4, clip_grad_norm=10.0),
        schedule=ScheduleCfg(type="cosine", epochs=40.0, warmup_epochs=1.0, warmup_init_lr_ratio=0.01, decay_epochs=()),
        train=TrainCfg(
            global_batch_size=8,
            amp="none",
            log_every=10,
            eval_every_epochs=20.0,
            checkpoint_every_steps=200,
            keep_last=2,
        ),
    )


@register_experiment("demo_classification")
def demo_classification() -> ExperimentCfg:
    """A CPU-sized classifier on the built-in demo shapes (`torchspine.data.make_demo_classification_dataset`).

    Not a paper recipe: the tiny ``test_spinenet`` backbone at 128 px (its smallest input: it has level-7 blocks),
    AdamW at 4e-3 (batch 16), cosine LR over 4 epochs of the 2000 training images (500 steps), no label smoothing,
    a milder crop-area range than ImageNet's [0.08, 1] (a crop must still show the shape), and BN momentum 0.1 so
    statistics settle within a few hundred steps.

    Measured on an idle 2-core CPU (data already cached, default threads): val top-1 0.56 / 0.88 / 1.00 / 1.00 after
    epochs 1-4 (steps 125 / 250 / 375 / 500), in 4 min 41 s wall-clock (8 min 49 s CPU over both cores). On the
    same machine shared with other jobs (load ~3-4, OMP_NUM_THREADS=1): the loss leaves chance (ln 5 = 1.61) at step
    ~70, is ~0.75 at step 250 and ~0.4 at step 350; top-1 0.29 / 0.77 / 0.87 / 1.00, in 7.0 min wall-clock. With
    ``--set schedule.epochs=3`` (375 steps): 0.42 / 0.70 / 0.92 in 5.1 min of CPU (8.9 min wall-clock while other
    tests ran). With the earlier
    data (the detection demo's blotchy backgrounds and saturated colours, 35-85% shape sizes, 400 images) this
    recipe's predecessor stayed at loss ~1.6 for 100+ steps and reached only 0.30 top-1 after 400 steps; so did a
    plain 5-layer CNN, which is why the data set, not the backbone, was changed (see
    `torchspine.data.synthetic_classification`).
    """
    return ExperimentCfg(
        provenance="derived: a CPU demo, not a paper recipe",
        model=ModelCfg(task="classification", backbone="test_spinenet", image_size=128, norm_momentum=0.1),
        data=DataCfg(data=None, scale_min=0.6, scale_max=1.0, hflip=True, num_workers=0),
        optim=OptimCfg(optimizer="adamw", lr_per_256=0.064, momentum=0.9, weight_decay=1e-4, clip_grad_norm=10.0),
        schedule=ScheduleCfg(
            type="cosine",
            epochs=4.0,
            warmup_epochs=0.25,
            warmup_init_lr_ratio=0.01,
            decay_epochs=(),
            label_smoothing=0.0,
        ),
        train=TrainCfg(
            global_batch_size=16,
            amp="none",
            log_every=10,
            eval_every_epochs=1.0,
            checkpoint_every_steps=100,
            keep_last=2,
        ),
        eval=EvalCfg(batch_size=50),
    )


# ------------------------------------------------------------------------------------------------------ search

# COCO train2017 minus the paper's 7,392 held-out images, at the proxy's batch of 64 (drop_last): 110,895 // 64.
_PROXY_STEPS_PER_EPOCH = (118_287 - 7_392) // 64


@register_experiment("search_proxy_spinenet49")
def search_proxy_spinenet49() -> ExperimentCfg:
    """The paper's architecture-search proxy task (Du et al., 2020, §4.2 and §5.1): what each sampled architecture
    trains on before its reward is read.

    SpineNet-49's layout (the search replaces its blocks through ``model.backbone_spec``) at x0.25 widths, alpha
    0.25, 64-d endpoints and a 64-d 4-conv RetinaNet head, 512 px, 5 epochs on COCO train2017 minus a seeded
    held-out split of 7,392 images whose box AP is the reward. ``data.data`` must point at the user's COCO folder
    (``--set data.data=/path/to/coco``; train2017 is found as split ``train``); val2017 is never used.

    UNVERIFIED (the paper does not give them; google/vertex-ai-nas ``spinenet_search_tpu.yaml`` informs them, at
    its batch 64 and 512 px): SGD momentum 0.9, LR 0.08 at batch 64 with a 500-step linear warm-up from 0.0067 and
    x0.1 at 80 % of training; scale jitter [0.5, 2.0], flips, anchor size 3 (the head default); ReLU, the
    tensorflow/tpu RetinaNet default; the held-out ids (the paper's exact ids are not published: ours are a seeded
    shuffle of the sorted ids, written to ``holdout_ids.json``).
    """
    epochs = 5.0
    lr = 0.08 * 256 / 64
    return derive(
        _retinanet_base(),
        provenance="derived: paper §4.2 / §5.1 search proxy (SpineNet-49 layout x0.25, 512 px, 5 epochs)",
        model={
            "image_size": 512,
            "act": "relu",
            "filter_size_scale": 0.25,
            "resample_alpha": 0.25,
            "endpoints_num_filters": 64,
            "head_num_filters": 64,
            "head_num_convs": 4,
        },
        data={"scale_min": 0.5, "scale_max": 2.0, "holdout_images": 7_392, "holdout_seed": 0},
        optim={"lr_per_256": lr},
        schedule=ScheduleCfg(
            type="step",
            epochs=epochs,
            warmup_epochs=500 / _PROXY_STEPS_PER_EPOCH,
            warmup_init_lr_ratio=0.0067 / 0.08,
            decay_epochs=(0.8 * epochs,),
        ),
        # A trial keeps one checkpoint (a retried trial resumes from it) and no TensorBoard files: thousands of
        # trials share the run folder.
        train=TrainCfg(
            global_batch_size=64,
            amp="bf16",
            eval_every_epochs=epochs,
            checkpoint_every_steps=500,
            keep_last=1,
            tensorboard=False,
        ),
    )


@register_experiment("search_demo")
def search_demo() -> ExperimentCfg:
    """A CPU-sized search proxy on the built-in demo shapes: one trial in well under a minute on 2 cores.

    The paper's proxy in miniature: SpineNet-49's layout at x0.125 widths, alpha 0.25, 16-d endpoints and a 16-d
    2-conv head, 128 px, and the reward from a seeded held-out split of the demo *training* images (50 of 200), so
    it exercises the same held-out path as `search_proxy_spinenet49` (the demo's val split stays untouched, as
    val2017 does in the paper). AdamW and BN momentum 0.1 as in the ``demo`` experiment: a few dozen steps must
    already separate architectures.

    Measured (2-core CPU shared with other jobs, OMP_NUM_THREADS=1, 72 steps + evaluation of 50 images): 29-39 s of
    CPU per trial (44-143 s wall on that busy machine; OMP_NUM_THREADS=2 on an oversubscribed machine is many times
    slower). Rewards of SpineNet-49's layout and four random architectures of the paper's space (seed 123):
    box AP 0.0052, 0.0085, 0.0021, 0.0010, 0.0065 (AP50 0.022, 0.028, 0.007, 0.003, 0.025): never 0 and different
    between architectures, but small. Treat it as a smoke test of the search machinery, not as a ranking.
    """
    return ExperimentCfg(
        provenance="derived: the search proxy in miniature on the demo data, not a paper recipe",
        model=ModelCfg(
            task="retinanet",
            backbone="spinenet49",
            image_size=128,
            norm_momentum=0.1,
            filter_size_scale=0.125,
            resample_alpha=0.25,
            endpoints_num_filters=16,
            head_num_filters=16,
            head_num_convs=2,
        ),
        data=DataCfg(data=None, scale_min=0.8, scale_max=1.25, num_workers=0, holdout_images=50, holdout_seed=0),
        # 150 training images / batch 8 = 18 steps per epoch: 72 steps. AdamW at 0.03 (0.96 per 256): 3x the
        # ``demo`` experiment's LR, because the reward must separate architectures after a few dozen steps.
        optim=OptimCfg(optimizer="adamw", lr_per_256=0.96, momentum=0.9, weight_decay=1e-4, clip_grad_norm=10.0),
        schedule=ScheduleCfg(type="cosine", epochs=4.0, warmup_epochs=0.25, warmup_init_lr_ratio=0.1, decay_epochs=()),
        train=TrainCfg(
            global_batch_size=8,
            amp="none",
            log_every=10,
            eval_every_epochs=4.0,
            checkpoint_every_steps=1000,
            keep_last=1,
            tensorboard=False,
        ),
        eval=EvalCfg(batch_size=25),
    )
