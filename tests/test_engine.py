"""Engine and bubble fraction: Plans built by hand, equal stages, against the closed forms.

GPipe and 1F1B with p stages, m micro-batches, equal per-stage F and B and free communication:
step = (m + p - 1)(F + B), idle over step = (p-1)/(m+p-1) (Narayanan et al. 2021 Sec 2.2.1, Eq. 1).
Interleaved 1F1B with v chunks of 1/v the stage each: (p-1)/(v m + p-1) (Sec 2.2.2). The paper
quotes bubble / ideal, (p-1)/m and (p-1)/(m v); published.yaml bubble_fraction_convention_check
converts: over_total = over_ideal / (1 + over_ideal). simrack reports over_total (DESIGN.md 8).
"""

from __future__ import annotations

import numpy as np
import pytest

from simulator.cost.memory import Memory
from simulator.schedules import SCHEDULES
from simulator.schedules.table import Action
from simulator.training.engine import KIND_INDEX, run_engine
from simulator.training.plan import Plan
from simulator.training.report import bubble_fraction, stage_busy

F, B = 1.0, 2.0  # seconds of one micro-batch's forward and backward on one stage


def make_plan(name, p, m, v=1, *, f=F, b=B, send=0.0, optimizer=0.0, dp=0.0) -> Plan:
    """A Plan of equal stages: each (device, chunk) runs F in f/v and B in b/v seconds."""
    table = SCHEDULES[name](p, m, v)
    z = np.zeros
    tier = 1 if send > 0 else 0
    return Plan(
        table=table, devices=np.arange(p), f=np.full((p, v), f / v), b=np.full((p, v), b / v),
        w=z((p, v)), fb=z((p, v, v)), exposed_tp=z((p, v, 3)), exposed_cp=z((p, v, 3)),
        send=np.full((p, v, 2), send), send_tier=np.full((p, v, 2), tier, dtype=np.int8),
        send_bytes=0.0, dp=np.full(p, dp), dp_tier=np.ones(p, dtype=np.int8), param_gather=z(p),
        optimizer=np.full(p, optimizer),
        memory=Memory(weights=0.0, gradients=0.0, optimizer=0.0, activations=0.0, kv_cache=0.0,
                      capacity=1.0),
        traffic={"nvlink": 0.0, "scaleout": 0.0, "per_rank": z((p, 2))},
        model_flops=0.0, hardware_flops=0.0,
    )


def _grid(ps=(2, 4, 8, 16)):
    return [(p, m) for p in ps for m in sorted({1, p, 4 * p, 33})]


@pytest.mark.parametrize("name", ["gpipe", "1f1b"])
@pytest.mark.parametrize("p, m", _grid())
@pytest.mark.parametrize("f, b", [(1.0, 1.0), (1.0, 2.0)])
def test_bubble_gpipe_1f1b(name, p, m, f, b):
    plan = make_plan(name, p, m, f=f, b=b)
    tl = run_engine(plan)
    assert tl.step_time == pytest.approx((m + p - 1) * (f + b), rel=1e-12)
    assert bubble_fraction(plan, tl) == pytest.approx((p - 1) / (m + p - 1), abs=1e-9)


@pytest.mark.parametrize("v", [2, 3, 4])
@pytest.mark.parametrize("p", [2, 4, 8, 16])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_bubble_interleaved(p, v, k):
    """m = k p micro-batches; chunk time = stage time / v."""
    m = k * p
    plan = make_plan("interleaved", p, m, v)
    tl = run_engine(plan)
    assert tl.step_time == pytest.approx(m * (F + B) + (p - 1) * (F + B) / v, rel=1e-9)
    assert bubble_fraction(plan, tl) == pytest.approx((p - 1) / (v * m + p - 1), abs=1e-9)


def _rows(tl):
    """(device, kind index, mb, chunk) -> timeline row."""
    return {(int(d), int(k), int(mb), int(c)): i
            for i, (d, k, mb, c) in enumerate(zip(tl.device, tl.kind, tl.mb, tl.chunk))}


@pytest.mark.parametrize("name, p, m, v", [
    ("gpipe", 4, 8, 1), ("1f1b", 8, 33, 1), ("1f1b", 16, 1, 1), ("interleaved", 4, 8, 3),
    ("interleaved", 8, 16, 2),
])
@pytest.mark.parametrize("send", [0.0, 0.1])
def test_no_task_starts_before_its_dependencies_end(name, p, m, v, send):
    plan = make_plan(name, p, m, v, send=send)
    tl = run_engine(plan)
    rows = _rows(tl)
    assert len(rows) == len(tl.start) == sum(len(o) for o in plan.table.orders) == 2 * p * m * v
    checked = 0
    for device, order in enumerate(plan.table.orders):
        for action in order:
            row = rows[(device, KIND_INDEX[action.kind], action.mb, action.chunk)]
            assert tl.end[row] == pytest.approx(tl.start[row] + (plan.f if action.kind == "F"
                                                                 else plan.b)[device, action.chunk])
            for dep_device, dep in plan.table.dependencies(device, action):
                dep_row = rows[(dep_device, KIND_INDEX[dep.kind], dep.mb, dep.chunk)]
                hop = send if dep_device != device else 0.0
                assert tl.start[row] >= tl.end[dep_row] + hop - 1e-12
                checked += 1
    assert checked > 0


@pytest.mark.parametrize("name, p, m, v", [("gpipe", 8, 8, 1), ("1f1b", 8, 33, 1),
                                           ("interleaved", 8, 16, 4)])
