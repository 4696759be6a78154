"""SpineNet architectures as data: block specs, scaling table, validation and the connection plan.

Everything in this module is plain Python (no torch), so a spec can be validated, printed, serialised to
YAML/JSON, searched over and compared with the official tables without building a network.

The block tables and scaling values are those of the official TensorFlow implementations:
tensorflow/models ``official/vision/modeling/backbones/spinenet.py`` and ``spinenet_mobile.py`` (Apache-2.0),
which match tensorflow/tpu ``models/official/detection/modeling/architecture/spinenet.py``.
Paper: Du et al., "SpineNet: Learning Scale-Permuted Backbone for Recognition and Localization", CVPR 2020
(arXiv 1912.05027).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

BlockFn = Literal["bottleneck", "residual", "mbconv"]
Family = Literal["spinenet", "mobile"]

MIN_LEVEL, MAX_LEVEL = 1, 7


class SpecError(ValueError):
    """A block spec or scaling config that cannot describe a SpineNet."""


@dataclass(frozen=True)
class BlockSpec:
    """One scale-permuted block, as found by the architecture search.

    Attributes:
        level: feature level; the block's output has stride ``2**level``.
        block_fn: building block of the group.
        input_offsets: indices of the two parents in the running list ``[stem0, stem1, block0, block1, ...]``.
        is_output: whether the block provides the endpoint of its level.
    """

    level: int
    block_fn: BlockFn
    input_offsets: tuple[int, int]
    is_output: bool


def _specs(rows: Sequence[tuple[int, str, tuple[int, int], bool]]) -> tuple[BlockSpec, ...]:
    return tuple(BlockSpec(level, fn, offsets, out) for level, fn, offsets, out in rows)  # type: ignore[arg-type]


# (level, block_fn, (input_offset0, input_offset1), is_output), verbatim from Model Garden. The 16th row, a
# level-2 output, exists in Model Garden only (tensorflow/tpu stops at 15); it feeds P2 and is pruned unless
# min_level == 2, so the default models have exactly the tensorflow/tpu parameters.
SPINENET_BLOCKS: tuple[BlockSpec, ...] = _specs(
    [
        (2, "bottleneck", (0, 1), False),
        (4, "residual", (0, 1), False),
        (3, "bottleneck", (2, 3), False),
        (4, "bottleneck", (2, 4), False),
        (6, "residual", (3, 5), False),
        (4, "bottleneck", (3, 5), False),
        (5, "residual", (6, 7), False),
        (7, "residual", (6, 8), False),
        (5, "bottleneck", (8, 9), False),
        (5, "bottleneck", (8, 10), False),
        (4, "bottleneck", (5, 10), True),
        (3, "bottleneck", (4, 10), True),
        (5, "bottleneck", (7, 12), True),
        (7, "bottleneck", (5, 14), True),
        (6, "bottleneck", (12, 14), True),
        (2, "bottleneck", (2, 13), True),
    ]
)

# The SpineNet-49 permutation with MBConv blocks, an extra level-2 block first and every offset shifted by one
# (net[0] is a level-1 stem feature). Verbatim from Model Garden spinenet_mobile.py.
SPINENET_MOBILE_BLOCKS: tuple[BlockSpec, ...] = _specs(
    [
        (2, "mbconv", (0, 1), False),
        (2, "mbconv", (1, 2), False),
        (4, "mbconv", (1, 2), False),
        (3, "mbconv", (3, 4), False),
        (4, "mbconv", (3, 5), False),
        (6, "mbconv", (4, 6), False),
        (4, "mbconv", (4, 6), False),
        (5, "mbconv", (7, 8), False),
        (7, "mbconv", (7, 9), False),
        (5, "mbconv", (9, 10), False),
        (5, "mbconv", (9, 11), False),
        (4, "mbconv", (6, 11), True),
        (3, "mbconv", (5, 11), True),
        (5, "mbconv", (8, 13), True),
        (7, "mbconv", (6, 15), True),
        (6, "mbconv", (13, 15), True),
    ]
)

# tensorflow/tpu's SPINENET_BLOCK_SPECS (models/official/detection/modeling/architecture/spinenet.py:47-63) is the
# first 15 rows of `SPINENET_BLOCKS`, and its stochastic-depth rate divides by that count (spinenet.py:259-262,
# 473-474), so its last block drops with the full initial rate where Model Garden's gets 15/16 of it.
TPU_SPINENET_NUM_BLOCKS = 15

# Per-level block width C before `filter_size_scale` (bottleneck blocks output 4C, the others C).
FILTER_SIZES: Mapping[Family, Mapping[int, int]] = {
    "spinenet": {1: 32, 2: 64, 3: 128, 4: 256, 5: 256, 6: 256, 7: 256},
    "mobile": {0: 8, 1: 16, 2: 24, 3: 40, 4: 80, 5: 112, 6: 112, 7: 112},
}

# The ResNet-block stem: a 7x7/2 conv with this many filters (never scaled), a 3x3/2 max-pool, then two level-2
# bottleneck groups. The mobile stem is a 3x3/2 conv and two MBConv groups (level 1, then level 2).
SPINENET_STEM_FILTERS = 64

_FAMILY_BLOCK_FNS: Mapping[Family, frozenset[str]] = {
    "spinenet": frozenset({"bottleneck", "residual"}),
    "mobile": frozenset({"mbconv"}),
}


@dataclass(frozen=True)
class SpineNetCfg:
    """Everything that fixes a SpineNet's topology and widths (not its numerics).

    Attributes:
        family: ``"spinenet"`` (ResNet bottleneck/residual blocks, the paper's main models) or ``"mobile"``
            (MBConv blocks with squeeze-excitation, the paper's appendix / Model Garden ``SpineNetMobile``).
        blocks: the scale-permuted blocks.
        endpoints_num_filters: channels of every P-level output.
        filter_size_scale: multiplies every per-level width; widths are truncated with ``int()`` as in TF.
        resample_alpha: width factor of the cross-scale resampling path (``"spinenet"`` family only).
        block_repeats: blocks per group (SpineNet-96/143/190 repeat each block 2/3/4 times).
        min_level: lowest endpoint level.
        max_level: highest endpoint level.
        se_ratio: squeeze-excitation reduction, relative to the un-expanded block input (``"mobile"`` only).
        expand_ratio: MBConv expansion (``"mobile"`` only).
    """

    family: Family = "spinenet"
    blocks: tuple[BlockSpec, ...] = SPINENET_BLOCKS
    endpoints_num_filters: int = 256
    filter_size_scale: float = 1.0
    resample_alpha: float = 0.5
    block_repeats: int = 1
    min_level: int = 3
    max_level: int = 7
    se_ratio: float = 0.2
    expand_ratio: int = 6

    def __post_init__(self) -> None:
        validate_cfg(self)

    def width(self, level: int) -> int:
        """Block width C at `level`, truncated as in TF (``int(FILTER_SIZE_MAP[level] * scale)``)."""
        return int(FILTER_SIZES[self.family][level] * self.filter_size_scale)


# ---------------------------------------------------------------------------------------------------------------
# Validation


def validate_blocks(
    blocks: Sequence[BlockSpec], min_level: int, max_level: int, family: Family = "spinenet", num_stem: int = 2
) -> None:
    """Raise `SpecError` if `blocks` cannot be built into a network with endpoints ``min_level..max_level``.

    Checks that every block has a known block function for its family and a level in 1..7, that both parents
    point backwards into the running list ``[stem0, stem1, block0, ...]`` (no self or forward references), that
    no two output blocks share a level, and that every level in ``[min_level, max_level]`` has an output block.
    """
    if not blocks:
        raise SpecError("block specs are empty: a SpineNet needs at least one output block per endpoint level")
    allowed = _FAMILY_BLOCK_FNS[family]
    outputs: dict[int, int] = {}
    for i, block in enumerate(blocks):
        where = f"block {i} ({block.level}, {block.block_fn!r}, {block.input_offsets}, {block.is_output})"
        if block.block_fn not in get_args(BlockFn):
            raise SpecError(
                f"{where}: unknown block_fn {block.block_fn!r}; expected one of {sorted(get_args(BlockFn))}"
            )
        if block.block_fn not in allowed:
            raise SpecError(
                f"{where}: block_fn {block.block_fn!r} is not used by the {family!r} family; "
                f"expected one of {sorted(allowed)}"
            )
        if not isinstance(block.level, int) or not MIN_LEVEL <= block.level <= MAX_LEVEL:
            raise SpecError(f"{where}: level {block.level!r} is outside {MIN_LEVEL}..{MAX_LEVEL}")
        if len(block.input_offsets) != 2:
            raise SpecError(f"{where}: expected exactly two input offsets, got {len(block.input_offsets)}")
        available = num_stem + i
        for offset in block.input_offsets:
            if not isinstance(offset, int) or not 0 <= offset < available:
                raise SpecError(
                    f"{where}: input offset {offset!r} must point to an earlier feature, i.e. lie in "
                    f"0..{available - 1} (offsets 0..{num_stem - 1} are the stem blocks, {num_stem} is block 0)"
                )
        if block.is_output:
            if block.level in outputs:
                raise SpecError(
                    f"{where}: duplicate output level {block.level}, already produced by block {outputs[block.level]}"
                )
            outputs[block.level] = i
    if not MIN_LEVEL <= min_level <= max_level <= MAX_LEVEL:
        raise SpecError(
            f"min_level={min_level}, max_level={max_level}: need {MIN_LEVEL} <= min_level <= max_level <= {MAX_LEVEL}"
        )
    missing = [level for level in range(min_level, max_level + 1) if level not in outputs]
    if missing:
        raise SpecError(
            f"no output block for level(s) {missing}; endpoints {min_level}..{max_level} need one "
            f"is_output block per level (output levels present: {sorted(outputs)})"
        )


def validate_cfg(cfg: SpineNetCfg) -> None:
    """Validate the scalar fields of `cfg` and its blocks; raise `SpecError` with the offending field."""
    if cfg.family not in _FAMILY_BLOCK_FNS:
        raise SpecError(f"family={cfg.family!r}: expected one of {sorted(_FAMILY_BLOCK_FNS)}")
    if not isinstance(cfg.blocks, tuple) or not all(isinstance(b, BlockSpec) for b in cfg.blocks):
        raise SpecError("blocks must be a tuple of BlockSpec (use blocks_from_rows() for plain lists)")
    positive = {
        "endpoints_num_filters": cfg.endpoints_num_filters,
        "block_repeats": cfg.block_repeats,
        "expand_ratio": cfg.expand_ratio,
    }
    for name, value in positive.items():
        if not isinstance(value, int) or value < 1:
            raise SpecError(f"{name}={value!r}: expected a positive integer")
    if not cfg.filter_size_scale > 0:
        raise SpecError(f"filter_size_scale={cfg.filter_size_scale!r}: expected a positive number")
    if not cfg.resample_alpha > 0:
        raise SpecError(f"resample_alpha={cfg.resample_alpha!r}: expected a positive number")
    if not 0 <= cfg.se_ratio <= 1:
        raise SpecError(f"se_ratio={cfg.se_ratio!r}: expected a number in [0, 1]")
    validate_blocks(cfg.blocks, cfg.min_level, cfg.max_level, cfg.family)
    stem_levels = {0, 1, 2} if cfg.family == "mobile" else {2}
    too_narrow = [lvl for lvl in sorted({b.level for b in cfg.blocks} | stem_levels) if cfg.width(lvl) < 1]
    if too_narrow:
        detail = ", ".join(f"level {lvl}: int({FILTER_SIZES[cfg.family][lvl]} * scale) = 0" for lvl in too_narrow)
        raise SpecError(
            f"filter_size_scale={cfg.filter_size_scale} gives zero channels at level(s) {too_narrow} ({detail})"
        )


# ---------------------------------------------------------------------------------------------------------------
# The connection plan


@dataclass(frozen=True)
class ParentPlan:
    """How one parent feature is brought to a target block's level and width."""

    source: int  # index into the running feature list
    source_level: int
    target_level: int
    in_channels: int  # channels of the parent feature
    mid_channels: int  # width of the resampling path (alpha * parent C); equals in_channels for mobile
    out_channels: int  # the target block's input width

    @property
    def level_diff(self) -> int:
        """Positive: downsample by ``2**level_diff``; negative: nearest-upsample by ``2**-level_diff``."""
        return self.target_level - self.source_level


@dataclass(frozen=True)
class NodePlan:
    """One feature of the running list: a stem group or a scale-permuted block."""

    index: int  # position in the running list (stem features first)
    level: int
    block_fn: BlockFn
    in_channels: int  # input width of the block group
    out_channels: int
    width: int  # C of the block (the 3x3 width of a bottleneck)
    stride: int  # stride of the first block of the group (only the mobile stem uses 2)
    parents: tuple[ParentPlan, ...]  # empty for stem groups (they chain from the previous stem feature)
    merged: tuple[int, ...]  # out-degree-0 features added raw into this block's input sum
    drop_path_scale: float  # fraction of the model's drop_path_rate used by this group (0 for stem groups)
    live: bool  # feeds some endpoint in [min_level, max_level]

    @property
    def is_stem(self) -> bool:
        return not self.parents


@dataclass(frozen=True)
class EndpointPlan:
    level: int
    source: int
    in_channels: int
    out_channels: int


@dataclass(frozen=True)
class GraphPlan:
    """The network a `SpineNetCfg` describes, computed from levels and channel counts only."""

    cfg: SpineNetCfg
    nodes: tuple[NodePlan, ...]
    endpoints: tuple[EndpointPlan, ...]  # ascending level
    num_stem: int

    @property
    def blocks(self) -> tuple[NodePlan, ...]:
        """The scale-permuted blocks (``nodes`` without the stem), indexed like ``cfg.blocks``."""
        return self.nodes[self.num_stem :]

    @property
    def pruned(self) -> tuple[int, ...]:
        """Indices (into ``cfg.blocks``) of the blocks that feed no endpoint: not built, no parameters, no cost.

        A sampled architecture may contain intermediate blocks whose output nobody reads; the official code
        builds them anyway (dead weights that never get a gradient), we leave them out and report them here.
        """
        return tuple(node.index - self.num_stem for node in self.blocks if not node.live)

    def describe(self) -> str:
        """A human-readable table of the plan (used by ``torchspine list --plan``)."""
        lines = [f"{'#':>5} {'net':>3} {'L':>2} {'block':<10} {'in':>5} {'out':>5}  parents / merged / live"]
        for node in self.nodes:
            name = f"stem{node.index}" if node.is_stem else str(node.index - self.num_stem)
            parents = ", ".join(f"net{p.source}(L{p.source_level})" for p in node.parents) or "-"
            merged = f" + raw net{list(node.merged)}" if node.merged else ""
            live = "" if node.live else "  (pruned)"
            lines.append(
                f"{name:>5} {node.index:>3} {node.level:>2} {node.block_fn:<10} {node.in_channels:>5} "
                f"{node.out_channels:>5}  {parents}{merged}{live}"
            )
        for ep in self.endpoints:
            lines.append(f"   p{ep.level}: net{ep.source} {ep.in_channels} -> {ep.out_channels}")
        pruned = ", ".join(map(str, self.pruned)) or "none"
        lines.append(f"pruned blocks (feed no endpoint, not built): {pruned}")
        return "\n".join(lines)


def _block_out_channels(block_fn: str, width: int) -> int:
    return 4 * width if block_fn == "bottleneck" else width


def plan_graph(cfg: SpineNetCfg, *, drop_path_blocks: int | None = None) -> GraphPlan:
    """Compute the connection plan of `cfg`: parents, resampling widths, merges, liveness, endpoints.

    `drop_path_blocks` is the N of the stochastic-depth schedule ``rate * (i + 1) / N`` (0-based block i); None
    takes ``len(cfg.blocks)``, Model Garden's divisor. tensorflow/tpu divides by the rows of its own table, which
    lacks the last (level-2) row: see `TPU_SPINENET_NUM_BLOCKS`.

    The out-degree-0 merge follows both official implementations: when an output block is built (after its two
    parents are counted), every earlier feature that has fed nothing yet and has the target's level and input
    width is added raw into the input sum. TF tests the *static spatial width* instead of the level; the two agree
    whenever levels have distinct widths, which holds for any input of at least ``2**max(level)`` pixels. Model
    Garden skips the merge when built with a dynamic input shape; the released checkpoints were built with static
    shapes, so the plan always merges (for SpineNet-49: block 9 into output block 12, 0-based).
    """
    mobile = cfg.family == "mobile"
    nodes: list[dict[str, Any]] = []
    if mobile:
        # Level-1 MBConv (stride 1) then level-2 MBConv (stride 2), after a 3x3/2 conv with width(0) filters.
        for level, stride in [(1, 1), (2, 2)]:
            nodes.append(
                dict(
                    level=level,
                    block_fn="mbconv",
                    in_channels=cfg.width(level - 1),
                    out_channels=cfg.width(level),
                    width=cfg.width(level),
                    stride=stride,
                )
            )
    else:
        c2 = cfg.width(2)
        for i in range(2):
            nodes.append(
                dict(
                    level=2,
                    block_fn="bottleneck",
                    in_channels=SPINENET_STEM_FILTERS if i == 0 else 4 * c2,
                    out_channels=4 * c2,
                    width=c2,
                    stride=1,
                )
            )
    num_stem = len(nodes)
    for node in nodes:
        node.update(parents=(), merged=(), drop_path_scale=0.0)

    num_blocks = len(cfg.blocks) if drop_path_blocks is None else drop_path_blocks
    if num_blocks < 1:
        raise SpecError(f"drop_path_blocks={drop_path_blocks}: expected a positive block count")
    outgoing = [0] * num_stem
    for i, spec in enumerate(cfg.blocks):
        width = cfg.width(spec.level)
        target_in = width if mobile else _block_out_channels(spec.block_fn, width)
        parents = []
        for offset in spec.input_offsets:
            src = nodes[offset]
            if mobile:
                mid = src["out_channels"]
            else:
                parent_c = src["out_channels"] // 4 if src["block_fn"] == "bottleneck" else src["out_channels"]
                mid = int(parent_c * cfg.resample_alpha)
                if mid < 1:
                    raise SpecError(
                        f"block {i} (level {spec.level}): resample_alpha={cfg.resample_alpha} leaves "
                        f"int({parent_c} * {cfg.resample_alpha}) = 0 channels for the path from net{offset} "
                        f"(level {src['level']}, C={parent_c} at filter_size_scale={cfg.filter_size_scale}); "
                        f"raise filter_size_scale or resample_alpha"
                    )
            parents.append(ParentPlan(offset, src["level"], spec.level, src["out_channels"], mid, target_in))
            outgoing[offset] += 1
        merged = []
        if spec.is_output:
            for j, node in enumerate(nodes):
                if outgoing[j] == 0 and node["level"] == spec.level and node["out_channels"] == target_in:
                    merged.append(j)
                    outgoing[j] += 1
        out_c = width if mobile else _block_out_channels(spec.block_fn, width)
        nodes.append(
            dict(
                level=spec.level,
                block_fn=spec.block_fn,
                in_channels=target_in,
                out_channels=out_c,
                width=width,
                stride=1,
                parents=tuple(parents),
                merged=tuple(merged),
                # Official schedule: rate_i = init * i / N with 1-based i (Model Garden spinenet.py
                # get_stochastic_depth_rate over its 16 specs; tensorflow/tpu spinenet.py get_drop_connect_rate,
                # (i + 1) / n over its 15 specs). Stored as the fraction of the initial rate, the model multiplies
                # by its drop_path_rate.
                drop_path_scale=(i + 1) / num_blocks,
            )
        )
        outgoing.append(0)

    # Endpoints: the output block of each level in range. Then liveness by walking parents and merges backwards.
    out_index = {spec.level: num_stem + i for i, spec in enumerate(cfg.blocks) if spec.is_output}
    endpoints = tuple(
        EndpointPlan(level, out_index[level], nodes[out_index[level]]["out_channels"], cfg.endpoints_num_filters)
        for level in range(cfg.min_level, cfg.max_level + 1)
    )
    live = [False] * len(nodes)
    stack = [ep.source for ep in endpoints]
    while stack:
        j = stack.pop()
        if live[j]:
            continue
        live[j] = True
        stack.extend(p.source for p in nodes[j]["parents"])
        stack.extend(nodes[j]["merged"])
    # Stem features chain into each other, so the first stem group is live whenever the second is.
    for j in reversed(range(num_stem - 1)):
        live[j] = live[j] or live[j + 1]
    plan_nodes = tuple(NodePlan(index=j, live=live[j], **node) for j, node in enumerate(nodes))
    return GraphPlan(cfg=cfg, nodes=plan_nodes, endpoints=endpoints, num_stem=num_stem)


# ---------------------------------------------------------------------------------------------------------------
# Serialisation: specs written by hand or by the search, as YAML or JSON


def blocks_from_rows(rows: Sequence[Any]) -> tuple[BlockSpec, ...]:
    """Build block specs from TF-style rows ``[level, block_fn, [in0, in1], is_output]`` or mappings with the
    `BlockSpec` field names. Raises `SpecError` naming the row that cannot be read."""
    blocks = []
    for i, row in enumerate(rows):
        try:
            if isinstance(row, Mapping):
                unknown = set(row) - {f.name for f in dataclasses.fields(BlockSpec)}
                if unknown:
                    raise SpecError(f"unknown key(s) {sorted(unknown)}")
                level, fn, offsets, out = row["level"], row["block_fn"], row["input_offsets"], row["is_output"]
            else:
                level, fn, offsets, out = row
            if isinstance(level, bool) or not isinstance(level, int):
                raise SpecError(f"level must be an integer, got {level!r}")
            if not isinstance(out, bool):
                raise SpecError(f"is_output must be true or false, got {out!r}")
            offsets = tuple(offsets)
            if len(offsets) != 2 or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets):
                raise SpecError(f"input_offsets must be two integers, got {list(offsets)!r}")
            blocks.append(BlockSpec(level, fn, offsets, out))
        except SpecError as err:
            raise SpecError(f"block row {i} {row!r}: {err}") from None
        except (KeyError, TypeError, ValueError) as err:
            raise SpecError(
                f"block row {i} {row!r}: expected [level, block_fn, [input0, input1], is_output] or a "
                f"mapping with keys level, block_fn, input_offsets, is_output ({err})"
            ) from None
    return tuple(blocks)


def cfg_to_dict(cfg: SpineNetCfg) -> dict[str, Any]:
    """A JSON/YAML-ready dict of `cfg` (blocks as TF-style rows)."""
    data = dataclasses.asdict(cfg)
    data["blocks"] = [[b.level, b.block_fn, list(b.input_offsets), b.is_output] for b in cfg.blocks]
    return data


def cfg_from_dict(data: Mapping[str, Any], base: SpineNetCfg | None = None) -> SpineNetCfg:
    """Build a `SpineNetCfg` from a mapping, over `base` (default: SpineNet-49). Unknown keys are errors."""
    base = base or SpineNetCfg()
    fields = {f.name for f in dataclasses.fields(SpineNetCfg)}
    unknown = set(data) - fields
    if unknown:
        raise SpecError(f"unknown SpineNet config key(s) {sorted(unknown)}; expected some of {sorted(fields)}")
    values = dict(data)
    if "blocks" in values:
        values["blocks"] = blocks_from_rows(values["blocks"])
    elif values.get("family", base.family) != base.family:
        family = values["family"]
        values["blocks"] = SPINENET_MOBILE_BLOCKS if family == "mobile" else SPINENET_BLOCKS
    return dataclasses.replace(base, **values)


def load_cfg(path: str | Path, base: SpineNetCfg | None = None) -> SpineNetCfg:
    """Read a SpineNet config (or a bare list of block rows) from a ``.yaml``/``.yml``/``.json`` file."""
    path = Path(path)
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml  # lazy: only spec files need it

            data = yaml.safe_load(text)
    except Exception as err:
        raise SpecError(f"{path}: cannot parse ({err})") from None
    if isinstance(data, list):
        data = {"blocks": data}
    if not isinstance(data, Mapping):
        raise SpecError(f"{path}: expected a mapping of SpineNetCfg fields or a list of block rows")
    try:
        return cfg_from_dict(data, base)
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None
