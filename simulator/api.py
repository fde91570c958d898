"""The Python API: every entry point takes a Scenario or the path of a scenario file.

    from simulator import load_scenario, simulate, sweep, search
    report = simulate("scenarios/gpt3-175b-selene.yaml", ["layout.zero=1"])
    points = sweep(load_scenario("scenarios/llama3-405b-h100.yaml"), {"layout.pp": [8, 16]})

Overrides on a Scenario read as they would on its file (simulator.scenario.overrides).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .scenario.overrides import ScenarioLike, as_scenario
from .whatif.search import SearchResult, parse_constraint
from .whatif.search import search as run_search
from .whatif.sweep import Point, parse_grid
from .whatif.sweep import sweep as run_sweep


def sweep(scenario: ScenarioLike, grid, overrides: Sequence[str] = (), *, workers: int | None = None,
          cluster: str | None = None, progress: bool = False) -> list[Point]:
    """Simulate every point of `grid` (a {field: [values]} mapping, [(field, [values])] pairs or
    ["field=v1,v2"] strings; first field outermost) over a Scenario or a scenario file; one Point
    per combination (simulator.whatif.sweep)."""
    if isinstance(grid, Mapping):
        grid = [(field, list(values)) for field, values in grid.items()]
    elif grid and all(isinstance(g, str) for g in grid):
        grid = parse_grid(grid)
    return run_sweep(scenario, list(grid), tuple(overrides), workers=workers, cluster=cluster, progress=progress)


def search(scenario: ScenarioLike, gpus: int | Sequence[int] | None = None, *, objective: str = "tokens_per_s",
           constraints: Sequence = (), top: int = 10, overrides: Sequence[str] = (), workers: int | None = None,
           cluster: str | None = None, progress: bool = False) -> SearchResult:
    """Search the layouts of a training Scenario or scenario file on `gpus` GPUs (a count or several;
    default the scenario's); constraints as Constraint or "memory_bytes.total<70e9" (simulator.whatif.search)."""
    if gpus is None:
        gpus = [as_scenario(scenario, overrides).gpus]
    elif isinstance(gpus, int):
        gpus = [gpus]
    cons = [parse_constraint(c) if isinstance(c, str) else c for c in constraints]
    return run_search(scenario, gpus=list(gpus), objective=objective, constraints=cons, top=top,
                      scenario_overrides=tuple(overrides), workers=workers, cluster=cluster, progress=progress)
