"""Scale: a 101,376-GPU training step and 40,000 requests served by DeepSeek-V3 on 1,152 GPUs, time and
peak memory.

Run with `pytest benchmarks/bench_scale.py -m benchmark`. Time is pytest-benchmark's, and once more in
a fresh interpreter (load + simulate, cold caches); peak memory is measured in fresh subprocesses too
(resource.getrusage ru_maxrss: the whole interpreter with numpy, simpy, networkx and pydantic loaded;
and, in a second run, tracemalloc's peak of the simulation's own allocations, timed apart because
tracing slows allocation), so earlier tests in the session do not inflate them. Limits (issue 7):
under 10 s and under 2 GiB each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulator import load_scenario, simulate
from simulator.cost.fabric import _cached as fabric_cache

pytestmark = pytest.mark.benchmark
ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scenarios" / "scale" / "dense-2t-gb200-100k.yaml"
SERVE = ROOT / "scenarios" / "scale" / "deepseek-v3-serve-gb200-1152.yaml"
SECONDS, PEAK_BYTES = 10.0, 2 * 2**30

_PROBE = """
import json, resource, sys, time, tracemalloc
from simulator import load_scenario, simulate
kind, path, traced = sys.argv[1], sys.argv[2], sys.argv[3] == "traced"
if traced:
    tracemalloc.start()
t = time.perf_counter()
report = simulate(load_scenario(path))
seconds = time.perf_counter() - t
figure = report.step_time_s if kind == "train" else report.tpot_s["p50"]
print(json.dumps({"seconds": seconds, "traced_peak": tracemalloc.get_traced_memory()[1] if traced else None,
                  "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "figure": figure}))
"""


def _run_probe(kind: str, path: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, kind, str(path), mode], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def probe(kind: str, path: Path) -> dict:
    """Seconds and max resident bytes of one cold run in a fresh interpreter, and the traced peak
    bytes of the simulation's allocations from a second, traced run."""
    timed = _run_probe(kind, path, "timed")
    traced = _run_probe(kind, path, "traced")
    return {**timed, "traced_peak": traced["traced_peak"], "traced_seconds": traced["seconds"]}


def _cold(scenario):
    fabric_cache.cache_clear()
    return simulate(scenario)


@pytest.mark.benchmark(group="scale")
def test_dense_2t_on_101376_gpus(benchmark):
    """2.1T dense, TP8 PP32 DP396 on 1,408 NVL72 racks: one step simulated in < 10 s and < 2 GiB."""
    scenario = load_scenario(TRAIN)
    assert scenario.gpus == 101_376 and scenario.micro_batches == 64
    report = benchmark.pedantic(_cold, args=(scenario,), rounds=3, iterations=1)
    assert report.step_time_s > 0 and report.fits_in_memory
    figures = probe("train", TRAIN)
    benchmark.extra_info.update(figures)
    assert figures["seconds"] < SECONDS
    assert figures["maxrss"] < PEAK_BYTES and figures["traced_peak"] < PEAK_BYTES


@pytest.mark.benchmark(group="scale")
def test_deepseek_v3_serving_on_1152_gpus(benchmark):
    """DeepSeek-V3, 4 EP units of 288 GPUs on 16 racks, 40,000 requests: `simrack run`'s simulation in
    < 10 s and < 2 GiB."""
    scenario = load_scenario(SERVE)
    assert scenario.gpus == 1152 and scenario.workload.arrivals.count == 40_000
    report = benchmark.pedantic(_cold, args=(scenario,), rounds=3, iterations=1)
    assert report.completed == 40_000 and report.fits_in_memory
    figures = probe("serve", SERVE)
    benchmark.extra_info.update(figures)
    assert figures["seconds"] < SECONDS
    assert figures["maxrss"] < PEAK_BYTES and figures["traced_peak"] < PEAK_BYTES
