"""scenarios/studies/stragglers: the README's slowdowns against closed forms, from the committed results.csv
and one healthy plan (a fraction of a second).

A straggler slowing stage k's compute by s: the step is at least the slow stage's slowed work (it must do
all of it) and at most the healthy step plus that extra work (every extra second on the critical path);
with synchronous data parallelism the slowdown does not depend on the number of replicas. The healthy
interleaved step is (v m + p - 1) t / v for a stage time t a micro-batch, its bubble (p-1)/(v m + p-1).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from study_tables import read_rows

STUDY = Path(__file__).resolve().parents[2] / "scenarios" / "studies" / "stragglers" / "study.py"
spec = importlib.util.spec_from_file_location("stragglers_study", STUDY)
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)

P, V, M = 16, 2, 16  # Meta's layout: 16 stages, 2 chunks, 16 micro-batches a pipeline


def rows(table: str) -> list[dict]:
    return [r for r in read_rows(STUDY.parent / "results.csv") if r["table"] == table]


def test_every_straggler_within_its_bounds():
    checked = 0
    for r in rows("main") + rows("bubble"):
        if r["fault"].startswith("GPU"):
            assert r["bound_low"] - 1e-9 <= r["slowdown"] <= r["bound_high"] + 1e-9, r["fault"]
            checked += 1
    assert checked == 2 * 9 + 6


def test_same_slowdown_at_1k_and_16k_and_the_bill_scales():
    main = rows("main")
    by = {(r["size"], r["fault"]): r for r in main}
    for (size, fault), r in by.items():
        if size == "1k":
            big = by[("16k", fault)]
            assert big["slowdown"] == pytest.approx(r["slowdown"], abs=0.012)
        assert r["gpu_hours_lost_per_step"] == pytest.approx(
            (r["step_s"] - r["healthy_step_s"]) * r["gpus"] / 3600, rel=1e-9)
        assert r["step_s"] == pytest.approx(r["slowdown"] * r["healthy_step_s"], rel=1e-9)


def test_healthy_step_and_bubble_are_the_interleaved_closed_forms():
    """t = the busiest stage's F + B a micro-batch (its busy seconds / m); step (v m + p - 1) t / v to 2%,
    bubble (p-1)/(v m + p-1) = 31.9% to a point."""
    scn = study.scenario(study.SIZES["16k"])
    busy = study.stage_work(scn, 8)["busy_s"]  # a middle stage: 8 layers, the busiest
    t = busy / M
    step = rows("main")[-1]["healthy_step_s"]
    assert step == pytest.approx((V * M + P - 1) * t / V, rel=0.02)
    bubble = next(r["bubble_healthy"] for r in rows("bubble") if r["micro_batches"] == M)
    assert bubble == pytest.approx((P - 1) / (V * M + P - 1), abs=0.01)


def test_a_small_bubble_puts_the_straggler_on_the_critical_path():
    """At 128 micro-batches (bubble (p-1)/(v m + p-1) = 5.5%) the 2x GPU costs more than at Meta's 16
    micro-batches in every stage: within 0.06 of the upper bound (all its extra work on the critical path)
    in the middle and last stages, and at the lower bound (its own slowed work is the step) in the first,
    whose 7 layers leave it slack."""
    bub = rows("bubble")
    small = {r["fault"]: r for r in bub if r["micro_batches"] == 128}
    large = {r["fault"]: r for r in bub if r["micro_batches"] == M}
    for fault, r in small.items():
        if "first" in fault:
            assert r["slowdown"] == pytest.approx(r["bound_low"], abs=0.01)
        else:
            assert r["slowdown"] >= r["bound_high"] - 0.06
        assert r["slowdown"] > large[fault]["slowdown"] + 0.15
        assert r["bubble_healthy"] == pytest.approx((P - 1) / (V * 128 + P - 1), abs=0.01)


def test_stages_are_placed_where_the_faults_say():
    """The straggler GPUs sit in the first, a middle and the last stage of the layout's mesh (tp, cp, pp,
    ep, dp innermost first: stage k's first GPU is 8 k)."""
    scn = study.scenario(study.SIZES["1k"])
    assert [study.first_gpu(scn, k) for k in (0, 8, 15)] == [0, 64, 120]
    for r in rows("main"):
        if r["fault"].startswith("GPU"):
            stage = study.STAGES[r["fault"].split(", ")[1].split()[0]]
            assert r["dominant"].startswith(f"stage {stage} ")
