"""The invariants hold on real runs of every schedule, and catch a corrupted timeline or report."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from simulator import load_scenario, run
from simulator.invariants import InvariantError, check_plan, check_serving, check_training

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "gpt3-175b-selene.yaml"
SCHEDULES = [("gpipe", 1), ("1f1b", 1), ("interleaved", 3), ("zb-h1", 1), ("zb-h2", 1), ("zb-v", 2),
             ("dualpipe", 2), ("dualpipe-v", 2)]


def _run(schedule="1f1b", chunks=1):
    scn = load_scenario(SCENARIO, [f"layout.schedule={schedule}", f"layout.chunks={chunks}",
                                   "workload.global_batch=16"])
    return run(scn)


@pytest.mark.parametrize("schedule, chunks", SCHEDULES, ids=[s for s, _ in SCHEDULES])
def test_real_runs_satisfy_every_invariant(schedule, chunks):
    r = _run(schedule, chunks)
    check_training("selene", r.plan, r.timeline, r.report)


def test_a_task_moved_before_its_input_is_caught():
    r = _run()
    tl = r.timeline
    victim = int(np.nonzero((tl.kind == 0) & (tl.device == 1))[0][0])  # needs stage 0's forward
    start = tl.start.copy()
    start[victim] = 0.0
    with pytest.raises(InvariantError, match="selene: invariant violated: .*before their inputs"):
        check_training("selene", r.plan, replace(tl, start=start), r.report)


def test_overlapping_tasks_on_one_stage_are_caught():
    r = _run()
    tl = r.timeline
    rows = np.nonzero(tl.device == 0)[0]
    end = tl.end.copy()
    end[rows[0]] = tl.end[rows[1]] + 1.0  # first task now runs past the start of the second
    with pytest.raises(InvariantError, match="two tasks at once|busy longer|before their inputs"):
        check_training("selene", r.plan, replace(tl, end=end), r.report)


def test_memory_that_does_not_add_up_is_caught():
    r = _run()
    bad = replace(r.report, memory_bytes={**r.report.memory_bytes, "total": r.report.memory_bytes["total"] + 1e9})
    with pytest.raises(InvariantError, match="memory categories"):
        check_training("selene", r.plan, r.timeline, bad)


def test_bubble_out_of_range_is_caught():
    r = _run()
    with pytest.raises(InvariantError, match="bubble fraction"):
        check_training("selene", r.plan, r.timeline, replace(r.report, bubble_fraction=1.0))


# --- serving, and the checks simulate.run makes on its own ------------------------------------------

SERVE = Path(__file__).resolve().parents[1] / "scenarios" / "serve-llama3-8b-h100-chunked.yaml"


def _serve(overrides=()):
    return run(load_scenario(SERVE, ["workload.arrivals.count=200", *overrides]))


@pytest.mark.parametrize("overrides", [(), ("workload.admission=preempt", "workload.chunked_prefill=false")])
def test_real_serving_runs_satisfy_every_invariant(overrides):
    r = _serve(overrides)
    check_serving("serve", r.timeline, r.report, r.report.kv_cache_tokens_capacity)


def test_a_lost_request_is_caught():
    r = _serve()
    finish = r.timeline.finish.copy()
    finish[3] = np.nan  # neither completed nor rejected
    with pytest.raises(InvariantError, match="serve: invariant violated: 1 requests neither"):
        check_serving("serve", replace(r.timeline, finish=finish), r.report, r.report.kv_cache_tokens_capacity)


def test_overlapping_steps_and_an_overfull_cache_are_caught():
    r = _serve()
    tl = r.timeline
    steps = {**tl.steps, "end": tl.steps["end"].copy()}
    steps["end"][0] = tl.steps["end"][1] + 1.0
    with pytest.raises(InvariantError, match="two steps at once|busy longer"):
        check_serving("serve", replace(tl, steps=steps), r.report, r.report.kv_cache_tokens_capacity)
    with pytest.raises(InvariantError, match="KV cache held"):
        check_serving("serve", tl, r.report, int(tl.kv_tokens_peak.max()) - 1)


def test_simulate_checks_invariants_and_the_cli_reports_a_bug(monkeypatch, tmp_path):
    """simulate.run checks every run: a summary that breaks a rule raises, and `simrack run` prints one
    line naming the scenario, exits 3 and writes no file."""
    import importlib

    from typer.testing import CliRunner

    from simulator.cli import app

    simulate = importlib.import_module("simulator.simulate")  # the package exports a function of that name

    real = simulate.summarize
    monkeypatch.setattr(simulate, "summarize", lambda *a: replace(real(*a), bubble_fraction=1.5))
    with pytest.raises(InvariantError, match="gpt3-175b-selene: invariant violated: bubble fraction 1.5"):
        run(load_scenario(SCENARIO, ["workload.global_batch=16"]))
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["run", str(SCENARIO), "--set", "workload.global_batch=16", "--json", str(out)])
    assert result.exit_code == 3 and not out.exists()
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("simrack: bug") and "gpt3-175b-selene" in line


def test_a_plan_with_infinite_seconds_is_caught_before_the_engine():
    r = _run()
    send = r.plan.send.copy()
    send.flat[0] = np.inf
    check_plan("selene", r.plan)
    with pytest.raises(InvariantError, match="selene: invariant violated: non-finite seconds in the plan's send"):
        check_plan("selene", replace(r.plan, send=send))
