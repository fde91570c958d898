"""The Python API: simulate, sweep and search take a Scenario (from a file or built in memory) or a path,
with overrides meaning on a Scenario what they mean on its file."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml

from simulator import Report, Scenario, ScenarioError, ServeReport, load_scenario, search, simulate, sweep
from simulator.scenario.overrides import to_yaml, with_overrides
from simulator.scenario.units import DIMENSIONS
from simulator.whatif.search import SearchResult

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (ROOT / "scenarios").rglob("*.yaml") if "models" not in p.relative_to(ROOT).parts)
KORTHIKANTI = ROOT / "simulator" / "data" / "validation" / "korthikanti-175b-seqsel.yaml"
SERVE = ROOT / "scenarios" / "serve-llama3-70b-disaggregated.yaml"

# GPT-3 175B (Brown et al. 2020) on 8 DGX A100 nodes, as a mapping with every section inline and in
# human units: what a notebook would build without a file.
IN_MEMORY = {
    "name": "in-memory",
    "model": {"layers": 96, "hidden": 12288, "heads": 96, "ffn": 49152, "vocab": 51200, "tied_embeddings": True},
    "topology": {
        "name": "8x DGX A100",
        "device": {"name": "A100-80GB", "peak_flops": {"bf16": "312 TFLOP/s", "fp16": "312 TFLOP/s"},
                   "hbm": "80 GiB", "hbm_bandwidth": "2039 GB/s"},
        "domain": {"gpus": 8, "bandwidth": "300 GB/s", "latency": "2 us"},
        "scaleout": {"kind": "fat_tree", "nic_bandwidth": "200 Gb/s", "nics_per_domain": 8, "latency": "5 us"},
        "domains": 8,
    },
    "workload": {"kind": "train", "seq_len": 2048, "global_batch": 64, "micro_batch": 1, "dtype": "fp16"},
    "layout": {"tp": 8, "pp": 8, "schedule": "1f1b", "sequence_parallel": True},
}


@pytest.fixture
def memory_and_file(tmp_path):
    """(Scenario built from IN_MEMORY, the path of the same mapping as a YAML file)."""
    path = tmp_path / "in-memory.yaml"
    path.write_text(yaml.safe_dump(IN_MEMORY), encoding="utf-8")
    return Scenario.model_validate(IN_MEMORY), path


def _same(a: Scenario, b: Scenario) -> bool:
    return a.model_dump(exclude={"source"}) == b.model_dump(exclude={"source"})


def test_top_level_names_are_callables():
    import simulator

    for name in ("load_scenario", "simulate", "sweep", "search"):
        assert callable(getattr(simulator, name)) and name in simulator.__all__
    assert typing.get_type_hints(simulate)["return"] == Report | ServeReport


def test_simulate_takes_a_path_a_loaded_scenario_or_one_built_in_memory(memory_and_file):
    scn, path = memory_and_file
    assert scn.source == "<memory>"
    from_path = simulate(path).to_dict()
    assert simulate(str(path)).to_dict() == from_path
    assert simulate(load_scenario(path)).to_dict() == from_path
    assert simulate(scn).to_dict() == from_path


def test_overrides_on_a_scenario_mean_what_they_mean_on_its_file(memory_and_file):
    scn, path = memory_and_file
    sets = ["layout.zero=1", "workload.recompute=full"]
    want = simulate(path, sets)
    assert isinstance(want, Report)
    assert want.to_dict() != simulate(path).to_dict()  # the overrides change the step
    assert simulate(scn, sets).to_dict() == want.to_dict()
    assert simulate(load_scenario(path), sets).to_dict() == want.to_dict()


def test_an_override_re_derives_dp_auto_on_an_in_memory_scenario(memory_and_file):
    scn, _ = memory_and_file
    assert scn.layout.dp == 64 // (8 * 8)
    moved = with_overrides(scn, ["layout.tp=4"])
    assert moved.layout.dp == 64 // (4 * 8) and moved.layout.tp == 4
    assert moved.source == "<memory>" and moved.name == "in-memory"


def test_serving_returns_a_serve_report():
    assert isinstance(simulate(SERVE, ["workload.arrivals.count=50"]), ServeReport)


def test_bad_override_on_an_in_memory_scenario_is_one_line_naming_it(memory_and_file):
    scn, _ = memory_and_file
    with pytest.raises(ScenarioError) as err:
        simulate(scn, ["layout.tp=7"])
    text = str(err.value)
    assert text.startswith("<memory>: layout.tp: ") and "\n" not in text and "tmp" not in text
    with pytest.raises(TypeError):
        simulate(64)


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT / "scenarios")) for p in SHIPPED])
def test_to_yaml_round_trips_and_overrides_match_the_file(tmp_path, path):
    """Every shipped scenario written by to_yaml loads back equal, quantities carry their SI unit, and
    overrides applied to the Scenario give what they give on the file (errors included)."""
    scn = load_scenario(path)
    out = tmp_path / "again.yaml"
    out.write_text(to_yaml(scn), encoding="utf-8")
    assert _same(load_scenario(out), scn)
    device = yaml.safe_load(out.read_text())["topology"]["device"]
    assert isinstance(device["hbm"], str) and device["hbm"].endswith("B")
    for sets in (["options.seed=3"], ["layout.tp=4"], ["layout.pp=2"], ["model.hidden=8192", "model.heads=64"]):
        try:
            want = load_scenario(path, sets)
        except ScenarioError as err:
            with pytest.raises(ScenarioError) as got:
                with_overrides(scn, sets)
            assert str(got.value) == str(err)
            continue
        got = with_overrides(scn, sets)
        assert _same(got, want) and got.source == scn.source


def test_dimensional_fields_are_written_with_a_unit(memory_and_file):
    """The YAML of a Scenario never holds a bare number where a unit belongs (the loader is moving to
    require units), and reads back to the same SI floats."""
    scn, _ = memory_and_file
    raw = yaml.safe_load(to_yaml(scn))
    topo = raw["topology"]
    values = [topo["device"]["hbm"], topo["device"]["hbm_bandwidth"], *topo["device"]["peak_flops"].values(),
              topo["domain"]["bandwidth"], topo["domain"]["latency"], topo["scaleout"]["nic_bandwidth"],
              topo["scaleout"]["latency"]]
    assert all(isinstance(v, str) for v in values)
    assert DIMENSIONS["bandwidth"].parse(topo["scaleout"]["nic_bandwidth"]) == 200e9 / 8
    assert DIMENSIONS["bytes"].parse(topo["device"]["hbm"]) == 80 * 2**30


def test_relative_data_files_still_resolve_after_an_override(tmp_path):
    """A scenario whose arrivals come from a CSV beside it: overrides on the Scenario (written out
    elsewhere) still read that CSV."""
    (tmp_path / "requests.csv").write_text("prompt_len,output_len\n" + "128,16\n" * 20)
    text = SERVE.read_text().replace("arrivals: {rate: 12, count: 2000, seed: 0}",
                                     "arrivals: {rate: 12, trace: requests.csv}")
    (tmp_path / "serve.yaml").write_text(text)
    scn = load_scenario(tmp_path / "serve.yaml")
    report = simulate(scn, ["workload.arrivals.seed=2"])
    assert report.requests == 20
    assert report.to_dict() == simulate(tmp_path / "serve.yaml", ["workload.arrivals.seed=2"]).to_dict()


def test_sweep_over_an_in_memory_scenario_equals_its_file_in_a_process_pool(memory_and_file):
    scn, path = memory_and_file
    grid = {"layout.tp": [4, 8, 7], "layout.zero": [0, 1]}
    from_memory = sweep(scn, grid, workers=2)  # the Scenario travels to the worker processes
    from_file = sweep(path, ["layout.tp=4,8,7", "layout.zero=0,1"], workers=1)
    assert len(from_memory) == 6
    for a, b in zip(from_memory, from_file):
        assert (a.values, a.status, a.report) == (b.values, b.status, b.report)
    bad = [p for p in from_memory if p.values["layout.tp"] == 7]
    assert all(p.status == "invalid" and p.error.startswith("<memory>: layout.tp") for p in bad)
    assert {p.status for p in from_memory if p.values["layout.tp"] != 7} <= {"ok", "out_of_memory"}


def test_search_takes_a_scenario_or_a_path():
    scn = load_scenario(KORTHIKANTI)
    by_path = search(KORTHIKANTI, 64, top=2, workers=1)
    by_scenario = search(scn, top=2, workers=2, constraints=["memory_bytes.total<1e12"])
    assert isinstance(by_scenario, SearchResult) and by_scenario.gpus == [scn.gpus] == [64]
    assert by_path.best is not None and by_scenario.best is not None
    assert [r.label for r in by_scenario.refined] == [r.label for r in by_path.refined]
    assert [r.report for r in by_scenario.refined] == [r.report for r in by_path.refined]
