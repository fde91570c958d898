"""Schedule structures: where each device's entries and exits sit in its task order, and the task
counts around them, read from the schedule's orders for the analytic pass (simulator.whatif.analytic).

A structure (positions of entries and exits in each device's order, task counts before and after
them) comes from the schedule's own orders, built once per (schedule, pp, chunks) at two micro-batch
counts past the warm-up and extended linearly in m (more micro-batches only lengthen the steady
state), or at the exact m when it is small. The orders are the tables' as integer arrays
(schedules.codes), read with numpy for every micro-batch count of a (schedule, pp, chunks) at once;
tests/test_schedule_codes.py checks them and the structures against the ScheduleTables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..schedules import SPECS
from ..schedules.codes import Codes, codes_batch

ENGINE_LOCAL_WAITS_FOR_SEND = True
"""The engine marks a backward's output ready when its send to the previous stage arrives, and the
weight-gradient task of the same micro-batch on the same device waits for that event too: a W right
after its own B starts one send later. The families mirror it (slot type "W after its B")."""


def slot_types(v: int) -> int:
    """Number of slot kinds: F, B, W per chunk, an F&B pair per (F chunk, B chunk), and W right after
    its own B per chunk."""
    return 3 * v + v * v + v


def _slot_types(t: Codes, first: np.ndarray) -> np.ndarray:
    """Slot type of every slot of a schedule (flat; first: the slots that start a device's order)."""
    v = t.v
    b_mb = np.where(t.kind == 1, t.mb, t.pmb)  # the B half of each slot, -1 when none
    b_chunk = np.where(t.kind == 1, t.chunk, t.pchunk)
    after_b = (ENGINE_LOCAL_WAITS_FOR_SEND & (t.kind == 2) & ~first & (np.r_[-1, b_mb[:-1]] == t.mb)
               & (np.r_[-1, b_chunk[:-1]] == t.chunk))
    return np.where(t.pmb >= 0, 3 * v + t.chunk * v + t.pchunk,
                    np.where(after_b, 3 * v + v * v + t.chunk, t.kind * v + t.chunk))


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
    pred: np.ndarray = None  # (directions, n, 4): the F before the first micro-batch's forward at each
    # stage on its device, as (vstage, rank, slot type, direction), -1 when none (a chain hop in the warm-up)
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


def _entries(t: Codes, types, row, pos, length, first) -> np.ndarray:
    """(slots,) bool: the entry slots of each device: the first slot of each type (first), and in the
    warm-up (up to one slot past the first backward) the first and last slot of each type and every
    slot where the spacing of that type changes. A staircase entry's value is linear along slots of
    one type spaced evenly, so these ends of runs are where the maximum lies."""
    has_b = (t.kind == 1) | (t.pmb >= 0)
    first_b = np.minimum.reduceat(np.where(has_b, pos, len(pos)), t.start[:-1])
    warm = np.minimum(np.where(first_b < len(pos), first_b, length - 1) + 2, length)
    j = np.nonzero(pos < warm[row])[0]
    j = j[np.lexsort((pos[j], types[j], row[j]))]  # runs of one (device, type), by position
    k, i, ty = row[j], pos[j], types[j]
    same = (k[1:] == k[:-1]) & (ty[1:] == ty[:-1])
    has_prev, has_next = np.r_[False, same], np.r_[same, False]
    gap = np.diff(i)
    turn = has_prev & has_next & (np.r_[0, gap] != np.r_[gap, 0])  # spacing changes here
    pick = ~has_prev | ~has_next | turn | (has_prev & np.r_[False, turn[:-1]])
    out = first.copy()
    out[j[pick]] = True
    return out


@dataclass(frozen=True)
class _Slots:
    """The flat slots of a Codes laid out by device row: each slot's row, position in its row and slot
    type, and the running count of each type (C: used types x slots + 1) that counts() reads."""

    t: Codes
    row: np.ndarray
    pos: np.ndarray
    length: np.ndarray
    types: np.ndarray
    first: np.ndarray  # the slot is the first of its type on its device
    used: np.ndarray
    C: np.ndarray

    def counts(self, k, i) -> np.ndarray:
        """(..., S) tasks of each slot type among the first i slots of rows k."""
        start = self.t.start
        out = np.zeros(np.shape(k) + (slot_types(self.t.v),))
        out[..., self.used] = np.moveaxis(self.C[:, start[k] + i] - self.C[:, start[k]], 0, -1)
        return out


def _slots(t: Codes) -> _Slots:
    """Rows, positions, slot types and running type counts of every slot of t."""
    start, S, N = t.start, slot_types(t.v), len(t.kind)
    length = np.diff(start)
    row = np.repeat(np.arange(len(start) - 1), length)
    pos = np.arange(N) - start[row]
    starts = np.zeros(N, bool)
    starts[start[:-1]] = True
    types = _slot_types(t, starts)
    # C[j]: slots of each type among the first j (compact columns `used`, scattered to S by counts)
    present = np.bincount(types, minlength=S) > 0
    used = np.nonzero(present)[0]
    col = np.cumsum(present) - 1
    C = np.zeros((len(used), N + 1), np.int32)
    C[col[types], np.arange(1, N + 1)] = 1
    C = np.cumsum(C, axis=1, dtype=np.int32)
    first = C[col[types], np.arange(N)] == C[col[types], start[row]]  # first slot of its type on its device
    return _Slots(t, row, pos, length, types, first, used, C)


def _vstages(t: Codes) -> np.ndarray:
    """(directions, p, v) virtual stage of each (device, chunk) along each direction, -1 where none."""
    dirs, n = t.routes.shape[:2]
    vstage = np.full((dirs, t.p, t.v), -1, dtype=np.int64)
    for r in range(dirs):
        vstage[r, t.routes[r, :, 0], t.routes[r, :, 1]] = np.arange(n)
    return vstage


def _entry_table(sl: _Slots, vstage: np.ndarray, rank: np.ndarray) -> dict:
    """Each device's entries sorted by position and padded to E: valid, position, task counts before,
    and their halves (a slot, a pair's B) as (kind, direction, vstage, rank)."""
    t, R = sl.t, len(sl.length)
    table, dev = np.repeat(np.arange(len(t.m)), t.p), np.tile(np.arange(t.p), len(t.m))
    pj = np.nonzero(_entries(t, sl.types, sl.row, sl.pos, sl.length, sl.first))[0]
    n_ent = np.bincount(sl.row[pj], minlength=R)
    E = int(n_ent.max())
    valid = np.arange(E)[None] < n_ent[:, None]
    ent_pos = np.full((R, E), 1 << 40, dtype=np.int64)
    ent_pos[valid] = sl.pos[pj]
    ek = sl.row[pj]
    before = np.zeros((R, E, slot_types(t.v)))
    before[valid] = sl.counts(ek, sl.pos[pj])
    halves = np.full((R, E, 2, 4), -1, dtype=np.int64)
    for hi, (kind, mb, chunk) in enumerate(((t.kind, t.mb, t.chunk),
                                            (np.where(t.pmb >= 0, 1, -1), t.pmb, t.pchunk))):
        kd, j, c = kind[pj], mb[pj], chunk[pj]
        ok = (kd == 0) | (kd == 1)
        tt, j, kk = table[ek[ok]], j[ok], dev[ek[ok]]
        r = t.direction[tt, j]
        half = np.full((len(pj), 4), -1, dtype=np.int64)
        half[ok] = np.stack([kd[ok], r, vstage[r, kk, c[ok]], rank[tt, j]], axis=1)
        halves[valid, hi] = half
    return dict(n_ent=n_ent, valid=valid, pos=ent_pos, before=before, half=halves)


def _task_positions(sl: _Slots) -> tuple[np.ndarray, np.ndarray]:
    """(rows, M, v) position of each micro-batch's forward and backward on each device, -1 where none."""
    t, R, M = sl.t, len(sl.length), sl.t.direction.shape[1]
    pos_f, pos_b = np.full((R, M, t.v), -1, dtype=np.int64), np.full((R, M, t.v), -1, dtype=np.int64)
    for at, sel, mb, chunk in ((pos_f, t.kind == 0, t.mb, t.chunk), (pos_b, t.kind == 1, t.mb, t.chunk),
                               (pos_b, t.pmb >= 0, t.pmb, t.pchunk)):
        at[sl.row[sel], mb[sel], chunk[sel]] = sl.pos[sel]
    return pos_f, pos_b


def _exits(sl: _Slots, ent_pos: np.ndarray, vstage: np.ndarray, rank: np.ndarray) -> dict:
    """Where the last micro-batch's forward and backward run at each stage of each direction (slot type,
    counts up to and after, entries before) and the forward before the first micro-batch's (pred)."""
    t, S, T = sl.t, slot_types(sl.t.v), len(sl.t.m)
    dirs, n = t.routes.shape[:2]
    E = ent_pos.shape[1]
    pos_f, pos_b = _task_positions(sl)
    total = sl.counts(np.arange(len(sl.length)), sl.length)
    x_type = np.zeros((T, 2, dirs, n), dtype=np.int64)
    x_upto, x_after = np.zeros((T, 2, dirs, n, S)), np.zeros((T, 2, dirs, n, S))
    x_mask = np.zeros((T, 2, dirs, n, E), bool)
    pred = np.full((T, dirs, n, 4), -1, dtype=np.int64)
    ends = [_ends(t.direction == r) for r in range(dirs)]  # (first, last) micro-batch of each direction
    for r in range(dirs):
        rows = np.arange(T)[:, None] * t.p + t.routes[r, :, 0][None]  # (T, n)
        c = t.routes[r, :, 1][None]
        for x, at in enumerate((pos_f, pos_b)):
            i = at[rows, ends[r][1][:, None], c]
            x_type[:, x, r] = sl.types[t.start[rows] + i]
            x_upto[:, x, r] = sl.counts(rows, i + 1)
            x_after[:, x, r] = total[rows] - x_upto[:, x, r]
            x_mask[:, x, r] = ent_pos[rows] <= i[..., None]
        pred[:, r] = _pred(t, r, pos_f[rows, ends[r][0][:, None], c], rows, vstage, rank, sl.types)
    x_last_rank = np.stack([rank[np.arange(T), e[1]] for e in ends], axis=1)
    return dict(total=total, x_type=x_type, x_upto=x_upto, x_after=x_after, x_mask=x_mask, pred=pred,
                x_last_rank=x_last_rank)


def _extract(t: Codes) -> list[dict]:
    """Structure arrays (see Structure) of each table of t, vectorized over all their slots."""
    sl = _slots(t)
    vstage, rank = _vstages(t), _ranks(t.direction)
    ent = _entry_table(sl, vstage, rank)
    x = _exits(sl, ent["pos"], vstage, rank)
    last = t.start[1:] - 1
    if np.any(t.kind[last] == 0):
        raise ValueError(f"{t.name}: a device ends on a forward; the tail formula needs a B or W")
    in_flight = _in_flight(t).astype(float)
    out = []
    for u in range(len(t.m)):
        rows = slice(u * t.p, (u + 1) * t.p)
        Eu = int(ent["n_ent"][rows].max())
        valid, ent_pos = ent["valid"][rows, :Eu], ent["pos"][rows, :Eu]
        out.append(dict(routes=t.routes, ent_valid=valid, ent_half=ent["half"][rows, :Eu],
                        ent_first=valid & (ent_pos == 0), ent_before=ent["before"][rows, :Eu], ent_pos=ent_pos,
                        x_type=x["x_type"][u], x_upto=x["x_upto"][u], x_after=x["x_after"][u],
                        x_mask=x["x_mask"][u, ..., :Eu], total=x["total"][rows], last_type=sl.types[last[rows]],
                        pred=x["pred"][u], x_last_rank=x["x_last_rank"][u], in_flight=in_flight[rows]))
    return out


def _ends(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) True column of each row of a (T, M) mask."""
    return np.argmax(mask, axis=1), mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)


def _pred(t: Codes, r: int, i: np.ndarray, rows: np.ndarray, vstage, rank, types) -> np.ndarray:
    """(T, n, 4) Structure.pred of direction r; i: (T, n) position of the first micro-batch's forward
    at each stage (on its device's row). The forward before it may be another direction's (DualPipe's
    devices run one direction's forwards, then the other's)."""
    j = t.start[rows] + np.maximum(i - 1, 0)
    kind, mb, chunk = t.kind[j], t.mb[j], t.chunk[j]
    tt = rows // t.p
    rr = t.direction[tt, mb]
    sp = vstage[rr, rows % t.p, chunk]
    hop = ((i > 0) & (kind == 0) & (t.pmb[j] < 0) & (rr >= 0)
           & ((rr != r) | (sp < np.arange(rows.shape[1])[None])))
    out = np.full(rows.shape + (4,), -1, dtype=np.int64)
    out[hop] = np.stack([sp[hop], rank[tt[hop], mb[hop]], types[j[hop]], rr[hop]], axis=1)
    return out


def _in_flight(t: Codes) -> np.ndarray:
    """(rows,) peak activations held per device (schedules.in_flight over Codes)."""
    release = 2 if t.split_backward else 1
    first = (t.kind == 0).astype(np.int64) - (t.kind == release)
    second = -((t.pmb >= 0) & (release == 1)).astype(np.int64)  # a pair's B, after its F
    held = np.cumsum(first + second)
    before = np.r_[0, held][t.start[:-1]]
    peak = np.maximum.reduceat(held - second, t.start[:-1]) - before
    return np.maximum(peak, 0)


def _ranks(direction: np.ndarray) -> np.ndarray:
    """(T, M) rank of each micro-batch among those of its direction (direction -1: none)."""
    rank = np.zeros(direction.shape, dtype=np.int64)
    for r in range(int(direction.max()) + 1):
        mask = direction == r
        rank[mask] = (np.cumsum(mask, axis=1) - 1)[mask]
    return rank


def steady_from(schedule: str, p: int, v: int) -> tuple[int, int]:
    """(m1, period): from m1 micro-batches on, m and m + period micro-batches differ only in the
    steady state, so the structure extends linearly (the registry's ScheduleSpec.steady)."""
    return SPECS[schedule].steady(p, v)


STRUCTURES: dict[tuple, Structure] = {}
"""Structures built in this process, by (schedule, p, v, m) (m None: the linear one). Pure functions of
the schedule; workers of estimate() send theirs back, so that later passes reuse them."""


def structure_key(schedule: str, p: int, v: int, m: int) -> tuple:
    """Key of the Structure serving m micro-batches: m None past m1 on the period (the linear one)."""
    m1, period = steady_from(schedule, p, v)
    return schedule, p, v, (None if m >= m1 and (m - m1) % period == 0 else m)


def structure(schedule: str, p: int, v: int, m: int) -> Structure:
    """The Structure of SCHEDULES[schedule](p, m, v); exact for small m, linear in m past m1."""
    key = structure_key(schedule, p, v, m)
    if key not in STRUCTURES:
        build_structures([key])
    return STRUCTURES[key]


def build_structures(keys) -> None:
    """Build the Structures of these keys into STRUCTURES, the tables of each (schedule, p, v) in one
    batch of Codes."""
    keys = [k for k in dict.fromkeys(keys) if k not in STRUCTURES]
    families = {}
    for name, p, v, m in keys:
        m1, period = steady_from(name, p, v)
        families.setdefault((name, p, v), set()).update((m1, m1 + period) if m is None else (m,))
    families = [(name, p, v, tuple(sorted(ms))) for (name, p, v), ms in families.items()]
    arrays = {}
    for (name, p, v, ms), codes in zip(families, codes_batch(families)):
        arrays.update(((name, p, v, m), a) for m, a in zip(ms, _extract(codes)))
    for name, p, v, m in keys:
        if m is None:
            m1, period = steady_from(name, p, v)
            STRUCTURES[name, p, v, m] = _linear(arrays[name, p, v, m1], arrays[name, p, v, m1 + period],
                                                name, p, v, m1, period)
        else:
            STRUCTURES[name, p, v, m] = _exact(arrays[name, p, v, m], p, v, m)


def _exact(a: dict, p: int, v: int, m: int) -> Structure:
    zero = lambda x: np.zeros_like(x)  # noqa: E731
    return Structure(p=p, v=v, m_ref=m, x_upto_slope=zero(a["x_upto"]), x_after_slope=zero(a["x_after"]),
                     total_slope=zero(a["total"]), in_flight_slope=zero(a["in_flight"]),
                     ent_before_slope=zero(a["ent_before"]), ent_rank_slope=np.zeros(a["ent_half"].shape[:3]), **a)


def _linear(a: dict, b: dict, schedule: str, p: int, v: int, m1: int, period: int) -> Structure:
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
