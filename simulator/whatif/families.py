"""The longest-path families of a schedule's task graph, for many pipelines of one Structure at once.

The engine, when no link carries two transfers at once, computes the longest path through the
schedule's task graph: a task starts when its device is free and its inputs have arrived. This
module evaluates the maximum over a fixed set of path families of that graph, vectorized over the
candidates of one (schedule, pp, chunks) group:

- entries: a device's early task (warm-up forwards, its first backward of each chunk, its first
  F&B pair), reached by micro-batch j's forward through the virtual stages before it (a flow-shop
  staircase: PF[s] + j * max f over those stages, raised where a device runs another forward just
  before the first micro-batch's, of its own direction or DualPipe's other one; a backward adds the
  return path);
- chains: from an entry, the device's own tasks back to back up to an exit;
- exits: the forward and backward of the last micro-batch on each virtual stage, continued stage by
  stage along the route (forward scan, then backward scan), landing on each device with the rest of
  its order;
- tail: the stage's gradient reduction from the start of its last backward, Adam, parameter gather.

Every family is a real path of the graph, so the result never exceeds the engine's step time without
link sharing; it equals it when the critical path is one of them (the device that bounds the
pipeline busy from its entry to its exit, which is the regime of balanced and compute-bound
pipelines). Where stages tie instead (ZeRO-3 makes every pass last its stage's parameter gather), the
critical path can run round trips between them, a send each way per trip, which no family holds:
the pipelines of the schedules prone to it whose stages tie that closely (exact.ties) get the
longest path itself (simulator.whatif.exact). docs/whatif.md states the class precisely;
tests/test_analytic.py checks both facts.

The structures (positions of entries and exits in each device's orders) come from
simulator.whatif.structures.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from .structures import Structure

NEG = -np.inf


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
    """Per virtual stage of direction r: f, b, forward send out, backward send out; (n, N) each, from
    candidate-last arrays f, b (p, v, N) and send (p, v, 2, N)."""
    dev, chunk = st.routes[r, :, 0], st.routes[r, :, 1]
    sf, sb = send[dev, chunk, 0], send[dev, chunk, 1]
    sf[-1] = 0.0
    sb[0] = 0.0
    return f[dev, chunk], b[dev, chunk], sf, sb


def _prefix(fr, br, sf, sb, pred, D, dev, r: int = 0, other=None):
    """Start bounds of micro-batch j's forward and backward at each stage, as two (base, slope) pairs
    over [forward | backward] stages, (2n, N) each: the pure staircase from the step's start
    (C + j max f), and the path reaching micro-batch 0's task through chain hops, then advancing on
    that stage (PF + j f). A hop: where a device runs another forward just before the first
    micro-batch's, that forward's bound plus its duration (D: (p, S, N) slot seconds). The forward
    before may be another direction's (DualPipe): other(direction, vstage, rank) gives its start bound
    from that direction's bounds (an earlier pass); without `other` such hops are left out."""
    n, N = fr.shape
    C = np.zeros((n, N))
    np.cumsum((fr + sf)[:-1], axis=0, out=C[1:])
    MF = np.maximum.accumulate(fr, axis=0)
    hops = np.nonzero((pred[:, 0] >= 0) & ((pred[:, 3] == r) | (other is not None)))[0]
    if len(hops):  # PF = C + G, G non-decreasing, raised at each hop: sequential over hops only
        G = np.zeros((n, N))
        g, at, seen = np.zeros(N), [], []  # seen[i]: G after the hop at stage at[i] (increasing)
        for s, (sp, j, t, rr) in zip(hops.tolist(), pred[hops].tolist()):
            if rr == r:
                k = bisect_right(at, sp)  # the last hop at or before sp raised G there to seen[k - 1]
                pf_sp = C[sp] + seen[k - 1] if k else C[sp]
                hop = np.maximum(C[sp] + j * MF[sp], pf_sp + j * fr[sp]) + D[dev[s], t]
            else:
                hop = other(rr, sp, j) + D[dev[s], t]
            g = np.maximum(g, hop - C[s])
            G[s] = g
            at.append(s)
            seen.append(g)
        PF = C + np.maximum.accumulate(G, axis=0)
    else:
        PF = None
    MB = np.maximum.accumulate(br[::-1], axis=0)[::-1]
    tail = np.zeros((n, N))
    np.cumsum((br + sb)[:0:-1], axis=0, out=tail[-2::-1])  # sum over s' > s
    pure = (np.concatenate([C, (C[-1] + fr[-1]) + tail]), np.concatenate([MF, np.maximum(MF[-1], MB)]))
    if PF is None:  # without hops the other bound is PF = C with slope f <= max f: never larger
        return pure, None
    hopped = (np.concatenate([PF, (PF[-1] + fr[-1]) + tail]), np.concatenate([fr, np.maximum(fr[-1], MB)]))
    return pure, hopped


_EXIT_CACHE: dict = {}


