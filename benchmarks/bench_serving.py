"""Speed and memory of the request-level serving simulation (pytest-benchmark; `pytest benchmarks -m benchmark`).

- 10,000 requests of Llama 3 70B on 8 H100 (TP8), prefill-first and chunked: under 5 s median.
- A million requests of the same scenario (issue 17: under 60 s of CPU and 300 MiB, from 159 s and
  1.05 GiB), in a fresh process: CPU seconds of the simulation and its own peak memory (the
  process's peak resident bytes, VmHWM, less its resident bytes once the scenario is loaded). Side
  by side with the base commit (benchmarks/sidebyside.py) at 200,000 requests, where the old loop
  still fits a benchmark's time: the CPU ratio must reach 159/60 and the memory ratio 1.05 GiB/300
  MiB; at a million, the memory must stay under 300 MiB and the CPU under 60 s scaled by this
  machine's speed (the base's 200,000-request CPU seconds against the issue's 159 s / 5).
"""

from pathlib import Path

import pytest
from sidebyside import ROOT, both, probe, require_base

from simulator import load_scenario, run

pytestmark = pytest.mark.benchmark
SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
MIB = 2**20


@pytest.mark.benchmark(group="serving")
@pytest.mark.parametrize("chunked", [False, True], ids=["prefill-first", "chunked-prefill"])
def test_llama3_70b_10k_requests(benchmark, chunked):
    """10,000 requests of Llama 3 70B on 8 H100 (TP8), continuous batching at ~85% load: under 5 s median."""
    scenario = load_scenario(SCENARIOS / "serve-llama3-70b-h100.yaml",
                             [f"workload.chunked_prefill={str(chunked).lower()}"])
    report = benchmark(lambda: run(scenario).report)
    assert report.completed + report.rejected == report.requests == 10_000
    assert benchmark.stats.stats.median < 5.0


REQUESTS = '''
from simulator import load_scenario
from simulator.simulate import run
scn = load_scenario(sys.argv[2], [f"workload.arrivals.count={sys.argv[1]}"])
before = rss()
t = cpu()
report = run(scn).report
emit(cpu=cpu() - t, own=hwm() - before, peak=hwm(), completed=report.completed, steps=report.extra["steps"],
     tpot_p50=report.tpot_s["p50"])
'''


def _million():
    """Both codes on the base commit's copy of the scenario (the base code reads no newer field; this one reads
    the older ones) at 200,000 requests; this checkout alone on its own copy at a million."""
    scenario = "scenarios/serve-llama3-70b-h100.yaml"
    new, base = both(REQUESTS, args=(200_000, require_base() / scenario))
    return new, base, probe(REQUESTS, ROOT, args=(1_000_000, ROOT / scenario))


@pytest.mark.benchmark(group="serving-side-by-side")
def test_a_million_requests(benchmark):
    new, base, million = benchmark.pedantic(_million, rounds=1, iterations=1)
    cpu_ratio, mem_ratio = base["cpu"] / new["cpu"], base["own"] / new["own"]
    machine = base["cpu"] * 5 / 159  # this machine's time for what took 159 s at a million requests
    benchmark.extra_info.update(
        base_200k={"cpu_s": base["cpu"], "own_MiB": base["own"] / MIB}, new_200k={"cpu_s": new["cpu"],
                                                                                 "own_MiB": new["own"] / MIB},
        million={"cpu_s": million["cpu"], "own_MiB": million["own"] / MIB, "peak_MiB": million["peak"] / MIB,
                 "steps": million["steps"]},
        cpu_ratio=cpu_ratio, memory_ratio=mem_ratio, cpu_limit_s=60 * machine)
    assert new["completed"] == base["completed"] == 200_000 and million["completed"] == 1_000_000
    assert 0.5 < new["tpot_p50"] / base["tpot_p50"] < 2.0  # the same run, re-priced by the serving model (issue 15)
    assert cpu_ratio >= 159 / 60, f"{base['cpu']:.1f} s -> {new['cpu']:.1f} s at 200,000 requests"
    assert mem_ratio >= 1.05 * 1024 / 300, f"{base['own'] / MIB:.0f} MiB -> {new['own'] / MIB:.0f} MiB"
    assert million["own"] < 300 * MIB, f"{million['own'] / MIB:.0f} MiB at a million requests"
    assert million["cpu"] < 60 * machine, f"{million['cpu']:.1f} s at a million requests (limit {60 * machine:.1f})"
