"""Korthikanti et al. 2022 iteration times, reproduced by the shipped scenarios with one calibration.

Tolerance: mean absolute error <= 5% and max <= 10% over the 8 cases (the issue's bar); each case
also within 10%. The published analytical simulator cited in the issue reaches 3.65% / 8.87%.
"""

from pathlib import Path

import numpy as np
import pytest

from simulator import load_scenario, simulate
from simulator.data import VALIDATION_DIR, reference

ROOT = Path(__file__).resolve().parents[2]
SIZES, MODES = ("22B", "175B", "530B", "1T"), ("full", "seqsel")
CASE = reference()["korthikanti2022_iteration_times"]


def published():
    return CASE["reported"]


@pytest.fixture(scope="module")
def results():
    ref = published()
    out = {}
    for size in SIZES:
        for mode in MODES:
            scn = load_scenario(VALIDATION_DIR / f"korthikanti-{size.lower()}-{mode}.yaml")
            out[size, mode] = (simulate(scn), ref["iteration_time_s"][size][mode])
    return out


def test_scenarios_match_the_published_configs(results):
    models = CASE["config"]["models"]
    for (size, _), (report, _) in results.items():
        m = models[size]
        lay = report.layout
        assert (report.gpus, lay["tp"], lay["pp"], lay["micro_batch"]) == (m["gpus"], m["tp"], m["pp"],
                                                                            m["microbatch"])


def test_iteration_times_mean_and_max_error(results):
    errors = np.array([abs(r.step_time_s - pub) / pub for r, pub in results.values()])
    assert errors.mean() <= 0.05, f"mean abs error {errors.mean():.3%}"
    assert errors.max() <= 0.10, f"max abs error {errors.max():.3%}"


def test_mfu_of_seqsel_within_ten_percent(results):
    ref = published()["mfu_seqsel_pct"]
    for size in SIZES:
        report, _ = results[size, "seqsel"]
        assert report.mfu * 100 == pytest.approx(ref[size], rel=0.10)


def test_selective_recompute_speedup(results):
    """Sequence parallelism + selective recompute is 29-32% faster than full recompute (paper's
    derived speedup); simulated within 10 percentage points."""
    derived = CASE["derived"]["speedup_pct"]
    for size in SIZES:
        full, _ = results[size, "full"]
        sel, _ = results[size, "seqsel"]
        speedup = 100 * (full.step_time_s / sel.step_time_s - 1)
        assert speedup == pytest.approx(derived[size], abs=10), size
