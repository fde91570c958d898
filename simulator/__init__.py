"""simrack: a discrete-event simulator of LLM parallelism layouts on GPU racks.

    from simulator import load_scenario, simulate
    report = simulate(load_scenario("scenarios/gpt3-175b-selene.yaml"))
"""

from __future__ import annotations

from ._version import __version__
from .loader import load_scenario
from .scenario import Scenario, ScenarioError
from .simulate import Result, run, simulate
from .report import Report

__all__ = ["__version__", "Report", "Result", "Scenario", "ScenarioError", "load_scenario", "run", "simulate"]
