"""The invariants hold on real runs of every schedule, and catch a corrupted timeline or report."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from simulator import load_scenario, run
from simulator.invariants import InvariantError, check_training

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
