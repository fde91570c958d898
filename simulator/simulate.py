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
    """Simulate one training step of `scenario`; schedule constraints become ScenarioErrors."""
    fabric = fabric_for(scenario.topology)
    try:
        plan = make_plan(scenario, build_op_table(scenario), place(scenario), fabric)
    except ValueError as err:  # a schedule's constraint on p, m or v
        raise ScenarioError(f"{scenario.source}: layout.schedule: {err}") from None
    timeline = run_engine(plan)
    return Result(scenario, fabric, plan, timeline, summarize(scenario, plan, timeline, fabric))


def simulate(scenario: Scenario) -> Report:
    """The Report of one training step of `scenario`."""
    return run(scenario).report
