"""Closed-form step time of many candidate layouts at once: the longest-path families of a schedule.

The engine, when no link carries two transfers at once, computes the longest path through the
schedule's task graph: a task starts when its device is free and its inputs have arrived. This
module evaluates the maximum over a fixed set of path families of that graph, vectorized over the
candidates of one (schedule, pp, chunks) group:

- entries: a device's early task (warm-up forwards, its first backward of each chunk, its first
  F&B pair), reached by micro-batch j's forward through the virtual stages before it (a flow-shop
  staircase: PF[s] + j * max f over those stages; a backward adds the return path);
- chains: from an entry, the device's own tasks back to back up to an exit;
- exits: the forward and backward of the last micro-batch on each virtual stage, continued stage by
  stage along the route (forward scan, then backward scan), landing on each device with the rest of
  its order;
- tail: the stage's gradient reduction from the start of its last backward, Adam, parameter gather.

Every family is a real path of the graph, so the result never exceeds the engine's step time without
link sharing; it equals it when the critical path is one of them (the device that bounds the
pipeline busy from its entry to its exit, which is the regime of balanced and compute-bound
pipelines). docs/whatif.md states the class precisely; tests/test_analytic.py checks both facts.

The structure (positions of entries and exits in each device's order, task counts before and after
them) comes from the schedule's own table, built once per (schedule, pp, chunks) at two micro-batch
counts past the warm-up and extended linearly in m (more micro-batches only lengthen the steady
state), or at the exact m when it is small.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .schedules import SCHEDULES, in_flight
from .schedules.table import Action

NEG = -np.inf


ENGINE_LOCAL_WAITS_FOR_SEND = True
"""The engine marks a backward's output ready when its send to the previous stage arrives, and the
weight-gradient task of the same micro-batch on the same device waits for that event too: a W right
after its own B starts one send later. The families mirror it (slot type "W after its B")."""


def slot_types(v: int) -> int:
    """Number of slot kinds: F, B, W per chunk, an F&B pair per (F chunk, B chunk), and W right after
    its own B per chunk."""
    return 3 * v + v * v + v


def _slot_type(a: Action, v: int, prev: Action | None = None) -> int:
    if a.paired is not None:
        return 3 * v + a.chunk * v + a.paired.chunk
    if (ENGINE_LOCAL_WAITS_FOR_SEND and a.kind == "W" and prev is not None
            and any(h.kind == "B" and h.mb == a.mb and h.chunk == a.chunk for h in prev.halves())):
        return 3 * v + v * v + a.chunk
    return "FBW".index(a.kind) * v + a.chunk


def _types(order, v: int) -> list[int]:
    return [_slot_type(a, v, order[i - 1] if i else None) for i, a in enumerate(order)]


@dataclass(frozen=True, kw_only=True, eq=False)
class Structure:
    """Where the path families enter and leave each device's order, with task counts (affine in m).

    Count arrays have a trailing axis of slot types; `*_slope` is the change per extra micro-batch.
    Entries are padded to E per device (ent_valid); halves: (kind 0 F / 1 B / -1 none, direction,
    vstage, rank of the micro-batch within its direction).
    """

    p: int
    v: int
    routes: np.ndarray  # (directions, n, 2)
    m_ref: int
    ent_valid: np.ndarray  # (p, E) bool
    ent_half: np.ndarray  # (p, E, 2, 4) int
    ent_first: np.ndarray  # (p, E) bool: the device's first task (starts no earlier than 0)
    ent_before: np.ndarray  # (p, E, S) tasks before the entry
    ent_before_slope: np.ndarray
    ent_rank_slope: np.ndarray  # (p, E, 2) change of the halves' micro-batch ranks per micro-batch
    ent_pos: np.ndarray  # (p, E) position (for the masks below)
    x_type: np.ndarray  # (2 F/B, directions, n) slot type of the last micro-batch's task
    x_upto: np.ndarray  # (2, directions, n, S) counts up to and including it
    x_upto_slope: np.ndarray
    x_after: np.ndarray  # (2, directions, n, S) counts after it
    x_after_slope: np.ndarray
    x_mask: np.ndarray  # (2, directions, n, E) entries before it on its device (a prefix: entries sorted)
    total: np.ndarray  # (p, S)
    total_slope: np.ndarray
    last_type: np.ndarray  # (p,) slot type of each device's last task (a plain B or W)
    x_last_rank: np.ndarray  # (directions,) rank of the last micro-batch at m_ref
    in_flight: np.ndarray  # (p,) activations held (micro-batch-chunks), at m_ref
    in_flight_slope: np.ndarray
    pred: np.ndarray = None  # (directions, n, 3): the F before the first micro-batch's forward at each
    # stage on its device, as (vstage, rank, slot type), -1 when none (a chain hop in the warm-up)
    used: np.ndarray = None  # slot types that occur (count arrays keep only these columns)

    def __post_init__(self):
        counts = ("ent_before", "ent_before_slope", "x_upto", "x_upto_slope", "x_after", "x_after_slope",
                  "total", "total_slope")
        if self.used is not None:
            return
        used = np.nonzero(self.total.sum(axis=0) + np.abs(self.total_slope).sum(axis=0))[0]
        remap = np.full(self.total.shape[-1], -1)
        remap[used] = np.arange(len(used))
        object.__setattr__(self, "used", used)
        for key in counts:
            object.__setattr__(self, key, getattr(self, key)[..., used])
        object.__setattr__(self, "x_type", remap[self.x_type])
        object.__setattr__(self, "last_type", remap[self.last_type])
        pred = self.pred.copy()
        pred[..., 2] = np.where(pred[..., 0] >= 0, remap[np.maximum(pred[..., 2], 0)], -1)
        object.__setattr__(self, "pred", pred)


def _entries(table, k: int, v: int, types: list[int]):
    """Entry slots of device k: the first slot of each type, and in the warm-up (up to one slot past
    the first backward) the first and last slot of each type and every slot where the spacing of that
    type changes. A staircase entry's value is linear along slots of one type spaced evenly, so these
    ends of runs are where the maximum lies."""
    order = table.orders[k]
    first_b = next((i for i, a in enumerate(order) if any(h.kind == "B" for h in a.halves())), len(order) - 1)
    warm = min(first_b + 2, len(order))
    picks, first, seen = set(), {}, {}
    for i, t in enumerate(types):
        first.setdefault(t, i)
        if i < warm:
            seen.setdefault(t, []).append(i)
    for pos in seen.values():
        picks.update((pos[0], pos[-1]))
        gaps = np.diff(pos)
        picks.update(pos[j] for j in range(1, len(gaps)) if gaps[j] != gaps[j - 1])
        picks.update(pos[j + 1] for j in range(1, len(gaps)) if gaps[j] != gaps[j - 1])
    return sorted(picks | set(first.values()))


def _extract(table, rank) -> dict:
    """Structure arrays of one concrete ScheduleTable (see Structure)."""
    p, v = table.p, table.v
    S = slot_types(v)
    dirs, n = table.routes.shape[0], table.routes.shape[1]
    types_all = [_types(table.orders[k], v) for k in range(p)]
    ents = [_entries(table, k, v, types_all[k]) for k in range(p)]
    E = max(len(e) for e in ents)
    ent_valid, ent_first = np.zeros((p, E), bool), np.zeros((p, E), bool)
    ent_half = np.full((p, E, 2, 4), -1, dtype=np.int64)
    ent_before, ent_pos = np.zeros((p, E, S)), np.full((p, E), 1 << 40, dtype=np.int64)
    cum, where, types_of = [], {}, []
    for k in range(p):
        order = table.orders[k]
        types = np.array(types_all[k])
        types_of.append(types)
        onehot = np.zeros((len(order) + 1, S))
        np.add.at(onehot, (np.arange(1, len(order) + 1), types), 1)
        cum.append(np.cumsum(onehot, axis=0))
        for i, a in enumerate(order):
            for h in a.halves():
                where[(k, h.kind, h.mb, h.chunk)] = i
        for e, i in enumerate(ents[k]):
            ent_valid[k, e], ent_first[k, e], ent_pos[k, e] = True, i == 0, i
            ent_before[k, e] = cum[k][i]
            for hi, h in enumerate(order[i].halves()):
                if h.kind in "FB":
                    r = int(table.direction[h.mb])
                    ent_half[k, e, hi] = ("FB".index(h.kind), r, table.vstage_of(k, h.chunk, r), rank[h.mb])
    x_type = np.zeros((2, dirs, n), dtype=np.int64)
    x_upto, x_after = np.zeros((2, dirs, n, S)), np.zeros((2, dirs, n, S))
    x_mask = np.zeros((2, dirs, n, E), bool)
    last = [int(np.nonzero(table.direction == r)[0][-1]) for r in range(dirs)]
    for r in range(dirs):
        for s, (k, c) in enumerate(table.routes[r]):
            for x, kind in enumerate("FB"):
                i = where[(int(k), kind, last[r], int(c))]
                x_type[x, r, s] = types_of[k][i]
                x_upto[x, r, s] = cum[k][i + 1]
                x_after[x, r, s] = cum[k][-1] - cum[k][i + 1]
                x_mask[x, r, s] = ent_pos[k] <= i
    pred = np.full((dirs, n, 3), -1, dtype=np.int64)
    first = [int(np.nonzero(table.direction == r)[0][0]) for r in range(dirs)]
    for r in range(dirs):
        for s, (k, c) in enumerate(table.routes[r]):
            i = where[(int(k), "F", first[r], int(c))]
            a = table.orders[k][i - 1] if i else None
            if a is not None and a.paired is None and a.kind == "F" and int(table.direction[a.mb]) == r:
                sp = table.vstage_of(int(k), a.chunk, r)
                if sp < s:
                    pred[r, s] = (sp, rank[a.mb], types_of[k][i - 1])
    last_type = np.array([t[-1] for t in types_of])
    if any(o[-1].paired is not None or o[-1].kind == "F" for o in table.orders):
        raise ValueError(f"{table.name}: a device ends on a forward; the tail formula needs a B or W")
    return dict(routes=table.routes, ent_valid=ent_valid, ent_half=ent_half, ent_first=ent_first,
                ent_before=ent_before, ent_pos=ent_pos, x_type=x_type, x_upto=x_upto, x_after=x_after,
                x_mask=x_mask, total=np.stack([c[-1] for c in cum]), last_type=last_type, pred=pred,
                x_last_rank=np.array([rank[j] for j in last]), in_flight=in_flight(table).astype(float))


def _ranks(table) -> np.ndarray:
    rank = np.zeros(table.m, dtype=np.int64)
    for r in range(table.routes.shape[0]):
        idx = np.nonzero(table.direction == r)[0]
        rank[idx] = np.arange(len(idx))
    return rank


def steady_from(schedule: str, p: int, v: int) -> tuple[int, int]:
    """(m1, period): from m1 micro-batches on, m and m + period micro-batches differ only in the
    steady state, so the structure extends linearly (checked for p up to 16 in the tests)."""
    return {"gpipe": (2, 1), "1f1b": (p + 1, 1), "zb-h1": (p + 1, 1), "interleaved": (3 * p, p),
            "zb-h2": (3 * p, 1), "zb-v": (2 * p + 1, 1), "dualpipe-v": (2 * p + 1, 1),
            "dualpipe": (2 * p + 2, 2)}[schedule]


STRUCTURES: dict[tuple, Structure] = {}
"""Structures built in this process, by (schedule, p, v, m) (m None: the linear one). Pure functions of
the schedule; workers of estimate() send theirs back, so that later passes reuse them."""


def structure(schedule: str, p: int, v: int, m: int) -> Structure:
    """The Structure of SCHEDULES[schedule](p, m, v); exact for small m, linear in m past m1."""
    m1, period = steady_from(schedule, p, v)
    linear = not (m < m1 + period or (m - m1) % period)
    key = (schedule, p, v, None if linear else m)
    hit = STRUCTURES.get(key)
    if hit is None:
        hit = STRUCTURES[key] = _linear(schedule, p, v, m1, period) if linear else _exact(schedule, p, v, m)
    return hit


def _exact(schedule: str, p: int, v: int, m: int) -> Structure:
    t = SCHEDULES[schedule](p, m, v)
    a = _extract(t, _ranks(t))
    zero = lambda x: np.zeros_like(x)  # noqa: E731
    return Structure(p=p, v=v, m_ref=m, x_upto_slope=zero(a["x_upto"]), x_after_slope=zero(a["x_after"]),
                     total_slope=zero(a["total"]), in_flight_slope=zero(a["in_flight"]),
                     ent_before_slope=zero(a["ent_before"]), ent_rank_slope=np.zeros(a["ent_half"].shape[:3]), **a)


def _linear(schedule: str, p: int, v: int, m1: int, period: int) -> Structure:
    t1, t2 = SCHEDULES[schedule](p, m1, v), SCHEDULES[schedule](p, m1 + period, v)
    a, b = _extract(t1, _ranks(t1)), _extract(t2, _ranks(t2))
    same = ("ent_valid", "ent_first", "x_type", "x_mask", "last_type", "pred")
    for key in same:
        if a[key].shape != b[key].shape or not np.array_equal(a[key], b[key]):
            raise AssertionError(f"{schedule} p={p} v={v}: structure not steady from m={m1} ({key})")
    if not np.array_equal(a["ent_half"][..., :3], b["ent_half"][..., :3]):
        raise AssertionError(f"{schedule} p={p} v={v}: entries differ between m={m1} and m={m1 + period}")
    slope = lambda key: (b[key] - a[key]) / period  # noqa: E731
    rank = (b["ent_half"][..., 3] - a["ent_half"][..., 3]) / period
    return Structure(p=p, v=v, m_ref=m1, x_upto_slope=slope("x_upto"), x_after_slope=slope("x_after"),
                     total_slope=slope("total"),
                     in_flight_slope=slope("in_flight"), ent_before_slope=slope("ent_before"),
                     ent_rank_slope=rank, **a)


def in_flight_of(st: Structure, m: np.ndarray) -> np.ndarray:
    """(N, p) activations held per device at m micro-batches."""
    return st.in_flight[None] + st.in_flight_slope[None] * (m - st.m_ref)[:, None]


def slot_durations(st: Structure, f, b, w, fb, send) -> np.ndarray:
    """(N, p, S') seconds of each slot type the schedule uses, on each device (a W right after its B
    lasts w plus that B's send: ENGINE_LOCAL_WAITS_FOR_SEND)."""
    v = f.shape[2]
    cols = []
    for t in st.used:
        kind, c = divmod(int(t), v)
        if kind < 3:
            cols.append((f, b, w)[kind][..., c])
        elif t < 3 * v + v * v:
            c1, c2 = divmod(int(t) - 3 * v, v)
            cols.append(fb[..., c1, c2])
        else:
            c = int(t) - 3 * v - v * v
            cols.append(w[..., c] + send[..., c, 1])
    return np.stack(cols, axis=2)


def _route_arrays(st: Structure, r: int, f, b, send):
    """Per virtual stage of direction r: f, b, forward send out, backward send out; (N, n) each."""
    dev, chunk = st.routes[r, :, 0], st.routes[r, :, 1]
    fr, br = f[:, dev, chunk], b[:, dev, chunk]
    sf, sb = send[:, dev, chunk, 0].copy(), send[:, dev, chunk, 1].copy()
    sf[:, -1] = 0.0
    sb[:, 0] = 0.0
    return fr, br, sf, sb


def _prefix(fr, br, sf, sb, pred, D, dev):
    """Start bounds of micro-batch j's forward and backward at each stage, as two (base, slope) pairs
    over [forward | backward] stages: the pure staircase from the step's start (C + j max f), and the
    path reaching micro-batch 0's task through chain hops, then advancing on that stage (PF + j f).
    A hop: where a device runs another forward just before the first micro-batch's, that forward's
    bound plus its duration."""
    N, n = fr.shape
    a = fr + sf
    C = np.concatenate([np.zeros((N, 1)), np.cumsum(a, axis=1)[:, :-1]], axis=1)
    MF = np.maximum.accumulate(fr, axis=1)
    hops = np.nonzero(pred[:, 0] >= 0)[0]
    if len(hops):  # PF = C + G, G non-decreasing, raised at each hop: sequential over hops only
        G = np.zeros((N, n))
        g, seen = np.zeros(N), {}  # seen: running max of G after each hop position
        for s in hops:
            sp, j, t = pred[s]
            before = [h for h in seen if h <= sp]
            pf_sp = C[:, sp] + (seen[max(before)] if before else 0.0)
            hop = np.maximum(C[:, sp] + j * MF[:, sp], pf_sp + j * fr[:, sp]) + D[:, dev[s], t]
            g = np.maximum(g, hop - C[:, s])
            G[:, s] = seen[s] = g
        PF = C + np.maximum.accumulate(G, axis=1)
    else:
        PF = None
    MB = np.maximum.accumulate(br[:, ::-1], axis=1)[:, ::-1]
    back = np.cumsum((br + sb)[:, ::-1], axis=1)[:, ::-1]  # sum over s' >= s
    tail = np.concatenate([back[:, 1:], np.zeros((N, 1))], axis=1)
    pure = (np.concatenate([C, (C[:, -1] + fr[:, -1])[:, None] + tail], axis=1),
            np.concatenate([MF, np.maximum(MF[:, -1:], MB)], axis=1))
    if PF is None:  # without hops the other bound is PF = C with slope f <= max f: never larger
        return pure, None
    hopped = (np.concatenate([PF, (PF[:, -1] + fr[:, -1])[:, None] + tail], axis=1),
              np.concatenate([fr, np.maximum(fr[:, -1:], MB)], axis=1))
    return pure, hopped


_EXIT_CACHE: dict = {}


def _entry_counts(st: Structure, slope: bool = False) -> np.ndarray:
    """(p, S, E + 1) task counts before each entry and in the whole order (cached per structure)."""
    key = (id(st), "entries", slope)
    hit = _EXIT_CACHE.get(key)
    if hit is None or hit[0] is not st:
        before, total = (st.ent_before_slope, st.total_slope) if slope else (st.ent_before, st.total)
        hit = _EXIT_CACHE[key] = (st, np.concatenate([before, total[:, None, :]], axis=1).transpose(0, 2, 1).copy())
    return hit[1]


def _exit_counts(st: Structure, r: int, Dk: np.ndarray, dm: np.ndarray) -> np.ndarray:
    """(2 F/B exits, 2 upto/after, N, n) task seconds up to and after each exit of direction r: one
    batched matrix product per device (BLAS) instead of an (N, n, S) broadcast."""
    p, N, S = Dk.shape
    key = (id(st), r)
    hit = _EXIT_CACHE.get(key)
    if hit is None or hit[0] is not st:
        dev = st.routes[r, :, 0]
        perm = np.argsort(dev, kind="stable")
        cnt = len(dev) // p
        sloped = bool(st.x_upto_slope[:, r].any() or st.x_after_slope[:, r].any())
        parts = [st.x_upto[0, r], st.x_after[0, r], st.x_upto[1, r], st.x_after[1, r]]
        if sloped:
            parts += [st.x_upto_slope[0, r], st.x_after_slope[0, r], st.x_upto_slope[1, r], st.x_after_slope[1, r]]
        X = np.stack(parts)
        X = X[:, perm].reshape(len(parts), p, cnt, S).transpose(1, 3, 0, 2).reshape(p, S, len(parts) * cnt)
        hit = _EXIT_CACHE[key] = (st, perm, cnt, X, len(parts))
    _, perm, cnt, X, k = hit
    Y = np.matmul(Dk, X).reshape(p, N, k, cnt).transpose(2, 1, 0, 3).reshape(k, N, p * cnt)
    out = np.empty_like(Y)
    out[:, :, perm] = Y
    if k == 8:
        out = out[:4] + dm[None, :, None] * out[4:]
    return out.reshape(2, 2, N, p * cnt)


def longest_paths(st: Structure, m: np.ndarray, f, b, w, fb, send, dp, optimizer, param_gather):
    """(step seconds (N,), last-task end (N, p), stage end (N, p)) of N candidates of one group."""
    N, p = f.shape[:2]
    D = slot_durations(st, f, b, w, fb, send)
    dm = (m - st.m_ref).astype(float)
    routes = [_route_arrays(st, r, f, b, send) for r in range(st.routes.shape[0])]
    pre = [_prefix(*ra, st.pred[r], D, st.routes[r, :, 0]) for r, ra in enumerate(routes)]
    # entries: start bound (a staircase path of micro-batch j) minus the tasks before them on their device
    n = st.routes.shape[1]
    both = all(q[1] is not None for q in pre)
    if not both:  # a direction without hops: its hopped bound is its pure one
        pre = [(q[0], q[1] if q[1] is not None else q[0]) for q in pre]
    bounds = [(np.concatenate([q[w][0] for q in pre], axis=1), np.concatenate([q[w][1] for q in pre], axis=1))
              for w in range(2 if any(q[1] is not q[0] for q in pre) else 1)]
    P = None
    for hi in range(2):
        kind, r, s, j = (st.ent_half[:, :, hi, q] for q in range(4))
        valid = kind >= 0
        if not valid.any():
            continue
        idx = np.where(valid, r * 2 * n + kind * n + s, 0)
        if st.ent_rank_slope[..., hi].any():
            j = j[None] + dm[:, None, None] * st.ent_rank_slope[None, :, :, hi]
        vals = [base[:, idx] + j * slope[:, idx] for base, slope in bounds]
        val = vals[0] if len(vals) == 1 else np.maximum(vals[0], vals[1])
        val = np.where(valid[None], val, NEG)
        P = val if P is None else np.maximum(P, val)
    P = np.where(st.ent_first[None], np.maximum(P, 0.0), P)
    Dk = D.transpose(1, 0, 2)  # (p, N, S)
    E = st.ent_before.shape[1]
    counts = _entry_counts(st)  # (p, S, E + 1): tasks before each entry, and all tasks
    before = np.matmul(Dk, counts).transpose(1, 0, 2)  # (N, p, E + 1)
    total = before[..., E]
    if st.ent_before_slope.any() or st.total_slope.any():
        slopes = np.matmul(Dk, _entry_counts(st, slope=True)).transpose(1, 0, 2)
        before = before + dm[:, None, None] * slopes
        total = before[..., E]
    A = np.where(st.ent_valid[None], P - before[..., :E], NEG)
    Amax = A.max(axis=2)
    L = Amax + total
    full = st.x_mask.all()
    Acum = None if full else np.maximum.accumulate(A, axis=2)  # entries sorted by position: masks are prefixes
    for r, (fr, br, sf, sb) in enumerate(routes):
        n = fr.shape[1]
        dev = st.routes[r, :, 0]
        terms = _exit_counts(st, r, Dk, dm)  # (2, 2, N, n): forward/backward exit, upto/after
        ends = []
        for x in range(2):  # 0: forward exits, 1: backward exits of the last micro-batch
            if full:
                amax = Amax[:, dev]
            else:
                count = st.x_mask[x, r].sum(axis=1)
                amax = np.where(count > 0, Acum[:, dev, np.maximum(count - 1, 0)], NEG)
            upto, after = terms[x]
            ends.append((amax + upto, D[:, dev, st.x_type[x, r]], after, upto))
        (qf, durf, aftf, uptof), (qb, durb, aftb, uptob) = ends
        # forward scan Q[s] = max(qf[s], Q[s-1] + send + slot) as a max-plus prefix: C + cummax(qf - C)
        step = np.concatenate([np.zeros((N, 1)), sf[:, :-1] + durf[:, 1:]], axis=1)
        C = np.cumsum(step, axis=1)
        Q = C + np.maximum.accumulate(qf - C, axis=1)
        # backward scan R[s] = max(qb[s], R[s+1] + send + slot), entered at the last stage from Q
        qb = qb.copy()
        qb[:, -1] = np.maximum(qb[:, -1], Q[:, -1] + uptob[:, -1] - uptof[:, -1])
        e = np.concatenate([sb[:, 1:] + durb[:, :-1], np.zeros((N, 1))], axis=1)
        E = np.cumsum(e[:, ::-1], axis=1)[:, ::-1]  # E[s] - E[t] = sum of e[s..t-1]
        R = E + np.maximum.accumulate((qb - E)[:, ::-1], axis=1)[:, ::-1]
        land = np.maximum(Q + aftf, R + aftb)
        perm = np.argsort(dev, kind="stable")
        L = np.maximum(L, land[:, perm].reshape(N, p, -1).max(axis=2))
    last = np.take_along_axis(D, st.last_type[None, :, None], axis=2)[..., 0]
    stage_end = L + np.maximum(0.0, dp - last) + optimizer + param_gather
    return stage_end.max(axis=1), L, stage_end


# --- the whole pass: costs, structure, longest paths, over every candidate --------------------------

@dataclass(frozen=True, kw_only=True)
class Estimates:
    """Analytic figures of N candidates (SI units); index-aligned with the Candidates given."""

    step_time: np.ndarray
    memory: dict  # category -> (N,) bytes, plus "total" and "capacity"
    fits: np.ndarray  # bool
    busy: np.ndarray  # compute seconds of the busiest device (its tasks, with exposed TP inside)
    exposed_tp: np.ndarray  # TP seconds inside the busiest device's tasks
    tail: np.ndarray  # seconds after the critical device's last task: gradient reduction, Adam, gather
    bubble: np.ndarray  # mean over devices of idle / step
    tokens_per_s: np.ndarray
    mfu: np.ndarray
    cost_per_million_tokens: np.ndarray


OUT_FIELDS = ("step_time", "busy", "exposed_tp", "tail", "bubble")
MEM_FIELDS = ("weights", "gradients", "optimizer", "activations", "kv_cache", "total", "capacity")


def _jobs(c, chunk: int = 8192) -> list[tuple]:
    """(schedule, p, v, m or None, rows): candidates sharing one Structure (m None: the linear one)."""
    from .analytic_costs import schedule_name

    key_m = np.empty(len(c), dtype=np.int64)
    names = [schedule_name(i) for i in range(8)]
    for i, name in enumerate(names):
        sel = c.schedule == i
        if not sel.any():
            continue
        for p, v in set(zip(c.pp[sel].tolist(), c.chunks[sel].tolist())):
            rows = sel & (c.pp == p) & (c.chunks == v)
            m1, period = steady_from(name, p, v)
            m = c.m[rows]
            key_m[rows] = np.where((m >= m1 + period) & ((m - m1) % period == 0), -1, m)
    from .analytic_costs import _unique_rows

    uniq, inverse = _unique_rows(np.stack([c.schedule, c.pp, c.chunks, key_m + 1], axis=1))
    uniq[:, 3] -= 1
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    out = []
    for u, (s, p, v, m) in enumerate(uniq):
        rows = order[bounds[u]:bounds[u + 1]]
        for start in range(0, len(rows), chunk):  # bounded pieces: memory, and balanced workers
            out.append((names[s], int(p), int(v), None if m < 0 else int(m), rows[start:start + chunk]))
    return out


def _prepared(cm, c) -> dict:
    """CostModel.prepare of every candidate, once per split-backward flag: {flag: (rows map, arrays)}."""
    from .analytic_costs import SPLIT_BACKWARD, schedule_name

    split = np.array([SPLIT_BACKWARD[schedule_name(i)] for i in range(8)])[c.schedule]
    out = {}
    for flag in (False, True):
        rows = np.nonzero(split == flag)[0]
        if len(rows):
            pos = np.full(len(c), -1)
            pos[rows] = np.arange(len(rows))
            out[flag] = (pos, cm.prepare(c.take(rows), flag))
    return out


def _run_jobs(cm, c, jobs, skip_oom: bool = False, lts: dict | None = None) -> tuple[np.ndarray, dict, dict]:
    """Evaluate jobs in this process; (rows, out fields, memory fields) over the rows covered."""
    from .analytic_costs import group_costs

    rows = np.concatenate([j[4] for j in jobs]) if jobs else np.zeros(0, dtype=np.int64)
    out = {k: np.zeros(len(rows)) for k in OUT_FIELDS}
    mem = {k: np.zeros(len(rows)) for k in MEM_FIELDS}
    start = 0
    for name, p, v, m, idx in jobs:
        sub = c.take(idx)
        st = structure(name, p, v, int(sub.m[0]) if m is not None else steady_from(name, p, v)[0]
                       + steady_from(name, p, v)[1])
        local = np.arange(start, start + len(idx))
        from .analytic_costs import SPLIT_BACKWARD

        pos, arrays = lts[SPLIT_BACKWARD[name]]
        lt = {k: v[pos[idx]] for k, v in arrays.items()}
        _estimate_group(cm, sub, st, name, local, out, mem, group_costs, skip_oom, lt)
        start += len(idx)
    return rows, out, mem


_FORKED: tuple = ()


def _worker(jobs):
    cm, c, skip_oom, lts = _FORKED
    known = set(STRUCTURES)
    result = _run_jobs(cm, c, jobs, skip_oom, lts)
    return result, {k: v for k, v in STRUCTURES.items() if k not in known}


def estimate(cm, c, *, workers: int = 1, skip_oom: bool = False) -> Estimates:
    """Analytic figures of every candidate in `c` for the cost model `cm` (analytic_costs.CostModel).

    workers > 1 splits the (schedule, pp, chunks) groups over that many forked processes, balanced by
    their size; the results are the same as in one process. skip_oom: compute memory first and the
    step time only of the layouts that fit (the others get NaN timings)."""
    from .model import model_flops_per_token

    global _FORKED
    N = len(c)
    out = {k: np.zeros(N) for k in OUT_FIELDS}
    mem = {k: np.zeros(N) for k in MEM_FIELDS}
    jobs = _jobs(c, chunk=8192 if workers <= 1 else 2048)
    lts = _prepared(cm, c)
    if workers > 1 and N >= 4096:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        bins, load = [[] for _ in range(workers)], np.zeros(workers)
        for job in sorted(jobs, key=lambda j: -len(j[4]) * j[1] * j[2]):
            k = int(np.argmin(load))
            bins[k].append(job)
            load[k] += len(job[4]) * job[1] * job[2] + 200 * job[1] * job[2]
        _FORKED = (cm, c, skip_oom, lts)
        try:
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
                parts = []
                for part, built in pool.map(_worker, bins):
                    parts.append(part)
                    STRUCTURES.update(built)
        finally:
            _FORKED = ()
    else:
        parts = [_run_jobs(cm, c, jobs, skip_oom, lts)]
    for rows, o, mm in parts:
        for k in OUT_FIELDS:
            out[k][rows] = o[k]
        for k in MEM_FIELDS:
            mem[k][rows] = mm[k]
    scn = cm.scn
    tokens = scn.workload.global_batch * scn.workload.seq_len
    gpus = scn.gpus
    peak = scn.topology.device.peak_flops[scn.workload.dtype]
    step = out["step_time"]
    return Estimates(
        step_time=step, memory=mem, fits=mem["total"] <= mem["capacity"], busy=out["busy"],
        exposed_tp=out["exposed_tp"], tail=out["tail"], bubble=out["bubble"], tokens_per_s=tokens / step,
        mfu=tokens * model_flops_per_token(scn.model, scn.workload.seq_len) / (step * gpus * peak),
        cost_per_million_tokens=gpus * scn.options.gpu_hour_price / 3600.0 * step / tokens * 1e6)


def _estimate_group(cm, c, st: Structure, schedule: str, idx, out: dict, mem: dict, group_costs,
                    skip_oom: bool, lt: dict) -> None:
    from .analytic_costs import group_memory

    infl = in_flight_of(st, c.m)
    if skip_oom:  # memory first; durations only for the layouts that fit
        memory = group_memory(cm, c, schedule, st.p, st.v, infl, lt)
        for k in mem:
            mem[k][idx] = memory[k]
        fit = np.nonzero(memory["total"] <= memory["capacity"])[0]
        for k in out:
            out[k][idx] = np.nan
        if not len(fit):
            return
        c, idx, infl = c.take(fit), idx[fit], infl[fit]
        lt = {k: v[fit] for k, v in lt.items()}
        # ZeRO 1 and 2 differ in memory only: time one of each pair (and every other shared key) once
        from .analytic_costs import _unique_rows

        sharded = (c.zero >= 1) | bool(cm.scn.layout.distributed_optimizer)
        zclass = np.where(c.zero >= 3, 2, sharded.astype(np.int64))
        keys = np.stack([c.tp, c.cp, c.dp, c.mb, c.sp, c.recompute, zclass], axis=1)
        _, inverse = _unique_rows(keys)
        first = np.zeros(inverse.max() + 1, dtype=np.int64)
        first[inverse[::-1]] = np.arange(len(c))[::-1]
        if len(first) < len(c):
            sub_out = {k: np.zeros(len(first)) for k in out}
            _timings(cm, c.take(first), st, schedule, np.arange(len(first)), sub_out, infl[first],
                     {k: v[first] for k, v in lt.items()}, group_costs)
            for k in out:
                out[k][idx] = sub_out[k][inverse]
            return
    g = _timings(cm, c, st, schedule, idx, out, infl, lt, group_costs, with_memory=not skip_oom)
    if not skip_oom:
        for k in mem:
            mem[k][idx] = g.memory[k]


def _timings(cm, c, st: Structure, schedule: str, idx, out: dict, infl, lt, group_costs, with_memory=False):
    """Step time, busiest device, exposed TP, tail and bubble of candidates c into out[...][idx]."""
    g = group_costs(cm, c, schedule, st.p, st.v, infl, lt, with_memory=with_memory)
    step, L, stage_end = longest_paths(st, c.m, g.f, g.b, g.w, g.fb, g.send, g.dp, g.optimizer, g.param_gather)
    D = slot_durations(st, g.f, g.b, g.w, g.fb, g.send)
    dm = (c.m - st.m_ref).astype(float)[:, None]
    busy = (D * (st.total[None] + dm[..., None] * st.total_slope[None])).sum(axis=2)
    v = st.v
    fbcols = np.nonzero(st.used < 2 * v)[0]  # plain F and B slots carry exposed TP
    tp_all = np.concatenate([g.tp[..., 0], g.tp[..., 1]], axis=2)[..., st.used[fbcols]]
    counts = st.total[None][..., fbcols] + dm[..., None] * st.total_slope[None][..., fbcols]
    tp = (counts * tp_all).sum(axis=2)
    crit = np.argmax(stage_end, axis=1)
    pick = lambda a: np.take_along_axis(a, crit[:, None], axis=1)[:, 0]  # noqa: E731
    out["step_time"][idx] = step
    out["busy"][idx] = busy.max(axis=1)
    out["exposed_tp"][idx] = pick(tp)
    out["tail"][idx] = pick(stage_end - L)
    idle = step[:, None] - busy - g.optimizer - g.param_gather
    out["bubble"][idx] = np.clip(idle, 0.0, None).mean(axis=1) / step
    return g
