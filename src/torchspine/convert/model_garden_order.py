"""The order of a Model Garden SpineNet's weighted Keras layers: what ``layer_with_weights-K`` is.

Model Garden (tensorflow/models, ``official/vision/modeling/backbones/spinenet.py`` and ``spinenet_mobile.py``)
builds its backbones as Keras *functional* models, and their object-based checkpoints name each layer that owns
weights by its position among ``model.layers`` that have weights: ``backbone/layer_with_weights-K/...`` (tf_keras
``Functional._layer_checkpoint_dependencies``). ``model.layers`` is not creation order. It is the order computed by
``_map_graph_network`` in tf_keras ``src/engine/functional.py``:

1. ``_build_map`` walks the graph depth-first from the outputs, taken in ``tf.nest.flatten`` order (a dict of
   outputs is flattened by sorted key; Model Garden keys its endpoints by ``str(level)``), visiting each node's
   inputs in the order the layer call received them. Every layer gets a *traversal index* when it is first
   reached (pre-order), and nodes are listed in post-order.
2. Each node's *depth* is the length of the longest path from it to an output node, counting every layer: the
   output nodes have depth 0 and a node's inputs are at least one deeper. A layer's depth is that of its node
   (every SpineNet layer is called exactly once).
3. ``model.layers`` lists the layers by decreasing depth; layers of equal depth are sorted by traversal index.

Depth counts *all* layers, weightless ones included, so the ordering of the convolutions depends on how many
activation, pooling, add and reshape layers each path has. The Model Garden code creates, per path:

* ResNet-block ``SpineNet``: activations are ``tf.nn.relu`` / ``tf.nn.swish`` calls on Keras tensors, each one
  ``TFOpLambda`` layer; the fusion is one ``tf.add_n`` (``TFOpLambda``) over both resampled parents and the merged
  out-degree-0 features; every block group ends in ``tf.identity`` (``TFOpLambda``); downsampling past the 3x3/2
  conv is a chain of ``MaxPooling2D``.
* ``SpineNetMobile``: activations are Keras ``Activation`` layers, the fusion is a chain of binary ``Add`` layers,
  every block group ends in ``Activation('linear')``.
* Upsampling (both families) is ``spatial_transform_ops.nearest_upsampling``: ``tf.shape`` (``TFOpLambda``),
  ``shape[1]`` and ``shape[2]`` (two ``SlicingOpLambda``), ``tf.reshape(x, [b, h, 1, w, 1, c])``, ``tf.tile``,
  ``h * scale`` and ``w * scale`` (``TFOpLambda``), and a final ``tf.reshape`` whose inputs are the tiled tensor and
  the two products: the upsampled path is five layers deep, not one. With ``use_keras_upsampling_2d`` (a
  ``SpineNetMobile`` option) it is a single ``UpSampling2D`` layer instead.
* Layers that feed no output are not part of the functional model (Keras never reaches them): the level-2 output
  block when ``min_level > 2``, output blocks above ``max_level`` or below ``min_level`` and everything that only
  feeds them.

All of these matter. Against the SpineNet-49 table, dropping the activations moves 38 of the 181 weighted layers,
dropping the max-pools 30, a three-layer reshape/tile/reshape upsampling 39; flattening the outputs P7..P3 instead
of P3..P7 moves 42, and listing the ``add_n`` inputs parent 1 first moves 116 (ties are frequent: the two parents'
paths of a block often have the same depth and are then ordered by which one the traversal reached first).

This module replays the Model Garden constructors on a graph of placeholder layers, driven by a torchspine model's
plan (levels, parents, merged out-degree-0 features), and then applies the three rules above. The result was
checked layer by layer against the real tf-models-official 2.20 / tf-keras 2.20 models
(``tests/test_model_garden_order.py``). Two assumptions are those of the released checkpoints: the model was built
with a static input size (with a dynamic size Model Garden skips the out-degree-0 merge, and Keras then prunes the
unmerged block), and the input width is a multiple of ``2**max_level`` (so every level ratio is a power of two and a
downsample by ``2**d`` is one strided conv followed by ``d - 1`` max-pools).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from torchspine.layers.blocks import BottleneckBlock, MBConvBlock, ResidualBlock
from torchspine.layers.conv import ConvNormAct
from torchspine.models.spinenet import SpineNet
from torchspine.specs import NodePlan, ParentPlan

RoleKind = Literal["conv", "bn", "depthwise", "bottleneck", "residual", "mbconv"]

_BLOCK_TYPES: dict[str, type[nn.Module]] = {
    "bottleneck": BottleneckBlock,
    "residual": ResidualBlock,
    "mbconv": MBConvBlock,
}


@dataclass(frozen=True)
class KerasLayerRole:
    """The torchspine module that holds the weights of one weighted Model Garden Keras layer.

    Attributes:
        kind: ``"conv"`` (``Conv2D``: weights at ``prefix.conv.weight``), ``"depthwise"`` (``DepthwiseConv2D``:
            ``prefix.conv.weight``), ``"bn"`` (``BatchNormalization``: ``prefix.bn.*``), or a block layer,
            ``"bottleneck"`` / ``"residual"`` / ``"mbconv"`` (``BottleneckBlock`` / ``ResidualBlock`` /
            ``InvertedBottleneckBlock``: the whole torchspine block at ``prefix``).
        prefix: the torchspine module prefix: the ``ConvNormAct`` for conv/depthwise/bn (e.g.
            ``"blocks.3.resample0.reduce"``), the block for block layers (e.g. ``"blocks.3.group.0"``,
            ``"stem_blocks.0.1"``).
    """

    kind: RoleKind
    prefix: str


@dataclass(frozen=True)
class KerasLayer:
    """One layer of the Model Garden functional model, as simulated here.

    Attributes:
        keras_class: the Keras class name (``"Conv2D"``, ``"TFOpLambda"``, ``"SlicingOpLambda"``, ...).
        inputs: the layers whose outputs this layer's call received, in call order (positions in the list the
            layer belongs to).
        role: where its weights live in torchspine; None for weightless layers.
    """

    keras_class: str
    inputs: tuple[int, ...]
    role: KerasLayerRole | None = None


class _GraphRecorder:
    """Records layers in creation order, the way calling Keras layers on Keras tensors builds a functional graph.

    A "tensor" is the index of the layer that produced it (each layer is called once, so layer == node == output).
    """

    def __init__(self) -> None:
        self.layers: list[KerasLayer] = []

    def add(self, keras_class: str, *inputs: int, role: KerasLayerRole | None = None) -> int:
        self.layers.append(KerasLayer(keras_class, tuple(inputs), role))
        return len(self.layers) - 1

    def conv_bn(self, x: int, prefix: str, kind: RoleKind = "conv") -> int:
        """``Conv2D`` (or ``DepthwiseConv2D``) then ``BatchNormalization``, both weighted, no activation."""
        x = self.add("DepthwiseConv2D" if kind == "depthwise" else "Conv2D", x, role=KerasLayerRole(kind, prefix))
        return self.add("BatchNormalization", x, role=KerasLayerRole("bn", prefix))

    def nearest_upsampling(self, x: int) -> int:
        """``spatial_transform_ops.nearest_upsampling(x, scale)`` without the Keras layer: reshape, tile, reshape.

        ``bs`` and ``c`` are static Python ints, ``h``/``w`` come from ``tf.shape(x)[1]`` / ``[2]``, so the first
        reshape takes ``(x, h, w)`` and the last one ``(tiled, h * scale, w * scale)``.
        """
        shape = self.add("TFOpLambda", x)  # tf.shape
        h = self.add("SlicingOpLambda", shape)  # shape[1]
        w = self.add("SlicingOpLambda", shape)  # shape[2]
        y = self.add("TFOpLambda", x, h, w)  # tf.reshape(x, [bs, h, 1, w, 1, c])
        y = self.add("TFOpLambda", y)  # tf.tile
        h_up = self.add("TFOpLambda", h)  # h * scale
        w_up = self.add("TFOpLambda", w)  # w * scale
        return self.add("TFOpLambda", y, h_up, w_up)  # tf.reshape(y, [bs, h * scale, w * scale, c])


class _ModelGardenGraph:
    """Replays Model Garden's ``SpineNet`` / ``SpineNetMobile`` constructors for the plan of a torchspine model."""

    def __init__(self, model: SpineNet, use_keras_upsampling_2d: bool) -> None:
        self.plan = model.plan
        self.cfg = model.cfg
        self.mobile = model.cfg.family == "mobile"
        self.use_keras_upsampling_2d = use_keras_upsampling_2d
        self.graph = _GraphRecorder()
        self.outputs: dict[str, int] = {}

    # -- weightless layers that differ between the two classes --------------------------------------------------

    def activation(self, x: int) -> int:
        # SpineNet: tf_utils.get_activation(tf.nn.relu | tf.nn.swish)(x), a TF op on a Keras tensor.
        # SpineNetMobile: tf_utils.get_activation(name, use_keras_layer=True), a Keras Activation layer.
        return self.graph.add("Activation" if self.mobile else "TFOpLambda", x)

    def upsample(self, x: int) -> int:
        if self.use_keras_upsampling_2d:
            return self.graph.add("UpSampling2D", x)
        return self.graph.nearest_upsampling(x)

    def fuse(self, parents: list[int]) -> int:
        if not self.mobile:
            return self.graph.add("TFOpLambda", *parents)  # tf.add_n(parents)
        x = parents[0]
        for adder in parents[1:]:
            x = self.graph.add("Add", x, adder)  # layers.Add()([x, adder])
        return x

    # -- the constructors ----------------------------------------------------------------------------------------

    def block_group(self, x: int, node: NodePlan, prefix: str) -> int:
        """``_block_group``: the repeated blocks, chained, then ``tf.identity`` / ``Activation('linear')``."""
        for r in range(self.cfg.block_repeats):
            x = self.graph.add(
                "InvertedBottleneckBlock" if self.mobile else f"{node.block_fn.capitalize()}Block",
                x,
                role=KerasLayerRole(node.block_fn, f"{prefix}.{r}"),
            )
        return self.graph.add("Activation" if self.mobile else "TFOpLambda", x)

    def stem(self, image: int) -> list[int]:
        x = self.graph.conv_bn(image, "stem")
        x = self.activation(x)
        if not self.mobile:
            x = self.graph.add("MaxPooling2D", x)
        net = []
        for g, node in enumerate(self.plan.nodes[: self.plan.num_stem]):
            x = self.block_group(x, node, f"stem_blocks.{g}")
            net.append(x)
        return net

    def resample(self, x: int, parent: ParentPlan, prefix: str) -> int:
        """``_resample_with_alpha`` (ResNet blocks) or ``_resample_with_sepconv`` (mobile)."""
        if self.mobile:
            for d in range(max(parent.level_diff, 0)):
                x = self.activation(self.graph.conv_bn(x, f"{prefix}.downsample.{d}", kind="depthwise"))
        else:
            x = self.activation(self.graph.conv_bn(x, f"{prefix}.reduce"))
            if parent.level_diff > 0:
                x = self.activation(self.graph.conv_bn(x, f"{prefix}.downsample.0"))
                for _ in range(parent.level_diff - 1):
                    x = self.graph.add("MaxPooling2D", x)
        if parent.level_diff < 0:
            x = self.upsample(x)
        return self.graph.conv_bn(x, f"{prefix}.project")

    def build(self) -> None:
        image = self.graph.add("InputLayer")
        net = self.stem(image)
        # _build_scale_permuted_network. Every spec is built, live or not; Keras later keeps what the outputs reach.
        output_blocks: dict[int, int] = {}
        for i, node in enumerate(self.plan.blocks):
            parents = [self.resample(net[p.source], p, f"blocks.{i}.resample{k}") for k, p in enumerate(node.parents)]
            parents += [net[j] for j in node.merged]  # out-degree-0 features, added raw
            x = self.activation(self.fuse(parents))
            net.append(self.block_group(x, node, f"blocks.{i}.group"))
            if self.cfg.blocks[i].is_output:
                output_blocks[node.level] = net[-1]
        # _build_endpoints: a dict keyed by str(level).
        for level in range(self.cfg.min_level, self.cfg.max_level + 1):
            x = self.graph.conv_bn(output_blocks[level], f"endpoints.p{level}")
            self.outputs[str(level)] = self.activation(x)


