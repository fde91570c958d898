"""Sweeps: grid parsing, one point per combination in order, failures kept per point, executors equal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulator.cli import app
from simulator.whatif.sweep import Job, evaluate, jobs, parse_grid, sweep

ROOT = Path(__file__).resolve().parents[1]
GPT3 = str(ROOT / "scenarios" / "gpt3-175b-selene.yaml")
ONE_CHUNK = ["layout.schedule=1f1b", "layout.chunks=1"]
runner = CliRunner()


def test_parse_grid_values_are_yaml_scalars_and_lists():
    grid = parse_grid(["layout.tp=1,2,8", "workload.recompute=none,full", "layout.stage_layers=[48,48],null"])
    assert grid == [("layout.tp", [1, 2, 8]), ("workload.recompute", ["none", "full"]),
                    ("layout.stage_layers", [[48, 48], None])]


@pytest.mark.parametrize("spec", ["layout.tp", "=1,2", "layout.tp=", "layout.tp=1,,2", "layout.tp=[1"])
def test_parse_grid_rejects_malformed(spec):
    with pytest.raises(ValueError) as err:
        parse_grid([spec])
    assert "\n" not in str(err.value)


def test_parse_grid_rejects_repeated_field():
    with pytest.raises(ValueError, match="twice"):
        parse_grid(["layout.tp=1", "layout.tp=2"])


def test_cross_product_first_field_outermost():
    todo = jobs(GPT3, parse_grid(["layout.tp=1,8", "layout.pp=4,8,16"]), ["layout.zero=1"])
    assert len(todo) == 6
    assert [j.values for j in todo][:3] == [{"layout.tp": 1, "layout.pp": p} for p in (4, 8, 16)]
    assert all(j.overrides[0] == "layout.zero=1" for j in todo)
    assert [j.index for j in todo] == list(range(6))


@pytest.fixture(scope="module")
def points():
    return sweep(GPT3, parse_grid(["layout.tp=1,3,8", "layout.pp=4,8"]), ONE_CHUNK, workers=2)


def test_every_point_has_an_outcome_and_failures_are_not_fatal(points):
    assert [p.index for p in points] == list(range(6))
    by = {(p.values["layout.tp"], p.values["layout.pp"]): p for p in points}
    assert by[8, 8].status == "ok" and by[8, 8].report["step_time_s"] > 0
    bad = by[3, 4]
    assert bad.status == "invalid" and bad.report is None
    assert "\n" not in bad.error and "layout" in bad.error and "3" in bad.error
    oom = by[1, 4]
    assert oom.status == "out_of_memory"
    assert oom.report["fits_in_memory"] is False
    assert oom.report["memory_bytes"]["total"] > oom.report["memory_bytes"]["capacity"]
    assert oom.error.startswith("out of memory:")


def test_pool_and_in_process_agree(points):
    serial = sweep(GPT3, parse_grid(["layout.tp=1,3,8", "layout.pp=4,8"]), ONE_CHUNK, workers=1)
    assert [p.to_dict() for p in serial] == [p.to_dict() for p in points]


def test_evaluate_turns_any_failure_into_a_status(tmp_path):
    missing = evaluate(Job(0, str(tmp_path / "nope.yaml"), (), {}))
    assert missing.status == "invalid" and "nope.yaml" in missing.error
    broken = evaluate(Job(1, GPT3, ("layout.schedule=dualpipe", "layout.chunks=2", "layout.pp=3"), {}))
    assert broken.status == "invalid" and broken.report is None


def test_cli_writes_csv_json_and_plot_after_success(tmp_path):
    out_json, out_csv, out_png = tmp_path / "s.json", tmp_path / "s.csv", tmp_path / "front.png"
    result = runner.invoke(app, ["sweep", GPT3, "--grid", "layout.pp=4,8", "--grid", "layout.zero=0,1",
                                 *sum((["--set", s] for s in ONE_CHUNK), []), "--json", str(out_json),
                                 "--csv", str(out_csv), "--plot", str(out_png), "-q", "-j", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads(out_json.read_text())["points"]
    assert len(data) == 4 and {p["status"] for p in data} <= {"ok", "out_of_memory"}
    rows = out_csv.read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("sweep.layout.pp,sweep.layout.zero,status")
    assert out_png.stat().st_size > 1000 and out_png.read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


@pytest.mark.parametrize("args", [["--grid", "layout.tp"], ["--grid", "layout.tp=1", "--grid", "layout.tp=2"],
                                  ["--grid", "layout.tp=8", "--set", "layout.nope=1"]])
def test_cli_bad_input_is_one_line_exit_2_no_file(tmp_path, args):
    out = tmp_path / "s.json"
    result = runner.invoke(app, ["sweep", GPT3, *args, "--json", str(out)])
    assert result.exit_code == 2
    assert "\n" not in result.stderr.strip() and result.stderr.startswith("simrack: ")
    assert not out.exists()
