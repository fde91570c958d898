"""Speed of one simulated training step (pytest-benchmark; run with `pytest benchmarks -m benchmark`)."""

from pathlib import Path

import pytest

from simulator import load_scenario, simulate
from simulator.cost.fabric import _cached as fabric_cache

pytestmark = pytest.mark.benchmark
SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def _cold(scenario):
    """Simulate from a cold fabric cache, so topology reading is part of the measured time."""
    fabric_cache.cache_clear()
    return simulate(scenario)


@pytest.mark.benchmark(group="training-step")
@pytest.mark.parametrize("domains", [128, 2048], ids=["1024-gpus", "16384-gpus"])
def test_llama3_405b_step(benchmark, domains):
    """Llama 3 405B, TP8 PP16, 128 micro-batches: under 0.5 s, and flat in the DP degree."""
    scenario = load_scenario(SCENARIOS / "llama3-405b-h100.yaml",
                             [f"topology.domains={domains}",
                              f"workload.global_batch={128 * domains * 8 // 128}"])
    assert scenario.micro_batches == 128
    report = benchmark(_cold, scenario)
    assert report.step_time_s > 0


@pytest.mark.benchmark(group="training-step")
def test_gpt3_175b_interleaved(benchmark):
    """GPT-3 175B on 64 A100, interleaved with 3 chunks."""
    scenario = load_scenario(SCENARIOS / "gpt3-175b-selene.yaml")
    benchmark(_cold, scenario)
