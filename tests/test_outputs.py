"""Output files and exit statuses of the commands: `-` is standard output, files get the ordinary
umask, and a sweep or search with nothing usable exits 1 with its summary still written."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulator.cli import app

ROOT = Path(__file__).resolve().parents[1]
GPT3 = str(ROOT / "scenarios" / "gpt3-175b-selene.yaml")
KORTHIKANTI = str(ROOT / "simulator" / "data" / "validation" / "korthikanti-175b-seqsel.yaml")
ONE_CHUNK = ["--set", "layout.schedule=1f1b", "--set", "layout.chunks=1"]
SWEEP = ["sweep", GPT3, "--grid", "layout.pp=4,8", *ONE_CHUNK, "-j", "1"]
runner = CliRunner()


@pytest.fixture
def umask():
    """Set a umask for the test, restore the old one after."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


COMMANDS = {  # command line without the output option -> a check of the parsed JSON
    "run": (["run", GPT3], lambda d: d["step_time_s"] > 0),
    "sweep": (SWEEP, lambda d: len(d["points"]) == 2),
    "search": (["search", KORTHIKANTI, "--top", "1", "-j", "1"], lambda d: d["best"]["report"]["step_time_s"] > 0),
    "validate": (["validate", "-j", "1"], lambda d: len(d["cases"]) == 1),  # + a one-case folder (below)
}


@pytest.fixture(scope="module")
def one_case(tmp_path_factory):
    """A cases folder with one shipped scenario (the whole development set is tests/test_validate.py's)."""
    folder = tmp_path_factory.mktemp("one-case")
    (folder / "cases.yml").write_text(f"cases:\n  - {{scenario: {KORTHIKANTI}, case: korthikanti2022_iteration_times, "
                                      "reported: reported.iteration_time_s.175B.seqsel, metric: step_time_s, "
                                      "value: 13.75, unit: s}\n")
    return str(folder)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_json_dash_is_standard_output_and_nothing_else(tmp_path, monkeypatch, one_case, name):
    """`--json -` writes the JSON to stdout (no file named '-'), and no table around it."""
    monkeypatch.chdir(tmp_path)
    args, check = COMMANDS[name]
    args = [*args, one_case] if name == "validate" else args
    result = runner.invoke(app, [*args, "--json", "-"])
    assert result.exit_code in (0, 1), result.output  # validate exits 1 when a case is off
    assert check(json.loads(result.stdout))  # the whole of stdout is the JSON document
    assert not (tmp_path / "-").exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["run", "sweep", "search"])
def test_csv_dash_is_standard_output(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*COMMANDS[name][0], "--csv", "-"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows and all(len(r) == len(rows[0]) for r in rows)
    assert not list(tmp_path.iterdir())


def test_two_outputs_on_stdout_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", GPT3, "--json", "-", "--csv", "-"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("simrack: ") and "\n" not in result.stderr.strip()


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002], ids=["022", "027", "002"])
def test_output_files_follow_the_umask(tmp_path, umask, mask):
    """Files are 0666 & ~umask, as `open()` would make them (they were 0600: tempfile.mkstemp)."""
    umask(mask)
    out = {k: tmp_path / f"out.{k}" for k in ("json", "csv", "trace", "png", "sjson")}
    assert runner.invoke(app, ["run", GPT3, "--json", str(out["json"]), "--csv", str(out["csv"]), "--trace",
                               str(out["trace"]), "-q"]).exit_code == 0
    assert runner.invoke(app, [*SWEEP, "--plot", str(out["png"]), "--json", str(out["sjson"]), "-q"]).exit_code == 0
    for path in out.values():
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


def test_sweep_whose_every_point_fails_exits_1_with_its_summary(tmp_path):
    out, plot = tmp_path / "s.json", tmp_path / "front.png"
    result = runner.invoke(app, ["sweep", GPT3, "--grid", "layout.tp=3,5", "--json", str(out), "--plot", str(plot),
                                 "-j", "1"])
    assert result.exit_code == 1, result.output
    points = json.loads(out.read_text())["points"]
    assert [p["status"] for p in points] == ["invalid", "invalid"]
    assert "2 points, 2 failed" in result.stdout  # the table is still printed
    assert result.stderr.strip() == f"simrack: none of the 2 points simulated and fit in memory; {plot} not drawn"
    assert not plot.exists()


def test_sweep_with_one_good_point_exits_0(tmp_path):
    result = runner.invoke(app, ["sweep", GPT3, "--grid", "layout.tp=3,8", *ONE_CHUNK, "-q", "-j", "1"])
    assert result.exit_code == 0, result.output


def test_search_without_a_feasible_layout_exits_1_with_its_summary(tmp_path):
    out, csv_out = tmp_path / "s.json", tmp_path / "s.csv"
    result = runner.invoke(app, ["search", KORTHIKANTI, "--top", "2", "--constraint", "memory_bytes.total<1e9",
                                 "--json", str(out), "--csv", str(csv_out), "-j", "1"])
    assert result.exit_code == 1, result.output
    data = json.loads(out.read_text())
    assert data["best"] is None and data["counts"]["ranked"] == 0 and data["counts"]["constrained"] > 0
    assert csv_out.exists() and "0 ranked" in result.stdout
    assert result.stderr.strip() == "simrack: no layout fits in memory and meets the constraints"