def test_stage_busy_within_step(name, p, m, v):
    """Each stage computes m (F + B) seconds, no more than the step; tasks on a stage never overlap."""
    plan = make_plan(name, p, m, v)
    tl = run_engine(plan)
    busy = stage_busy(plan, tl)
    np.testing.assert_allclose(busy, m * (F + B), rtol=1e-12)
    assert (busy <= tl.step_time + 1e-12).all()
    for d in range(p):
        mine = np.argsort(tl.start[tl.device == d])
        s, e = tl.start[tl.device == d][mine], tl.end[tl.device == d][mine]
        assert (s[1:] >= e[:-1] - 1e-12).all()


def test_send_time_adds_two_hops_to_gpipe_p2_m1():
    """p 2, m 1: F0 on stage 0, send S, F0 and B0 on stage 1, send S, B0 on stage 0: 2F + 2B + 2S."""
    s = 0.25
    base = run_engine(make_plan("gpipe", 2, 1)).step_time
    plan = make_plan("gpipe", 2, 1, send=s)
    tl = run_engine(plan)
    assert base == pytest.approx(2 * F + 2 * B)
    assert tl.step_time == pytest.approx(base + 2 * s, rel=1e-12)
    rows = _rows(tl)
    assert tl.start[rows[(1, 0, 0, 0)]] == pytest.approx(F + s)        # F0 on stage 1
    assert tl.start[rows[(0, 1, 0, 0)]] == pytest.approx(2 * F + B + 2 * s)  # B0 on stage 0
    assert tl.comm_wait[rows[(1, 0, 0, 0)]] == pytest.approx(s)
    assert tl.comm_wait[rows[(0, 1, 0, 0)]] == pytest.approx(s)


def test_optimizer_extends_step_and_counts_as_busy():
    """1F1B p 4, m 8, an optimizer step of 0.5 s on every stage: step (m+p-1)(F+B) + 0.5, and the
    bubble is the same (p-1)(F+B) seconds of idle over the longer step."""
    p, m, opt = 4, 8, 0.5
    plan = make_plan("1f1b", p, m, optimizer=opt)
    tl = run_engine(plan)
    step = (m + p - 1) * (F + B) + opt
    assert tl.step_time == pytest.approx(step, rel=1e-12)
    assert bubble_fraction(plan, tl) == pytest.approx((p - 1) * (F + B) / step, abs=1e-9)


def test_gradient_reduction_starts_with_the_last_backward():
    """1F1B, equal stages: stage d's last backward starts at T - (d+1) B (T = (m+p-1)(F+B)); a
    reduction of D > B seconds launched then ends the step at T - B + D on stage 0."""
    p, m, d = 4, 8, 5.0
    plan = make_plan("1f1b", p, m, dp=d)
    tl = run_engine(plan)
    t = (m + p - 1) * (F + B)
    np.testing.assert_allclose(tl.dp_start, t - (np.arange(p) + 1) * B, rtol=1e-12)
    np.testing.assert_allclose(tl.dp_end, tl.dp_start + d, rtol=1e-12)
    assert tl.step_time == pytest.approx(t - B + d, rel=1e-12)


def _over_ideal(over_total):
    return over_total / (1 - over_total)


def test_convention_conversion(reference):
    """published.yaml's two conventions: over_total = over_ideal / (1 + over_ideal); simulated."""
    case = reference("bubble_fraction_convention_check")
    for pt in case["test_points"]:
        p, m = pt["p"], pt["m"]
        assert pt["over_ideal"] == pytest.approx((p - 1) / m, abs=5e-5)
        assert pt["over_total"] == pytest.approx(pt["over_ideal"] / (1 + pt["over_ideal"]), abs=5e-5)
        plan = make_plan("1f1b", p, m)
        bf = bubble_fraction(plan, run_engine(plan))
        assert bf == pytest.approx(pt["over_total"], abs=5e-5)
        assert _over_ideal(bf) == pytest.approx(pt["over_ideal"], abs=5e-5)


@pytest.mark.parametrize("name", ["gpipe", "1f1b"])
def test_narayanan_1f1b_gpipe_points(reference, name):
    """bubble / ideal = (p-1)/m at the paper's points (printed to 6 decimals)."""
    for pt in reference("bubble_1f1b_gpipe_narayanan")["test_points"]:
        plan = make_plan(name, pt["p"], pt["m"])
        bf = bubble_fraction(plan, run_engine(plan))
        assert _over_ideal(bf) == pytest.approx(pt["bubble_fraction"], abs=5e-7), pt


def test_narayanan_interleaved_points(reference):
    """bubble / ideal = (p-1)/(m v) at the paper's points (printed to 4 decimals)."""
    for pt in reference("bubble_interleaved_narayanan")["test_points"]:
        plan = make_plan("interleaved", pt["p"], pt["m"], pt["v"])
        bf = bubble_fraction(plan, run_engine(plan))
        assert _over_ideal(bf) == pytest.approx(pt["bubble_fraction"], abs=5e-5), pt


@pytest.mark.parametrize("name, p, m, v", [("1f1b", 8, 33, 1), ("interleaved", 4, 8, 3)])
def test_deterministic(name, p, m, v):
    plan = make_plan(name, p, m, v, send=0.05, dp=0.3, optimizer=0.1)
    a, b = run_engine(plan), run_engine(plan)
    for field in ("device", "kind", "mb", "chunk", "start", "end", "comm_wait", "dp_start", "dp_end",
                  "optimizer_start", "stage_end"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.labels == b.labels and a.step_time == b.step_time


def test_labels_follow_the_schedule():
    plan = make_plan("1f1b", 2, 2)
    tl = run_engine(plan)
    expected = [Action(a.kind, a.mb, a.chunk).label() for order in plan.table.orders for a in order]
    assert list(tl.labels) == expected
