"""Schedules as integer arrays: the tables of ``SCHEDULES`` without Action objects, for the analytic pass.

``CODES[name](p, ms, v) -> Codes`` (the registry's ``SPECS[name].codes``) builds the per-device
orders of ``SCHEDULES[name](p, m, v)`` for every m in ``ms`` at once, with numpy
(tests/test_schedule_codes.py checks them slot by slot against the tables over a grid of p, m, v);
``codes_of`` converts one ScheduleTable. The analytic pass reads each schedule's structure from
these arrays: a search needs about two hundred tables, and building them as Actions took seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .dualpipe import dual_recipe
from .registry import SPECS
from .routes import dual_routes, looped_routes, v_routes
from .table import ScheduleTable
from .zero_bubble import zb_v_recipe

F, B, W = 0, 1, 2


@dataclass(frozen=True, eq=False)
class Codes:
    """T tables of one schedule, p and v (micro-batches m[t]) as flat arrays over their slots, row by
    row (table t's device k is row t * p + k, its slots start[row]:start[row + 1], in order): a slot
    runs kind (0 F, 1 B, 2 W) of micro-batch mb on chunk; an overlapped pair is its F with the B of
    micro-batch pmb on chunk pchunk (-1 otherwise)."""

    name: str
    p: int
    v: int
    m: np.ndarray  # (T,)
    start: np.ndarray  # (T * p + 1,)
    kind: np.ndarray
    mb: np.ndarray
    chunk: np.ndarray
    pmb: np.ndarray
    pchunk: np.ndarray
    routes: np.ndarray  # (directions, vstages, 2), as ScheduleTable.routes
    direction: np.ndarray  # (T, max m) direction of each micro-batch, -1 past m[t]
    split_backward: bool

    def take(self, t: int) -> Codes:
        """Table t alone."""
        start = self.start[t * self.p:(t + 1) * self.p + 1]
        cols = [getattr(self, k)[start[0]:start[-1]] for k in ("kind", "mb", "chunk", "pmb", "pchunk")]
        return Codes(self.name, self.p, self.v, self.m[t:t + 1], start - start[0], *cols, self.routes,
                     self.direction[t:t + 1, :self.m[t]], self.split_backward)


def codes_of(table: ScheduleTable) -> Codes:
    """The Codes of one ScheduleTable (Action by Action)."""
    pair = lambda a: (a.paired.mb, a.paired.chunk) if a.paired else (-1, -1)  # noqa: E731
    cols = np.array([("FBW".index(a.kind), a.mb, a.chunk) + pair(a) for order in table.orders for a in order],
                    dtype=np.int64)
    start = np.concatenate([[0], np.cumsum([len(o) for o in table.orders])])
    return Codes(table.name, table.p, table.v, np.array([table.m]), start, *cols.T, table.routes,
                 table.direction[None], table.split_backward)


def _flat(keep: np.ndarray, *cols: np.ndarray):
    """(row starts, flat columns) of the `keep` entries of (R, K) columns, row by row."""
    start = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    return start, [np.broadcast_to(col, keep.shape)[keep] for col in cols]


def _rows(p: int, ms) -> tuple[np.ndarray, np.ndarray]:
    """(micro-batches, device) of every row of len(ms) tables of p devices."""
    return np.repeat(np.asarray(ms, dtype=np.int64), p), np.tile(np.arange(p), len(ms))


def _make(name, p, v, ms, flat, routes, split, direction=None) -> Codes:
    """Codes from flat = (row starts, [kind, mb, chunk, pmb, pchunk])."""
    ms = np.asarray(ms, dtype=np.int64)
    if direction is None:
        direction = np.where(np.arange(ms.max())[None] < ms[:, None], 0, -1)
    return Codes(name, p, v, ms, flat[0], *flat[1], routes, direction, split)


def _warm_then_alternate(warm: np.ndarray, total: np.ndarray):
    """(R, 2 max total) slots of `warm` forwards, then forward/backward alternating, then the
    backwards: each slot's kind (-1 past the end) and the index of the forward or backward it runs."""
    K = int(total.max())
    k = np.arange(K)[None]
    w, n = warm[:, None], total[:, None]
    pos_f = np.where(k < w, k, w + 2 * (k - w))
    pos_b = np.where(k < n - w, w + 2 * k + 1, n + k)
    keep = np.broadcast_to(k < n, pos_f.shape)
    rows = np.nonzero(keep)[0]
    kind, idx = np.full((len(warm), 2 * K), -1, dtype=np.int64), np.full((len(warm), 2 * K), -1, dtype=np.int64)
    kk = np.broadcast_to(k, pos_f.shape)[keep]
    kind[rows, pos_f[keep]], kind[rows, pos_b[keep]] = F, B
    idx[rows, pos_f[keep]], idx[rows, pos_b[keep]] = kk, kk
    return kind, idx


def gpipe(p: int, ms, v: int = 1) -> Codes:
    m, _ = _rows(p, ms)
    j = np.arange(2 * m.max())[None]
    kind = np.where(j < m[:, None], F, B)
    mb = np.where(j < m[:, None], j, j - m[:, None])
    return _make("gpipe", p, 1, ms, _flat(j < 2 * m[:, None], kind, mb, 0, -1, -1), looped_routes(p, 1), False)


def one_f_one_b(p: int, ms, v: int = 1) -> Codes:
    m, d = _rows(p, ms)
    kind, mb = _warm_then_alternate(np.minimum(p - 1 - d, m), m)
    return _make("1f1b", p, 1, ms, _flat(kind >= 0, kind, mb, 0, -1, -1), looped_routes(p, 1), False)


def interleaved(p: int, ms, v: int = 2) -> Codes:
    """Megatron's order (interleaved.interleaved_order): k-th forward or backward in groups of p."""
    m, d = _rows(p, ms)
    total = m * v
    kind, k = _warm_then_alternate(np.minimum(2 * (p - 1 - d) + (v - 1) * p, total), total)
    chunk = (k // p) % v
    mb = (k // (p * v)) * p + k % p
    flat = _flat(kind >= 0, kind, mb, np.where(kind == B, v - 1 - chunk, chunk), -1, -1)
    return _make("interleaved", p, v, ms, flat, looped_routes(p, v), False)


def zb_h1(p: int, ms, v: int = 1) -> Codes:
    """zero_bubble.zb_h1_order: warm-up forwards, then per micro-batch j [F] B [W], then the Ws left."""
    m, d = _rows(p, ms)
    m, d = m[:, None], d[:, None]
    M = int(m.max())
    warm = np.minimum(p - 1 - d, m)
    j = np.broadcast_to(np.arange(M), (len(m), M))
    live = j < m
    w_j = live & ((j >= d) | (j >= m - warm))
    keep = np.concatenate([j < warm, np.stack([j < m - warm, live, w_j], 2).reshape(len(m), 3 * M),
                           live & (j >= w_j.sum(axis=1, keepdims=True))], axis=1)
    kind = np.concatenate([np.full(j.shape, F), np.tile([F, B, W], j.shape), np.full(j.shape, W)], axis=1)
    mb = np.concatenate([j, np.stack([warm + j, j, j], 2).reshape(len(m), 3 * M), j], axis=1)
    is_w = keep & (kind == W)  # Ws pop their Bs in order
    mb = np.where(is_w, np.cumsum(is_w, axis=1) - 1, mb)
    return _make("zb-h1", p, 1, ms, _flat(keep, kind, mb, 0, -1, -1), looped_routes(p, 1), True)


def zb_h2(p: int, ms, v: int = 1) -> Codes:
    return zb_h2_batch([(p, tuple(ms))])[0]


def zb_h2_batch(requests: list[tuple[int, tuple]]) -> list[Codes]:
    """zero_bubble._UnitTimeList with cap 2p - 1 for several (p, ms) at once, one numpy step per time
    unit over every device of every table: a ready B, else an F below the cap, else the oldest
    pending W. Each kind runs its micro-batches in order, so counters tell readiness: device d may
    start B j once device d + 1 has started it (one unit earlier), F j once device d - 1 has."""
    reqs = [(p, m) for p, ms in requests for m in ms]
    p = np.repeat([q for q, _ in reqs], [q for q, _ in reqs])
    m = np.repeat([mm for _, mm in reqs], [q for q, _ in reqs])
    d = np.concatenate([np.arange(q) for q, _ in reqs])
    G = len(d)
    counts = np.zeros((2, G + 1), dtype=np.int64)  # Bs and Fs started per device (column G: none)
    counts[1, G] = np.iinfo(np.int64).max  # the device before a first device has run everything
    nb, nf, flat = counts[0, :G], counts[1, :G], counts.ravel()
    nw, held = np.zeros(G, dtype=np.int64), np.zeros(G, dtype=np.int64)
    g, cap = np.arange(G), 2 * p - 1
    b_src = np.where(d == p - 1, G + 1 + g, g + 1)  # B j waits for B j downstream (the last device: its F j)
    f_src = G + 1 + np.where(d == 0, G, g - 1)  # F j waits for F j upstream
    steps = []
    while (nw < m).any():
        if len(steps) > 3 * int((p * m).max()):
            raise AssertionError(f"zb-h2 list schedule stalled ({reqs})")
        do_b = (flat[b_src] > nb) & (nb < m)
        do_f = (flat[f_src] > nf) & (nf < m) & (held < cap) & ~do_b
        do_w = (nw < nb) & ~(do_b | do_f)
        steps.append((do_b, do_f, do_w))
        nb += do_b
        nf += do_f
        nw += do_w
        held += do_f
        held -= do_w
    do_b, do_f, do_w = (np.stack(x, axis=1) for x in zip(*steps))
    kind_t = np.where(do_b, B, np.where(do_f, F, np.where(do_w, W, -1)))
    out, first = [], 0
    for q, ms in requests:
        rows = slice(first, first + q * len(ms))
        first = rows.stop
        start, (kind,) = _flat(kind_t[rows] >= 0, kind_t[rows])
        row_start = np.repeat(start[:-1], np.diff(start))
        mb = sum(np.where(kind == x, _rank_in(kind == x, row_start), 0) for x in (F, B, W))  # each kind in order
        out.append(_make("zb-h2", q, 1, ms, (start, [kind, mb, np.zeros_like(kind), -np.ones_like(kind),
                                                    -np.ones_like(kind)]), looped_routes(q, 1), True))
    return out


# --- recipes (recipe.resolve over every device at once) -------------------------------------------------

_ITEMS = {("F", 0): 0, ("F", 1): 1, ("B", 0, False): 2, ("B", 1, False): 3, ("B", 0, True): 4,
          ("B", 1, True): 5, ("W",): 6, ("FB", 0, 0): 7, ("FB", 0, 1): 8, ("FB", 1, 0): 9, ("FB", 1, 1): 10}
# per item code: the phase of the F it takes (-1 none), of the B it takes, whether it defers the B's W,
# whether it runs the oldest deferred W
_TAKE_F = np.array([0, 1, -1, -1, -1, -1, -1, 0, 0, 1, 1])
_TAKE_B = np.array([-1, -1, 0, 1, 0, 1, -1, 0, 1, 0, 1])
_DEFER = np.array([0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0], bool)
_POP = np.array([0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0], bool)


def _rank_in(mask: np.ndarray, start: np.ndarray) -> np.ndarray:
    """For each item, how many True items of its row precede it; start: the row's first item."""
    c = np.cumsum(mask)
    return c - mask - (c - mask)[start]


def _resolve(recipes: list[np.ndarray], place):
    """recipe.resolve of every row's recipe (item codes); place(row, phase, k) -> (mb, chunk, valid).
    Returns (row starts, [kind, mb, chunk, pmb, pchunk]) of the slots, flat."""
    code = np.concatenate(recipes)
    sizes = np.array([len(r) for r in recipes])
    row = np.repeat(np.arange(len(recipes)), sizes)
    start = np.repeat(np.cumsum(sizes) - sizes, sizes)
    take_f, take_b, defer, pop = _TAKE_F[code], _TAKE_B[code], _DEFER[code], _POP[code]
    halves = []
    for take in (take_f, take_b):
        k = np.zeros(len(code), dtype=np.int64)
        for ph in (0, 1):
            sel = take == ph
            k[sel] = _rank_in(sel, start)[sel]
        mb, chunk, ok = place(row, np.maximum(take, 0), k)
        halves.append((mb, chunk, ok & (take >= 0)))
    (fmb, fch, fok), (bmb, bch, bok) = halves
    # the j-th W item of a row runs the W of the j-th B item that deferred it
    held = (take_b >= 0) & defer
    deferred = np.nonzero(held)[0]
    popped = deferred[(np.cumsum(held) - held)[start][pop] + _rank_in(pop, start)[pop]]
    wmb, wch, wok = np.zeros_like(bmb), np.zeros_like(bch), np.zeros_like(bok)
    wmb[pop], wch[pop], wok[pop] = bmb[popped], bch[popped], bok[popped]
    both = fok & bok
    # slot 0: the F, the B, the pair, or the popped W; slot 1: the W right after an undeferred B
    kind0 = np.where(fok, F, np.where(bok, B, np.where(wok, W, -1)))
    keep = np.stack([kind0 >= 0, bok & ~defer & ~pop], axis=1)
    two = lambda a, b: np.stack([a, np.broadcast_to(b, a.shape)], axis=1)[keep]  # noqa: E731
    cols = [two(kind0, W), two(np.where(fok, fmb, np.where(bok, bmb, wmb)), bmb),
            two(np.where(fok, fch, np.where(bok, bch, wch)), bch), two(np.where(both, bmb, -1), -1),
            two(np.where(both, bch, -1), -1)]
    per_row = np.bincount(row, keep.sum(axis=1), len(recipes)).astype(np.int64)
    return np.concatenate([[0], np.cumsum(per_row)]), cols


def _recipes(recipe, p: int, ns: np.ndarray) -> list[np.ndarray]:
    """Item codes of recipe(d, n) for every device d of every table (n per table), each built once."""
    memo = {}
    for n in set(ns.tolist()):
        for d in range(p):
            r = recipe(d, n)
            memo[d, n] = np.fromiter(map(_ITEMS.__getitem__, r), np.int64, len(r))
    return [memo[d, n] for n in ns.tolist() for d in range(p)]


def zb_v(p: int, ms, v: int = 2) -> Codes:
    m, _ = _rows(p, ms)
    recipes = _recipes(lambda d, n: zb_v_recipe(p, d, n), p, np.maximum(np.asarray(ms), 2 * p - 1))
    cols = _resolve(recipes, lambda r, ph, k: (k, ph, k < m[r]))
    return _make("zb-v", p, 2, ms, cols, v_routes(p), True)


def dualpipe(p: int, ms, v: int = 2) -> Codes:
    m, d = _rows(p, ms)
    n, half = m // 2, p // 2
    recipes = _recipes(lambda dd, nn: dual_recipe(half, min(dd, p - 1 - dd), nn), p,
                       np.maximum(np.asarray(ms) // 2, p))

    def place(r, ph, k):
        c = ph ^ (d[r] >= half)
        return c * n[r] + k, c, k < n[r]

    cols = _resolve(recipes, place)
    ms = np.asarray(ms)
    j = np.arange(ms.max())[None]
    direction = np.where(j < ms[:, None], (j >= ms[:, None] // 2).astype(np.int64), -1)
    return _make("dualpipe", p, 2, ms, cols, dual_routes(p), True, direction)


def dualpipe_v(p: int, ms, v: int = 2) -> Codes:
    m, _ = _rows(p, ms)
    recipes = _recipes(lambda d, n: dual_recipe(p, d, n), p, np.maximum(np.asarray(ms), 2 * p))
    cols = _resolve(recipes, lambda r, ph, k: (k, ph, k < m[r]))
    return _make("dualpipe-v", p, 2, ms, cols, v_routes(p), True)


class _Builders(Mapping):
    """name -> (p, ms, v) -> Codes of every schedule: a view of the registry (schedules.registry)."""

    def __getitem__(self, name: str):
        return SPECS[name].codes

    def __iter__(self):
        return iter(SPECS)

    def __len__(self) -> int:
        return len(SPECS)


CODES = _Builders()


def codes_batch(families: list[tuple[str, int, int, tuple]]) -> list[Codes]:
    """Codes of (name, p, v, ms) families; a schedule that builds several at once (zb-h2's list
    schedule, simulated together) gets all of its requests in one call."""
    together: dict[str, list] = {}
    for name, p, v, ms in families:
        if SPECS[name].codes_together is not None:
            together.setdefault(name, []).append((p, ms))
    done = {(name, *req): out for name, reqs in together.items()
            for req, out in zip(reqs, SPECS[name].codes_together(reqs))}
    return [done[name, p, ms] if name in together else SPECS[name].codes(p, ms, v) for name, p, v, ms in families]
