"""Search refinement (simulator.whatif.refine): the engine's figures for the best layouts, and which of
them the analytic ranking could not give exactly.

1. refine() gives the Point evaluate() gives (the report of `simrack run` with the same --set), for
   layouts that share links and layouts that do not, and plans that time the same share one engine run
   without changing any figure;
2. a layout is marked refined exactly when its analytic figure can be a bound: shared links (the
   engine's event-driven pass ran), zb-v, an uneven split; the unrefined ones' analytic step time is the
   engine's within 1e-6 relative (docs/whatif.md);
3. the search table, JSON and CSV say which layouts were refined and why.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import simulator.whatif.refine as refine_mod
from simulator.output.whatif_tables import search_csv, search_json, search_table
from simulator.whatif.refine import refine, refine_all
from simulator.whatif.search import search
from simulator.whatif.sweep import Job, evaluate

ROOT = Path(__file__).resolve().parents[1]
GPT3 = str(ROOT / "scenarios" / "gpt3-175b-selene.yaml")
LLAMA = str(ROOT / "scenarios" / "llama3-405b-h100.yaml")
SETS = [
    (GPT3, ()),  # interleaved, DP 1 on 64 GPUs: no link shared
    (GPT3, ("layout.schedule=zb-v", "layout.chunks=2", "layout.pp=8")),  # zb-v: analytic is a bound
    (GPT3, ("topology.domains=16", "layout.zero=1")),  # DP 2 on NICs beside the pipeline's sends
    (GPT3, ("topology.domains=16", "layout.zero=2")),  # the same timing as ZeRO 1
    (LLAMA, ("topology.domains=128", "workload.global_batch=1024")),  # uneven split, DP 8
    (GPT3, ("layout.tp=7",)),  # invalid
]


def _jobs():
    return [Job(i, path, sets, {}) for i, (path, sets) in enumerate(SETS)]


def test_refine_gives_what_evaluate_gives():
    jobs = _jobs()
    together = refine_all(jobs)
    for job, (point, why) in zip(jobs, together):
        alone, why_alone = refine(job)
        assert point == alone == evaluate(job)
        assert why == why_alone


def test_refine_over_workers_gives_the_same_points():
    """The distinct engine runs spread over forked workers (a search's default) change no figure and no order:
    the invalid layout, the two ZeRO stages that share a run and the rest, as one process gives them."""
    jobs = _jobs()
    assert refine_all(jobs, workers=2) == refine_all(jobs, workers=1)


def test_plans_that_time_the_same_share_one_engine_run(monkeypatch):
    calls = []
    original = refine_mod.simulate_step
    monkeypatch.setattr(refine_mod, "simulate_step", lambda plan: calls.append(1) or original(plan))
    jobs = [j for j in _jobs() if j.index in (2, 3)]
    points = refine_all(jobs)
    assert len(calls) == 1
    a, b = (p.report for p, _ in points)
    assert a["step_time_s"] == b["step_time_s"] and a["layout"]["zero"] != b["layout"]["zero"]


def test_which_layouts_are_refined_and_why():
    whys = [why for _, why in refine_all(_jobs())]
    assert whys[0] == ""
    assert whys[1].startswith("zb-v") or "zb-v" in whys[1]
    assert "shared links" in whys[2] and whys[2] == whys[3]
    assert "uneven split" in whys[4]
    assert whys[5] == ""  # invalid: nothing was refined


@pytest.fixture(scope="module")
def result():
    return search(GPT3, gpus=[64], top=8, workers=1)


def test_unrefined_layouts_keep_their_analytic_figure(result):
    exact = [r for r in result.refined if r.status == "ok" and not r.refined and r.analytic]
    for r in exact:
        assert r.analytic["step_time_s"] == pytest.approx(r.report["step_time_s"], rel=1e-6), r.label
    for r in result.refined:
        if r.status == "ok" and r.analytic:
            assert r.analytic["step_time_s"] <= r.report["step_time_s"] * (1 + 1e-9)
    # DualPipe-V pairs send both ways on one NIC at once: refined; the scenario's interleaved layout: exact
    assert exact and all("shared links" in r.refined for r in result.refined if r.label.count("dualpipe"))


def test_outputs_say_which_were_refined(result):
    data = json.loads(search_json(result))
    for r, out in zip(result.refined, data["refined"]):
        assert out["refined"] == bool(r.report is not None and r.refined)
        assert out["refined_because"] == (r.refined or None)
    assert "refined" in search_csv(result).splitlines()[0].split(",")
    assert "refined" in [c.header for c in search_table(result, "t").columns]
