"""Zero-bubble and DualPipe schedules through the simpy engine, against the closed forms.

tests/test_schedules.py checks the schedule tables with the reference executor; here the same
figures are measured on ``simulator.training.engine.run_engine`` with synthetic Plans (durations per
kind, free communication, no optimizer, no data parallelism), to 1e-9 unless stated.

Notation. F: forward of one micro-batch on one stage (chunk); B: ``plan.b``, the input-gradient
pass when the schedule splits the backward (ZB, DualPipe), else the full backward; W: ``plan.w``,
the weight-gradient pass; B_full = B + W. A DualPipe pair slot lasts ``plan.fb`` and its B is
input-only, its W a separate slot (table.py), so DeepSeek's F&B = ``plan.fb`` + W.
Per-stage idle = step - busy; inner idle = idle between a stage's first start and last end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from schedule_executor import execute

from simulator import load_scenario
from simulator.cost.memory import Memory
from simulator.schedules import CHUNKS, SCHEDULES
from simulator.simulate import run
from simulator.training.engine import KIND_INDEX, Timeline, run_engine
from simulator.training.plan import Plan
from simulator.training.report import bubble_fraction, stage_busy

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "gpt3-175b-selene.yaml"
SPLIT = ("zb-h1", "zb-h2", "zb-v", "dualpipe", "dualpipe-v")


def synthetic_plan(name: str, p: int, m: int, *, f=1.0, b=1.0, w=0.0, fb=0.0, send=0.0) -> Plan:
    """A Plan of ``SCHEDULES[name](p, m, v)`` with the given seconds per (device, chunk): scalars or
    arrays broadcast to (p, v) (``fb`` to (p, v, v)); ``send`` seconds per cross-device hop."""
    v = CHUNKS[name] or 2
    table = SCHEDULES[name](p, m, v)
    z = np.zeros
    grid = lambda x, shape: np.broadcast_to(np.asarray(x, float), shape).copy()  # noqa: E731
    return Plan(
        table=table, devices=np.arange(p), f=grid(f, (p, v)), b=grid(b, (p, v)), w=grid(w, (p, v)),
        fb=grid(fb, (p, v, v)), exposed_tp=z((p, v, 3)), exposed_cp=z((p, v, 3)),
        send=np.full((p, v, 2), float(send)),
        send_tier=np.full((p, v, 2), 1 if send > 0 else 0, dtype=np.int8), send_bytes=0.0,
        dp=z(p), dp_tier=np.ones(p, dtype=np.int8), param_gather=z(p), optimizer=z(p),
        memory=Memory(weights=0.0, gradients=0.0, optimizer=0.0, activations=0.0, kv_cache=0.0,
                      capacity=1.0),
        traffic={"nvlink": 0.0, "scaleout": 0.0, "per_rank": z((p, 2))},
        model_flops=0.0, hardware_flops=0.0,
    )


def idle(plan: Plan, tl: Timeline) -> np.ndarray:
    """(p,) seconds each stage is not computing during the step."""
    return tl.step_time - stage_busy(plan, tl)


def inner_idle(plan: Plan, tl: Timeline) -> np.ndarray:
    """(p,) idle seconds between each stage's first start and last end."""
    out = np.zeros(plan.table.p)
    for d in range(plan.table.p):
        mine = tl.device == d
        out[d] = tl.end[mine].max() - tl.start[mine].min() - (tl.end[mine] - tl.start[mine]).sum()
    return out


def _grid(ps, ms):
    return [(p, m) for p in ps for m in sorted({mm for mm in ms(p) if mm >= 1})]


# --- 1F1B and ZB-H1 ---------------------------------------------------------------------------

@pytest.mark.parametrize("p, m", _grid((2, 4, 8, 16), lambda p: (1, p - 1, p, 2 * p + 1, 4 * p)))
@pytest.mark.parametrize("F, B", [(1.0, 1.0), (1.0, 2.0), (0.7, 1.9)])
def test_1f1b_idle_per_stage(p, m, F, B):
    """1F1B, B the full backward: every stage idles (p-1)(F+B); bubble (p-1)/(m+p-1)."""
    plan = synthetic_plan("1f1b", p, m, f=F, b=B)
    tl = run_engine(plan)
    assert tl.step_time == pytest.approx((m + p - 1) * (F + B), abs=1e-9)
    np.testing.assert_allclose(idle(plan, tl), (p - 1) * (F + B), rtol=0, atol=1e-9)
    assert bubble_fraction(plan, tl) == pytest.approx((p - 1) / (m + p - 1), abs=1e-9)


