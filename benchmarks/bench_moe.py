"""Speed of one simulated DeepSeek-V3 training step (pytest-benchmark; `pytest benchmarks -m benchmark`).

scenarios/deepseek-v3-h800.yaml: 2048 H800, PP16 DualPipe, EP64 over 8 nodes, 120 micro-batches,
with Zipf-skewed routing (skew 1.0: per-rank loads differ, the slowest rank sets each MoE layer) and
the de-duplicated dispatch's token sample. Issue 4: under 1 s median, from a cold fabric cache.
"""

from pathlib import Path

import pytest

from simulator import load_scenario, simulate
from simulator.cost.fabric import _cached as fabric_cache

pytestmark = pytest.mark.benchmark
SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "deepseek-v3-h800.yaml"
LIMIT_S = 1.0


def _cold(scenario):
    fabric_cache.cache_clear()
    return simulate(scenario)


@pytest.mark.benchmark(group="moe-step")
@pytest.mark.parametrize("placement", ["contiguous", "load_balanced"])
def test_deepseek_v3_step_skewed(benchmark, placement):
    scenario = load_scenario(SCENARIO, ["workload.routing.kind=zipf", "workload.routing.skew=1.0",
                                        f"layout.expert_placement={placement}"])
    assert scenario.gpus == 2048
    report = benchmark(_cold, scenario)
    assert report.extra["ep"]["load_imbalance"] > 1.0
    assert benchmark.stats.stats.median < LIMIT_S
