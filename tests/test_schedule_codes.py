"""The analytic pass's fast path to schedule structures against the schedule tables themselves.

1. codes: CODES[name](p, ms, v) (numpy, several m at once; zb-h2's list schedule run on counters)
   holds, slot by slot, the orders of SCHEDULES[name](p, m, v);
2. structure: the vectorized extraction (structures._extract) equals a per-Action reading of the table
   (the reference below, the way the pass read tables before it was vectorized), for exact and linear
   structures, over a grid of (schedule, p, m, v).
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from simulator.schedules import SCHEDULES, in_flight
from simulator.schedules.codes import CODES, codes_batch, codes_of
from simulator.whatif.structures import (
    ENGINE_LOCAL_WAITS_FOR_SEND, Structure, _exact, _extract, _linear, slot_types, steady_from
)

CHUNKS = {"gpipe": (1,), "1f1b": (1,), "interleaved": (2, 3, 4), "zb-h1": (1,), "zb-h2": (1,), "zb-v": (2,),
          "dualpipe": (2,), "dualpipe-v": (2,)}


def _valid(name: str, p: int, m: int) -> bool:
    return not ((name == "interleaved" and m % p) or (name == "dualpipe" and (p % 2 or m % 2)))


def _grid(name: str, p: int, v: int) -> list[int]:
    m1, period = steady_from(name, p, v)
    ms = {1, 2, 3, 5, p, 2 * p, 2 * p + 1, m1 - 1, m1, m1 + period, m1 + 3 * period}
    return sorted(m for m in ms if m >= 1 and _valid(name, p, m))


CASES = [(name, p, v) for name in CHUNKS for p in (1, 2, 3, 4, 5, 6, 8) for v in CHUNKS[name]
         if _grid(name, p, v) and not (name == "interleaved" and p == 1)]


@pytest.mark.parametrize("name, p, v", CASES)
def test_codes_are_the_tables(name, p, v):
    ms = _grid(name, p, v)
    batch = CODES[name](p, ms, v)
    for t, m in enumerate(ms):
        fast, table = batch.take(t), codes_of(SCHEDULES[name](p, m, v))
        for f in ("start", "kind", "mb", "chunk", "pmb", "pchunk", "direction", "m", "routes"):
            np.testing.assert_array_equal(getattr(fast, f), getattr(table, f), err_msg=f"{name} p={p} m={m} {f}")
        assert fast.split_backward == table.split_backward


def test_zb_h2_tables_simulated_together():
    requests = [(2, (1, 3, 7)), (5, (4, 15, 16)), (8, (24, 25))]
    for (p, ms), batch in zip(requests, codes_batch([("zb-h2", p, 1, ms) for p, ms in requests])):
        for t, m in enumerate(ms):
            np.testing.assert_array_equal(batch.take(t).kind, codes_of(SCHEDULES["zb-h2"](p, m, 1)).kind)


# --- reference: the structure read Action by Action from a ScheduleTable ----------------------------

def _slot_type(a, v: int, prev) -> int:
    if a.paired is not None:
        return 3 * v + a.chunk * v + a.paired.chunk
    if (ENGINE_LOCAL_WAITS_FOR_SEND and a.kind == "W" and prev is not None
            and any(h.kind == "B" and h.mb == a.mb and h.chunk == a.chunk for h in prev.halves())):
        return 3 * v + v * v + a.chunk
    return "FBW".index(a.kind) * v + a.chunk


def _ref_entries(order, types: list[int]) -> list[int]:
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
        for j in range(1, len(gaps)):
            if gaps[j] != gaps[j - 1]:
                picks.update((pos[j], pos[j + 1]))
    return sorted(picks | set(first.values()))


def _reference(table) -> dict:
    p, v, S = table.p, table.v, slot_types(table.v)
    dirs, n = table.routes.shape[:2]
    rank = np.zeros(table.m, dtype=np.int64)
    for r in range(dirs):
        idx = np.nonzero(table.direction == r)[0]
        rank[idx] = np.arange(len(idx))
    types = [[_slot_type(a, v, o[i - 1] if i else None) for i, a in enumerate(o)] for o in table.orders]
    ents = [_ref_entries(o, t) for o, t in zip(table.orders, types)]
    E = max(len(e) for e in ents)
    out = {"ent_valid": np.zeros((p, E), bool), "ent_first": np.zeros((p, E), bool),
           "ent_half": np.full((p, E, 2, 4), -1, dtype=np.int64), "ent_before": np.zeros((p, E, S)),
           "ent_pos": np.full((p, E), 1 << 40, dtype=np.int64)}
    cum, where = [], {}
    for k, order in enumerate(table.orders):
        onehot = np.zeros((len(order) + 1, S))
        np.add.at(onehot, (np.arange(1, len(order) + 1), types[k]), 1)
        cum.append(np.cumsum(onehot, axis=0))
        for i, a in enumerate(order):
            for h in a.halves():
                where[k, h.kind, h.mb, h.chunk] = i
        for e, i in enumerate(ents[k]):
            out["ent_valid"][k, e], out["ent_first"][k, e], out["ent_pos"][k, e] = True, i == 0, i
            out["ent_before"][k, e] = cum[k][i]
            for hi, h in enumerate(order[i].halves()):
                if h.kind in "FB":
                    r = int(table.direction[h.mb])
                    out["ent_half"][k, e, hi] = ("FB".index(h.kind), r, table.vstage_of(k, h.chunk, r), rank[h.mb])
    out.update(x_type=np.zeros((2, dirs, n), dtype=np.int64), x_upto=np.zeros((2, dirs, n, S)),
               x_after=np.zeros((2, dirs, n, S)), x_mask=np.zeros((2, dirs, n, E), bool),
               pred=np.full((dirs, n, 4), -1, dtype=np.int64))
    last = [int(np.nonzero(table.direction == r)[0][-1]) for r in range(dirs)]
    first = [int(np.nonzero(table.direction == r)[0][0]) for r in range(dirs)]
    for r in range(dirs):
        for s, (k, c) in enumerate(table.routes[r]):
            for x, kind in enumerate("FB"):
                i = where[int(k), kind, last[r], int(c)]
                out["x_type"][x, r, s] = types[k][i]
                out["x_upto"][x, r, s] = cum[k][i + 1]
                out["x_after"][x, r, s] = cum[k][-1] - cum[k][i + 1]
                out["x_mask"][x, r, s] = out["ent_pos"][k] <= i
            i = where[int(k), "F", first[r], int(c)]
            a = table.orders[k][i - 1] if i else None
            if a is not None and a.paired is None and a.kind == "F":
                ra = int(table.direction[a.mb])  # the forward before may be the other direction's
                sp = table.vstage_of(int(k), a.chunk, ra)
                if sp < s or ra != r:
                    out["pred"][r, s] = (sp, rank[a.mb], types[k][i - 1], ra)
    out.update(routes=table.routes, total=np.stack([c[-1] for c in cum]),
               last_type=np.array([t[-1] for t in types]), x_last_rank=np.array([rank[j] for j in last]),
               in_flight=in_flight(table).astype(float))
    return out


def _same(a: Structure, b: Structure, what: str) -> None:
    for f in fields(Structure):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=f"{what}: {f.name}")
        else:
            assert x == y, f"{what}: {f.name}"


@pytest.mark.parametrize("name, p, v", CASES + [("zb-h2", 12, 1), ("dualpipe", 12, 2), ("interleaved", 16, 2),
                                                 ("zb-v", 10, 2), ("dualpipe-v", 9, 2), ("zb-h1", 16, 1)])
def test_structure_is_the_tables(name, p, v):
    ms = _grid(name, p, v)
    fast = dict(zip(ms, _extract(CODES[name](p, ms, v))))
    for m in ms:
        ref = _reference(SCHEDULES[name](p, m, v))
        _same(_exact(fast[m], p, v, m), _exact(ref, p, v, m), f"{name} p={p} m={m}")
    m1, period = steady_from(name, p, v)
    ref = [_reference(SCHEDULES[name](p, m, v)) for m in (m1, m1 + period)]
    _same(_linear(fast[m1], fast[m1 + period], name, p, v, m1, period), _linear(*ref, name, p, v, m1, period),
          f"{name} p={p} linear")
