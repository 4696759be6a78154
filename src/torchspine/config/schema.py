"""The typed schema of a training run: frozen dataclasses, one per concern, nested in `ExperimentCfg`.

Design: only scalars, tuples and nested dataclasses, so that every key can be type-checked when a YAML
file or a ``--set`` override names it, a resolved config dumps to plain YAML, and ``dataclasses.asdict(cfg)`` (stored
in every checkpoint) reloads to an equal object. There is deliberately no ``dict[str, Any]`` escape hatch: a key the
schema does not know is a typo until proven otherwise.

Units and conventions, chosen once here so that no reader has to guess:

* Durations have two views. The official recipes are written in **optimizer steps** at a reference batch
  (``schedule.total_steps`` / ``warmup_steps`` / ``decay_steps`` at ``steps_batch_size``), exactly as the official
  configs write them, so no rounding of a steps-per-epoch count can shift a decay. Users' own recipes may use
  **epochs** (floats, ``schedule.epochs`` / ``warmup_epochs`` / ``decay_epochs``), which the trainer converts with its
  real ``steps_per_epoch``. A schedule uses one view: the fields of the other are None / empty.
* The learning rate is given **per 256 images** (``lr_per_256``) and scaled linearly with the real global batch
  (``lr = lr_per_256 * global_batch_size / 256``), the paper's linear-scaling rule. The official detection recipes
  train at batch 256, so their LR is used as is; the classification recipe's 1.6 at batch 4096 is 0.1 per 256.
* BatchNorm momentum follows the **PyTorch** convention (weight of the new batch statistic): TF's 0.99 is 0.01 here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

Task = Literal["retinanet", "maskrcnn", "classification"]
Semantics = Literal["tpu", "model_garden"]
Optimizer = Literal["sgd", "adamw"]
ScheduleType = Literal["step", "cosine"]
ClipMode = Literal["per_replica", "global"]
LossStyle = Literal["tpu", "torchvision"]
Amp = Literal["none", "bf16", "fp16"]

# Names accepted for `ModelCfg.backbone` besides the registered SpineNet variants (`torchspine.list_models`).
RESNET_BACKBONES = ("resnet50_fpn", "resnet101_fpn", "resnet152_fpn")


@dataclass(frozen=True)
class ModelCfg:
    """What network to build. Read only by the model builder, which turns it into explicit module arguments.

    Attributes:
        task: detector or classifier head on the backbone.
        backbone: a registered SpineNet variant (``spinenet49``, ``test_spinenet``, ...) or a ResNet-FPN baseline
            (``resnet50_fpn``, ``resnet101_fpn``, ``resnet152_fpn``; detection only).
        num_classes: class outputs; None takes the count from the data set (for COCO-style detection data: the
            largest category id + 1, background at 0, i.e. 91 for COCO as in the official models).
        image_size: square training/eval input side. Detection pads to a multiple of ``2**max_level``, so it must be
            one; classification (224 in the paper) is exempt.
        act: activation of backbone and head (``relu``, ``swish``, ``hard_swish``); None keeps the variant's default.
        drop_path_rate: initial stochastic-depth rate ("drop connect" in TF): block i (1-based) drops with
            ``rate * i / N``, N being the block count of the `semantics`' official table (15 for tensorflow/tpu, 16
            for Model Garden; `torchspine.models.spinenet.drop_path_blocks`).
        norm_momentum: BatchNorm momentum in the PyTorch convention (TF 0.99 == 0.01 here).
        norm_eps: BatchNorm epsilon; None keeps the model's default (1e-3, the TF value).
        semantics: which official implementation's numerics (padding, pooling) to reproduce; matters for
            loading converted weights and for exact parity, not for training from scratch.
        min_level: lowest feature level fed to the head (stride ``2**min_level``). The single source of truth: the
            builder writes it into the backbone config and the head (TF keeps two copies; we do not).
        max_level: highest feature level.
        dropblock_keep_prob: DropBlock keep probability in (0, 1] for SpineNet's residual/bottleneck blocks (paper
            protocol A); None (default) disables it, as in both official SpineNets. Not for ResNet-FPN or mobile.
        dropblock_size: DropBlock block size, odd.
        dropblock_min_level: lowest block level that gets DropBlock (2: every block, stem groups included).
        init_from: a model file (any task) or backbone state dict whose backbone initialises this model's backbone
            before training: the paper's transfer, e.g. a classifier from a detection-trained SpineNet. The
            architectures must match (a mismatch names the tensors); heads start fresh.
        backbone_spec: a YAML/JSON SpineNet spec file (`torchspine.load_cfg` format: a list of block rows
            ``[level, block_fn, [in0, in1], is_output]``, or a mapping of `SpineNetCfg` fields) applied over the
            `backbone` variant's config: how a searched architecture is trained (``torchspine search export``
            writes such files). Its ``min_level``/``max_level`` may not contradict the ones here.
        filter_size_scale: block-width multiplier of the SpineNet backbone; None keeps the variant's (or the spec
            file's). The search proxies train SpineNet-49's layout at x0.25 widths (paper §6.2).
        resample_alpha: width factor of SpineNet's cross-scale resampling; None keeps the variant's.
        endpoints_num_filters: channels of SpineNet's P-level outputs; None keeps the variant's.
        head_num_filters: width of the detection head's conv tower; None keeps the backbone's paper default.
        head_num_convs: depth of the detection head's conv tower; None keeps the backbone's paper default.
        loss_style: Mask R-CNN training losses: ``tpu`` (tensorflow/tpu ``modeling/losses.py``, the paper's: RPN
            Huber 1/9 normalised per level, box-head Huber 1 over 4 x the foreground RoIs) or ``torchvision``
            (torchvision's smooth-L1 losses over all sampled anchors / RoIs). Mask R-CNN only.
        rpn_num_convs: 3x3 convs of the Mask R-CNN RPN head; None keeps the backbone's default (1). Mask R-CNN only.
        anchor_size: RPN anchor size in strides; None keeps the backbone's default (3; 5 for SpineNet-190). Model
            Garden's SpineNet-143 recipe uses 4. Mask R-CNN only.
        anchor_num_scales: intermediate RPN anchor scales per octave; None is tensorflow/tpu's 1 (3 anchors per
            location), Model Garden's recipes use 3 (9 per location). Mask R-CNN only.
        grad_checkpointing: recompute the activations of every SpineNet block group (and of the RetinaNet head
            towers, level by level) in the backward pass instead of keeping them: less training memory for about
            one extra forward; gradients and BatchNorm statistics are unchanged. SpineNet backbones only.
        fused_bn_act: in training, run each BatchNorm + activation (and each residual block's BatchNorm + shortcut
            addition + activation) as one autograd function that keeps only the BatchNorm input for backward and
            recomputes the rest (`torchspine.layers.bn_act`): about a quarter less activation memory for
            RetinaNet-SpineNet-49, same results. SpineNet backbones and their RetinaNet heads only.
    """

    task: Task = "retinanet"
    backbone: str = "spinenet49"
    num_classes: int | None = None
    image_size: int = 640
    act: str | None = None
    drop_path_rate: float = 0.0
    norm_momentum: float = 0.01
    norm_eps: float | None = None
    semantics: Semantics = "tpu"
    min_level: int = 3
    max_level: int = 7
    dropblock_keep_prob: float | None = None
    dropblock_size: int = 7
    dropblock_min_level: int = 2
    init_from: str | None = None
    backbone_spec: str | None = None
    filter_size_scale: float | None = None
    resample_alpha: float | None = None
    endpoints_num_filters: int | None = None
    head_num_filters: int | None = None
    head_num_convs: int | None = None
    loss_style: LossStyle = "tpu"
    grad_checkpointing: bool = False
    fused_bn_act: bool = False
    rpn_num_convs: int | None = None
    anchor_size: float | None = None
    anchor_num_scales: int | None = None


@dataclass(frozen=True)
class DataCfg:
    """Where the images come from and how they are augmented.

    Attributes:
        data: a COCO-layout folder or an instances JSON (`torchspine.data.build_dataset`); None means the built-in
            demo data set (`torchspine.data.make_demo_dataset`), so that ``torchspine train`` runs out of the box.
        train_split: split name used for training.
        val_split: split name used for evaluation.
        scale_min: lower bound of the random scale jitter (detection: a factor on the target size before the
            random crop, as TF's ``aug_scale_min``).
        scale_max: upper bound of the random scale jitter.
        hflip: random horizontal flips in training.
        num_workers: data loader worker processes per training process.
        skip_bad: skip undecodable images / invalid annotations with a warning instead of failing.
        holdout_images: when > 0, this many training-split images (a seeded shuffle of the sorted image ids)
            become the validation set and are removed from training; `val_split` is then unused. This is how the
            paper's search proxy scores architectures (7,392 held-out COCO train2017 images, §6.2) without ever
            touching val2017. The chosen ids are written to ``OUTPUT_DIR/holdout_ids.json``.
        holdout_seed: seed of that shuffle; the same seed and training split always hold out the same images.
    """

    data: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    scale_min: float = 0.5
    scale_max: float = 2.0
    hflip: bool = True
    num_workers: int = 4
    skip_bad: bool = False
    holdout_images: int = 0
    holdout_seed: int = 0


@dataclass(frozen=True)
class OptimCfg:
    """The optimizer.

    Attributes:
        optimizer: SGD with momentum (all paper recipes) or AdamW (the CPU demo).
        lr_per_256: peak learning rate for a global batch of 256 images; scaled linearly with the real global batch.
        momentum: SGD momentum; AdamW's beta1.
        weight_decay: decay coefficient. TF applies its L2 term (``wd * sum(w**2) / 2``, i.e. a ``wd * w`` gradient,
            the same as PyTorch SGD's ``weight_decay``) to conv/dense kernels only, so the trainer should exclude
            norm parameters and biases.
        clip_grad_norm: global gradient-norm clip; None disables clipping.
        clip_mode: what is clipped under data parallelism: ``per_replica`` (tensorflow/tpu, the default: each
            process's local gradient divided by the process count, before the all-reduce; with many processes it
            rarely fires) or ``global`` (Model Garden's ``global_clipnorm``: the averaged gradient). Identical in a
            single process. SGD's weight decay is clipped with the gradient in both (TF's L2 loss term).
    """

    optimizer: Optimizer = "sgd"
    lr_per_256: float = 0.28
    momentum: float = 0.9
    weight_decay: float = 4e-5
    clip_grad_norm: float | None = 10.0
    clip_mode: ClipMode = "per_replica"


@dataclass(frozen=True)
class ScheduleCfg:
    """The learning-rate schedule, in epochs.

    Attributes:
        type: ``step`` (multiply by `decay_factor` at each decay) or ``cosine`` (to 0 at the end of training).
        epochs: training length in epochs (the epoch view); None when the schedule is given in steps.
        warmup_epochs: linear warm-up length in epochs (the epoch view); 0 disables; None in the step view.
        warmup_init_lr_ratio: the warm-up starts at ``ratio * peak LR`` (TF recipes: 0.0067 / 0.28).
        decay_epochs: epochs at which a step schedule decays, ascending and inside ``(0, epochs)``; must be empty for
            a cosine schedule (where it would be ignored silently otherwise).
        decay_factor: the step schedule's multiplier at each decay (0.1: the paper's x0.1, then x0.01).
        label_smoothing: classification label smoothing; must be 0 for the detectors (focal / softmax losses are
            fixed by the paper there).
        total_steps: training length in optimizer steps at `steps_batch_size` (the step view, as the official
            configs' ``total_steps`` / ``train_steps``); None for the epoch view.
        warmup_steps: linear warm-up length in steps at `steps_batch_size` (step view); None or 0 disables.
        decay_steps: steps at which a step schedule decays (step view; the official ``learning_rate_steps`` /
            ``boundaries``), ascending inside ``(0, total_steps)``.
        steps_batch_size: the global batch the step counts are written for (256 in the official detection
            configs). At another ``train.global_batch_size`` every count is scaled by ``steps_batch_size /
            global_batch_size`` (rounded), so the run sees the same number of images; at the reference batch the
            official counts are used unchanged.
    """

    type: ScheduleType = "step"
    epochs: float | None = 350.0
    warmup_epochs: float | None = 5.0
    warmup_init_lr_ratio: float = 0.0067 / 0.28
    decay_epochs: tuple[float, ...] = (320.0, 340.0)
    decay_factor: float = 0.1
    label_smoothing: float = 0.0
    # -- the step view (issue 13): the official configs' own step counts
    total_steps: int | None = None
    warmup_steps: int | None = None
    decay_steps: tuple[int, ...] = ()
    steps_batch_size: int = 256


@dataclass(frozen=True)
class TrainCfg:
    """How the training loop runs.

    Attributes:
        global_batch_size: images per optimizer step over all processes and accumulation steps; must divide evenly
            into ``world_size * grad_accum_steps`` (`torchspine.config.validate_world_size`).
        grad_accum_steps: micro-batches accumulated into one optimizer step.
        amp: autocast dtype (``none`` = float32).
        channels_last: NHWC memory format (faster convolutions on recent GPUs).
        seed: base seed of model init, data order and augmentation.
        log_every: optimizer steps between log lines.
        eval_every_epochs: epochs between evaluations (fractions allowed for short runs).
        checkpoint_every_steps: optimizer steps between checkpoints.
        keep_last: checkpoints kept on disk (older ones are deleted).
        tensorboard: also write the logged numbers as TensorBoard scalars (``<run>/tensorboard``).
        max_steps: stop after this many optimizer steps (smoke runs); None trains for the whole schedule. The LR
            schedule still follows `ScheduleCfg`, so a truncated run is a prefix of the real one.
        sync_bn: synchronise BatchNorm statistics across processes (``SyncBatchNorm``) in multi-GPU training, as
            the official detection recipes (``use_sync_bn: true``); the official ImageNet recipe keeps per-replica
            statistics (``use_sync_bn: false``).
    """

    global_batch_size: int = 256
    grad_accum_steps: int = 1
    amp: Amp = "none"
    channels_last: bool = False
    seed: int = 0
    log_every: int = 20
    eval_every_epochs: float = 10.0
    checkpoint_every_steps: int = 1000
    keep_last: int = 3
    tensorboard: bool = True
    max_steps: int | None = None
    sync_bn: bool = True


@dataclass(frozen=True)
class EvalCfg:
    """Evaluation settings.

    Attributes:
        batch_size: images per evaluation batch per process.
        score_thresh: detections below this score are dropped before NMS (0.05 in the official post-processing).
        max_images: evaluate on the first N validation images only (quick checks); None uses all.
    """

    batch_size: int = 8
    score_thresh: float = 0.05
    max_images: int | None = None


@dataclass(frozen=True)
class ExperimentCfg:
    """A complete, resolved training run.

    Attributes:
        name: the registered experiment it derives from (informational; `get_experiment` fills it in).
        provenance: where the recipe comes from: an official config file and line (tensorflow/tpu or Model
            Garden), a paper table, or ``derived: how`` for recipes with no official counterpart (informational;
            shown by ``torchspine train --list``).
        model: see `ModelCfg`.
        data: see `DataCfg`.
        optim: see `OptimCfg`.
        schedule: see `ScheduleCfg`.
        train: see `TrainCfg`.
        eval: see `EvalCfg`.
    """

    name: str = ""
    provenance: str = ""
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    schedule: ScheduleCfg = field(default_factory=ScheduleCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)


_T = TypeVar("_T")


def derive(cfg: _T, /, **changes: Any) -> _T:
    """`dataclasses.replace` that reaches into nested dataclasses: a mapping value updates that sub-config.

    Keeps the experiment factories to a few lines each, e.g.
    ``derive(base, model={"backbone": "spinenet96", "image_size": 1024}, optim={"lr_per_256": 0.3})``.
    Unknown names raise ``TypeError`` (from `dataclasses.replace`), so a typo in a factory fails at import.
    """
    resolved: dict[str, Any] = {}
    for key, value in changes.items():
        current = getattr(cfg, key) if hasattr(cfg, key) else None
        if isinstance(value, Mapping) and dataclasses.is_dataclass(current):
            resolved[key] = derive(current, **value)
        else:
            resolved[key] = value
    return dataclasses.replace(cfg, **resolved)  # type: ignore[type-var]
