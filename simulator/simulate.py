"""The data flow of DESIGN.md section 2, one call per arrow: Scenario -> Report."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

from .cost.fabric import Fabric, fabric_for
from .cost.op_table import build_op_table
from .cost.placement import place
from .invariants import check_plan, check_serving, check_training
from .scenario.base import ScenarioError
from .scenario.overrides import as_scenario
from .scenario.spec import Scenario
from .serving.report import ServeReport, summarize_serving
from .training import faults as fl
from .training.engine import Timeline, run_engine
from .training.plan import Plan, make_plan, mesh_ranks
from .training.report import Report, summarize


@dataclass(frozen=True)
class Result:
    """Everything one simulation produced, for renderers that need more than the report."""

    scenario: Scenario
    fabric: Fabric
    plan: Plan
    timeline: Timeline
    report: Report


def run(scenario: Scenario) -> Result:
    """Simulate one training step of `scenario` (or, for workload.kind serve, its requests);
    schedule constraints become ScenarioErrors."""
    if scenario.workload.kind == "serve":
        return run_serve(scenario)
    if scenario.faults is not None:
        return run_faulty(scenario)
    fabric, plan = training_plan(scenario)
    return training_result(scenario, fabric, plan, run_engine(plan))


def training_plan(scenario: Scenario) -> tuple[Fabric, Plan]:
    """The fabric and checked Plan of a healthy training scenario; schedule constraints become
    ScenarioErrors."""
    fabric = fabric_for(scenario.topology)
    try:
        plan = make_plan(scenario, build_op_table(scenario), place(scenario), fabric)
    except ValueError as err:  # a schedule's constraint on p, m or v
        raise ScenarioError(f"{scenario.source}: layout.schedule: {err}") from None
    check_plan(scenario.name, plan)
    return fabric, plan


def training_result(scenario: Scenario, fabric: Fabric, plan: Plan, timeline: Timeline) -> Result:
    """The checked Result of a training step the engine ran."""
    report = summarize(scenario, plan, timeline, fabric)
    check_training(scenario.name, plan, timeline, report)
    return Result(scenario, fabric, plan, timeline, report)


def run_faulty(scenario: Scenario) -> Result:
    """A training step with `faults:` (simulator.training.faults), the healthy step beside it; the report's
    extra["faults"] gives the healthy step, the slowdown, what dominates and the time lost."""


    healthy = run(scenario.model_copy(update={"faults": None}))
    f = scenario.faults
    node, info, lost, scn = f.failed_node, {}, 0.0, scenario
    if node is not None:
        lost = fl.recovery_seconds(node)
        info["failed_node"] = f"failed domain {node.domain} ({node.policy})"
        if node.policy == "relayout":
            scn, dp = fl.relayout(scenario)
            if scn is None:
                raise ScenarioError(f"{scenario.source}: faults.failed_node.policy: no dp fits the "
                                    f"{scenario.gpus - scenario.topology.ranks_per_domain} surviving GPUs")
            info["failed_node"] = (f"failed domain {node.domain} (relayout dp {scenario.layout.dp} -> {dp}, "
                                   f"{scn.micro_batches} micro-batches)")
            used = mesh_ranks(scn)
            scn = scn.model_copy(update={"faults": fl.renumber(f, node, scenario.topology.ranks_per_domain, used)})
    rest = scn.faults is not None and any(getattr(scn.faults, k) is not None
                                          for k in ("straggler", "degraded_link", "jitter"))
    if rest or scn is not scenario:
        fabric = fabric_for(scn.topology)
        ops, placement = build_op_table(scn), place(scn)
        try:
            if rest:
                plan, more = fl.apply(scn, ops, placement, fabric)
                info.update(more)
            else:
                plan = make_plan(scn, ops, placement, fabric)
        except ValueError as err:
            raise ScenarioError(f"{scenario.source}: layout.schedule: {err}") from None
        check_plan(scenario.name, plan)
        timeline = run_engine(plan)
        report = summarize(scn, plan, timeline, fabric)
        check_training(scenario.name, plan, timeline, report)
    else:  # a spare swapped in: the step is the healthy one
        fabric, plan, timeline, report = healthy.fabric, healthy.plan, healthy.timeline, healthy.report
    stage = fl.dominant_stage(healthy.plan, plan, healthy.timeline, timeline) if rest else 0
    block = fl.summary(scenario, healthy.report.step_time_s, report.step_time_s, info, lost, stage)
    report = dataclasses.replace(report, scenario=scenario.name, extra={**report.extra, "faults": block})
    return Result(scn, fabric, plan, timeline, report)


def run_serve(scenario: Scenario) -> Result:
    """Serving: step costs -> request-level simulation -> ServeReport (plan: StepCosts, timeline: ServeTimeline)."""
    from .serving.engine import Simulation  # deferred (start-up): a training run loads no serving simulation

    fabric = fabric_for(scenario.topology)
    sim = Simulation(scenario, fabric=fabric)
    timeline = sim.run()
    report = summarize_serving(scenario, sim.memory, timeline)
    check_serving(scenario.name, timeline, report, sim.capacity)
    return Result(scenario, fabric, sim.costs, timeline, report)


def simulate(scenario: Scenario | str | os.PathLike, overrides: Sequence[str] = ()) -> Report | ServeReport:
    """The Report of one training step of a Scenario or scenario file (with `dotted.path=value`
    overrides), or its ServeReport for workload.kind serve."""

    return run(as_scenario(scenario, overrides)).report
