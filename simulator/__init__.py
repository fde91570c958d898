"""simrack: a discrete-event simulator of LLM parallelism layouts on GPU racks.

    from simulator import load_scenario, simulate, sweep, search
    report = simulate("scenarios/gpt3-175b-selene.yaml", ["layout.zero=1"])  # or simulate(a Scenario)
    points = sweep("scenarios/gpt3-175b-selene.yaml", {"layout.zero": [0, 1]})

The packages show the architecture (docs/architecture.md): `scenario` (what the user writes), `cost`
(the one cost model), `moe` and `schedules` (shared by the workflows), the workflows `training`,
`serving` and `whatif` (sweep and search), and `output` (tables, JSON, traces, baselines, validation).
"""

from __future__ import annotations

from ._version import __version__
from .api import search, sweep
from .scenario.base import ScenarioError
from .scenario.loader import load_scenario
from .scenario.spec import Scenario
from .serving.report import ServeReport
from .simulate import Result, run, simulate
from .training.report import Report

__all__ = ["__version__", "Report", "Result", "Scenario", "ScenarioError", "ServeReport", "load_scenario", "run", "search",
           "simulate", "sweep"]
