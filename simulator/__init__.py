"""simrack: a discrete-event simulator of LLM parallelism layouts on GPU racks.

    from simulator import load_scenario, simulate, sweep, search
    report = simulate("scenarios/gpt3-175b-selene.yaml", ["layout.zero=1"])  # or simulate(a Scenario)
    points = sweep("scenarios/gpt3-175b-selene.yaml", {"layout.zero": [0, 1]})

The packages show the architecture (docs/architecture.md): `scenario` (what the user writes), `cost`
(the one cost model), `moe` and `schedules` (shared by the workflows), the workflows `training`,
`serving` and `whatif` (sweep and search), and `output` (tables, JSON, traces, baselines, validation).

Every name is imported when first used (PEP 562), so that `simrack run` does not load the what-if
machinery and the program installs its signal handlers before numpy loads (docs/architecture.md, start-up).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

from ._version import __version__

_LAZY = {"search": ".api", "sweep": ".api", "ScenarioError": ".scenario.base", "load_scenario": ".scenario.loader",
         "Scenario": ".scenario.spec", "ServeReport": ".serving.report", "Result": ".simulate", "run": ".simulate",
         "simulate": ".simulate", "Report": ".training.report"}

if TYPE_CHECKING:  # what the lazy names are, for type checkers
    from .api import search, sweep
    from .scenario.base import ScenarioError
    from .scenario.loader import load_scenario
    from .scenario.spec import Scenario
    from .serving.report import ServeReport
    from .simulate import Result, run, simulate
    from .training.report import Report

__all__ = ["__version__", "Report", "Result", "Scenario", "ScenarioError", "ServeReport", "load_scenario", "run",
           "search", "simulate", "sweep"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'simulator' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The package, whose API names win over submodules of the same name: importing the module
    simulator.simulate does not rebind `simulator.simulate`, the function."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