def _entry_counts(st: Structure, slope: bool = False) -> np.ndarray:
    """(p, E + 1, S) task counts before each entry and in the whole order (cached per structure)."""
    key = (id(st), "entries", slope)
    hit = _EXIT_CACHE.get(key)
    if hit is None or hit[0] is not st:
        before, total = (st.ent_before_slope, st.total_slope) if slope else (st.ent_before, st.total)
        hit = _EXIT_CACHE[key] = (st, np.concatenate([before, total[:, None, :]], axis=1))
    return hit[1]


def _exit_counts(st: Structure, r: int, D: np.ndarray, dm: np.ndarray) -> np.ndarray:
    """(2 F/B exits, 2 upto/after, n, N) task seconds up to and after each exit of direction r: one
    batched matrix product per device (BLAS) instead of an (n, S, N) broadcast (D: (p, S, N))."""
    p, S, N = D.shape
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
        X = np.stack(parts)[:, perm].reshape(len(parts), p, cnt, S).transpose(1, 0, 2, 3)
        hit = _EXIT_CACHE[key] = (st, perm, cnt, X.reshape(p, len(parts) * cnt, S).copy(), len(parts))
    _, perm, cnt, X, k = hit
    Y = np.matmul(X, D).reshape(p, k, cnt, N).transpose(1, 0, 2, 3).reshape(k, p * cnt, N)
    out = np.empty_like(Y)
    out[:, perm] = Y
    if k == 8:
        out = out[:4] + dm * out[4:]
    return out.reshape(2, 2, p * cnt, N)


def longest_paths(st: Structure, m: np.ndarray, f, b, w, fb, send, dp, optimizer, param_gather):
    """(step seconds (N,), last-task end (N, p), stage end (N, p)) of N candidates of one group."""
    D = slot_durations(st, f, b, w, fb, send)
    L = last_task_end(st, m, D, f, b, send)
    stage_end = L + np.maximum(0.0, dp - last_slot(st, D)) + optimizer + param_gather
    return stage_end.max(axis=1), L, stage_end


def last_slot(st: Structure, D: np.ndarray) -> np.ndarray:
    """(N, p) seconds of each device's last task."""
    return np.take_along_axis(D, st.last_type[None, :, None], axis=2)[..., 0]


def last_task_end(st: Structure, m: np.ndarray, D: np.ndarray, f, b, send) -> np.ndarray:
    """(N, p) end of each device's last task: the maximum over the path families (D: slot_durations).
    Computed candidate-last ((p, ..., N) arrays): gathers over stages and entries copy whole rows."""
    N = f.shape[0]
    dm = (m - st.m_ref).astype(float)
    f, b = np.ascontiguousarray(f.transpose(1, 2, 0)), np.ascontiguousarray(b.transpose(1, 2, 0))
    send, D = np.ascontiguousarray(send.transpose(1, 2, 3, 0)), np.ascontiguousarray(D.transpose(1, 2, 0))
    routes = [_route_arrays(st, r, f, b, send) for r in range(st.routes.shape[0])]
    P = _entry_starts(st, _prefix_bounds(st, routes, D, N), dm)
    A, before = _entry_slack(st, P, D, dm)
    E = st.ent_before.shape[1]
    full = st.x_mask.all()
    Acum = None if full else np.maximum.accumulate(A, axis=1)  # entries sorted by position: masks are prefixes
    Amax = A.max(axis=1) if full else Acum[:, -1]
    L = Amax + before[:, E]
    for r, route in enumerate(routes):
        L = np.maximum(L, _route_landings(st, r, route, D, dm, Amax if full else None, Acum))
    return L.T


def _prefix_bounds(st: Structure, routes, D: np.ndarray, N: int) -> list:
    """[(base, slope)] (one, or two with the hopped bounds) of the start of every (direction, kind, vstage)
    staircase, flattened as direction x 2 kinds x vstages, and a last row (index -1) for no task."""
    pre = [_prefix(*ra, st.pred[r], D, st.routes[r, :, 0], r) for r, ra in enumerate(routes)]
    cross = (st.pred[..., 0] >= 0) & (st.pred[..., 3] != np.arange(len(routes))[:, None])
    if cross.any():  # hops from the other direction's forwards, on that direction's bounds
        def other(rr, sp, j, first=pre):
            (base, slope), hopped = first[rr]
            x = base[sp] + j * slope[sp]
            return x if hopped is None else np.maximum(x, hopped[0][sp] + j * hopped[1][sp])

        pre = [_prefix(*ra, st.pred[r], D, st.routes[r, :, 0], r, other) for r, ra in enumerate(routes)]
    if not all(q[1] is not None for q in pre):  # a direction without hops: its hopped bound is its pure one
        pre = [(q[0], q[1] if q[1] is not None else q[0]) for q in pre]
    none = (np.full((1, N), NEG), np.zeros((1, N)))  # the bound of no task: index -1
    return [tuple(np.concatenate([q[w][x] for q in pre] + [none[x]]) for x in range(2))
            for w in range(2 if any(q[1] is not q[0] for q in pre) else 1)]


