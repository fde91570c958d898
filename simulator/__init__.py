"""simrack: a discrete-event simulator of LLM parallelism layouts on GPU racks.

    from simulator import load_scenario, simulate, sweep, search
    report = simulate("scenarios/gpt3-175b-selene.yaml", ["layout.zero=1"])  # or simulate(a Scenario)
    points = sweep("scenarios/gpt3-175b-selene.yaml", {"layout.zero": [0, 1]})

The packages show the architecture (docs/architecture.md): `scenario` (what the user writes), `cost`
(the one cost model), `moe` and `schedules` (shared by the workflows), the workflows `training`,
`serving` and `whatif` (sweep and search), and `output` (tables, JSON, traces, baselines, validation).

`search` and `sweep` are imported when first used (PEP 562), so that `simrack run` does not load the
what-if machinery (docs/architecture.md, start-up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._version import __version__
from .scenario.base import ScenarioError
from .scenario.loader import load_scenario
from .scenario.spec import Scenario
from .serving.report import ServeReport
from .simulate import Result, run, simulate
from .training.report import Report

if TYPE_CHECKING:
    from .api import search, sweep

__all__ = ["__version__", "Report", "Result", "Scenario", "ScenarioError", "ServeReport", "load_scenario", "run", "search",
           "simulate", "sweep"]


def __getattr__(name: str):
    """search and sweep (simulator.api), on first use."""
    if name not in ("search", "sweep"):
        raise AttributeError(f"module 'simulator' has no attribute {name!r}")
    from . import api  # deferred: the what-if machinery only when asked for

    globals().update(search=api.search, sweep=api.sweep)
    return globals()[name]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
