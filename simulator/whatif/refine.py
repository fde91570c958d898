"""Search refinement: the engine's figures for the search's best layouts, and which of them the analytic
ranking could not give exactly.

The analytic pass (simulator.whatif.analytic) computes the engine's longest path exactly when three
things hold (docs/whatif.md, "Agreement, precisely"): the schedule's path families cover its critical
path (every schedule but zb-v), the layers split evenly over the virtual stages, and no link ever
carries two transfers at once. Such a layout cannot move in the ranking when the engine re-simulates
it; the others can only fall (the analytic figure is a lower bound), and those are the layouts the
engine *refines*. Each layout's Plan is built and its step run through the engine's longest-path pass,
which is the analytic pass's computation on one layout and gives the report its per-stage figures;
the event-driven pass, the engine's costly part, runs only where that pass finds two transfers
sharing a link (simulator.training.engine). Layouts whose plans time the same (ZeRO 1 and 2 differ in
memory only) share one engine run; refine_all spreads the distinct runs over worker processes. Each result
says why the layout was refined ("" when its analytic figure is exact): "shared links", the schedule,
"uneven split", or "faults".
"""

from __future__ import annotations

import numpy as np

from ..scenario.base import ScenarioError
from ..scenario.overrides import as_scenario
from ..schedules import SPECS
from ..simulate import run, training_plan, training_result
from ..training.engine import simulate_step
from . import workers as forked
from .sweep import Job, Point, out_of_memory_text

BOUND_ONLY = ("zb-v",)
"""Schedules whose analytic families are a lower bound even without contention (ZB-V's cool-down can
hop between two devices' chains)."""


def static_reasons(scn) -> list[str]:
    """Why a scenario's analytic step time can only be a bound, before any timing: its schedule, an
    uneven stage split, faults."""
    lay, why = scn.layout, []
    if lay.schedule in BOUND_ONLY:
        why.append(f"{lay.schedule} (analytic is a bound)")
    stages = SPECS[lay.schedule].virtual_stages(lay.pp, lay.chunks)
    split = lay.stage_layers
    if (split is not None and len(set(split)) > 1) or (split is None and scn.model.layers % stages):
        why.append("uneven split")
    if scn.faults is not None:
        why.append("faults")
    return why


def _timing_key(plan) -> tuple:
    """What the engine reads from a Plan: equal keys, equal timelines."""
    t = plan.table
    arrays = (plan.f, plan.b, plan.w, plan.fb, plan.send, plan.send_tier, plan.dp, plan.dp_tier, plan.optimizer,
              plan.param_gather, plan.task_scale if plan.task_scale is not None else np.zeros(0))
    return (t.name, t.p, t.m, t.v) + tuple((a.dtype.str, a.shape, a.tobytes()) for a in map(np.asarray, arrays))


def refine(job: Job) -> tuple[Point, str]:
    """(the Point evaluate() would give for this job, why its analytic figure is not exact: "" when it
    is)."""
    prepared = _prepare(job)
    if isinstance(prepared[0], Point):
        return prepared
    return _finish(job, prepared, _step(prepared[2]))


def _prepare(job: Job):
    """(scenario, fabric, Plan, why) of a training job the engine runs, or its final (Point, why) already:
    invalid, failed, or a run without the engine's shared step (faults, serving)."""
    try:
        scn = as_scenario(job.path if job.scenario is None else job.scenario, job.overrides)
        why = static_reasons(scn)
        if scn.faults is not None or scn.workload.kind != "train":
            return _point(job, run(scn).report, why)
        fabric, plan = training_plan(scn)
        return scn, fabric, plan, why
    except ScenarioError as err:
        return Point(job.index, job.values, "invalid", _as_given(str(err), job), None), ""
    except Exception as err:  # noqa: BLE001 - a layout's failure is its result, as in evaluate()
        return _failed(job, err)


def _step(plan):
    """simulate_step(plan), or the exception it raised (a layout's failure is its result)."""
    try:
        return simulate_step(plan)
    except Exception as err:  # noqa: BLE001
        return err


def _finish(job: Job, prepared: tuple, simulated) -> tuple[Point, str]:
    """The job's (Point, why) from its prepared plan and the engine's (Timeline, first shared instant) or the
    exception the engine raised."""
    if isinstance(simulated, Exception):
        return _failed(job, simulated)
    scn, fabric, plan, why = prepared
    timeline, shared_at = simulated
    try:
        report = training_result(scn, fabric, plan, timeline).report
    except Exception as err:  # noqa: BLE001 - as in refine's other steps
        return _failed(job, err)
    return _point(job, report, (["shared links"] if shared_at is not None else []) + why)


def _point(job: Job, report, why: list[str]) -> tuple[Point, str]:
    data = report.to_dict()
    if data.get("fits_in_memory", True) is False:
        return Point(job.index, job.values, "out_of_memory", out_of_memory_text(data), data), ", ".join(why)
    return Point(job.index, job.values, "ok", None, data), ", ".join(why)


def _failed(job: Job, err: Exception) -> tuple[Point, str]:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return Point(job.index, job.values, "error", _as_given(text, job), None), ""


def _as_given(text: str, job: Job) -> str:
    """A message with a sent scenario's absolute path written as the job gave it (as evaluate() does)."""
    return text if job.scenario is None else text.replace(job.scenario.source, job.path)


def refine_all(jobs: list[Job], workers: int = 1) -> list[tuple[Point, str]]:
    """refine() of every job here, in order: the plans built here, each distinct timing simulated once and its
    jobs' reports made by one of `workers` processes (this one and forked ones; the largest step first)."""
    prepared = [_prepare(job) for job in jobs]
    groups = {}
    for i, p in enumerate(prepared):
        if not isinstance(p[0], Point):
            groups.setdefault(_timing_key(p[2]), []).append(i)
    tasks = sorted(groups.values(), key=lambda members: -_slots(prepared[members[0]][2]))
    state = (jobs, prepared)
    if workers > 1 and len(tasks) > 1:
        done = forked.run(_refine_group, tasks, state, min(workers, len(tasks)))
    else:
        done = [_refine_group(members, state) for members in tasks]
    for members, outcomes in zip(tasks, done):
        for i, outcome in zip(members, outcomes):
            prepared[i] = outcome
    return prepared


def _slots(plan) -> int:
    """The schedule slots of a plan's step (m micro-batches x p stages x v chunks): the engine's work."""
    t = plan.table
    return t.m * t.p * t.v


def _refine_group(members: list[int], state: tuple | None = None) -> list[tuple[Point, str]]:
    """(Point, why) of the jobs `members` whose plans time the same: one engine run, a report each (`state`:
    (jobs, prepared), else the forked process's)."""
    jobs, prepared = forked.state() if state is None else state
    simulated = _step(prepared[members[0]][2])
    return [_finish(jobs[i], prepared[i], simulated) for i in members]
