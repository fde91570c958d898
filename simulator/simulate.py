"""The data flow of DESIGN.md section 2, one call per arrow: Scenario -> Report."""

from __future__ import annotations

from dataclasses import dataclass

from .engine import Timeline, run_engine
from .fabric import Fabric, fabric_for
from .model import build_op_table
from .placement import place
from .plan import Plan, make_plan
from .report import Report, summarize
from .scenario import Scenario, ScenarioError


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
    fabric = fabric_for(scenario.topology)
    try:
        plan = make_plan(scenario, build_op_table(scenario), place(scenario), fabric)
    except ValueError as err:  # a schedule's constraint on p, m or v
        raise ScenarioError(f"{scenario.source}: layout.schedule: {err}") from None
    timeline = run_engine(plan)
    return Result(scenario, fabric, plan, timeline, summarize(scenario, plan, timeline, fabric))


def run_serve(scenario: Scenario) -> Result:
    """Serving: step costs -> request-level simulation -> ServeReport (plan: StepCosts, timeline: ServeTimeline)."""
    from .serve_report import summarize_serving
    from .serving import Simulation

    fabric = fabric_for(scenario.topology)
    sim = Simulation(scenario, fabric=fabric)
    timeline = sim.run()
    report = summarize_serving(scenario, sim.costs, sim.memory, timeline, fabric, sim.devices)
    return Result(scenario, fabric, sim.costs, timeline, report)


def simulate(scenario: Scenario) -> Report:
    """The Report of one training step of `scenario`."""
    return run(scenario).report
