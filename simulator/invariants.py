"""Invariants checked on every simulation (simulate.run calls them), vectorized; a violation names
the scenario and the rule: it is a bug in simrack, never a number to report.

Training: no task starts before its inputs exist; a stage never runs two tasks at once; each stage's
busy time fits in the step; the bubble is a fraction in [0, 1); memory categories add up to the total;
traffic per tier is what the per-rank counts imply (bytes sent = bytes received per tier).
Serving: every request completes or is rejected; tokens come after arrival; an engine runs one step at
a time and no longer than the run; the KV cache stays within capacity; memory adds up.
"""

from __future__ import annotations

import numpy as np

from .training.engine import Timeline
from .training.plan import Plan

EPS = 1e-9  # seconds of slack for floating-point sums


class InvariantError(RuntimeError):
    """A simulated figure broke a rule that always holds: a bug in simrack, never in the input."""


def _vstage_lookup(table) -> np.ndarray:
    """(directions, p, v) -> virtual stage index along that direction's route (-1 where none)."""
    lookup = np.full((table.routes.shape[0], table.p, table.v), -1)
    for d, route in enumerate(table.routes):
        lookup[d, route[:, 0], route[:, 1]] = np.arange(route.shape[0])
    return lookup


def _halves(tl: Timeline):
    """Tasks as plain (kind, mb, chunk, device, start, end) arrays, F&B pairs split into two rows."""
    pair = tl.kind == 3
    kind = np.concatenate([np.where(pair, 0, tl.kind), np.ones(pair.sum(), dtype=tl.kind.dtype)])
    cat = lambda a, b: np.concatenate([a, b[pair]])  # noqa: E731
    return (kind, cat(tl.mb, tl.pair_mb), cat(tl.chunk, tl.pair_chunk), cat(tl.device, tl.device),
            cat(tl.start, tl.start), cat(tl.end, tl.end))


def check_dependencies(plan: Plan, tl: Timeline) -> None:
    """Every task starts no earlier than the end of the task whose output it consumes."""
    table = plan.table
    kind, mb, chunk, device, start, end = _halves(tl)
    n_v = table.n_vstages
    k = _vstage_lookup(table)[table.direction[mb], device, chunk]
    code = lambda kd, vs: (kd * table.m + mb) * n_v + vs  # noqa: E731
    own = code(kind, k)
    need_kind = np.select([kind == 0, (kind == 1) & (k == n_v - 1), kind == 1], [0, 0, 1], 1)
    need_stage = np.select([kind == 0, (kind == 1) & (k == n_v - 1), kind == 1], [k - 1, k, k + 1], k)
    has_need = ~((kind == 0) & (k == 0))
    order = np.argsort(own)
    pos = np.searchsorted(own[order], code(need_kind, need_stage)[has_need])
    if (pos >= len(own)).any() or (own[order][pos] != code(need_kind, need_stage)[has_need]).any():
        raise InvariantError("a task consumes an output that no task produced")
    late = start[has_need] < end[order][pos] - EPS
    if late.any():
        raise InvariantError(f"{int(late.sum())} tasks started before their inputs were produced")


PLAN_SECONDS = ("f", "b", "w", "fb", "send", "dp", "optimizer", "param_gather")


def check_plan(name: str, plan: Plan) -> None:
    """Every duration of a plan is finite, before the engine runs it (an infinite transfer would never
    let the fair-share links finish)."""
    for field in PLAN_SECONDS:
        if not np.isfinite(getattr(plan, field)).all():
            raise InvariantError(f"{name}: invariant violated: non-finite seconds in the plan's {field}")


def check_memory(mem: dict) -> None:
    """The memory categories of a report's memory_bytes add up to its total."""
    parts = sum(mem.get(c, 0.0) for c in ("weights", "gradients", "optimizer", "activations", "kv_cache", "reserved"))
    if not np.isclose(parts, mem["total"], rtol=1e-12):
        raise InvariantError(f"memory categories add to {parts}, total says {mem['total']}")


