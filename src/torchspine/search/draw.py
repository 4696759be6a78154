"""Draw a SpineNet architecture the way the paper's figures do, as a PNG.

Du et al., "SpineNet" (CVPR 2020, arXiv 1912.05027), Fig. 1 and Fig. 4: blocks are laid out left to right in the
order they are built, at a height given by their feature level, with a line from each of their two parents; the
output blocks are the P3..P7 endpoints. Here additionally: bottleneck and residual blocks have different shapes and
colours, the two stem blocks are marked, blocks that feed no endpoint (pruned, never built) are greyed with their
edges, and out-degree-0 features merged raw into an output block are dotted edges.

The picture is computed from `torchspine.specs.plan_graph`, i.e. from the same plan the model is built from.
matplotlib is an optional dependency (the ``report`` extra): it is imported when a picture is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchspine.specs import GraphPlan, SpineNetCfg, plan_graph

_COLORS = {"stem": "#8c9fb7", "bottleneck": "#4c72b0", "residual": "#dd8452", "mbconv": "#55a868"}
_PRUNED = "#d0d0d0"
_OUTPUT_EDGE = "#c0392b"


def require_matplotlib() -> Any:
    """Import matplotlib with the non-interactive Agg backend, or fail with how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "drawing architectures and search reports needs matplotlib: pip install 'torchspine[report]' "
            "(or pip install matplotlib)"
        ) from None
    return plt


def draw_architecture(cfg: SpineNetCfg, out: str | Path, *, title: str | None = None, dpi: int = 120) -> Path:
    """Draw `cfg`'s blocks (build order left to right, height = level, lines from both parents) into `out` (PNG).

    Args:
        cfg: the architecture; its `min_level`/`max_level` decide which outputs are endpoints and which blocks are
            pruned.
        out: PNG path (parent folders are created).
        title: figure title; default: block count and pruned blocks.
        dpi: resolution.

    Returns:
        `out` as a ``Path``.
    """
    plt = require_matplotlib()
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch

    plan = plan_graph(cfg)
    levels = [node.level for node in plan.nodes]
    lo, hi = min([*levels, cfg.min_level]), max([*levels, cfg.max_level])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(plan.nodes) + 1.5), 0.6 * (hi - lo + 1) + 2.0), dpi=dpi)
    endpoint_of = {ep.source: ep.level for ep in plan.endpoints}

    for node in plan.nodes:  # edges first, so blocks are drawn over them
        edges = [(p.source, "solid") for p in node.parents] + [(j, "dotted") for j in node.merged]
        for source, style in edges:
            live = node.live and plan.nodes[source].live
            bend = 0.25 if abs(node.level - plan.nodes[source].level) <= 1 else 0.12
            ax.add_patch(
                FancyArrowPatch(
                    (source, plan.nodes[source].level),
                    (node.index, node.level),
                    connectionstyle=f"arc3,rad={-bend}",
                    arrowstyle="-|>",
                    mutation_scale=9,
                    shrinkA=7,
                    shrinkB=7,
                    linestyle=style,
                    linewidth=1.1 if live else 0.8,
                    color="#555555" if live else _PRUNED,
                    zorder=1,
                )
            )
    for node in plan.nodes:
        kind = "stem" if node.is_stem else node.block_fn
        color = _COLORS.get(kind, "#999999") if node.live else _PRUNED
        marker = {"bottleneck": "s", "residual": "o", "mbconv": "D"}.get(node.block_fn, "s")
        is_endpoint = node.index in endpoint_of
        ax.scatter(
            [node.index],
            [node.level],
            s=260 if is_endpoint else 180,
            marker=marker,
            c=color,
            edgecolors=_OUTPUT_EDGE if is_endpoint else ("#333333" if node.live else "#aaaaaa"),
            linewidths=2.4 if is_endpoint else 0.8,
            hatch="///" if node.is_stem else None,
            zorder=3,
        )
        if is_endpoint:
            ax.annotate(
                f"P{endpoint_of[node.index]}",
                (node.index, node.level),
                xytext=(0, 11),
                textcoords="offset points",
                ha="center",
                fontsize=9,
                fontweight="bold",
                color=_OUTPUT_EDGE,
            )
        elif not node.live:
            ax.annotate(
                "pruned",
                (node.index, node.level),
                xytext=(0, -15),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color="#888888",
            )

    ax.set_xlim(-0.7, len(plan.nodes) - 0.3)
    ax.set_ylim(lo - 0.7, hi + 0.8)
    ax.set_yticks(range(lo, hi + 1), [f"L{level}" for level in range(lo, hi + 1)])
    ax.set_xticks(range(len(plan.nodes)), _node_labels(plan), fontsize=8)
    ax.set_xlabel("build order (stem blocks, then the scale-permuted blocks)")
    ax.set_ylabel("feature level (stride 2^L)")
    ax.grid(axis="y", color="#eeeeee", zorder=0)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles = [
        Line2D([], [], marker="s", linestyle="", markersize=9, color=_COLORS["bottleneck"], label="bottleneck"),
        Line2D([], [], marker="o", linestyle="", markersize=9, color=_COLORS["residual"], label="residual"),
        Line2D([], [], marker="s", linestyle="", markersize=9, color=_COLORS["stem"], label="stem"),
        Line2D(
            [],
            [],
            marker="s",
            linestyle="",
            markersize=9,
            color="white",
            markeredgecolor=_OUTPUT_EDGE,
            markeredgewidth=2.4,
            label="output (P-level)",
        ),
        Line2D([], [], marker="o", linestyle="", markersize=9, color=_PRUNED, label="pruned (feeds nothing)"),
    ]
    if any(node.merged for node in plan.nodes):
        handles.append(Line2D([], [], linestyle="dotted", color="#555555", label="raw merge (out-degree 0)"))
    if cfg.family == "mobile":
        handles[0] = Line2D([], [], marker="D", linestyle="", markersize=9, color=_COLORS["mbconv"], label="MBConv")
        del handles[1]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    pruned = ", ".join(map(str, plan.pruned)) or "none"
    ax.set_title(title or f"{len(cfg.blocks)} blocks, pruned: {pruned}", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out


def _node_labels(plan: GraphPlan) -> list[str]:
    return [f"s{node.index}" if node.is_stem else str(node.index - plan.num_stem) for node in plan.nodes]
