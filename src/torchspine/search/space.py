"""The SpineNet search space: architectures as fixed-order lists of masked categorical decisions (no torch).

Paper: Du et al., "SpineNet: Learning Scale-Permuted Backbone for Recognition and Localization", CVPR 2020
(arXiv 1912.05027), §3 (search space) and §5.1 (NAS details). The space has three parts:

* **Scale permutation.** The intermediate blocks and, separately, the output blocks are permuted; the paper counts
  (N-5)!·5! orders. Intermediate *base* levels come from an allocation (default {L2:1, L3:3, L4:5, L5:1}, the
  scale-permuted part of R0-SP53 without its outputs), output levels are L3..L7. "The permutation is decided
  first", so the level decisions come first in the sequence.
* **Cross-scale connections.** Two parents per block. Intermediate blocks choose among the last
  ``parent_window`` built features (paper §5.1: "the last 5 blocks"); output blocks among all earlier features.
* **Block adjustments.** An intermediate block's level is its base plus a delta in {-1, 0, 1, 2}; every block is
  a bottleneck or a residual block.

The only public code for this space is google/vertex-ai-nas ``nas_architecture/tunable_spinenet_search_space.py``
(pyglove ``one_of``/``sublist_of``) with the presets of ``search_spaces.py``; we follow its decode
(``tunable_spinenet.py::build_static_block_specs``: level = base + offset, no clamping) and its window rule
``range(max(2 + i - window, 0), 2 + i)``.

Encoding (one decision = one vocabulary index; the set of legal values is a mask computed from earlier decisions):

====================  ==============  ===========================  ==========================================
decisions             kind            vocabulary                   legal (mask)
====================  ==============  ===========================  ==========================================
``base[t]``           ``level``       distinct allocation levels   levels with a remaining count
``out_level[j]``      ``out_level``   ``output_levels``            levels not used yet
``block[i].delta``    ``delta``       ``level_deltas``             deltas with 1 <= base + delta <= 7
``block[i].fn``       ``fn``          ``block_fns``                all
``block[i].in0``      ``in0``         feature index 0..S+N-2       window minus its last element
``block[i].in1``      ``in1``         feature index 0..S+N-2       window above ``in0``
``output[j].fn/in0/in1`` as above; the window of an output block is every earlier feature
====================  ==============  ===========================  ==========================================

With the defaults this is 10 + 5 + 4·10 + 3·5 = 70 decisions. Because ``in0 < in1``, each parent pair has exactly one
encoding, so a sequence's probability is the probability of its architecture's connections. Forced decisions (a
mask of one value, e.g. the first block's parents (0, 1)) are still emitted, so every architecture has the same
number of decisions and a searcher needs no variable-length logic; their log-probability is 0.

Where we differ from Vertex (and why): Vertex samples a pair with ``sublist_of(k=2, sorted, distinct)`` and the
intermediate permutation as a ``sublist_of`` over *indices* of a list with duplicates, so equal levels give
different genomes for the same network. Here a permutation slot picks a *level* (duplicates are one vocabulary
entry), so there is no such redundancy and the log-probability is exact. Different (base, delta) pairs can still
give the same final level, so deduplicate trials on `arch_key` (the decoded specs), never on decisions.
Vertex's defaults (11 intermediate blocks, window 4) are `SearchSpace.vertex_spinenet`; the paper's are the
defaults of `SearchSpace`.

Further design choices:

* Which base allocation the paper used for SpineNet-49 is not published; the default {2:1, 3:3, 4:5, 5:1} is the
  R0-SP53 scale-permuted network of Table 1 without its 5 outputs (Vertex's ``spinenet_v2``), and SpineNet-49's
  intermediate levels are reachable from it (and its parents fit windows 4 and 5).
* Vertex does not clamp levels and never needs to (2 - 1 and 5 + 2 stay in 1..7); for other allocations we mask the
  deltas that would leave levels 1..7 instead of clamping, so two deltas never collapse onto one level.
* `encode` must pick one (base, delta) assignment when several exist; it keeps a block at its base level when the
  allocation allows (smallest ``|delta|`` first, with a feasibility check for the later blocks), which reads better
  than the lexicographically first assignment and is just as deterministic.
* `size` reports the paper's formulas (§3: (N-5)!·5!, prod C(i, 2) without window, 4^(N-5)·2^N) next to the exact
  counts of this encoding: 604,800 distinct permutations, ~1.06e18 window-5 connections, ~3.44e10 adjustments,
  ~2.2e34 decision sequences; distinct decoded architectures are fewer, because (base, delta) pairs collide.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torchspine.errors import TorchspineError
from torchspine.specs import MAX_LEVEL, MIN_LEVEL, BlockSpec, SpecError, validate_blocks

# Block functions of each builder family (torchspine.specs): a space's block_fns must come from one family.
_FAMILIES = {"spinenet": ("bottleneck", "residual"), "mobile": ("mbconv",)}
# Table 1 of the paper: output blocks of the scale-permuted network, one per level L3..L7.
_PAPER_OUTPUT_LEVELS = (3, 4, 5, 6, 7)


class SearchSpaceError(TorchspineError, ValueError):
    """A search-space definition, a decision list or a block-spec list that does not fit the space."""


@dataclass(frozen=True)
class DecisionSlot:
    """One position of the decision sequence.

    Attributes:
        name: readable name used in errors and logs, e.g. ``"block[3].in0"``.
        kind: decision type; a policy uses one output head per kind (``level``, ``out_level``, ``delta``, ``fn``,
            ``in0``, ``in1``).
        vocab: vocabulary size of the kind; decisions are indices ``0..vocab-1``.
    """

    name: str
    kind: str
    vocab: int


@dataclass(frozen=True)
class SpaceSize:
    """How large a space is, as the paper counts it (§3) and exactly.

    Attributes:
        paper_permutations: ``(N-5)!·5!`` (intermediate and output orders, equal levels counted as different).
        paper_connections: ``prod_{i=m}^{N+m-1} C(i, 2)`` with ``m`` stem blocks (no parent window).
        paper_adjustments: ``|deltas|^(N-5) · |fns|^N``.
        distinct_permutations: permutations with equal levels interchangeable (a multinomial times ``5!``).
        connections: parent pairs allowed by this space's window.
        adjustments: (delta, fn) choices allowed by this space (deltas that leave levels 1..7 masked out).
        decision_sequences: legal decision sequences of the encoding.
        distinct_architectures: distinct decoded block-spec lists (different (base, delta) pairs that give the
            same level are one architecture).
    """

    paper_permutations: int
    paper_connections: int
    paper_adjustments: int
    distinct_permutations: int
    connections: int
    adjustments: int
    decision_sequences: int
    distinct_architectures: int

    @property
    def paper_total(self) -> int:
        return self.paper_permutations * self.paper_connections * self.paper_adjustments

    def format(self) -> str:
        """A small table for the command line."""
        rows = [
            ("permutations", self.paper_permutations, self.distinct_permutations),
            ("connections", self.paper_connections, self.connections),
            ("adjustments", self.paper_adjustments, self.adjustments),
            ("total", self.paper_total, self.decision_sequences),
        ]
        lines = [f"{'':<14}{'paper formula':>16}{'this space':>16}"]
        lines += [f"{name:<14}{paper:>16.3e}{exact:>16.3e}" for name, paper, exact in rows]
        lines.append(f"{'distinct architectures':<30}{self.distinct_architectures:>16.3e}")
        return "\n".join(lines)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SearchSpace:
    """A SpineNet search space; the defaults are the paper's SpineNet-49 space (arXiv 1912.05027 §3, §5.1).

    Attributes:
        num_stem_blocks: features before the scale-permuted blocks (torchspine builds 2 level-2 stem groups).
        intermediate_base_alloc: ``(level, count)`` pairs: the multiset of base levels the intermediate blocks are
            a permutation of. A mapping is accepted and normalised to pairs sorted by level.
        level_deltas: allowed level adjustments of intermediate blocks (a delta that would leave levels 1..7 is
            masked out for that base).
        block_fns: block functions every block chooses from (all from one builder family).
        output_levels: output block levels, one block each, permuted; must be a contiguous range.
        parent_window: intermediate blocks choose parents among the last ``parent_window`` features (-1: all).
            Output blocks always choose among all earlier features.
    """

    num_stem_blocks: int = 2
    intermediate_base_alloc: tuple[tuple[int, int], ...] = ((2, 1), (3, 3), (4, 5), (5, 1))
    level_deltas: tuple[int, ...] = (-1, 0, 1, 2)
    block_fns: tuple[str, ...] = ("bottleneck", "residual")
    output_levels: tuple[int, ...] = _PAPER_OUTPUT_LEVELS
    parent_window: int = 5

    # -- construction and validation ---------------------------------------------------------------------------

    def __post_init__(self) -> None:
        alloc = self.intermediate_base_alloc
        if isinstance(alloc, Mapping):
            alloc = tuple(alloc.items())
        try:
            alloc = tuple(sorted((tuple(pair) for pair in alloc), key=lambda p: p[0]))
        except TypeError:
            raise SearchSpaceError(
                f"intermediate_base_alloc={self.intermediate_base_alloc!r}: expected (level, count) pairs"
            ) from None
        object.__setattr__(self, "intermediate_base_alloc", alloc)
        for name in ("level_deltas", "block_fns", "output_levels"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise SearchSpaceError(f"{name}={value!r}: expected a list")
            object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        if not _is_int(self.num_stem_blocks) or self.num_stem_blocks < 2:
            raise SearchSpaceError(
                f"num_stem_blocks={self.num_stem_blocks!r}: expected an integer >= 2 (the first block needs two "
                "distinct parents; torchspine's builder has 2)"
            )
        levels = []
        for pair in self.intermediate_base_alloc:
            if len(pair) != 2 or not all(_is_int(v) for v in pair):
                raise SearchSpaceError(f"intermediate_base_alloc entry {pair!r}: expected (level, count) integers")
            level, count = pair
            if not MIN_LEVEL <= level <= MAX_LEVEL:
                raise SearchSpaceError(
                    f"intermediate_base_alloc level {level}: expected a level in {MIN_LEVEL}..{MAX_LEVEL}"
                )
            if count < 1:
                raise SearchSpaceError(f"intermediate_base_alloc level {level}: count {count} must be positive")
            levels.append(level)
        if len(set(levels)) != len(levels):
            raise SearchSpaceError(f"intermediate_base_alloc={self.intermediate_base_alloc!r}: repeated level")
        if not self.level_deltas or not all(_is_int(d) for d in self.level_deltas):
            raise SearchSpaceError(f"level_deltas={list(self.level_deltas)!r}: expected a non-empty list of integers")
        if len(set(self.level_deltas)) != len(self.level_deltas):
            raise SearchSpaceError(f"level_deltas={list(self.level_deltas)!r}: values must be unique")
        for level in levels:
            if not any(MIN_LEVEL <= level + d <= MAX_LEVEL for d in self.level_deltas):
                raise SearchSpaceError(
                    f"base level {level} with level_deltas {list(self.level_deltas)} never lands in "
                    f"{MIN_LEVEL}..{MAX_LEVEL}"
                )
        if not self.block_fns or len(set(self.block_fns)) != len(self.block_fns):
            raise SearchSpaceError(f"block_fns={list(self.block_fns)!r}: expected a non-empty list of unique names")
        if not any(set(self.block_fns) <= set(fns) for fns in _FAMILIES.values()):
            raise SearchSpaceError(
                f"block_fns={list(self.block_fns)!r}: expected names from one family: "
                + "; ".join(f"{family}: {list(fns)}" for family, fns in _FAMILIES.items())
            )
        outs = self.output_levels
        if not outs or not all(_is_int(v) and MIN_LEVEL <= v <= MAX_LEVEL for v in outs):
            raise SearchSpaceError(
                f"output_levels={list(outs)!r}: expected a non-empty list of levels in {MIN_LEVEL}..{MAX_LEVEL}"
            )
        if len(set(outs)) != len(outs):
            raise SearchSpaceError(f"output_levels={list(outs)!r}: levels must be unique")
        if sorted(outs) != list(range(min(outs), max(outs) + 1)):
            raise SearchSpaceError(
                f"output_levels={list(outs)!r}: expected a contiguous range (one endpoint per level min..max)"
            )
        if not _is_int(self.parent_window) or not (self.parent_window == -1 or self.parent_window >= 2):
            raise SearchSpaceError(
                f"parent_window={self.parent_window!r}: expected -1 (all earlier features) or an integer >= 2"
            )

    @classmethod
    def paper(cls) -> SearchSpace:
        """The paper's SpineNet-49 space (arXiv 1912.05027 §3, §5.1): 10 + 5 blocks, window 5."""
        return cls()

    @classmethod
    def vertex_spinenet(cls) -> SearchSpace:
        """google/vertex-ai-nas ``search_spaces.py`` ``spinenet``: 11 intermediate blocks ({2:1,3:3,4:5,5:2}),
        window 4 (block_fns in torchspine's order)."""
        return cls(intermediate_base_alloc=((2, 1), (3, 3), (4, 5), (5, 2)), parent_window=4)

    @classmethod
    def permuted_resnet(
        cls, scale_permuted: Sequence[int] = (1, 4, 6, 2, 1, 1), block_fn: str = "bottleneck", parent_window: int = 5
    ) -> SearchSpace:
        """An R[N]-SP[M] space of the paper's §3/Table 1: permutation and connections only (delta 0, one block fn).

        Args:
            scale_permuted: blocks per level L2..L7 of the scale-permuted network (Table 1, e.g. R0-SP53
                ``(1, 4, 6, 2, 1, 1)``, R23-SP30 ``(1, 2, 4, 1, 1, 1)``); one block of each of L3..L7 is the output
                block, the rest are intermediate.
            block_fn: the one block function (ResNet-50 uses bottlenecks).
            parent_window: as in `SearchSpace`.

        NOTE: the paper's R[N] stems have N hand-crafted blocks at levels 2..5; torchspine's builder has the
        2-block level-2 stem, so only R0-SP53 (stem {2,0,0,0}) has the paper's exact stem.
        """
        counts = list(scale_permuted)
        if len(counts) != 6 or not all(_is_int(c) and c >= 0 for c in counts):
            raise SearchSpaceError(f"scale_permuted={counts!r}: expected 6 non-negative block counts for L2..L7")
        for level in _PAPER_OUTPUT_LEVELS:
            if counts[level - 2] < 1:
                raise SearchSpaceError(f"scale_permuted={counts!r}: needs at least one L{level} (output) block")
            counts[level - 2] -= 1
        alloc = tuple((level, c) for level, c in zip(range(2, 8), counts, strict=True) if c > 0)
        return cls(intermediate_base_alloc=alloc, level_deltas=(0,), block_fns=(block_fn,), parent_window=parent_window)

    @classmethod
    def tiny(cls) -> SearchSpace:
        """A small space for smoke runs and tests: 4 intermediate blocks ({2:1,3:2,4:1}), outputs L3..L5,
        window 3."""
        return cls(intermediate_base_alloc=((2, 1), (3, 2), (4, 1)), output_levels=(3, 4, 5), parent_window=3)

    # -- serialisation -----------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields (lists, not tuples)."""
        return {
            "num_stem_blocks": self.num_stem_blocks,
            "intermediate_base_alloc": [list(p) for p in self.intermediate_base_alloc],
            "level_deltas": list(self.level_deltas),
            "block_fns": list(self.block_fns),
            "output_levels": list(self.output_levels),
            "parent_window": self.parent_window,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        """Inverse of `to_dict`; unknown keys are errors, missing keys take the paper's defaults."""
        if not isinstance(data, Mapping):
            raise SearchSpaceError(f"search space: expected a mapping of SearchSpace fields, got {type(data).__name__}")
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise SearchSpaceError(f"search space: unknown key(s) {unknown}; expected some of {fields}")
        return cls(**dict(data))

    def fingerprint(self) -> str:
        """sha1 of the canonical JSON of `to_dict`: two studies with the same fingerprint share a space."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(text.encode()).hexdigest()

    # -- shape of the space ------------------------------------------------------------------------------------

    @property
    def base_levels(self) -> tuple[int, ...]:
        """Vocabulary of the ``level`` decisions: the distinct allocation levels, ascending."""
        return tuple(level for level, _ in self.intermediate_base_alloc)

    @property
    def num_intermediate(self) -> int:
        return sum(count for _, count in self.intermediate_base_alloc)

    @property
    def num_blocks(self) -> int:
        return self.num_intermediate + len(self.output_levels)

    @property
    def family(self) -> str:
        """Builder family (``torchspine.specs``) of the block functions."""
        return next(family for family, fns in _FAMILIES.items() if set(self.block_fns) <= set(fns))

    @property
    def min_level(self) -> int:
        return min(self.output_levels)

    @property
    def max_level(self) -> int:
        return max(self.output_levels)

    @property
    def kinds(self) -> dict[str, int]:
        """Vocabulary size of every decision kind (one policy head each)."""
        return {
            "level": len(self.base_levels),
            "out_level": len(self.output_levels),
            "delta": len(self.level_deltas),
            "fn": len(self.block_fns),
            "in0": self.num_stem_blocks + self.num_blocks - 1,
            "in1": self.num_stem_blocks + self.num_blocks - 1,
        }

    @property
    def decisions(self) -> tuple[DecisionSlot, ...]:
        """The fixed decision order (see the module docstring)."""
        return _slots(self)

    def window(self, block: int) -> range:
        """Features block `block` (0-based over all blocks) may take as parents."""
        position = self.num_stem_blocks + block
        if block >= self.num_intermediate or self.parent_window == -1:
            return range(0, position)
        return range(max(position - self.parent_window, 0), position)

    # -- decisions ---------------------------------------------------------------------------------------------

    def cursor(self) -> DecisionCursor:
        """An incremental walker over the decisions (for samplers)."""
        return DecisionCursor(self)

    def legal(self, prefix: Sequence[int]) -> list[int]:
        """Legal vocabulary indices of decision ``len(prefix)``; raises if the prefix itself is illegal."""
        cursor = DecisionCursor(self)
        if len(prefix) >= len(cursor.slots):
            raise SearchSpaceError(
                f"prefix of {len(prefix)} decisions: the space has only {len(cursor.slots)} decisions"
            )
        for value in prefix:
            cursor.push_checked(value)
        return cursor.legal()

    def masks(self, decisions: Sequence[int]) -> list[list[int]]:
        """The legal values of every decision of a full sequence (validating it)."""
        cursor = DecisionCursor(self)
        self._check_length(decisions)
        masks = []
        for value in decisions:
            masks.append(cursor.legal())
            cursor.push_checked(value)
        return masks

    def check(self, decisions: Sequence[int]) -> None:
        """Raise `SearchSpaceError` naming the first bad decision (wrong length, out of range, masked out)."""
        self.masks(decisions)

    def random(self, rng: random.Random) -> list[int]:
        """A uniform masked sample: every decision uniform over its legal values (not uniform over architectures;
        this is the policy a random-search baseline and the untrained controller's ideal start share)."""
        cursor = DecisionCursor(self)
        out = []
        for _ in cursor.slots:
            value = rng.choice(cursor.legal())
            cursor.push(value)
            out.append(value)
        return out

    def uniform_log_prob(self, decisions: Sequence[int]) -> float:
        """Log-probability of `decisions` under `random` (sum of -log |legal| over decisions)."""
        return -sum(math.log(len(m)) for m in self.masks(decisions))

    def decode(self, decisions: Sequence[int]) -> tuple[BlockSpec, ...]:
        """The block specs of a legal decision sequence (the `torchspine.specs` order: intermediate, then outputs)."""
        self.check(decisions)
        n_int, n_out = self.num_intermediate, len(self.output_levels)
        bases = [self.base_levels[v] for v in decisions[:n_int]]
        outs = [self.output_levels[v] for v in decisions[n_int : n_int + n_out]]
        rest = list(decisions[n_int + n_out :])
        blocks = []
        for i in range(n_int):
            delta, fn, in0, in1 = rest[4 * i : 4 * i + 4]
            level = bases[i] + self.level_deltas[delta]
            blocks.append(BlockSpec(level, self.block_fns[fn], (in0, in1), False))  # type: ignore[arg-type]
        rest = rest[4 * n_int :]
        for j in range(n_out):
            fn, in0, in1 = rest[3 * j : 3 * j + 3]
            blocks.append(BlockSpec(outs[j], self.block_fns[fn], (in0, in1), True))  # type: ignore[arg-type]
        try:  # a safety net: the masks above already guarantee every check
            validate_blocks(blocks, self.min_level, self.max_level, self.family, self.num_stem_blocks)  # type: ignore[arg-type]
        except SpecError as err:  # pragma: no cover - would be a bug in the masks
            raise SearchSpaceError(f"decoded specs are invalid (bug in the search space masks): {err}") from err
        return tuple(blocks)

    def encode(self, blocks: Sequence[BlockSpec]) -> list[int]:
        """The decision sequence of `blocks`; ``decode(encode(blocks)) == tuple(blocks)``.

        A level reachable from several (base, delta) pairs gets the pair with the smallest ``|delta|`` (then the
        smaller delta) that still leaves a valid base assignment for the later blocks: the encoding keeps a block
        at its base level whenever the allocation allows. Raises `SearchSpaceError` naming the block that is not
        in the space.
        """
        n_int, n_out = self.num_intermediate, len(self.output_levels)
        blocks = list(blocks)
        if len(blocks) != n_int + n_out:
            raise SearchSpaceError(f"{len(blocks)} blocks: this space has {n_int} intermediate + {n_out} output blocks")
        for i, block in enumerate(blocks):
            if not isinstance(block, BlockSpec):
                raise SearchSpaceError(f"block {i}: expected a BlockSpec, got {block!r}")
            if block.is_output != (i >= n_int):
                want = "an output block" if i >= n_int else "an intermediate block"
                raise SearchSpaceError(f"block {i} {_row(block)}: expected {want} (the last {n_out} are outputs)")
            if block.block_fn not in self.block_fns:
                raise SearchSpaceError(
                    f"block {i} {_row(block)}: block_fn {block.block_fn!r} not in {list(self.block_fns)}"
                )
            in0, in1 = block.input_offsets
            window = self.window(i)
            if not (_is_int(in0) and _is_int(in1) and in0 < in1 and in0 in window and in1 in window):
                raise SearchSpaceError(
                    f"block {i} {_row(block)}: parents must satisfy in0 < in1, both in "
                    f"{window.start}..{window.stop - 1} (window {self.parent_window})"
                )
        out_levels = [b.level for b in blocks[n_int:]]
        if sorted(out_levels) != sorted(self.output_levels):
            raise SearchSpaceError(f"output levels {out_levels}: expected a permutation of {list(self.output_levels)}")
        bases = self._assign_bases([b.level for b in blocks[:n_int]])
        decisions = [self.base_levels.index(b) for b in bases]
        decisions += [self.output_levels.index(level) for level in out_levels]
        for i, block in enumerate(blocks):
            if i < n_int:
                decisions.append(self.level_deltas.index(block.level - bases[i]))
            decisions += [self.block_fns.index(block.block_fn), *block.input_offsets]
        self.check(decisions)
        return decisions

    def _assign_bases(self, levels: list[int]) -> list[int]:
        """Base levels for intermediate `levels` (smallest |delta| first, keeping the rest feasible)."""
        base_levels = self.base_levels
        start = tuple(count for _, count in self.intermediate_base_alloc)
        deltas = sorted(self.level_deltas, key=lambda d: (abs(d), d))

        feasible_memo: dict[tuple[int, tuple[int, ...]], bool] = {}

        def feasible(pos: int, remaining: tuple[int, ...]) -> bool:
            if pos == len(levels):
                return True
            key = (pos, remaining)
            if key not in feasible_memo:
                feasible_memo[key] = any(
                    feasible(pos + 1, _minus(remaining, k))
                    for k, base in enumerate(base_levels)
                    if remaining[k] > 0 and levels[pos] - base in self.level_deltas
                )
            return feasible_memo[key]

        if not feasible(0, start):
            raise SearchSpaceError(
                f"intermediate levels {levels} cannot be written as a permutation of the base allocation "
                f"{dict(self.intermediate_base_alloc)} plus deltas in {list(self.level_deltas)}"
            )
        remaining, bases = start, []
        for pos, level in enumerate(levels):
            for delta in deltas:
                k = base_levels.index(level - delta) if level - delta in base_levels else -1
                if k >= 0 and remaining[k] > 0 and feasible(pos + 1, _minus(remaining, k)):
                    bases.append(base_levels[k])
                    remaining = _minus(remaining, k)
                    break
        return bases

    def _check_length(self, decisions: Sequence[int]) -> None:
        n = len(_slots(self))
        if isinstance(decisions, (str, bytes)) or not isinstance(decisions, Sequence):
            raise SearchSpaceError(f"decisions: expected a list of {n} integers, got {type(decisions).__name__}")
        if len(decisions) != n:
            raise SearchSpaceError(
                f"expected {n} decisions for this search space ({self.num_intermediate} intermediate + "
                f"{len(self.output_levels)} output blocks), got {len(decisions)}"
            )

    # -- size --------------------------------------------------------------------------------------------------

    def size(self) -> SpaceSize:
        """The paper's counts (§3) next to the exact counts of this space."""
        n_int, n_out, n = self.num_intermediate, len(self.output_levels), self.num_blocks
        stem = self.num_stem_blocks
        counts = [c for _, c in self.intermediate_base_alloc]
        multinomial = math.factorial(n_int)
        for c in counts:
            multinomial //= math.factorial(c)
        connections = math.prod(math.comb(len(self.window(i)), 2) for i in range(n))
        legal_deltas = {
            level: sum(MIN_LEVEL <= level + d <= MAX_LEVEL for d in self.level_deltas) for level in self.base_levels
        }
        delta_choices = math.prod(legal_deltas[level] ** c for level, c in self.intermediate_base_alloc)
        fn_choices = len(self.block_fns) ** n
        perms = multinomial * math.factorial(n_out)
        return SpaceSize(
            paper_permutations=math.factorial(n_int) * math.factorial(n_out),
            paper_connections=math.prod(math.comb(i, 2) for i in range(stem, stem + n)),
            paper_adjustments=len(self.level_deltas) ** n_int * fn_choices,
            distinct_permutations=perms,
            connections=connections,
            adjustments=delta_choices * fn_choices,
            decision_sequences=perms * connections * delta_choices * fn_choices,
            distinct_architectures=self._distinct_level_sequences() * math.factorial(n_out) * connections * fn_choices,
        )

    def _distinct_level_sequences(self) -> int:
        """Number of distinct intermediate level sequences (base + delta over all base permutations).

        Dynamic programming over prefixes: a prefix's state is the *set* of allocation counts it can leave, so two
        base assignments of the same levels are counted once.
        """
        base_levels = self.base_levels
        start = tuple(c for _, c in self.intermediate_base_alloc)
        states: dict[frozenset[tuple[int, ...]], int] = {frozenset([start]): 1}
        for _ in range(self.num_intermediate):
            nxt: dict[frozenset[tuple[int, ...]], int] = {}
            for state, ways in states.items():
                for level in range(MIN_LEVEL, MAX_LEVEL + 1):
                    reach = frozenset(
                        _minus(rem, k)
                        for rem in state
                        for k, base in enumerate(base_levels)
                        if rem[k] > 0 and level - base in self.level_deltas
                    )
                    if reach:
                        nxt[reach] = nxt.get(reach, 0) + ways
            states = nxt
        return sum(states.values())


def _minus(counts: tuple[int, ...], k: int) -> tuple[int, ...]:
    return (*counts[:k], counts[k] - 1, *counts[k + 1 :])


def _row(block: BlockSpec) -> str:
    return str([block.level, block.block_fn, list(block.input_offsets), block.is_output])


_SLOT_CACHE: dict[SearchSpace, tuple[DecisionSlot, ...]] = {}


def _slots(space: SearchSpace) -> tuple[DecisionSlot, ...]:
    if space not in _SLOT_CACHE:
        kinds = space.kinds
        slots = [DecisionSlot(f"base[{t}]", "level", kinds["level"]) for t in range(space.num_intermediate)]
        slots += [
            DecisionSlot(f"out_level[{j}]", "out_level", kinds["out_level"]) for j in range(len(space.output_levels))
        ]
        for i in range(space.num_intermediate):
            slots += [DecisionSlot(f"block[{i}].{kind}", kind, kinds[kind]) for kind in ("delta", "fn", "in0", "in1")]
        for j in range(len(space.output_levels)):
            slots += [DecisionSlot(f"output[{j}].{kind}", kind, kinds[kind]) for kind in ("fn", "in0", "in1")]
        _SLOT_CACHE[space] = tuple(slots)
    return _SLOT_CACHE[space]


@dataclass(frozen=True)
class _Plan:
    steps: tuple[tuple[str, int, range], ...]  # per decision: kind, block (-1 for permutation slots), window
    deltas: tuple[tuple[int, ...], ...]  # legal delta indices per base-level vocabulary index
    fns: tuple[int, ...]


_PLAN_CACHE: dict[SearchSpace, _Plan] = {}


def _plan(space: SearchSpace) -> _Plan:
    """What each decision's mask depends on, computed once per space (the cursor runs in sampling loops)."""
    if space not in _PLAN_CACHE:
        n_int, n_out = space.num_intermediate, len(space.output_levels)
        steps: list[tuple[str, int, range]] = [("level", -1, range(0))] * n_int
        steps += [("out_level", -1, range(0))] * n_out
        for block in range(n_int + n_out):
            kinds = ("delta", "fn", "in0", "in1") if block < n_int else ("fn", "in0", "in1")
            steps += [(kind, block, space.window(block)) for kind in kinds]
        deltas = tuple(
            tuple(k for k, d in enumerate(space.level_deltas) if MIN_LEVEL <= base + d <= MAX_LEVEL)
            for base in space.base_levels
        )
        _PLAN_CACHE[space] = _Plan(tuple(steps), deltas, tuple(range(len(space.block_fns))))
    return _PLAN_CACHE[space]


class DecisionCursor:
    """Walks a decision sequence one decision at a time, keeping what the masks depend on (remaining counts, used
    outputs, in0), so a sampler gets each mask in O(1) amortised instead of replaying the prefix.

    Use ``cursor = space.cursor()``, then ``cursor.legal()`` and ``cursor.push(value)`` (unchecked; the sampler
    only pushes legal values) or ``cursor.push_checked(value)``; ``cursor.t`` is the next decision's index.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.slots = _slots(space)
        self._plan = _plan(space)
        self.t = 0
        self.remaining = [c for _, c in space.intermediate_base_alloc]
        self.used_out = [False] * len(space.output_levels)
        self.bases: list[int] = []  # vocabulary index of each intermediate block's base level
        self.in0 = 0

    def legal(self) -> list[int]:
        kind, block, window = self._plan.steps[self.t]
        if kind == "level":
            return [k for k, c in enumerate(self.remaining) if c > 0]
        if kind == "out_level":
            return [k for k, used in enumerate(self.used_out) if not used]
        if kind == "delta":
            return list(self._plan.deltas[self.bases[block]])
        if kind == "fn":
            return list(self._plan.fns)
        if kind == "in0":
            return list(range(window.start, window.stop - 1))
        return list(range(self.in0 + 1, window.stop))

    def push(self, value: int) -> None:
        kind = self._plan.steps[self.t][0]
        if kind == "level":
            self.remaining[value] -= 1
            self.bases.append(value)
        elif kind == "out_level":
            self.used_out[value] = True
        elif kind == "in0":
            self.in0 = value
        self.t += 1

    def push_checked(self, value: int) -> None:
        slot = self.slots[self.t]
        if not _is_int(value) or not 0 <= value < slot.vocab:
            raise SearchSpaceError(
                f"decision {self.t} ({slot.name}) = {value!r}: expected an integer in 0..{slot.vocab - 1}"
            )
        legal = self.legal()
        if value not in legal:
            raise SearchSpaceError(
                f"decision {self.t} ({slot.name}) = {value} is masked out by the earlier decisions; legal values: "
                f"{legal}"
            )
        self.push(value)


# ---------------------------------------------------------------------------------------------------------------
# Architecture identity and display


def spec_rows(blocks: Sequence[BlockSpec]) -> list[list[Any]]:
    """``[[level, block_fn, [in0, in1], is_output], ...]``, the format `torchspine.specs.load_cfg` reads."""
    return [[b.level, b.block_fn, list(b.input_offsets), b.is_output] for b in blocks]


def arch_key(blocks: Sequence[BlockSpec]) -> str:
    """sha1 of the canonical decoded spec rows: the deduplication key of an architecture (not its decisions,
    since several decision sequences can decode to the same specs)."""
    text = json.dumps(spec_rows(blocks), separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()


def arch_string(blocks: Sequence[BlockSpec]) -> str:
    """Short readable form for dashboards: ``"L2b L4r L3b ... | out L4b L3b ..."`` (level + block fn initial)."""
    inter = " ".join(f"L{b.level}{b.block_fn[0]}" for b in blocks if not b.is_output)
    outs = " ".join(f"L{b.level}{b.block_fn[0]}" for b in blocks if b.is_output)
    return f"{inter} | out {outs}" if inter else f"out {outs}"
