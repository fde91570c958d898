"""Speed of the request-level serving simulation (pytest-benchmark; run with `pytest benchmarks -m benchmark`)."""

from pathlib import Path

import pytest

from simulator import load_scenario, run

pytestmark = pytest.mark.benchmark
SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


@pytest.mark.benchmark(group="serving")
@pytest.mark.parametrize("chunked", [False, True], ids=["prefill-first", "chunked-prefill"])
def test_llama3_70b_10k_requests(benchmark, chunked):
    """10,000 requests of Llama 3 70B on 8 H100 (TP8), continuous batching at ~85% load: under 5 s median."""
    scenario = load_scenario(SCENARIOS / "serve-llama3-70b-h100.yaml",
                             [f"workload.chunked_prefill={str(chunked).lower()}"])
    report = benchmark(lambda: run(scenario).report)
    assert report.completed + report.rejected == report.requests == 10_000
    assert benchmark.stats.stats.median < 5.0