ZB_TIMES = [(1.0, 1.0, 1.0), (1.0, 2.0, 1.0), (2.0, 1.0, 1.0), (1.3, 0.7, 0.5), (1.0, 1.0, 0.0)]


@pytest.mark.parametrize("p, m", _grid((2, 4, 8, 16), lambda p: (p, p + 1, 2 * p, 4 * p)))
@pytest.mark.parametrize("F, B, W", ZB_TIMES)
def test_zb_h1_idle_per_stage(p, m, F, B, W):
    """ZB-H1 (Qi et al.), B input-only, W <= min(F, B), m >= p: every stage idles
    (p-1)(F + B - W), DeepSeek's ZB1P (PP-1)(F + B_full - 2W) with B_full = B + W; the step is
    m (F + B + W) plus that idle."""
    plan = synthetic_plan("zb-h1", p, m, f=F, b=B, w=W)
    tl = run_engine(plan)
    expected = (p - 1) * (F + B - W)
    np.testing.assert_allclose(idle(plan, tl), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(idle(plan, tl), (p - 1) * (F + (B + W) - 2 * W), rtol=0, atol=1e-9)
    assert tl.step_time == pytest.approx(m * (F + B + W) + expected, abs=1e-9)
    assert bubble_fraction(plan, tl) == pytest.approx(expected / (m * (F + B + W) + expected), abs=1e-9)


@pytest.mark.parametrize("p, m", [(4, 4), (4, 16), (8, 8), (8, 33), (16, 64)])
@pytest.mark.parametrize("F, B, W", [t for t in ZB_TIMES if t[2] > 0])
def test_zb_h1_bubble_fraction_below_1f1b(p, m, F, B, W):
    """Equal total work (1F1B's full backward = ZB-H1's B + W): the report's bubble_fraction is
    (p-1)/(m+p-1) for 1F1B and (p-1)(F+B-W) / (m(F+B+W) + (p-1)(F+B-W)) < it for ZB-H1."""
    one = synthetic_plan("1f1b", p, m, f=F, b=B + W)
    zb = synthetic_plan("zb-h1", p, m, f=F, b=B, w=W)
    tl_one, tl_zb = run_engine(one), run_engine(zb)
    bf_one, bf_zb = bubble_fraction(one, tl_one), bubble_fraction(zb, tl_zb)
    assert bf_one == pytest.approx((p - 1) / (m + p - 1), abs=1e-9)
    expected = (p - 1) * (F + B - W)
    assert bf_zb == pytest.approx(expected / (m * (F + B + W) + expected), abs=1e-9)
    assert bf_zb < bf_one - 1e-6
    assert tl_zb.step_time < tl_one.step_time


# --- ZB-H2, ZB-V --------------------------------------------------------------------------------

@pytest.mark.parametrize("name, work", [("zb-h2", 3), ("zb-v", 6)])
@pytest.mark.parametrize("p, m", _grid((1, 2, 3, 4, 8, 16), lambda p: (2 * p - 1, 2 * p, 3 * p + 1, 4 * p)))
def test_zero_bubble_inner_idle(name, work, p, m):
    """F = B = W = 1 (per chunk), m >= 2p - 1: no stage idles between its first and last task
    (Qi et al.'s zero bubble); an isolated step still waits (p-1) F for the first forward to
    arrive, so every stage idles p-1 and the bubble is (p-1)/(work m + p-1), work = 3 (ZB-H2)
    or 6 (ZB-V, two chunks) seconds per micro-batch: it tends to 0 as m grows."""
    plan = synthetic_plan(name, p, m, f=1.0, b=1.0, w=1.0)
    tl = run_engine(plan)
    np.testing.assert_allclose(inner_idle(plan, tl), 0.0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(idle(plan, tl), p - 1.0, rtol=0, atol=1e-9)
    assert bubble_fraction(plan, tl) == pytest.approx((p - 1) / (work * m + p - 1), abs=1e-9)


# --- DualPipe -------------------------------------------------------------------------------------

def table2(half_minus_one: float, *, F: float, B: float, W: float, fb: float) -> float:
    """DeepSeek-V3 Table 2, (PP/2-1)(F&B + B_full - 3W), with F&B = fb + W and B_full = B + W."""
    return half_minus_one * ((fb + W) + (B + W) - 3 * W)


@pytest.mark.parametrize("name, p", [("dualpipe", p) for p in (2, 4, 6, 8, 12, 16)]
                         + [("dualpipe-v", p) for p in (2, 4, 8)])
@pytest.mark.parametrize("mult", [2, 3, 4])
@pytest.mark.parametrize("x", [1.0, 1.7])
def test_dualpipe_table2_exact(name, p, mult, x):
    """Exact regime: F = B(input) = x, perfect overlap (F&B = B_full, i.e. plan.fb = x), W <= F:
    the largest per-stage idle is (PP/2-1)(F&B + B_full - 3W) = (PP/2-1)(2x - W), for any even
    m >= 2p. DualPipeV (a V on p devices is DualPipe on 2p stages): the same with p-1."""
    m = mult * p + (mult * p) % 2
    k = p / 2 - 1 if name == "dualpipe" else p - 1
    for W in (0.0, 0.5 * x, x):
        plan = synthetic_plan(name, p, m, f=x, b=x, w=W, fb=x)
        got = idle(plan, run_engine(plan)).max()
        assert got == pytest.approx(table2(k, F=x, B=x, W=W, fb=x), abs=1e-9), W
        assert got == pytest.approx(k * (2 * x - W), abs=1e-9)


@pytest.mark.parametrize("name, p", [("dualpipe", 4), ("dualpipe", 8), ("dualpipe", 16), ("dualpipe-v", 8)])
def test_dualpipe_table2_is_upper_bound(name, p):
    """Stated regime F <= B <= 2F, W <= F, B <= plan.fb <= F + B (B input-only): Table 2 bounds
    the largest per-stage idle from above (30 seeded draws, m = 4p)."""
    rng = np.random.default_rng(1000 + p)
    k = p / 2 - 1 if name == "dualpipe" else p - 1
    for _ in range(30):
        F = rng.uniform(0.3, 2.0)
        B = rng.uniform(F, 2 * F)
        W = rng.uniform(0.0, F)
        fb = rng.uniform(B, F + B)
        plan = synthetic_plan(name, p, 4 * p, f=F, b=B, w=W, fb=fb)
        assert idle(plan, run_engine(plan)).max() <= table2(k, F=F, B=B, W=W, fb=fb) + 1e-9


# --- published points ------------------------------------------------------------------------------

@pytest.mark.parametrize("m", [32, 64, 128])
def test_deepseek_table2_points(reference, m):
    """bubble_deepseek_v3_table2, PP = 16, F = 1, B_full = 2, W = 1, per-stage idle through the
    engine: 1F1B 45, ZB1P 15, DualPipe 7 with F&B = 2 (plan.fb = 1). With no overlap gain
    (F&B = F + B_full = 3) Table 2 says 14; the engine measures 7 (the schedule hides the pair's
    extra length), so there the formula is an upper bound."""
    case = reference("bubble_deepseek_v3_table2")
    plain, overlapped = case["test_points"]
    one = synthetic_plan("1f1b", 16, m, f=1.0, b=2.0)
    assert idle(one, run_engine(one)) == pytest.approx(np.full(16, plain["1F1B"]), abs=1e-9)
    zb = synthetic_plan("zb-h1", 16, m, f=1.0, b=1.0, w=1.0)
    assert idle(zb, run_engine(zb)) == pytest.approx(np.full(16, plain["ZB1P"]), abs=1e-9)
    dual = synthetic_plan("dualpipe", 16, m, f=1.0, b=1.0, w=1.0, fb=2.0 - 1.0)
    assert idle(dual, run_engine(dual)).max() == pytest.approx(overlapped["DualPipe"], abs=1e-9)
    slow = synthetic_plan("dualpipe", 16, m, f=1.0, b=1.0, w=1.0, fb=3.0 - 1.0)
    got = idle(slow, run_engine(slow)).max()
    assert got <= plain["DualPipe"] + 1e-9
    assert got == pytest.approx(7.0, abs=1e-9)


# --- the engine against the reference executor, and its dependencies with sends ------------------

@pytest.mark.parametrize("name", SPLIT)
@pytest.mark.parametrize("p, m", [(2, 4), (4, 8), (4, 10), (8, 16), (8, 24)])
def test_engine_matches_reference_executor(name, p, m):
    """Free communication: every slot starts and ends where tests/schedule_executor.py puts it."""
    rng = np.random.default_rng(p * 100 + m)
    F, B, W = rng.uniform(0.5, 1.5, 3)
    FB = rng.uniform(max(F, B), F + B)
    plan = synthetic_plan(name, p, m, f=F, b=B, w=W, fb=FB)
    tl = run_engine(plan)
    ref = execute(plan.table, F=F, B=B, W=W, FB=FB)
    np.testing.assert_allclose(tl.start, np.concatenate(ref.start), rtol=0, atol=1e-9)
    np.testing.assert_allclose(tl.end, np.concatenate(ref.end), rtol=0, atol=1e-9)
    assert tl.step_time == pytest.approx(ref.makespan, abs=1e-9)


@pytest.mark.parametrize("name", SPLIT)
@pytest.mark.parametrize("p, m", [(4, 8), (8, 18)])
def test_dependencies_pairs_and_sends(name, p, m):
    """Sends of 0.3 s and durations that differ by device and chunk (a pair lasts
    fb[device, chunk of F, chunk of B]): each slot lasts its own duration, slots of one stage do
    not overlap, and each slot starts after every input's producer ended plus one send when the
    producer sits on another device (a W after its own B, with no send)."""
    rng = np.random.default_rng(7)
    v = CHUNKS[name]
    f, b, w = rng.uniform(0.5, 1.5, (3, p, v))
    fb = rng.uniform(1.0, 2.5, (p, v, v))
    send = 0.3
    plan = synthetic_plan(name, p, m, f=f, b=b, w=w, fb=fb, send=send)
    tl = run_engine(plan)
    first = np.cumsum([0] + [len(o) for o in plan.table.orders])
    done = {}
    for d, order in enumerate(plan.table.orders):
        for i, slot in enumerate(order):
            row = first[d] + i
            for half in slot.halves():
                done[(d, half.kind, half.mb, half.chunk)] = tl.end[row]
    checked = 0
    for d, order in enumerate(plan.table.orders):
        rows = first[d] + np.arange(len(order))
        assert (tl.start[rows[1:]] >= tl.end[rows[:-1]] - 1e-12).all()
        for i, slot in enumerate(order):
            row = first[d] + i
            want = (plan.fb[d, slot.chunk, slot.paired.chunk] if slot.paired
                    else (plan.f, plan.b, plan.w)[KIND_INDEX[slot.kind]][d, slot.chunk])
            assert tl.end[row] - tl.start[row] == pytest.approx(want, abs=1e-12)
            for dep_d, dep in plan.table.dependencies(d, slot):
                hop = send if dep_d != d else 0.0
                assert tl.start[row] >= done[(dep_d, dep.kind, dep.mb, dep.chunk)] + hop - 1e-9
                checked += 1
    assert checked == (3 * plan.table.n_vstages - 1) * m  # every F, B, W but the first F


# --- unequal stages ------------------------------------------------------------------------------------

@pytest.mark.parametrize("p, m", _grid((2, 3, 4, 8), lambda p: (1, p - 1, p, p + 1, 2 * p, 33)))
@pytest.mark.parametrize("df, db", [(0.3, 0.0), (0.0, 0.5), (0.25, 0.5), (2.0, 1.0)])
def test_1f1b_slow_stage_hand_calculation(p, m, df, db):
    """1F1B, F = 1, B = 2 on every stage but stage s, which takes F + df and B + db (d = df + db).

    Stage s runs w = p-1-s warm-up forwards, m-w steady F/B pairs and w cool-down backwards. Its
    warm-up forwards finish while it would wait for the first gradient anyway (the round trip
    through the w stages after it lasts w (F + B), it spends w F' there): hidden while df <= B.
    Its cool-down backwards likewise hide in the wait for the last gradients while db <= F. In
    the steady state it is the bottleneck: every one of the m - w pairs costs d more. So the
    step grows by max(m - w, 1) d (one micro-batch's critical path when m <= w).
    Last stage (the LM head, w = 0): m d for any d >= 0; it idles (p-1)(F+B) as before, every
    other stage (p-1)(F+B) + m d, so the bubble fraction rises for m > 1:
    [(p-1)(F+B) + (p-1) m d / p] / [(m+p-1)(F+B) + m d] > (p-1)/(m+p-1).
    First stage (the embedding, w = p-1): max(m-p+1, 1) d, partly hidden by the warm-up.
    """
    F, B = 1.0, 2.0
    d = df + db
    base = run_engine(synthetic_plan("1f1b", p, m, f=F, b=B)).step_time
    for s in sorted({0, p // 2, p - 1}):
        f, b = np.full((p, 1), F), np.full((p, 1), B)
        f[s] += df
        b[s] += db
        plan = synthetic_plan("1f1b", p, m, f=f, b=b)
        tl = run_engine(plan)
        assert tl.step_time - base == pytest.approx(max(m - (p - 1 - s), 1) * d, abs=1e-9), s
        if s == p - 1:
            want = np.full(p, (p - 1) * (F + B) + m * d)
            want[-1] = (p - 1) * (F + B)
            np.testing.assert_allclose(idle(plan, tl), want, rtol=0, atol=1e-9)
            bf = ((p - 1) * (F + B) + (p - 1) * m * d / p) / ((m + p - 1) * (F + B) + m * d)
            assert bubble_fraction(plan, tl) == pytest.approx(bf, abs=1e-9)
            if m > 1 and p > 1:
                assert bf > (p - 1) / (m + p - 1)


def _selene_1f1b(vocab: int):
    """The gradient accumulation fused (the A100 default's separate pass would add the first stage's tied embedding
    table, V h, to its backward too)."""
    return run(load_scenario(SCENARIO, ["layout.schedule=1f1b", "layout.chunks=1", "workload.global_batch=16",
                                        f"model.vocab={vocab}", "workload.grad_accumulation_fusion=true"]))


def test_lm_head_on_last_stage_lengthens_1f1b_step():
    """GPT-3 175B on 64 A100 (TP 8, PP 8, DP 1), 1F1B, m = 16: the LM head on the last stage with
    V = 51200 against the same model with V = 1024. Only the last stage's F + B changes, by
    d = (f + b)[last] difference of the two Plans; the last stage is the slowest in both (the
    precondition of the calculation), so by the hand calculation above the step grows by m d.
    Tolerance 10%: sends and the optimizer step of the first stage (its tied embedding is
    V h too) add a little beyond m d."""
    big, small = _selene_1f1b(51200), _selene_1f1b(1024)
    m = big.scenario.micro_batches
    assert m == small.scenario.micro_batches == 16
    per_stage = [(r.plan.f + r.plan.b)[:, 0] for r in (big, small)]
    for t in per_stage:
        assert np.argmax(t) == len(t) - 1
    np.testing.assert_allclose(per_stage[0][:-1], per_stage[1][:-1], rtol=1e-12)
    d = per_stage[0][-1] - per_stage[1][-1]
    assert d > 0
    grow = big.timeline.step_time - small.timeline.step_time
    assert grow > 0
    assert grow == pytest.approx(m * d, rel=0.10)
    assert big.report.bubble_fraction > small.report.bubble_fraction


# --- DualPipe's two pipeline copies: each micro-batch runs through one of them ---------------------

def _selene(schedule: str, chunks: int):
    return run(load_scenario(SCENARIO, [f"layout.schedule={schedule}", f"layout.chunks={chunks}",
                                        "workload.global_batch=64"]))


def test_dualpipe_hardware_flops_equal_1f1b():
    """Same model, batch and recompute: the hardware FLOP of a step do not depend on the schedule."""
    one, dual = _selene("1f1b", 1), _selene("dualpipe", 2)
    assert dual.plan.hardware_flops == pytest.approx(one.plan.hardware_flops, rel=1e-9)
    assert dual.report.hfu <= 1.0


def test_dualpipe_traffic_equals_1f1b():
    """DP 1 (no gradient traffic): each micro-batch crosses the same p-1 stage boundaries each way
    and the same TP collectives, in DualPipe as in 1F1B, so the bytes per tier are equal."""
    one, dual = _selene("1f1b", 1), _selene("dualpipe", 2)
    assert dual.scenario.layout.dp == 1
    for tier in ("nvlink", "scaleout"):
        assert dual.report.traffic_bytes[tier] == pytest.approx(one.report.traffic_bytes[tier], rel=1e-9)
