"""A Plan's training step as a task graph of integer arrays: slots, their inputs, outputs and transfers.

A slot is one entry of a device's schedule order (a task, or an F&B pair running two halves at
once), numbered device by device in order: device d's slots are lo[d]:lo[d + 1], and the Timeline's
rows follow the same numbering. A half is one plain F, B or W a slot computes; half i is slot i's own
(its F for a pair) and a pair's B half comes after the N slots. A half's output is ready for its
consumers when its transfer arrives: sends between devices (tier 1 NVLink, 2 scale-out) travel on the
sender's link of that tier; outputs that stay on the device, or cross on tier 0, are ready at once.

Dependencies are the schedule table's (ScheduleTable.dependencies): F at virtual stage k needs F at
k - 1; B at k needs B at k + 1 (the last stage's B its own F); W needs the B of its (stage,
micro-batch), and like that B's consumer upstream it waits for the B's send to arrive.

Links are numbered device * 3 + tier (tier 0 is never a link). A stage's gradient reduction is one
more transfer on its data-parallel link, from the start of its last backward (a pair's B excepted).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from ..schedules.codes import codes_of
from .plan import Plan

NONE = -1


@dataclass(frozen=True, eq=False)
class TaskGraph:
    """Slots (N), halves (H >= N) and links of one training step, as arrays (seconds for times)."""

    p: int
    lo: np.ndarray  # (p + 1,) first slot of each device
    device: np.ndarray  # (N,)
    kind: np.ndarray  # (N,) 0 F, 1 B, 2 W, 3 F&B pair
    mb: np.ndarray
    chunk: np.ndarray
    pair_mb: np.ndarray  # -1 unless a pair
    pair_chunk: np.ndarray
    dur: np.ndarray  # (N,) seconds
    dep: np.ndarray  # (N, 2) halves each slot waits for, H where none
    out: np.ndarray  # (N, 2) halves each slot produces; H + 1 (a sink) where a slot has one
    half_slot: np.ndarray  # (H,) slot computing each half
    link: np.ndarray  # (H,) link its output travels on, -1 when it is ready at once
    delay: np.ndarray  # (H,) seconds of that transfer at full bandwidth, 0 when none
    last_backward: np.ndarray  # (p,) slot that launches the gradient reduction, -1 when none
    dp_at_end: bool  # the reduction starts when that slot ends (its device's last), not when it starts
    dp_link: np.ndarray  # (p,) link of each stage's gradient reduction
    dp_seconds: np.ndarray  # (p,)
    tail: np.ndarray  # (p,) optimizer step and exposed parameter gather, after the reduction

    @property
    def halves(self) -> int:
        return len(self.half_slot)


def slot_codes(table):
    """(row starts, kind, mb, chunk, pair mb, pair chunk) of a ScheduleTable's slots, device by device."""
    c = table.coded if table.coded is not None else codes_of(table)
    return c.start, c.kind, c.mb, c.chunk, c.pmb, c.pchunk


def build(plan: Plan) -> TaskGraph:
    """The task graph of `plan`'s step: durations, dependencies and transfers, with numpy."""
    table = plan.table
    lo, kind, mb, chunk, pmb, pchunk = slot_codes(table)
    device = np.repeat(np.arange(table.p), np.diff(lo))
    pair = pmb >= 0
    grids = np.stack([plan.f, plan.b, plan.w])
    dur = np.where(pair, plan.fb[device, chunk, np.maximum(pchunk, 0)], grids[np.minimum(kind, 2), device, chunk])
    if plan.task_scale is not None:
        dur = dur * plan.task_scale
    hv = _halves(table, kind, mb, chunk, pmb, pchunk, device)
    dep, out = _dependencies(table, hv, len(kind))
    link, delay = _transfers(plan, hv)
    return TaskGraph(
        p=table.p, lo=np.asarray(lo, dtype=np.int64), device=device, kind=np.where(pair, 3, kind), mb=mb,
        chunk=chunk, pair_mb=pmb, pair_chunk=pchunk, dur=np.asarray(dur, dtype=float), dep=dep, out=out,
        half_slot=hv.slot, link=link, delay=delay, last_backward=_reduction_launch(plan, lo, kind),
        dp_at_end=plan.grad_reduce_after, dp_link=np.arange(table.p) * 3 + np.asarray(plan.dp_tier, dtype=np.int64),
        dp_seconds=np.asarray(plan.dp, dtype=float), tail=plan.optimizer + plan.param_gather)


def _halves(table, kind, mb, chunk, pmb, pchunk, device) -> SimpleNamespace:
    """Each half's kind, micro-batch, chunk, device, slot, direction and virtual stage: each slot's own
    half, then the B of each pair (pairs: the paired slots)."""
    pairs = np.flatnonzero(pmb >= 0)
    hmb = np.concatenate([mb, pmb[pairs]])
    hch, hdev = np.concatenate([chunk, pchunk[pairs]]), np.concatenate([device, device[pairs]])
    direction = table.direction[hmb]
    return SimpleNamespace(kind=np.concatenate([kind, np.ones(len(pairs), dtype=kind.dtype)]), mb=hmb, chunk=hch,
                           dev=hdev, slot=np.concatenate([np.arange(len(kind)), pairs]), pairs=pairs,
                           direction=direction, vs=table._vstage[direction, hdev, hch])