def keras_functional_order(layers: list[KerasLayer], outputs: Iterable[int]) -> list[int]:
    """Indices of the layers reachable from `outputs`, in the order Keras' functional API lists them.

    A transcription of tf_keras ``functional._build_map`` (depth-first traversal from the outputs: pre-order
    traversal indices, post-order node list) and ``_map_graph_network`` (longest-path depth to the outputs, layers
    sorted by decreasing depth, ties by traversal index), for graphs in which every layer is called once.
    """
    traversal_index: dict[int, int] = {}
    finished: set[int] = set()
    post_order: list[int] = []
    for output in outputs:
        if output in finished:
            continue
        traversal_index.setdefault(output, len(traversal_index))
        stack = [(output, 0)]  # (layer, next input to visit): an explicit stack for _build_map_helper's recursion
        while stack:
            layer, i = stack[-1]
            inputs = layers[layer].inputs
            if i < len(inputs):
                stack[-1] = (layer, i + 1)
                child = inputs[i]
                if child not in finished:
                    traversal_index.setdefault(child, len(traversal_index))
                    stack.append((child, 0))
            else:
                stack.pop()
                finished.add(layer)
                post_order.append(layer)
    depth: dict[int, int] = {}
    for layer in reversed(post_order):  # outputs first: every consumer is final before its inputs are updated
        d = depth.setdefault(layer, 0)
        for parent in layers[layer].inputs:
            depth[parent] = max(depth.get(parent, 0), d + 1)
    return sorted(depth, key=lambda layer: (-depth[layer], traversal_index[layer]))


