"""Pipeline schedules: structure, closed-form bubbles, activations in flight, errors.

Bubble conventions (free communication, durations per kind, ``tests/schedule_executor.py``):
``idle`` per device = makespan - busy; ``bubble_fraction`` = mean(idle) / makespan (DESIGN.md);
``inner_idle`` per device = idle between its own first start and last end, the bubble a
schedule keeps when consecutive steps may overlap (Qi et al.'s "zero bubble" parallelograms).
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest
from schedule_executor import Deadlock, execute

from simulator.schedules import CHUNKS, SCHEDULES, Action, ScheduleTable, in_flight, pair


def _valid_m(name: str, p: int) -> list[int]:
    ms = sorted({p, 2 * p, 4 * p, 2 * p + 2, 3, 1})
    if name == "interleaved":
        return [m for m in ms if m % p == 0]
    if name == "dualpipe":
        return [m for m in ms if m % 2 == 0]
    return ms


def _grid():
    for name in SCHEDULES:
        for p in (1, 2, 3, 4, 8):
            if name == "dualpipe" and p % 2:
                continue
            for v in ((2, 3) if CHUNKS[name] is None else (CHUNKS[name],)):
                for m in _valid_m(name, p):
                    yield name, p, m, v


GRID = list(_grid())


def _case(name, p, m, v):
    return f"{name}-p{p}-m{m}-v{v}"


def _expected(table: ScheduleTable, device: int) -> Counter:
    """(kind, mb, chunk) each device must run exactly once, derived from the routes."""
    kinds = ("F", "B", "W") if table.split_backward else ("F", "B")
    want = Counter()
    for mb in range(table.m):
        for dev, chunk in table.routes[table.direction[mb]]:
            if dev == device:
                want.update((k, mb, int(chunk)) for k in kinds)
    return want


@pytest.mark.parametrize("name,p,m,v", GRID, ids=[_case(*c) for c in GRID])
def test_every_task_once_routes_cover_and_no_deadlock(name, p, m, v):
    t = SCHEDULES[name](p, m, v)
    assert (t.p, t.m, t.v, len(t.orders)) == (p, m, v, p)
    assert t.routes.shape[1:] == (t.n_vstages, 2) and t.direction.shape == (m,)
    held = set()
    for d, route in enumerate(t.routes):
        places = {(int(a), int(b)) for a, b in route}
        assert len(places) == t.n_vstages  # every vstage on its own (device, chunk)
        held |= places
        assert [t.vstage_of(a, b, d) for a, b in route] == list(range(t.n_vstages))
    assert held == {(a, b) for a in range(p) for b in range(v)}
    for d in range(p):
        got = Counter((a.kind, a.mb, a.chunk) for a in t.flat(d))
        assert got == _expected(t, d)
        assert all(s.paired is None or (s.kind, s.paired.kind) == ("F", "B") for s in t.orders[d])
    run = execute(t, F=1.0, B=1.3, W=0.7, FB=1.5)
    assert np.all(run.busy > 0) and run.makespan >= run.busy.max()


@pytest.mark.parametrize("name", ["gpipe", "1f1b"])
@pytest.mark.parametrize("p,m", [(2, 2), (4, 4), (4, 8), (8, 8), (8, 64), (4, 3), (16, 48)])
@pytest.mark.parametrize("F,B", [(1.0, 1.0), (1.0, 2.0)])
def test_gpipe_1f1b_bubble(name, p, m, F, B):
    run = execute(SCHEDULES[name](p, m, 1), F=F, B=B)
    assert run.bubble_fraction == pytest.approx((p - 1) / (m + p - 1), abs=1e-9)
    assert run.idle == pytest.approx(np.full(p, (p - 1) * (F + B)), abs=1e-9)


@pytest.mark.parametrize("p,m,v", [(2, 2, 2), (4, 4, 2), (4, 8, 3), (8, 16, 2), (8, 64, 4), (4, 12, 5)])
@pytest.mark.parametrize("F,B", [(1.0, 1.0), (1.0, 2.0)])
def test_interleaved_bubble(p, m, v, F, B):
    """A chunk's F and B take 1/v of a full stage's: bubble (p-1)(F+B)/v, (p-1)/(vm+p-1)."""
    run = execute(SCHEDULES["interleaved"](p, m, v), F=F / v, B=B / v)
    assert run.bubble_fraction == pytest.approx((p - 1) / (v * m + p - 1), abs=1e-9)
    assert run.idle == pytest.approx(np.full(p, (p - 1) * (F + B) / v), abs=1e-9)


@pytest.mark.parametrize("p,m", [(2, 2), (3, 4), (4, 4), (4, 9), (8, 8), (8, 24)])
@pytest.mark.parametrize("F,B,W", [(1, 1, 1), (1, 2, 1), (2, 1, 1), (1.3, 0.7, 0.5), (1, 1, 0)])
def test_zb_h1_bubble(p, m, F, B, W):
    """Qi et al.: (p-1)(T_F + T_B - T_W), B input-only, valid for T_W <= min(T_F, T_B), m >= p;
    DeepSeek's ZB1P form (p-1)(F + B_full - 2W) is the same number."""
    run = execute(SCHEDULES["zb-h1"](p, m, 1), F=F, B=B, W=W)
    assert run.idle == pytest.approx(np.full(p, (p - 1) * (F + B - W)), abs=1e-9)
    assert run.idle == pytest.approx(np.full(p, (p - 1) * (F + (B + W) - 2 * W)), abs=1e-9)


