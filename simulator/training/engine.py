"""The training engine: a Plan's step as a task graph of arrays -> Timeline.

One row per (stage, micro-batch, phase, chunk) slot of the schedule, never per kernel. Each stage runs
its schedule order; a slot starts when the stage is free and its inputs have arrived. Sends travel on
the sender's link of their tier (NVLink port or NIC); transfers that cross one link at the same time
share it fairly (processor sharing), so pipeline sends and the gradient reduction that cross one NIC
slow each other down. After its last slot a stage waits for its gradient reduction (launched when its
last backward starts, bucketed behind it), then steps Adam.

How: the task graph (simulator.training.taskgraph) gives every slot's duration, inputs and transfers as
integer and float arrays; one longest-path pass (simulator.training.paths) computes every start and
end as if each transfer had its link to itself. Where no link ever carries two transfers at once that
is the answer. Otherwise the event-driven pass (simulator.training.sharing) replays the step from the
first instant two transfers overlap, with processor sharing. The simpy engine this replaced is kept in
simulator.training.reference_engine, and tests check the two agree.
"""

from __future__ import annotations

import numpy as np

from ..cost.pipeline import optimizer_start
from .paths import longest_paths
from .plan import Plan
from .sharing import share_links
from .taskgraph import TaskGraph, build
from .timeline import KIND_INDEX, Timeline

OVERLAP_TOLERANCE = 1e-13  # of the step's scale: overlaps shorter than this change nothing measurable

__all__ = ["KIND_INDEX", "Timeline", "first_overlap", "run_engine", "simulate_step"]


def _dp(g: TaskGraph, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dp start, dp end, end of each device's order), contention-free: the reduction starts with the
    last backward (or, with g.dp_at_end, when the device's last slot ends) and takes its seconds; a stage
    without a backward has none (start = end = its end)."""
    lo, hi = g.lo[:-1], g.lo[1:]
    busy = hi > lo
    order_end = np.zeros(g.p)
    order_end[busy] = end[hi[busy] - 1]
    lb = g.last_backward
    has = lb >= 0
    dp_start = order_end.copy()
    dp_start[has] = (end if g.dp_at_end else start)[lb[has]]
    dp_end = np.where(has, dp_start + g.dp_seconds, order_end)
    return dp_start, dp_end, order_end


def first_overlap(g: TaskGraph, end: np.ndarray, arrival: np.ndarray, dp_start: np.ndarray,
                  dp_end: np.ndarray) -> float | None:
    """The first instant two transfers share a link in a run's figures, or None if none ever do.

    Sorted by start on each link, some pair overlaps iff some consecutive pair does, and the earliest
    consecutive overlap is the earliest of all (an interval overlapping a later non-neighbour also
    overlaps its neighbour, no later)."""
    moves = np.flatnonzero(g.link >= 0)
    dp = np.flatnonzero(g.last_backward >= 0)
    link = np.concatenate([g.link[moves], g.dp_link[dp]])
    lo = np.concatenate([end[g.half_slot[moves]], dp_start[dp]])
    hi = np.concatenate([arrival[moves], dp_end[dp]])
    keep = hi > lo
    link, lo, hi = link[keep], lo[keep], hi[keep]
    if len(link) < 2:
        return None
    order = np.lexsort((hi, lo, link))
    link, lo, hi = link[order], lo[order], hi[order]
    tol = OVERLAP_TOLERANCE * float(hi.max())
    clash = (link[1:] == link[:-1]) & (lo[1:] < hi[:-1] - tol)
    return float(lo[1:][clash].min()) if clash.any() else None


def run_engine(plan: Plan) -> Timeline:
    """Simulate one training step of `plan`."""
    return simulate_step(plan)[0]


def simulate_step(plan: Plan) -> tuple[Timeline, float | None]:
    """(Timeline of one training step of `plan`, the first instant two transfers shared a link, or None
    when none ever did: then every transfer took its own seconds and the step is the longest path)."""
    g = build(plan)
    start, arrival = longest_paths(g)
    end = start + g.dur
    dp_start, dp_end, order_end = _dp(g, start, end)
    t0 = first_overlap(g, end, arrival, dp_start, dp_end)
    if t0 is not None:
        start, end, arrival, dp_start, dp_end = share_links(g, t0, start, end, arrival, dp_start, dp_end)
        dp_start, dp_end, order_end = _settle_dp(g, start, end, dp_start, dp_end)
    opt_start = optimizer_start(order_end, dp_start, dp_end, plan.comm_sms)
    stage_end = opt_start + g.tail
    return Timeline(device=g.device, kind=g.kind, mb=g.mb, chunk=g.chunk, pair_mb=g.pair_mb,
                    pair_chunk=g.pair_chunk, start=start, end=end, comm_wait=_comm_wait(g, start, end),
                    dp_start=dp_start, dp_end=dp_end, optimizer_start=opt_start, stage_end=stage_end,
                    step_time=float(stage_end.max()) if len(stage_end) else 0.0), t0


def _settle_dp(g: TaskGraph, start, end, dp_start, dp_end):
    """Stages without a backward: their reduction is nothing, at the end of their order."""
    _, _, order_end = _dp(g, start, end)
    none = g.last_backward < 0
    return np.where(none, order_end, dp_start), np.where(none, order_end, dp_end), order_end


def _comm_wait(g: TaskGraph, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Seconds each slot waited after its device was free and its inputs' producers had finished."""
    n = len(end)
    prev = np.concatenate([[0.0], end[:-1]]) if n else end
    prev[g.lo[:-1][g.lo[:-1] < g.lo[1:]]] = 0.0
    made = np.append(end[g.half_slot], [0.0, 0.0])  # producer's end of each half; none -> 0
    ready = np.maximum(prev, np.maximum(made[g.dep[:, 0]], made[g.dep[:, 1]]))
    return start - ready