def _dependencies(table, hv, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(dep, out), (N, 2) each: the halves each slot waits for (H where none) and produces (H + 1 where
    a slot has one): F at vstage k needs F at k - 1, B at k the B at k + 1 (the last stage's its own F),
    W the B of its own (vstage, micro-batch)."""
    m, nv, hk, vs = table.m, table.n_vstages, hv.kind, hv.vs
    h = len(hk)
    code = lambda k, j, s: (k * m + j) * nv + s  # noqa: E731
    fb_half = hk < 2
    producer = np.full(2 * m * nv, NONE, dtype=np.int64)
    producer[code(hk[fb_half], hv.mb[fb_half], vs[fb_half])] = np.flatnonzero(fb_half)
    last = vs == nv - 1
    need_kind = np.where(hk == 0, 0, np.where((hk == 1) & last, 0, 1))
    need_stage = np.where(hk == 0, vs - 1, np.where(hk == 1, np.where(last, vs, vs + 1), vs))
    has = ~((hk == 0) & (vs == 0))
    need = np.full(h, h, dtype=np.int64)
    need[has] = producer[code(need_kind[has], hv.mb[has], need_stage[has])]
    if (need < 0).any():
        raise ValueError(f"{table.name}: a task consumes an output that no task produces")
    dep = np.stack([need[:n], np.full(n, h, dtype=np.int64)], axis=1)
    dep[hv.pairs, 1] = need[n:]
    out = np.stack([np.arange(n), np.full(n, h + 1, dtype=np.int64)], axis=1)
    out[hv.pairs, 1] = np.arange(n, h)
    return dep, out


def _transfers(plan, hv) -> tuple[np.ndarray, np.ndarray]:
    """(link, delay) of each half's output: F forward to vstage k + 1, B backward to k - 1, on the
    sender's link of the send's tier; -1 and 0 s where it stays on the device or crosses on tier 0."""
    table, hk, vs, hdev, hch = plan.table, hv.kind, hv.vs, hv.dev, hv.chunk
    nxt = np.where(hk == 0, vs + 1, vs - 1)
    sends = (hk < 2) & (nxt >= 0) & (nxt < table.n_vstages)
    side = np.minimum(hk, 1)
    dst = np.full(len(hk), NONE, dtype=np.int64)
    dst[sends] = table.routes[hv.direction[sends], nxt[sends], 0]
    tier = plan.send_tier[hdev, hch, side].astype(np.int64)
    moves = sends & (dst != hdev) & (tier != 0)
    return np.where(moves, hdev * 3 + tier, NONE), np.where(moves, plan.send[hdev, hch, side], 0.0)


def _reduction_launch(plan, lo, kind) -> np.ndarray:
    """(p,) slot that launches each device's gradient reduction, -1 when none: its last B or W (an F&B
    pair's B does not launch it), or its last slot when the reduction waits for the backward to end
    (layout.overlap_grad_reduce false)."""
    p, n = plan.table.p, len(kind)
    backward = np.where((kind == 1) | (kind == 2), np.arange(n), NONE)
    last_backward = np.maximum.reduceat(np.append(backward, NONE), np.minimum(lo[:-1], n))[:p] if n else \
        np.full(p, NONE)
    last_backward = np.where(np.diff(lo) > 0, last_backward, NONE)
    if plan.grad_reduce_after:
        last_backward = np.where(last_backward >= 0, np.asarray(lo[1:]) - 1, NONE)
    return last_backward


def coded(table) -> TaskGraph:
    """The task graph of a schedule table with cost codes in place of seconds (the layout search's
    exact pass fills them in for many pipelines at once): `dur` holds each slot's column in one
    pipeline's [f | b | w | fb] flattened ((p, v) three times, then (p, v, v)), `delay` 1 + each half's
    column in its flattened sends (p, v, 2), 0 where the output is ready at once. The graph is build()'s,
    so the dependencies are the engine's."""
    p, v = table.p, table.v
    pv = p * v
    col = np.arange(pv, dtype=float).reshape(p, v)
    plan = SimpleNamespace(
        table=table, f=col, b=col + pv, w=col + 2 * pv, fb=3.0 * pv + np.arange(pv * v, dtype=float).reshape(p, v, v),
        task_scale=None, send=1.0 + np.arange(2 * pv, dtype=float).reshape(p, v, 2),
        send_tier=np.ones((p, v, 2), dtype=np.int8), dp_tier=np.ones(p, dtype=np.int64), dp=np.zeros(p),
        optimizer=np.zeros(p), param_gather=np.zeros(p), grad_reduce_after=False)
    return build(plan)