@pytest.mark.parametrize("name,v,work", [("zb-h2", 1, 3), ("zb-v", 2, 6)])
@pytest.mark.parametrize("p", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("extra", [0, 1, 5, 2 * 8])
def test_zero_bubble_parallelogram(name, v, work, p, extra):
    """T_F = T_B = T_W = 1, m >= 2p - 1: no idle inside any device's span (Qi et al.'s zero
    bubble); one isolated step still leaves exactly the fill stagger (p-1) T_F per device."""
    m = 2 * p - 1 + extra
    run = execute(SCHEDULES[name](p, m, v))
    assert run.inner_idle == pytest.approx(np.zeros(p), abs=1e-9)
    assert run.idle == pytest.approx(np.full(p, p - 1.0), abs=1e-9)
    assert run.bubble_fraction == pytest.approx((p - 1) / (work * m + p - 1), abs=1e-9)


def _deepseek(half_minus_one, F, B, W, FB):
    """Table 2 with F&B = FB + W (a pair's B is input-only here) and B_full = B + W."""
    return half_minus_one * ((FB + W) + (B + W) - 3 * W)


@pytest.mark.parametrize("name,p", [("dualpipe", p) for p in (2, 4, 6, 8, 12, 16)]
                         + [("dualpipe-v", p) for p in (1, 2, 4, 8, 16)])
@pytest.mark.parametrize("mult", [2, 3, 4])
def test_dualpipe_table2_exact(name, p, mult):
    """Per-device bubble = makespan - busy, max over devices. Table 2's (PP/2-1)(F&B+B-3W)
    holds exactly at T_F = T_B(input) and perfect overlap (F&B = B_full), any W <= T_F.
    DualPipeV: the same with p-1 (a V of 2p half-stages is DualPipe on 2p stages)."""
    m = mult * p + (mult * p) % 2
    t = SCHEDULES[name](p, m, 2)
    k = p / 2 - 1 if name == "dualpipe" else p - 1
    for W in (0.0, 0.5, 1.0):
        run = execute(t, F=1.0, B=1.0, W=W, FB=1.0)
        assert run.idle.max() == pytest.approx(_deepseek(k, 1.0, 1.0, W, 1.0), abs=1e-9)


@pytest.mark.parametrize("name,p", [("dualpipe", 4), ("dualpipe", 8), ("dualpipe", 16),
                                    ("dualpipe-v", 4), ("dualpipe-v", 8)])
def test_dualpipe_table2_is_upper_bound(name, p):
    """Elsewhere in the usual regime (F <= B <= 2F, W <= F, B <= FB <= F+B) Table 2 bounds the
    measured max per-device idle from above; with F = B = W and no overlap gain (FB = F + B)
    the measured bubble stays (PP/2-1) F, half of Table 2's figure."""
    rng = np.random.default_rng(p)
    t = SCHEDULES[name](p, 4 * p, 2)
    k = p / 2 - 1 if name == "dualpipe" else p - 1
    for _ in range(40):
        F = rng.uniform(0.3, 2.0)
        B = rng.uniform(F, 2 * F)
        W = rng.uniform(0, F)
        FB = rng.uniform(B, F + B)
        assert execute(t, F=F, B=B, W=W, FB=FB).idle.max() <= _deepseek(k, F, B, W, FB) + 1e-9
    for FB in (1.0, 1.5, 2.0):
        assert execute(t, F=1, B=1, W=1, FB=FB).idle.max() == pytest.approx(k, abs=1e-9)


def test_published_bubble_points(reference):
    """bubble_deepseek_v3_table2 and bubble_1f1b_gpipe_narayanan test points."""
    table2 = reference("bubble_deepseek_v3_table2")["test_points"][0]  # PP=16, F=1, B=2, W=1
    one = execute(SCHEDULES["1f1b"](16, 64, 1), F=1, B=2)
    zb = execute(SCHEDULES["zb-h1"](16, 64, 1), F=1, B=1, W=1)
    assert one.idle.max() == pytest.approx(table2["1F1B"])
    assert zb.idle.max() == pytest.approx(table2["ZB1P"])
    overlapped = reference("bubble_deepseek_v3_table2")["test_points"][1]  # F&B = 2
    dual = execute(SCHEDULES["dualpipe"](16, 64, 2), F=1, B=1, W=1, FB=2 - 1)
    assert dual.idle.max() == pytest.approx(overlapped["DualPipe"])
    for point in reference("bubble_1f1b_gpipe_narayanan")["test_points"]:
        p, m = point["p"], point["m"]
        run = execute(SCHEDULES["1f1b"](p, m, 1))
        assert run.idle.mean() / (run.makespan - run.idle.mean()) == pytest.approx(point["bubble_fraction"], abs=1e-6)


@pytest.mark.parametrize("p,m", [(1, 1), (2, 5), (4, 4), (4, 16), (8, 3), (8, 32)])
def test_in_flight_single_chunk(p, m):
    d = np.arange(p)
    assert in_flight(SCHEDULES["gpipe"](p, m, 1)).tolist() == [m] * p
    assert in_flight(SCHEDULES["1f1b"](p, m, 1)).tolist() == np.minimum(p - d, m).tolist()
    if m >= p:
        assert in_flight(SCHEDULES["zb-h1"](p, m, 1)).tolist() == [p] * p  # same peak as 1F1B's first device
    if m >= 2 * p - 1:
        assert in_flight(SCHEDULES["zb-h2"](p, m, 1)).tolist() == [2 * p - 1] * p  # about 2x


@pytest.mark.parametrize("p,v,penalty", [(8, 12, 1.0729), (16, 2, 1.46875), (4, 2, None), (8, 3, None)])
def test_in_flight_interleaved_megatron_penalty(p, v, penalty):
    """bubble_memory_interleaved_penalty: first device holds (1 + (p-1)/(p v)) p stages' worth."""
    t = SCHEDULES["interleaved"](p, 4 * p, v)
    first = in_flight(t, unit="stage")[0]
    assert first == pytest.approx((1 + (p - 1) / (p * v)) * p, abs=1e-9)
    assert in_flight(t)[0] == v * p + p - 1
    if penalty is not None:
        assert first / p == pytest.approx(penalty, abs=5e-5)


@pytest.mark.parametrize("p", [2, 4, 8, 16])
def test_in_flight_v_and_dualpipe(p):
    """ZB-V: 2p half-stage chunks = p stages (1x 1F1B). DualPipe: PP+1 chunks, each a full
    stage of one pipeline copy (Table 2's unit). DualPipeV: 2p+1 half-stage chunks."""
    zbv = in_flight(SCHEDULES["zb-v"](p, 3 * p, 2))
    assert zbv.tolist() == [2 * p] * p
    assert in_flight(SCHEDULES["zb-v"](p, 3 * p, 2), unit="stage").tolist() == [p] * p
    for m in (2 * p, 4 * p + 2):
        assert in_flight(SCHEDULES["dualpipe"](p, m, 2)).tolist() == [p + 1] * p
        assert in_flight(SCHEDULES["dualpipe"](p, m, 2), unit="stage").tolist() == [p + 1] * p
        assert in_flight(SCHEDULES["dualpipe-v"](p, m, 2)).tolist() == [2 * p + 1] * p


@pytest.mark.parametrize("call,message", [
    (("interleaved", 4, 6, 2), "interleaved needs micro-batches (m=6) divisible by pipeline stages (p=4)"),
    (("interleaved", 4, 8, 1), "interleaved needs at least 2 chunks per device, got v=1"),
    (("dualpipe", 5, 10, 2), "dualpipe needs an even number of stages, got p=5"),
    (("dualpipe", 4, 7, 2), "dualpipe needs an even number of micro-batches, got m=7"),
    (("zb-v", 4, 8, 3), "zb-v uses 2 chunks per device, got v=3"),
    (("dualpipe-v", 4, 8, 1), "dualpipe-v uses 2 chunks per device, got v=1"),
    (("1f1b", 4, 8, 2), "1f1b uses 1 chunk per device, got v=2"),
    (("gpipe", 0, 8, 1), "gpipe needs at least 1 pipeline stage, got p=0"),
    (("zb-h2", 4, 0, 1), "zb-h2 needs at least 1 micro-batch, got m=0"),
])
def test_invalid_parameters(call, message):
    name, *args = call
    with pytest.raises(ValueError) as err:
        SCHEDULES[name](*args)
    assert str(err.value) == message and "\n" not in str(err.value)


def test_format_grid_1f1b():
    grid = SCHEDULES["1f1b"](4, 8, 1).format_grid()
    rows = grid.splitlines()
    assert len(rows) == 4
    for row in rows:
        for kind in "FB":
            assert all(f"{kind}{i}" in row.split() for i in range(8))
    assert "F3.1" in SCHEDULES["interleaved"](4, 8, 2).format_grid()


def test_labels_and_pairs():
    assert str(Action("F", 3, 1)) == "F3.1"
    assert Action("W", 2).label(chunks=False) == "W2"
    both = pair(Action("F", 4, 0), Action("B", 1, 1))
    assert str(both) == "F4.0&B1.1" and both.halves() == (Action("F", 4, 0), Action("B", 1, 1))
    with pytest.raises(ValueError):
        pair(Action("B", 1), Action("F", 2))
    assert any(s.paired for o in SCHEDULES["dualpipe"](4, 8, 2).orders for s in o)


def test_dependencies_follow_routes():
    t = SCHEDULES["interleaved"](4, 8, 2)  # vstage k on device k % 4, chunk k // 4
    assert t.dependencies(0, Action("F", 5, 1)) == [(3, Action("F", 5, 0))]
    assert t.dependencies(0, Action("F", 5, 0)) == []
    assert t.dependencies(3, Action("B", 2, 1)) == [(3, Action("F", 2, 1))]  # last vstage
    assert t.dependencies(3, Action("B", 2, 0)) == [(0, Action("B", 2, 1))]
    d = SCHEDULES["dualpipe"](4, 8, 2)  # micro-batches 4..7 enter at device 3 on chunk 1
    assert d.dependencies(2, Action("F", 5, 1)) == [(3, Action("F", 5, 1))]
    assert d.dependencies(0, Action("B", 5, 1)) == [(0, Action("F", 5, 1))]
    assert d.dependencies(1, Action("W", 5, 1)) == [(1, Action("B", 5, 1))]
    v = SCHEDULES["zb-v"](4, 8, 2)  # V: device 3 holds vstages 3 and 4
    assert v.dependencies(3, Action("F", 0, 1)) == [(3, Action("F", 0, 0))]
    assert v.dependencies(2, Action("B", 0, 0)) == [(3, Action("B", 0, 0))]


def test_executor_detects_deadlock():
    good = SCHEDULES["1f1b"](2, 2, 1)
    swapped = (tuple(reversed(good.orders[0])), good.orders[1])
    bad = ScheduleTable("bad", 2, 2, 1, swapped, good.routes, good.direction, False)
    with pytest.raises(Deadlock):
        execute(bad)


@pytest.mark.parametrize("name,p,m,v", [("dualpipe", 16, 256, 2), ("1f1b", 16, 128, 1),
                                        ("interleaved", 16, 128, 2)])
def test_build_time(name, p, m, v):
    best = min(_timed(SCHEDULES[name], p, m, v) for _ in range(5))
    assert best < 0.05, f"{name} p={p} m={m} took {best * 1e3:.1f} ms"


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0