def _entry_starts(st: Structure, bounds: list, dm: np.ndarray) -> np.ndarray:
    """(p, E, N) start bound of each entry: the staircase path of its micro-batch over both halves of its
    slot; a device's first task starts no earlier than 0; -inf where no entry."""
    n = st.routes.shape[1]
    P = None
    for hi in range(2):
        kind, r, s, j = (st.ent_half[:, :, hi, q] for q in range(4))
        valid = kind >= 0
        if not valid.any():
            continue
        idx = np.where(valid, r * 2 * n + kind * n + s, -1)
        j = j[..., None] + (st.ent_rank_slope[:, :, hi, None] * dm if st.ent_rank_slope[..., hi].any() else 0)
        vals = [base[idx] + j * slope[idx] for base, slope in bounds]
        val = vals[0] if len(vals) == 1 else np.maximum(vals[0], vals[1])
        P = val if P is None else np.maximum(P, val)
    fk, fe = np.nonzero(st.ent_first)
    P[fk, fe] = np.maximum(P[fk, fe], 0.0)
    return P


def _entry_slack(st: Structure, P: np.ndarray, D: np.ndarray, dm: np.ndarray) -> tuple:
    """(A, before): each entry's start bound less the tasks before it on its device (p, E, N), and the
    seconds of the tasks before each entry and of all tasks (p, E + 1, N)."""
    before = np.matmul(_entry_counts(st), D)
    if st.ent_before_slope.any() or st.total_slope.any():
        before += dm * np.matmul(_entry_counts(st, slope=True), D)
    return P - before[:, :st.ent_before.shape[1]], before


def _route_landings(st: Structure, r: int, route, D, dm, Amax, Acum) -> np.ndarray:
    """(p, N) latest end, on each device, of the paths that leave through the last micro-batch's
    forwards and backwards of direction r (Amax: every entry precedes every exit, else Acum's prefixes)."""
    _, _, sf, sb = route
    p, n, N = D.shape[0], st.routes.shape[1], D.shape[2]
    dev = st.routes[r, :, 0]
    terms = _exit_counts(st, r, D, dm)  # (2, 2, n, N): forward/backward exit, upto/after
    ends = []
    for x in range(2):  # 0: forward exits, 1: backward exits of the last micro-batch
        if Amax is not None:
            amax = Amax[dev]
        else:
            count = st.x_mask[x, r].sum(axis=1)
            amax = np.where((count > 0)[:, None], Acum[dev, np.maximum(count - 1, 0)], NEG)
        upto, after = terms[x]
        ends.append((amax + upto, D[dev, st.x_type[x, r]], after, upto))
    (qf, durf, aftf, uptof), (qb, durb, aftb, uptob) = ends
    # forward scan Q[s] = max(qf[s], Q[s-1] + send + slot) as a max-plus prefix: C + cummax(qf - C)
    C = np.zeros((n, N))
    np.cumsum(sf[:-1] + durf[1:], axis=0, out=C[1:])
    Q = C + np.maximum.accumulate(qf - C, axis=0)
    # backward scan R[s] = max(qb[s], R[s+1] + send + slot), entered at the last stage from Q
    qb[-1] = np.maximum(qb[-1], Q[-1] + uptob[-1] - uptof[-1])
    Eb = np.zeros((n, N))  # Eb[s] - Eb[t] = sum of e[s..t-1]
    np.cumsum((sb[1:] + durb[:-1])[::-1], axis=0, out=Eb[-2::-1])
    R = Eb + np.maximum.accumulate((qb - Eb)[::-1], axis=0)[::-1]
    land = np.maximum(Q + aftf, R + aftb)
    perm = np.argsort(dev, kind="stable")
    return land[perm].reshape(p, -1, N).max(axis=1)


def pipeline_paths(st: Structure, m, f, b, w, fb, tp, send) -> tuple:
    """(last-task end, last task's seconds, busy seconds, exposed TP seconds), (N, p) each, of N
    pipelines of one Structure."""
    D = slot_durations(st, f, b, w, fb, send)
    L = last_task_end(st, m, D, f, b, send)
    dm = (m - st.m_ref).astype(float)[:, None]
    busy = (D * (st.total[None] + dm[..., None] * st.total_slope[None])).sum(axis=2)
    fbcols = np.nonzero(st.used < 2 * st.v)[0]  # plain F and B slots carry exposed TP
    tp_all = np.concatenate([tp[..., 0], tp[..., 1]], axis=2)[..., st.used[fbcols]]
    counts = st.total[None][..., fbcols] + dm[..., None] * st.total_slope[None][..., fbcols]
    return L, last_slot(st, D), busy, (counts * tp_all).sum(axis=2)