def check_training(name: str, plan: Plan, tl: Timeline, report) -> None:
    """All training invariants; raises InvariantError naming `name` on the first violation."""
    try:
        check_dependencies(plan, tl)
        order = np.lexsort((tl.start, tl.device))
        same = tl.device[order][1:] == tl.device[order][:-1]
        if (tl.start[order][1:][same] < tl.end[order][:-1][same] - EPS).any():
            raise InvariantError("a stage ran two tasks at once")
        busy = np.bincount(tl.device, weights=tl.end - tl.start, minlength=plan.table.p)
        if (busy > tl.step_time + EPS).any():
            raise InvariantError("a stage was busy longer than the step")
        if not 0.0 <= report.bubble_fraction < 1.0:
            raise InvariantError(f"bubble fraction {report.bubble_fraction} outside [0, 1)")
        check_memory(report.memory_bytes)
        per_rank = plan.traffic["per_rank"].sum(axis=0) * (report.gpus // plan.table.p)
        if not np.allclose(per_rank, [plan.traffic["nvlink"], plan.traffic["scaleout"]], rtol=1e-9):
            raise InvariantError("traffic per tier differs from the per-rank counts")
    except InvariantError as err:
        raise InvariantError(f"{name}: invariant violated: {err}") from None


CHUNK = 1 << 20  # rows of a serving step log checked at a time (a run may log millions of steps)


def _check_steps(tl) -> None:
    """Every step ends after it starts; an engine (lane: replica and pipeline stage) never runs two steps
    at once nor works longer than the run. Lane by lane, in order of start, a chunk of rows at a time,
    so that a log of millions of steps is checked in a few megabytes."""
    st = tl.steps
    start, end = st["start"], st["end"]
    if not len(start):
        return
    count = len(tl.roles) * tl.engines
    lane = None if count == 1 else st["replica"].astype(np.min_scalar_type(count)) * tl.engines + st["engine"]
    lanes = np.zeros(1, dtype=int) if lane is None else np.unique(lane)
    busy = np.zeros(int(lanes.max()) + 1)
    for one in lanes:
        rows = np.flatnonzero(lane == one) if len(lanes) > 1 else None
        s, e = (start, end) if rows is None else (start[rows], end[rows])
        if _any(lambda a, b: s[a + 1:b + 1] < s[a:b], len(s) - 1):  # not in row order: sort (stable, as lexsort)
            order = np.argsort(s, kind="stable")
            s, e = s[order], e[order]
        if _any(lambda a, b: e[a:b] < s[a:b], len(s)):
            raise InvariantError("a step ended before it started")
        if _any(lambda a, b: s[a + 1:b + 1] < e[a:b] - EPS, len(s) - 1):
            raise InvariantError("an engine ran two steps at once")
        busy[one] = sum(float((e[a:a + CHUNK] - s[a:a + CHUNK]).sum()) for a in range(0, len(s), CHUNK))
    if (busy > tl.end_time + EPS).any():
        raise InvariantError("an engine was busy longer than the run")


def _any(test, n: int) -> bool:
    """Whether test(a, b) has a true element for some chunk [a, b) of range(n)."""
    return any(bool(test(a, min(a + CHUNK, n)).any()) for a in range(0, n, CHUNK))


def check_serving(name: str, tl, report, capacity: int) -> None:
    """All serving invariants; raises InvariantError naming `name` on the first violation.

    Every request completes or is rejected (never both, never neither); a token comes after its
    request's arrival and the last after the first; a replica (one pipeline stage, or a whole pipeline
    pass per engine) never runs two steps at once nor works longer than the run; the KV cache never
    holds more than its capacity; memory categories add up to the total."""
    try:
        done = np.isfinite(tl.finish)
        if (done == tl.rejected).any():
            raise InvariantError(f"{int((done == tl.rejected).sum())} requests neither completed nor were "
                                 f"rejected, or both")
        req = tl.requests
        if ((tl.first_token[done] < req.arrival[done] - EPS).any()
                or (tl.finish[done] < tl.first_token[done] - EPS).any()):
            raise InvariantError("a token was emitted before its request arrived or before its first token")
        _check_steps(tl)
        if (tl.kv_tokens_peak > capacity).any():
            raise InvariantError(f"the KV cache held {int(tl.kv_tokens_peak.max())} tokens, capacity {capacity}")
        check_memory(report.memory_bytes)
    except InvariantError as err:
        raise InvariantError(f"{name}: invariant violated: {err}") from None
