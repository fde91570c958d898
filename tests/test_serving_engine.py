"""The serving engine's step loop (issue 17): the decode-only fast path, running totals, the step log
in numpy columns, and the memory-lean step invariants.

1. StepCosts.decode_stage_times(n, ctx.sum(), sampled) is stage_times(ones(n), ctx, sampled) within
   1e-15 relative (dense models, GQA and MLA, one and several pipeline stages);
2. a run with the fast path gives the timeline and report of the same run without it (every step
   through the general path): prefill-first, chunked prefill, preemption, disaggregation, pipelines;
3. the step log keeps narrow columns, widens one when a value needs it, and an engine's lane
   (replica * engines + engine) never overflows the column dtype;
4. the step invariants catch overlapping steps whatever the row order and lane count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator import load_scenario
from simulator.cost.fabric import fabric_for
from simulator.invariants import InvariantError, _check_steps
from simulator.serving.engine import Simulation
from simulator.serving.report import summarize_serving
from simulator.serving.steplog import StepLog
from simulator.serving.steps import step_costs

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "scenarios" / "serve-llama3-70b-h100.yaml"
CHUNKED = ROOT / "scenarios" / "serve-llama3-8b-h100-chunked.yaml"
DISAGG = ROOT / "scenarios" / "serve-llama3-70b-disaggregated.yaml"
MLA = ROOT / "scenarios" / "studies" / "long-context" / "mla.yaml"


@pytest.mark.parametrize("path, sets", [(SERVE, []), (SERVE, ["layout.pp=4", "layout.tp=2"]), (CHUNKED, []),
                                        (MLA, [])])
def test_decode_fast_path_costs_are_stage_times(path, sets):
    scn = load_scenario(path, sets)
    costs = step_costs(scn, fabric_for(scn.topology))
    rng = np.random.default_rng(1)
    for n in (1, 2, 31, 256):
        ctx = rng.integers(0, 9000, n).astype(float)
        for sampled in (n, max(1, n // 2)):
            want, want_flops = costs.stage_times(np.ones(n), ctx, sampled)
            got, got_flops = costs.decode_stage_times(n, float(ctx.sum()), sampled)
            np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
            assert got_flops == pytest.approx(want_flops, rel=1e-15)


def _run(scn, fast: bool, monkeypatch):
    monkeypatch.setattr(Simulation, "fast_decode", fast)
    sim = Simulation(scn)
    tl = sim.run()
    return tl, summarize_serving(scn, sim.memory, tl).to_dict()


@pytest.mark.parametrize("path, sets", [
    (SERVE, ["workload.arrivals.count=600"]),
    (SERVE, ["workload.arrivals.count=1500", "workload.admission=preempt", "workload.arrivals.rate=20"]),
    (SERVE, ["workload.arrivals.count=800", "workload.chunked_prefill=true", "workload.admission=preempt",
             "workload.arrivals.rate=20"]),
    (SERVE, ["workload.arrivals.count=600", "layout.pp=4", "layout.tp=2", "workload.admission=preempt",
             "workload.arrivals.rate=30"]),
    (DISAGG, ["workload.arrivals.count=400"]),
    (CHUNKED, ["workload.arrivals.count=200"]),
])
def test_fast_path_changes_no_figure(path, sets, monkeypatch):
    scn = load_scenario(path, sets)
    (fast, fast_report), (slow, slow_report) = _run(scn, True, monkeypatch), _run(scn, False, monkeypatch)
    assert (fast.steps["kind"] == 1).sum() > 0
    for name, col in slow.steps.items():
        np.testing.assert_allclose(fast.steps[name], col, rtol=1e-13, atol=0, err_msg=name)
    for name in ("first_token", "finish", "kv_tokens_peak"):
        np.testing.assert_allclose(getattr(fast, name), getattr(slow, name), rtol=1e-13, atol=0, err_msg=name)
    np.testing.assert_array_equal(fast.preemptions, slow.preemptions)
    assert fast.attn_flops == pytest.approx(slow.attn_flops, rel=1e-12)
    for key in ("completed", "rejected", "preemptions", "kv_cache_bytes_peak", "requests"):
        assert fast_report[key] == slow_report[key]
    assert fast_report["tpot_s"]["p99"] == pytest.approx(slow_report["tpot_s"]["p99"], rel=1e-12)


def test_step_log_columns_are_narrow_and_widen_when_needed():
    log = StepLog(replicas=3, engines=50, sequences=256, capacity=4)
    rows = [(2, 49, float(i), i + 0.5, 1, 256, 100 + i, 256, 1000.0 + i) for i in range(40000)]
    for row in rows:
        log.add(row, 2.0)
    log.add((0, 0, 1e5, 1e5 + 1, 0, 1, 70000, 1, 3e9), 1.0)
    cols = log.columns()
    assert len(cols["start"]) == len(log) == 40001
    assert cols["replica"].dtype == cols["engine"].dtype == np.int16  # 3 * 50 > 127
    assert int((cols["replica"] * 50 + cols["engine"])[0]) == 149
    assert cols["tokens"].dtype == np.int64 and cols["tokens"][-1] == 70000  # widened from int16
    assert cols["kv_tokens"][-1] == 3_000_000_000 and cols["kv_tokens"][5] == 1005
    np.testing.assert_array_equal(cols["start"][:40000], np.arange(40000.0))
    assert log.attn_flops == 80001.0


class _TL:
    def __init__(self, steps, engines, end_time):
        self.steps, self.engines, self.end_time = steps, engines, end_time
        self.roles = ("serve",) * (int(steps["replica"].max()) + 1)


def _steps(replica, engine, start, end):
    return {"replica": np.array(replica, np.int8), "engine": np.array(engine, np.int8),
            "start": np.array(start, float), "end": np.array(end, float)}


def test_step_invariants_in_any_row_order_and_lane_count():
    ok = _steps([0, 1, 0, 1], [0, 0, 0, 0], [2.0, 0.0, 0.0, 1.0], [3.0, 1.0, 1.0, 2.0])
    _check_steps(_TL(ok, 1, 3.0))
    one_lane_unsorted = _steps([0, 0, 0], [0, 0, 0], [2.0, 0.0, 1.0], [3.0, 1.0, 2.0])
    _check_steps(_TL(one_lane_unsorted, 1, 3.0))
    with pytest.raises(InvariantError, match="two steps at once"):
        _check_steps(_TL(_steps([0, 0, 0], [0, 0, 0], [2.0, 0.0, 0.5], [3.0, 1.0, 2.0]), 1, 3.0))
    overlap = _steps([0, 1, 0, 1], [1, 0, 1, 0], [1.5, 0.0, 0.0, 1.0], [3.0, 1.0, 2.0, 2.0])
    with pytest.raises(InvariantError, match="two steps at once"):
        _check_steps(_TL(overlap, 2, 3.0))
    backwards = _steps([0, 0], [0, 0], [0.0, 2.0], [1.0, 1.5])
    with pytest.raises(InvariantError, match="ended before it started"):
        _check_steps(_TL(backwards, 1, 3.0))
    busy = _steps([0, 0], [0, 0], [0.0, 1.0], [1.0, 2.5])
    with pytest.raises(InvariantError, match="busy longer"):
        _check_steps(_TL(busy, 1, 2.0))
