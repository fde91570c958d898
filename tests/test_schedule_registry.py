"""The schedule registry (simulator.schedules.SPECS) against what its builders make, and the schema
and the search reading it.

1. each entry's facts (chunks, split backward, routes, virtual stages) are its tables' and Codes';
   its rule refuses exactly the (pp, m) its builder refuses; the table it makes from Codes
   (ScheduleSpec.table, what make_plan runs) is the builder's, order by order, with the same
   activations in flight, and refuses what the builder refuses;
2. the schema's schedule names and chunk rules and the search's schedule codes come from the registry;
   a layout the rule refuses is refused when the scenario loads, at layout.schedule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator import ScenarioError, load_scenario
from simulator.scenario.base import SCHEDULES as SCHEMA_SCHEDULES
from simulator.scenario.spec import Layout
from simulator.schedules import CHUNKS, SCHEDULES, SPECS, in_flight
from simulator.schedules.table import peak_in_pair
from simulator.whatif.space import SCHEDULE_NAMES

GPT3 = Path(__file__).resolve().parents[1] / "scenarios" / "gpt3-175b-selene.yaml"


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_spec_is_what_its_tables_say(name, p):
    spec = SPECS[name]
    for v in (2, 3) if spec.chunks is None else (spec.chunks,):
        for m in (p, 2 * p + 1, 4 * p):
            if spec.rule(p, m) is not None:
                with pytest.raises(ValueError):
                    spec.build(p, m, v)
                continue
            table, codes = spec.build(p, m, v), spec.codes(p, (m,), v)
            for made in (table, codes):
                assert made.split_backward == spec.split_backward
                np.testing.assert_array_equal(made.routes, spec.routes(p, v))
            assert table.routes.shape[1] == spec.virtual_stages(p, v)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("p", [1, 2, 3, 4, 6])
def test_table_from_codes_is_the_builders(name, p):
    spec = SPECS[name]
    for v in (1, 2, 3) if spec.chunks is None else (spec.chunks, spec.chunks + 1):
        for m in (1, 2, p, 2 * p + 1, 4 * p, 5 * p + 2):
            try:
                built = spec.build(p, m, v)
            except ValueError:
                with pytest.raises(ValueError):
                    spec.table(p, m, v)
                continue
            fast = spec.table(p, m, v)
            assert (fast.name, fast.p, fast.m, fast.v, fast.split_backward) == \
                (built.name, built.p, built.m, built.v, built.split_backward)
            np.testing.assert_array_equal(fast.direction, built.direction)
            np.testing.assert_array_equal(fast.routes, built.routes)
            for unit in ("chunk", "stage"):
                np.testing.assert_array_equal(in_flight(fast, unit), in_flight(built, unit))
            np.testing.assert_array_equal(peak_in_pair(fast), peak_in_pair(built))
            assert tuple(fast.orders) == built.orders
            assert fast.orders[-1] == built.orders[-1] and fast.orders[1:] == built.orders[1:]


def test_views_and_names_come_from_the_registry():
    assert tuple(SCHEDULES) == tuple(SPECS) == SCHEDULE_NAMES == SCHEMA_SCHEDULES
    assert CHUNKS == {name: spec.chunks for name, spec in SPECS.items()}
    for name, spec in SPECS.items():
        for chunks in (1, 2, 3):
            problem = spec.chunk_problem(chunks)
            if problem is None:
                Layout(schedule=name, chunks=chunks)
            else:
                with pytest.raises(ValueError, match="chunks"):
                    Layout(schedule=name, chunks=chunks)


def test_a_layout_the_rule_refuses_fails_on_load():
    sets = ["layout.schedule=dualpipe", "layout.chunks=2", "layout.tp=8", "layout.pp=3", "topology.domains=6"]
    with pytest.raises(ScenarioError, match="layout.schedule: dualpipe needs an even number of stages"):
        load_scenario(GPT3, sets)
    with pytest.raises(ScenarioError, match=r"interleaved needs micro-batches per pipeline \(1536/\(1\*8\) = 192\)"):
        load_scenario(GPT3, ["layout.pp=5", "layout.chunks=2", "model.layers=100", "topology.domains=40",
                             "workload.global_batch=1536"])