def model_garden_keras_layers(model: SpineNet, *, use_keras_upsampling_2d: bool = False) -> list[KerasLayer]:
    """All layers of the Model Garden functional model equivalent to `model`, weightless ones included, in
    ``model.layers`` order; `KerasLayer.inputs` are positions in the returned list.

    Args:
        model: a torchspine SpineNet of either family.
        use_keras_upsampling_2d: ``SpineNetMobile``'s option to upsample with one ``UpSampling2D`` layer (used by
            Model Garden's quantization-aware mobile configs); the ResNet-block ``SpineNet`` has no such option.

    Raises:
        ValueError: when Model Garden builds no network equivalent to `model` (see the checks below).
    """
    cfg = model.cfg
    if cfg.family == "mobile":
        if cfg.block_repeats != 1:
            # SpineNetMobile._block_group applies the extra repeats to the group's *input* (not chained), so Keras
            # prunes all but the last; torchspine chains them as SpineNet does.
            raise ValueError(
                f"block_repeats={cfg.block_repeats}: Model Garden's SpineNetMobile does not chain repeated blocks, "
                "so no Model Garden model matches this one"
            )
        too_high = sorted({b.level for b in cfg.blocks if b.level > cfg.max_level})
        if too_high:
            # SpineNetMobile clamps block levels to max_level (`block_spec.level = min(level, max_level)`),
            # which changes the resampling paths and the out-degree-0 merges; torchspine keeps the levels.
            raise ValueError(
                f"max_level={cfg.max_level} with level-{too_high} blocks: Model Garden's SpineNetMobile moves those "
                "blocks down to max_level, a different network from this one"
            )
    elif use_keras_upsampling_2d:
        raise ValueError("use_keras_upsampling_2d is a SpineNetMobile option; Model Garden's SpineNet has none")
    builder = _ModelGardenGraph(model, use_keras_upsampling_2d)
    builder.build()
    layers = builder.graph.layers
    order = keras_functional_order(layers, [builder.outputs[key] for key in sorted(builder.outputs)])
    position = {layer: k for k, layer in enumerate(order)}
    return [
        KerasLayer(layers[i].keras_class, tuple(position[j] for j in layers[i].inputs), layers[i].role) for i in order
    ]


