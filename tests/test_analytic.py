"""The analytic pass against the engine and against closed forms.

Contention-free, defined as the engine runs it: no link ever carries two transfers at once (a send or
a gradient reduction never shares a NIC or NVLink port with another), so every transfer takes exactly
its alpha-beta time. The test detects it by watching the engine: a run in which two transfers overlap
on one link hands over to its event-driven pass (engine.share_links), which marks it as contended.

Claims checked here (the candidates' costs are make_plan's by construction: both call
simulator.cost.pipeline, the search with many candidates at once):
1. lower bound: the analytic step time never exceeds the engine's (with or without contention);
2. agreement: on contention-free layouts with layers split evenly over the virtual stages, analytic
   and engine agree within 1e-6 relative for gpipe, 1f1b, interleaved, zb-h1, zb-h2, dualpipe and
   dualpipe-v (zb-v is a lower bound only: its cool-down can hop between devices' chains);
3. closed forms: equal stages and free communication give (m+p-1)(F+B) for GPipe and 1F1B and
   m(F+B) + (p-1)(F+B)/v interleaved;
4. the structure extended linearly in m equals the structure of the table built at that m;
5. layer keys from the ranks' strides give the figures of the scenario's explicit groups.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import simulator.training.engine as engine
from simulator import load_scenario
from simulator.cost.op_table import build_op_table
from simulator.cost.pipeline import layer_costs, scenario_layer_keys
from simulator.cost.placement import mesh_order, place, replica_groups
from simulator.schedules import SCHEDULES, in_flight
from simulator.schedules.codes import codes_of
from simulator.simulate import run
from simulator.whatif.families import longest_paths
from simulator.whatif.candidates import CostModel
from simulator.whatif.space import (
    RECOMPUTE_NAMES, SCHEDULE_NAMES, SearchSpace, enumerate_layouts, label, overrides, virtual_stages
)
from simulator.whatif.structures import _extract, in_flight_of, steady_from, structure

ROOT = Path(__file__).resolve().parents[1]
GPT3 = ROOT / "scenarios" / "gpt3-175b-selene.yaml"
EXACT = ("gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2", "dualpipe", "dualpipe-v")


class Contention:
    """Counts engine runs in which two transfers shared a link (engine.share_links was needed)."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = engine.share_links

        def share_links(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(engine, "share_links", share_links)


def _sample(n: int, seed: int, gpus: int = 64, even: bool = True):
    base = load_scenario(GPT3, [f"topology.domains={gpus // 8}"])
    c = enumerate_layouts(base, gpus, SearchSpace(micro_batches=(1, 2, 4)))
    keep = c.m <= 32
    if even:
        keep &= np.array([base.model.layers % virtual_stages(SCHEDULE_NAMES[s], p, v) == 0
                          for s, p, v in zip(c.schedule, c.pp, c.chunks)])
    c = c.take(np.nonzero(keep)[0])
    rng = np.random.default_rng(seed)
    # every schedule equally often; half the draws without data parallelism (no gradient reduction
    # to share a NIC with the pipeline's sends), so that many runs are contention-free
    picks = []
    for s in range(len(SCHEDULE_NAMES)):
        for pool in (np.nonzero(c.schedule == s)[0], np.nonzero((c.schedule == s) & (c.dp == 1))[0]):
            if len(pool):
                picks.append(rng.choice(pool, size=min(n // 16, len(pool)), replace=False))
    return base, c.take(np.concatenate(picks))


def _estimate(base, c):
    from simulator.whatif.analytic import estimate

    return estimate(CostModel(base), c)


@pytest.fixture(scope="module")
def sample():
    base, c = _sample(192, seed=3)
    return base, c, _estimate(base, c)


def test_agrees_with_engine_when_contention_free(sample, monkeypatch):
    base, c, est = sample
    watch = Contention(monkeypatch)
    checked = {s: 0 for s in SCHEDULE_NAMES}
    for i in range(len(c)):
        row = c.row(i)
        watch.count = 0
        engine_step = run(load_scenario(GPT3, overrides(row, base.model.layers, 8, base.gpus))).timeline.step_time
        analytic = est.step_time[i]
        assert analytic <= engine_step * (1 + 1e-9), row
        if watch.count == 0 and row["schedule"] in EXACT:
            assert analytic == pytest.approx(engine_step, rel=1e-6), label(row)
            checked[row["schedule"]] += 1
    assert sum(checked.values()) >= 15, checked  # enough contention-free layouts to mean something


def test_lower_bound_on_uneven_splits(monkeypatch):
    """Uneven splits (ties between stages) may leave the critical path outside the families: the
    analytic step time is then below the engine's, never above."""
    base, c = _sample(16, seed=5, gpus=128, even=False)
    est = _estimate(base, c)
    for i in range(len(c)):
        row = c.row(i)
        engine_step = run(load_scenario(GPT3, overrides(row, base.model.layers, 8, base.gpus))).timeline.step_time
        assert est.step_time[i] <= engine_step * (1 + 1e-9), row


def _uniform(name: str, p: int, m: int, v: int, F: float, B: float):
    st = structure(name, p, v, m)
    z = np.zeros((1, p, v))
    f, b = np.full((1, p, v), F / v), np.full((1, p, v), B / v)
    fb = f[..., :, None] + b[..., None, :]
    zp = np.zeros((1, p))
    return longest_paths(st, np.array([m]), f, b, z, fb, np.zeros((1, p, v, 2)), zp, zp, zp)[0][0]


@pytest.mark.parametrize("name", ["gpipe", "1f1b"])
@pytest.mark.parametrize("p, m", [(1, 4), (2, 1), (4, 3), (4, 16), (8, 8), (8, 40), (16, 17)])
def test_closed_form_gpipe_1f1b(name, p, m):
    assert _uniform(name, p, m, 1, 1.0, 2.0) == pytest.approx((m + p - 1) * 3.0, rel=1e-12)


@pytest.mark.parametrize("p, v, k", [(2, 2, 1), (4, 2, 2), (4, 3, 4), (8, 2, 5), (8, 4, 1)])
def test_closed_form_interleaved(p, v, k):
    m = k * p
    assert _uniform("interleaved", p, m, v, 1.0, 2.0) == pytest.approx(m * 3.0 + (p - 1) * 3.0 / v, rel=1e-12)


# --- tied stages: round trips the families miss (the exact pass, simulator.whatif.exact) ---------------

def _round_trips(p: int, m: int, F: float, B: float, s: float) -> float:
    """1F1B on p equal stages with a send of s seconds each way between neighbours: the warm-up and
    cool-down staircases collect 2(p - 1) sends, and in the steady state the critical path runs a round
    trip through all p stages each p micro-batches, 2(p - 1) more (to the micro-batch: rounded down)."""
    return (m + p - 1) * (F + B) + 2 * s * ((p - 1) + (m - 1) * (p - 1) // p)


def _tied_1f1b(p: int, m: int, F: float, B: float, s: float):
    """(Plan, f, b, w, send as (1, ...) arrays) of 1F1B on p equal stages: forwards sent on NVLink,
    backwards on the NIC, so that no link ever carries two transfers at once."""
    from simulator.cost.memory import Memory
    from simulator.schedules import SPECS
    from simulator.training.plan import Plan

    f, b, w = np.full((p, 1), F), np.full((p, 1), B), np.zeros((p, 1))
    send, tier = np.zeros((p, 1, 2)), np.zeros((p, 1, 2), dtype=np.int8)
    send[:-1, 0, 0], send[1:, 0, 1], tier[:-1, 0, 0], tier[1:, 0, 1] = s, s, 1, 2
    z = np.zeros
    plan = Plan(table=SPECS["1f1b"].table(p, m, 1), devices=np.arange(p), f=f, b=b, w=w,
                fb=f[:, :, None] + b[:, None, :], exposed_tp=z((p, 1, 3)), exposed_cp=z((p, 1, 3)), send=send,
                send_tier=tier, send_bytes=0.0, dp=z(p), dp_tier=np.full(p, 2, dtype=np.int8), param_gather=z(p),
                optimizer=z(p), memory=Memory(weights=0.0, gradients=0.0, optimizer=0.0, activations=0.0,
                                              kv_cache=0.0, capacity=1.0),
                traffic={"nvlink": 0.0, "scaleout": 0.0, "per_rank": z((p, 2))}, model_flops=0.0, hardware_flops=0.0)
    return plan, f[None], b[None], w[None], send[None]


@pytest.mark.parametrize("p, m", [(2, 1), (2, 2), (2, 7), (2, 32), (3, 5), (4, 8), (4, 11), (8, 16)])
def test_closed_form_1f1b_tied_stages(p, m):
    """ZeRO-3 makes every pass last its stage's parameter gather, so the two stages of a 2-stage 1F1B
    pipeline (both hold the tied embedding) tie; the engine's critical path then collects a send per
    micro-batch on round trips between them (TP8 CP4 PP2 mb2 on 64 A100: 32 sends, 28 past the
    families, 3.89 ms). Engine and exact pass give the closed form; the families alone fall short of it
    once the steady state holds a round trip; the tie rule sends such pipelines to the exact pass."""
    from simulator.schedules import SPECS
    from simulator.whatif.families import slot_durations
    from simulator.whatif.exact import exact_last_task_end, ties

    F, B, s = 0.6989784, 0.6989784, 1.38861e-4
    plan, f, b, w, send = _tied_1f1b(p, m, F, B, s)
    expected = _round_trips(p, m, F, B, s)
    timeline, shared_at = engine.simulate_step(plan)
    assert shared_at is None  # contention-free: the longest path is the step
    assert timeline.step_time == pytest.approx(expected, rel=1e-12)
    exact = exact_last_task_end("1f1b", p, 1, np.array([m]), f, b, w, None, send)
    assert exact.max() == pytest.approx(expected, rel=1e-12)
    st, zp, fb = structure("1f1b", p, 1, m), np.zeros((1, p)), f[..., :, None] + b[..., None, :]
    families = longest_paths(st, np.array([m]), f, b, w, fb, send, zp, zp, zp)[0][0]
    assert families <= expected * (1 + 1e-12)
    if m > p + 2:
        assert families < expected - s
    busy = (slot_durations(st, f, b, w, fb, send) * (st.total + (m - st.m_ref) * st.total_slope)[None]).sum(axis=2)
    assert ties("1f1b", True, SPECS["1f1b"].routes(p, 1), busy, send, np.array([m])).all()
    heavy = busy.copy()
    heavy[0, -1] += 4 * m * p * s  # a last stage heavier than any round trip could make up for
    assert not ties("1f1b", True, SPECS["1f1b"].routes(p, 1), heavy, send, np.array([m])).any()
    assert not ties("1f1b", False, SPECS["1f1b"].routes(p, 1), busy, send, np.array([m])).any()  # uneven: a bound


def _pick(base, gpus: int, **fields):
    """The candidate of enumerate_layouts(base, gpus) with these fields."""
    c = enumerate_layouts(base, gpus, SearchSpace(micro_batches=(fields["micro_batch"],)))
    keep = np.ones(len(c), dtype=bool)
    for key, value in fields.items():
        column = c.mb if key == "micro_batch" else getattr(c, key)
        if key == "schedule":
            value = SCHEDULE_NAMES.index(value)
        elif key == "recompute":
            value = RECOMPUTE_NAMES.index(value)
        keep &= column == value
    assert keep.sum() == 1, fields
    return c.take(np.nonzero(keep)[0])


@pytest.mark.parametrize("gpus, fields", [
    (64, dict(tp=8, cp=4, pp=2, dp=1, micro_batch=2, schedule="1f1b", zero=3, recompute="selective")),
    (64, dict(tp=4, cp=8, pp=2, dp=1, micro_batch=4, schedule="1f1b", zero=3, recompute="selective")),
    (128, dict(tp=2, cp=1, pp=8, dp=8, micro_batch=1, schedule="dualpipe", zero=3, recompute="selective")),
], ids=["1f1b-tp8-cp4", "1f1b-tp4-cp8", "dualpipe-pp8"])
def test_zero3_layouts_agree_with_engine(gpus, fields, monkeypatch):
    """The layouts this suite once failed on (analytic 46.19601 s against the engine's 46.19990 s for
    the first), contention-free: equal to the engine within 1e-9. The two 1F1B ones run round trips
    between their tied stages (the exact pass); the DualPipe one reaches a device's chain through the
    forward of the other direction just before it (a hop of the entry staircase)."""
    from simulator.whatif.analytic import estimate

    watch = Contention(monkeypatch)
    one_bucket = "layout.bucket_params=1000000000000"  # one gradient bucket keeps them contention-free
    # ZeRO-3 reduces beside the backward, as FSDP runs it (the A100 default puts Megatron-LM's of 2021 after it)
    fixed = [one_bucket, "layout.overlap_grad_reduce=true"]
    base = load_scenario(GPT3, [f"topology.domains={gpus // 8}", *fixed])
    c = _pick(base, gpus, **fields)
    step = run(load_scenario(GPT3, [*overrides(c.row(0), base.model.layers, 8, gpus), *fixed])).timeline.step_time
    assert watch.count == 0
    assert estimate(CostModel(base), c).step_time[0] == pytest.approx(step, rel=1e-9)


def test_families_hold_ties_outside_round_trip_schedules(monkeypatch):
    """exact.ROUND_TRIPS lists the schedules whose families miss round trips between tied stages: on
    the others, and on 1F1B where the tie rule leaves the families, the families give the exact pass's
    figures on GPT-3 layouts with even splits (ZeRO-3's gather-bound ones included), whether or not
    links are shared (the longest path is what both compute)."""
    import simulator.whatif.analytic as analytic
    from simulator.whatif.exact import ROUND_TRIPS

    base = load_scenario(GPT3, ["topology.domains=8"])
    c = enumerate_layouts(base, 64, SearchSpace(micro_batches=(1, 2, 4)))
    names = [SCHEDULE_NAMES.index(s) for s in ("gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2")]
    keep = (c.m <= 32) & np.isin(c.schedule, names)
    keep &= np.array([base.model.layers % virtual_stages(SCHEDULE_NAMES[s], p, v) == 0
                      for s, p, v in zip(c.schedule, c.pp, c.chunks)])
    pool = np.nonzero(keep)[0]
    c = c.take(np.random.default_rng(7).choice(pool, size=min(600, len(pool)), replace=False))
    assert set(ROUND_TRIPS) == {"1f1b"}
    families = analytic.estimate(CostModel(base), c).step_time
    monkeypatch.setattr(analytic, "ties", lambda schedule, even, routes, busy, *a, **k: np.ones(len(busy), bool))
    exact = analytic.estimate(CostModel(base), c).step_time
    np.testing.assert_allclose(families, exact, rtol=1e-8, atol=0)  # their sums differ in order: tens of ns

def test_dualpipe_families_hold_tied_zero3_stages(monkeypatch):
    """DualPipe and DualPipe-V are not in exact.ROUND_TRIPS: their F&B pairs break 1F1B's round trips, so on
    contention-free ZeRO-3 layouts of 2 and 4 stages (gather-bound passes: tied stages) the families alone
    equal the engine (a sample; 100 such layouts on 64-256 GPUs all agreed when the rule was set)."""
    from simulator.whatif.analytic import estimate

    watch = Contention(monkeypatch)
    base = load_scenario(GPT3, ["topology.domains=8"])
    c = enumerate_layouts(base, 64, SearchSpace(micro_batches=(1, 2)))
    keep = np.isin(c.schedule, [SCHEDULE_NAMES.index(s) for s in ("dualpipe", "dualpipe-v")])
    keep &= (c.zero == 3) & (c.pp <= 4) & (c.m <= 16)
    keep &= np.array([base.model.layers % virtual_stages(SCHEDULE_NAMES[s], p, v) == 0
                      for s, p, v in zip(c.schedule, c.pp, c.chunks)])
    c = c.take(np.random.default_rng(11).choice(np.nonzero(keep)[0], size=12, replace=False))
    analytic = estimate(CostModel(base), c).step_time
    free = 0
    for i in range(len(c)):
        watch.count = 0
        step = run(load_scenario(GPT3, overrides(c.row(i), base.model.layers, 8, base.gpus))).timeline.step_time
        if watch.count == 0:
            free += 1
            assert analytic[i] == pytest.approx(step, rel=1e-9), label(c.row(i))
    assert free >= 3


@pytest.mark.parametrize("name, v", [("gpipe", 1), ("1f1b", 1), ("interleaved", 2), ("interleaved", 3),
                                     ("zb-h1", 1), ("zb-h2", 1), ("zb-v", 2), ("dualpipe", 2), ("dualpipe-v", 2)])
@pytest.mark.parametrize("p", [2, 4, 6, 8])
def test_structure_extends_linearly(name, v, p):
    if name == "dualpipe" and p % 2:
        pytest.skip("dualpipe needs an even pp")
    m1, period = steady_from(name, p, v)
    linear = structure(name, p, v, m1 + period)
    for m in (m1 + period, m1 + 3 * period, m1 + 7 * period):
        table = SCHEDULES[name](p, m, v)
        exact = _extract(codes_of(table))[0]
        dm = m - linear.m_ref
        np.testing.assert_allclose(linear.total + linear.total_slope * dm, exact["total"][..., linear.used])
        np.testing.assert_allclose(linear.x_upto + linear.x_upto_slope * dm, exact["x_upto"][..., linear.used])
        np.testing.assert_allclose(linear.x_after + linear.x_after_slope * dm, exact["x_after"][..., linear.used])
        np.testing.assert_allclose(linear.ent_before + linear.ent_before_slope * dm,
                                   exact["ent_before"][..., linear.used])
        np.testing.assert_array_equal(linear.x_mask, exact["x_mask"])
        np.testing.assert_allclose(in_flight_of(linear, np.array([m]))[0], in_flight(table))


def test_memory_filter_matches_engine_reports(sample):
    """fits (analytic) is the report's fits_in_memory for the same layouts."""
    base, c, est = sample
    for i in range(0, len(c), 4):
        row = c.row(i)
        report = run(load_scenario(GPT3, overrides(row, base.model.layers, 8, base.gpus))).report
        assert bool(est.fits[i]) == report.fits_in_memory
        assert est.memory["total"][i] == pytest.approx(report.memory_bytes["total"], rel=1e-12)


def test_memory_first_and_shared_timings_change_nothing():
    """skip_oom (memory first, ZeRO 1/2 timed once) gives the same figures for the layouts that fit,
    to the last bits: a pipeline computed in another batch of rows can round differently (BLAS tiles
    the matrix products by position), so within 1e-13 relative; two worker processes give exactly
    the figures of one (the same batches)."""
    from simulator.whatif.analytic import estimate

    base = load_scenario(GPT3, ["topology.domains=16"])
    c = enumerate_layouts(base, 128, SearchSpace(micro_batches=(1, 2)))
    full = estimate(CostModel(base), c)
    fast = estimate(CostModel(base), c, skip_oom=True, workers=2)
    one = estimate(CostModel(base), c, skip_oom=True, workers=1)
    np.testing.assert_array_equal(full.fits, fast.fits)
    np.testing.assert_array_equal(full.memory["total"], fast.memory["total"])
    for name in ("step_time", "busy", "exposed_tp", "tail", "bubble"):
        np.testing.assert_allclose(getattr(fast, name)[fast.fits], getattr(full, name)[full.fits], rtol=1e-13,
                                   atol=0, err_msg=name)
        np.testing.assert_array_equal(getattr(one, name), getattr(fast, name), err_msg=name)
    assert np.isnan(fast.step_time[~fast.fits]).all()


def test_layer_costs_from_strides_equal_explicit_groups_exactly():
    """CostModel.layers (TP groups and CP rings from the ranks' strides, many keys at once) gives the
    seconds and bytes of one scenario's explicit groups bit for bit, and the replica groups from
    strides are Placement's."""
    base = load_scenario(GPT3, ["topology.domains=16"])
    c = enumerate_layouts(base, 128, SearchSpace(sequence_parallel="both"))
    cm = CostModel(base)
    keys = cm.layer_keys(c, True)[0] + cm.layer_keys(c, False)[0]
    rng = np.random.default_rng(0)
    for i in rng.choice(len(keys), size=40, replace=False):
        tp, cp, mb, sp, rec, split, (s_tp, s_cp), one_stage = keys[i]
        scn = cm.variant(tp=tp, cp=cp, pp=1 if one_stage else 2, mb=mb, sp=sp, recompute=RECOMPUTE_NAMES[rec])
        one = scenario_layer_keys(scn, build_op_table(scn), cm.fabric, np.arange(tp) * s_tp, np.arange(cp) * s_cp,
                                  split)
        expected = layer_costs(scn, one, cm.fabric, cm.cal)
        got = cm.layers([keys[i]])[0]
        np.testing.assert_array_equal(got[0], expected.passes[0])
        assert got[1:3] == (expected.send_bytes[0], expected.send_gather[0])
        np.testing.assert_array_equal(got[3], expected.activations[0])
    for tp, cp, pp in ((8, 1, 4), (2, 4, 2), (1, 2, 8), (4, 2, 1)):
        scn = cm.variant(tp=tp, cp=cp, pp=pp)
        placement = place(scn)
        devices = placement.pipeline(0)
        np.testing.assert_array_equal(
            replica_groups(placement.sizes, mesh_order(scn.layout), devices, ("tp", "pp")),
            placement.weight_replicas(devices))
        np.testing.assert_array_equal(cm.dp_groups(tp, cp, pp, 128 // (tp * cp * pp))[1],
                                      placement.weight_replicas(devices))


def test_layer_figures_are_shared_across_cluster_sizes_not_mesh_orders():
    """The cached layer figures and replica groups key on what they read (model, workload, device,
    fabric tiers, mesh order), not on the GPU count: a pass on 512 GPUs after one on 256 gives the
    figures of a pass on 512 alone, bit for bit; a cluster smaller than a leaf (another fabric) and
    another mesh order get their own."""
    import simulator.whatif.candidates as ac
    from simulator.whatif.analytic import estimate

    space = SearchSpace(micro_batches=(1, 2))
    ac._LAYER_CACHE.clear()
    base = load_scenario(GPT3, ["topology.domains=64"])
    alone = estimate(CostModel(base), enumerate_layouts(base, 512, space))
    ac._LAYER_CACHE.clear()
    smaller = load_scenario(GPT3, ["topology.domains=32"])  # Selene's leaves hold 20 nodes: same fabric
    estimate(CostModel(smaller), enumerate_layouts(smaller, 256, space))
    assert CostModel(smaller)._layer_cache is CostModel(base)._layer_cache
    after = estimate(CostModel(base), enumerate_layouts(base, 512, space))
    for name in ("step_time", "busy", "exposed_tp", "tail", "bubble"):
        np.testing.assert_array_equal(getattr(after, name), getattr(alone, name), err_msg=name)
    one_leaf = load_scenario(GPT3, ["topology.domains=16"])
    assert CostModel(one_leaf)._layer_cache is not CostModel(base)._layer_cache
    other = load_scenario(GPT3, ["topology.domains=64", "layout.order=[tp,dp,cp,ep,pp]"])
    assert CostModel(other)._dp_cache is not CostModel(base)._dp_cache


def test_fp8_params_memory_and_step_agree_with_the_engine():
    """With FP8 primary weights (layout.fp8_params) the search prices the weights and the parameter all-gather as
    the engine does: the same memory total and fits flag (exact) and no faster step, for layouts of every schedule
    with sharded state."""
    FP8 = ["topology.device=h100-sxm", "topology.domains=8", "workload.dtype=fp8",
           "layout.distributed_optimizer=true", "layout.fp8_params=true"]
    base = load_scenario(GPT3, FP8)
    c = enumerate_layouts(base, 64, SearchSpace(micro_batches=(1, 2)))
    keep = (c.m <= 16) & (c.zero >= 1) & np.array([base.model.layers % virtual_stages(SCHEDULE_NAMES[s], p, v) == 0
                                                   for s, p, v in zip(c.schedule, c.pp, c.chunks)])
    c = c.take(np.random.default_rng(5).choice(np.nonzero(keep)[0], size=8, replace=False))
    est = _estimate(base, c)
    for i in range(len(c)):
        report = run(load_scenario(GPT3, FP8 + overrides(c.row(i), base.model.layers, 8, base.gpus))).report
        assert est.memory["total"][i] == pytest.approx(report.memory_bytes["total"], rel=1e-12)
        assert bool(est.fits[i]) == report.fits_in_memory
        assert est.step_time[i] <= report.step_time_s * (1 + 1e-9)
