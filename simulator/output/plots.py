"""Pictures: the simulated pipeline as a time x stage chart, coloured by phase (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ..training.engine import Timeline  # noqa: E402
from ..training.plan import Plan  # noqa: E402

PHASE_COLOURS = {0: "#4C72B0", 1: "#55A868", 2: "#DD8452", 3: "#8172B3"}
PHASE_LABELS = {0: "F forward", 1: "B backward (input grads)", 2: "W weight grads", 3: "F&B overlapped"}


def draw_pipeline(ax, plan: Plan, tl: Timeline, title: str) -> None:
    """Draw one row per stage on `ax`: each task a bar from start to end (ms), idle left blank."""
    p = plan.table.p
    scale = 1e3  # milliseconds on the axis
    for kind, colour in PHASE_COLOURS.items():
        rows = tl.kind == kind
        if rows.any():
            ax.barh(tl.device[rows], (tl.end[rows] - tl.start[rows]) * scale, left=tl.start[rows] * scale,
                    height=0.8, color=colour, edgecolor="white", linewidth=0.3)
    ax.barh(range(p), (tl.stage_end - tl.optimizer_start) * scale, left=tl.optimizer_start * scale,
            height=0.8, color="#999999", edgecolor="white", linewidth=0.3)
    _label_microbatches(ax, tl, scale)
    ax.set_yticks(range(p), [f"stage {s}" for s in range(p)])
    ax.invert_yaxis()
    ax.set_xlabel("time (ms)")
    ax.set_xlim(0, tl.step_time * scale)
    ax.set_title(title, loc="left")
    labels = PHASE_LABELS if plan.table.split_backward else {**PHASE_LABELS, 1: "B backward"}
    handles = [Patch(color=PHASE_COLOURS[k], label=labels[k]) for k in PHASE_COLOURS
               if (tl.kind == k).any()] + [Patch(color="#999999", label="optimizer")]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=len(handles),
              frameon=False, fontsize=8)


def pipeline_figure(plan: Plan, tl: Timeline, title: str):
    """A Figure holding the chart of `draw_pipeline`."""
    fig, ax = plt.subplots(figsize=(12, 0.45 * plan.table.p + 1.6))
    draw_pipeline(ax, plan, tl, title)
    fig.tight_layout()
    return fig


def _label_microbatches(ax, tl: Timeline, scale: float) -> None:
    """Write the micro-batch number on bars wide enough to hold it."""
    width = (tl.end - tl.start) * scale
    limit = tl.step_time * scale / 60
    for i in (width > limit).nonzero()[0]:
        ax.text((tl.start[i] + tl.end[i]) / 2 * scale, tl.device[i], str(tl.mb[i]), ha="center",
                va="center", fontsize=6, color="white")


def save_pipeline(plan: Plan, tl: Timeline, path: Path, title: str) -> None:
    """Write the pipeline chart to `path` (.svg, .png or .pdf by suffix)."""
    fig = pipeline_figure(plan, tl, title)
    fig.savefig(path, dpi=150, metadata={"Date": None} if path.suffix == ".svg" else None)
    plt.close(fig)