def model_garden_layer_roles(model: SpineNet, *, use_keras_upsampling_2d: bool = False) -> list[KerasLayerRole]:
    """Role of each ``layer_with_weights-K`` of the Model Garden backbone equivalent to `model`, K = list index.

    The roles cover every parameter and BatchNorm statistic of `model` exactly once; a `ValueError` says which
    module is missing or left over if the model and the simulated Model Garden graph disagree.
    """
    roles = [layer.role for layer in model_garden_keras_layers(model, use_keras_upsampling_2d=use_keras_upsampling_2d)]
    weighted = [role for role in roles if role is not None]
    _check_roles(model, weighted)
    return weighted


def _check_roles(model: SpineNet, roles: list[KerasLayerRole]) -> None:
    """Every role names a module of the right type, and together they hold all of `model`'s tensors once."""
    modules = dict(model.named_modules())
    owners: list[str] = []
    for role in roles:
        module = modules.get(role.prefix)
        if role.kind in _BLOCK_TYPES:
            expected: type[nn.Module] = _BLOCK_TYPES[role.kind]
            owners.append(role.prefix)
        else:
            expected = ConvNormAct
            owners.append(f"{role.prefix}.{'bn' if role.kind == 'bn' else 'conv'}")
        if not isinstance(module, expected):
            raise ValueError(
                f"Model Garden layer {role} has no {expected.__name__} in the torchspine model "
                f"(found {type(module).__name__ if module is not None else 'nothing'}): the plan's live blocks "
                "disagree with what Keras keeps"
            )
        if role.kind in ("conv", "depthwise") and (module.conv.groups > 1) != (role.kind == "depthwise"):
            raise ValueError(f"Model Garden layer {role}: {role.prefix}.conv has groups={module.conv.groups}")
    if len(set(owners)) != len(owners):
        raise ValueError("two Model Garden layers map onto the same torchspine module")
    names = [name for name, _ in model.named_parameters()] + [name for name, _ in model.named_buffers()]
    owned = set(owners)
    uncovered = [name for name in names if not _owning_prefixes(name, owned)]
    if uncovered:
        raise ValueError(f"torchspine tensors with no Model Garden layer: {uncovered[:8]}")


def _owning_prefixes(name: str, owned: set[str]) -> list[str]:
    """The prefixes of the dotted `name` that are in `owned`."""
    parts = name.split(".")
    return [p for p in (".".join(parts[:n]) for n in range(1, len(parts))) if p in owned]
