"""Exact longest paths of many pipelines of one schedule: the engine's recurrence, vectorized.

The analytic pass (simulator.whatif.analytic) takes the maximum over path families that hold the
critical path when the busiest device stays busy from its entry to its exit. Where stages tie, the
critical path can instead run round trips between them, a pipeline send each way per trip, and no
family holds it: ZeRO-3 makes every forward and backward last at least its stage's parameter
gather, so the two stages of a 1F1B pipeline of two stages (both hold the tied embedding) tie to a
few parameters, and the step's critical path collects a send per micro-batch. `ties` finds the
pipelines whose stages tie that closely; they get the longest path itself here.

How: the engine's task graph of the schedule (simulator.training.taskgraph.coded: its slots,
dependencies and sends, with cost columns in place of seconds), its slots grouped by level (the
longest chain of slots before them, so that a level's slots depend only on earlier levels); then the
engine's recurrence level by level for every pipeline at once, micro-batch counts side by side:
start = max(end of the device's previous slot, arrival of each input), end = start + seconds,
arrival = end + send. The same operations as simulator.training.paths, so the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..schedules import SPECS
from ..training.paths import longest_paths
from ..training.taskgraph import coded


@dataclass(frozen=True, eq=False)
class Levels:
    """A schedule table's task graph as index arrays over its slots, sorted by level: each slot, the
    device's slot before it (`slots` for a device's first: a zero), the halves it waits for (`halves`
    for none: a zero), the halves it produces (`halves` + 1: a sink), its cost column and its outputs'
    send columns (-1: none)."""

    slots: int
    halves: int
    level: np.ndarray  # (slots,) sorted
    slot: np.ndarray
    prev: np.ndarray
    dep0: np.ndarray
    dep1: np.ndarray
    out0: np.ndarray
    out1: np.ndarray
    cost: np.ndarray
    send0: np.ndarray
    send1: np.ndarray
    last: np.ndarray  # (p,) each device's last slot (`slots` for a device without any)


GRAPHS: dict[tuple, Levels] = {}
"""Levels by (schedule, p, v, m), built in this process."""


def levels(schedule: str, p: int, v: int, m: int) -> Levels:
    """The Levels of SCHEDULES[schedule](p, m, v) (cached)."""
    key = (schedule, p, v, m)
    hit = GRAPHS.get(key)
    if hit is None:
        hit = GRAPHS[key] = _levels(SPECS[schedule].table(p, m, v))
    return hit


def _levels(table) -> Levels:
    g = coded(table)
    n, h = len(g.dur), g.halves
    unit = replace(g, dur=np.ones(n), delay=np.zeros(h))
    level = np.rint(longest_paths(unit)[0]).astype(np.int64)  # slots on the longest chain before each
    busy = g.lo[:-1] < g.lo[1:]
    prev = np.arange(n) - 1
    prev[g.lo[:-1][busy]] = n
    send = np.append(np.rint(g.delay).astype(np.int64) - 1, [-1, -1])
    i = np.argsort(level, kind="stable")
    return Levels(slots=n, halves=h, level=level[i], slot=i, prev=prev[i], dep0=g.dep[i, 0], dep1=g.dep[i, 1],
                  out0=g.out[i, 0], out1=g.out[i, 1], cost=np.rint(g.dur).astype(np.int64)[i],
                  send0=send[g.out[i, 0]], send1=send[g.out[i, 1]], last=np.where(busy, g.lo[1:] - 1, n))


def exact_last_task_end(schedule: str, p: int, v: int, m, f, b, w, fb, send) -> np.ndarray:
    """(N, p) end of each device's last slot (0 for a device without any) of N pipelines of one
    schedule, p and v, contention-free: m (N,) micro-batches, f, b, w (N, p, v) seconds, fb (N, p, v, v)
    F&B pair seconds or None (no pairs), send (N, p, v, 2). One pass over the levels for every m."""
    m = np.asarray(m)
    N = len(m)
    fb = np.zeros(f.shape + (v,)) if fb is None else fb
    cost = np.concatenate([x.reshape(N, -1) for x in (f, b, w, fb)], axis=1)
    sends = np.concatenate([send.reshape(N, -1), np.zeros((N, 1))], axis=1)
    K, Z = cost.shape[1], sends.shape[1]
    # every (pipeline, slot) as flat indices into the pipelines' ends, arrivals, costs and sends
    parts, lasts, n_end, n_arr = [], [], 0, 0
    for mm in np.unique(m):
        k = np.nonzero(m == mm)[0]
        lv = levels(schedule, p, v, int(mm))
        e = n_end + np.arange(len(k))[:, None] * (lv.slots + 1)  # each pipeline's block of ends
        a = n_arr + np.arange(len(k))[:, None] * (lv.halves + 2)
        c, z = k[:, None] * K, k[:, None] * Z
        parts.append([np.broadcast_to(lv.level, (len(k), lv.slots)), e + lv.slot, e + lv.prev, a + lv.dep0,
                      a + lv.dep1, a + lv.out0, a + lv.out1, c + lv.cost, z + lv.send0 % Z, z + lv.send1 % Z])
        lasts.append((k, e + lv.last))
        n_end += len(k) * (lv.slots + 1)
        n_arr += len(k) * (lv.halves + 2)
    flat = [np.concatenate([q[j].ravel() for q in parts]) for j in range(len(parts[0]))]
    order = np.argsort(flat[0], kind="stable")
    level, *idx = (x[order] for x in flat)
    bounds = np.searchsorted(level, np.arange(level[-1] + 2)) if len(level) else np.zeros(1, dtype=np.int64)
    end, arrival = np.zeros(n_end), np.zeros(n_arr)
    cost, sends = cost.ravel(), sends.ravel()
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        i, prev, d0, d1, o0, o1, c, s0, s1 = (x[lo:hi] for x in idx)
        t = np.maximum(np.maximum(end[prev], arrival[d0]), arrival[d1])
        t += cost[c]
        end[i] = t
        arrival[o0] = t + sends[s0]
        arrival[o1] = t + sends[s1]
    out = np.zeros((N, p))
    for k, at in lasts:
        out[k] = end[at]
    return out


ROUND_TRIPS = ("1f1b",)
"""Schedules whose path families miss round trips between tied stages (1F1B's steady state runs a
forward and a backward of neighbouring micro-batches back to back on every stage); gpipe's,
interleaved's and the zero-bubble schedules' families hold them (tests/test_analytic.py measures
both against this module on the search's layouts), and so do DualPipe's and DualPipe-V's, whose
F&B pairs break the trip: on 100 contention-free ZeRO-3 layouts of 2-4 stages the families equal
the engine (tests/test_analytic.py), and on the Llama 3 405B search the longest path itself
changed none of 377 tied DualPipe pipelines. zb-v's are a bound anyway."""


def ties(schedule: str, even: bool, routes: np.ndarray, busy: np.ndarray, send: np.ndarray, m,
         tol: float = 1e-9) -> np.ndarray:
    """(N,) bool: the pipelines whose critical path may run round trips between tied stages, which
    the families miss, so that they need the longest path itself: a ROUND_TRIPS schedule with its
    layers split evenly (an uneven split is a bound, refined by the engine) and some run of two or
    more consecutive virtual stages on a route whose devices' busy seconds fall short of the busiest
    device's by less, in all, than m round trips over the run's hops would collect. routes:
    (directions, n, 2); busy (N, p) seconds; send (N, p, v, 2); m (N,)."""
    out = np.zeros(len(busy), dtype=bool)
    if schedule not in ROUND_TRIPS or not even:
        return out
    top = busy.max(axis=1)
    m = np.asarray(m, dtype=float)[:, None]
    for route in routes:
        if len(route) < 2:
            continue
        dev, chunk = route[:, 0], route[:, 1]
        short = top[:, None] - busy[:, dev]  # (N, n)
        trip = send[:, dev[:-1], chunk[:-1], 0] + send[:, dev[1:], chunk[1:], 1]  # hop v -> v + 1 and back
        gain = np.zeros((len(busy), len(route)))
        np.cumsum(m * trip - short[:, 1:], axis=1, out=gain[:, 1:])
        later = np.maximum.accumulate(gain[:, :0:-1], axis=1)[:, ::-1]  # best run end after each start
        out |= (later - gain[:, :-1] - short[:, :-1] > -tol * top[:, None]).any(axis=1)
    return out
