"""Speed of simulating zero-bubble and DualPipe training steps (pytest-benchmark).

Run with `python -m pytest benchmarks/bench_schedules.py -m benchmark -q`. GPT-3 175B on 128 A100
(scenarios/gpt3-175b-selene.yaml with PP 16, TP 8, DP 1, 16 DGX nodes), one 2048-token sequence a
micro-batch, so the global batch is the number of micro-batches. Each round simulates one step
end to end (op table, placement, plan, simpy engine, report) from a cold fabric cache.
Issue 3: a DualPipe step with p = 16, m = 256 in under 0.5 s median.
"""

from pathlib import Path

import pytest

from simulator import load_scenario, simulate
from simulator.cost.fabric import _cached as fabric_cache

pytestmark = pytest.mark.benchmark
SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "gpt3-175b-selene.yaml"
LIMIT_S = 0.5


def _scenario(schedule: str, micro_batches: int):
    scn = load_scenario(SCENARIO, ["layout.pp=16", f"layout.schedule={schedule}", "layout.chunks=2",
                                   "topology.domains=16", f"workload.global_batch={micro_batches}"])
    assert (scn.layout.pp, scn.layout.dp, scn.micro_batches) == (16, 1, micro_batches)
    return scn


def _cold(scenario):
    """Simulate from a cold fabric cache, so topology reading is part of the measured time."""
    fabric_cache.cache_clear()
    return simulate(scenario)


def _check(benchmark, report):
    assert report.step_time_s > 0 and 0 <= report.bubble_fraction < 1
    if benchmark.stats is not None:  # None under --benchmark-disable
        assert benchmark.stats.stats.median < LIMIT_S


@pytest.mark.benchmark(group="schedules")
def test_dualpipe_p16_m256(benchmark):
    """DualPipe, p = 16, m = 256 (12,288 tasks in 8,506 slots): under 0.5 s median."""
    _check(benchmark, benchmark(_cold, _scenario("dualpipe", 256)))


@pytest.mark.benchmark(group="schedules")
def test_zb_v_p16_m128(benchmark):
    """ZB-V, p = 16, m = 128 (12,288 tasks): under 0.5 s median."""
    _check(benchmark, benchmark(_cold, _scenario("zb-v", 128)))
