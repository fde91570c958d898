"""simrack: a discrete-event simulator of LLM parallelism layouts on GPU racks.

    from simulator import load_scenario, simulate, sweep, search
    report = simulate("scenarios/gpt3-175b-selene.yaml", ["layout.zero=1"])  # or simulate(a Scenario)
    points = sweep("scenarios/gpt3-175b-selene.yaml", {"layout.zero": [0, 1]})

`simulator.sweep` and `simulator.search` are these functions; their modules are importable by name
(`from simulator.sweep import parse_grid`, `importlib.import_module("simulator.sweep")`).
"""

from __future__ import annotations

from ._version import __version__
from . import search as _search_module, sweep as _sweep_module  # noqa: F401  (loaded before the names are rebound)
from .api import search, sweep
from .loader import load_scenario
from .report import Report
from .scenario import Scenario, ScenarioError
from .serve_report import ServeReport
from .simulate import Result, run, simulate

__all__ = ["__version__", "Report", "Result", "Scenario", "ScenarioError", "ServeReport", "load_scenario", "run", "search",
           "simulate", "sweep"]
