"""Speed of layout search (pytest-benchmark; `python -m pytest benchmarks/bench_search.py -m benchmark`).

- analytic-rank: enumerate every valid GPT-3 175B layout on 1,024 / 2,048 / 4,096 A100 (global batch
  1536) and rank them with the vectorized pass (memory filter, step time, sort), on all cores; the
  candidates per second (fastest and median round) are in extra_info.
  - "warm" keeps the schedule structures and layer costs that an earlier pass in the process built:
    the ranking pass itself; must reach 100,000 a second (2-core machine).
  - "range" is one search over all three GPU counts from a fresh process's state (every cache
    cleared first), as `simrack search --gpus 1024,2048,4096` ranks them: the schedule structures
    built for the first count serve the others; must reach 100,000 a second.
  - "cold" is one GPU count from a fresh process's state: it includes the one-time build of the
    schedule structures (about 0.35 s of CPU on this machine); reported, not asserted.
- search-end-to-end: `simrack search` of Llama 3 405B on 16,384 H100, engine refinement of the top
  10 included, from a fresh process's state; every round must finish within 30 s. Side by side with
  the base commit and with the commit issue 17 timed (benchmarks/sidebyside.py), wall-clock seconds
  of one search in a fresh process (imports excluded), the faster of two processes each: as many
  layouts refined, and at least 11/3 times faster than the code the issue timed (its target: under 3 s
  where that code took 11-14 s). The ratio to the base commit, whose physics core (issue 13) had
  already made that search faster, is reported beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sidebyside import both, probe, require_issue_base

import simulator.whatif.analytic as analytic
import simulator.whatif.candidates as candidates
import simulator.whatif.exact as exact
import simulator.whatif.families as families
import simulator.whatif.space as layouts
import simulator.whatif.structures as structures
from simulator import load_scenario
from simulator.cost.fabric import _cached as fabric_cache
from simulator.whatif.search import search
from simulator.whatif.space import enumerate_layouts
from simulator.whatif.sweep import default_workers

pytestmark = pytest.mark.benchmark
SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
LLAMA_405B = Path(__file__).resolve().parent / "llama3-405b-1f1b.yaml"  # TP8 PP16 1F1B, the rail fabric


def _clear():
    structures.STRUCTURES.clear()
    families._EXIT_CACHE.clear()
    exact.GRAPHS.clear()
    candidates._projection.cache_clear()
    candidates._LAYER_CACHE.clear()
    candidates._grid.cache_clear()
    fabric_cache.cache_clear()
    layouts._schedules.cache_clear()


def _rank(base, gpus):
    cands = enumerate_layouts(base, gpus)
    est = analytic.estimate(candidates.CostModel(base), cands, workers=default_workers(), skip_oom=True)
    fits = np.nonzero(est.fits)[0]
    order = fits[np.argsort(est.step_time[fits], kind="stable")]
    return len(cands), order


def _base(gpus: int):
    return load_scenario(SCENARIOS / "gpt3-175b-selene.yaml",
                         ["workload.global_batch=1536", f"topology.domains={gpus // 8}"])


def _rate(benchmark, n: int) -> float:
    """Candidates a second in the fastest round, the figure asserted: the machine is shared with other
    sessions, whose load only ever adds time, so the fastest round is the code's speed (timeit's
    advice). The median round's rate is recorded beside it."""
    stats = benchmark.stats.stats
    benchmark.extra_info["candidates"] = n
    benchmark.extra_info["candidates_per_s_median"] = n / stats.median
    benchmark.extra_info["candidates_per_s_best"] = n / stats.min
    return n / stats.min


@pytest.mark.benchmark(group="analytic-rank")
@pytest.mark.parametrize("cache", ["warm", "cold"])
@pytest.mark.parametrize("gpus", [1024, 2048, 4096])
def test_rank_gpt3_175b(benchmark, gpus, cache):
    base = _base(gpus)
    if cache == "warm":
        _rank(base, gpus)
        n, order = benchmark(_rank, base, gpus)
    else:
        n, order = benchmark.pedantic(_rank, args=(base, gpus), setup=_clear, rounds=5, iterations=1)
    benchmark.extra_info["fit_in_memory"] = int(len(order))
    rate = _rate(benchmark, n)
    assert len(order) > 0
    if cache == "warm":
        assert rate >= 100_000, f"{rate:,.0f} candidates/s"


@pytest.mark.benchmark(group="analytic-rank")
def test_rank_gpt3_175b_range(benchmark):
    bases = [(_base(g), g) for g in (1024, 2048, 4096)]
    run = lambda: [_rank(base, g) for base, g in bases]  # noqa: E731
    parts = benchmark.pedantic(run, setup=_clear, rounds=5, iterations=1)
    rate = _rate(benchmark, sum(n for n, _ in parts))
    assert all(len(order) > 0 for _, order in parts)
    assert rate >= 100_000, f"{rate:,.0f} candidates/s"


@pytest.mark.benchmark(group="search-end-to-end")
def test_search_llama3_405b_16384_gpus(benchmark):
    path = LLAMA_405B

    def run():
        _clear()
        return search(path, gpus=[16384], top=10)

    res = benchmark.pedantic(run, rounds=2, iterations=1)
    benchmark.extra_info["candidates"] = res.counts["enumerated"]
    benchmark.extra_info["analytic_s"] = res.timings["analytic"]
    benchmark.extra_info["engine_s"] = res.timings["engine"]
    assert res.best is not None and len(res.refined) >= 10
    assert benchmark.stats.stats.max < 30.0, f"{benchmark.stats.stats.max:.1f} s end to end"


SEARCH = '''
from simulator.whatif.search import search
t = time.perf_counter()
res = search("benchmarks/llama3-405b-1f1b.yaml", gpus=[16384], top=10)
emit(seconds=time.perf_counter() - t, timings=res.timings, best=res.best.label, step=res.best.report["step_time_s"],
     ranked=[(r.label, r.report and r.report["step_time_s"]) for r in res.refined],
     refined=[getattr(r, "refined", None) for r in res.refined])
'''


ISSUE_SEARCH = SEARCH.replace("simulator.whatif.search", "simulator.search")  # where the search lived then


def _faster_of_two():
    """(this checkout, the base commit, issue 17's commit): the faster of two fresh processes each."""
    issue = require_issue_base()
    runs = [(*both(SEARCH), probe(ISSUE_SEARCH, issue)) for _ in range(2)]
    return tuple(min((r[i] for r in runs), key=lambda x: x["seconds"]) for i in (0, 1, 2))


@pytest.mark.benchmark(group="search-end-to-end")
def test_search_llama3_405b_16384_gpus_against_the_base(benchmark):
    new, base, issue = benchmark.pedantic(_faster_of_two, rounds=1, iterations=1)
    speedup = issue["seconds"] / new["seconds"]
    benchmark.extra_info.update(new_s=new["seconds"], base_s=base["seconds"], issue_s=issue["seconds"],
                                speedup=speedup, speedup_over_base=base["seconds"] / new["seconds"],
                                new_timings=new["timings"], base_timings=base["timings"],
                                issue_timings=issue["timings"], refined=new["refined"])
    benchmark.extra_info.update(new_best=new["best"], base_best=base["best"], issue_best=issue["best"])
    # this round's device model (issue 14) re-prices the layouts, so the best may differ: the same search, sized alike
    assert len(new["ranked"]) == len(base["ranked"]) == len(issue["ranked"]) and new["step"] > 0
    assert speedup >= 11 / 3, f"{issue['seconds']:.2f} s -> {new['seconds']:.2f} s"
