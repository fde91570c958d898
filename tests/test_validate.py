"""simrack validate: each case's published figure is the reference's, and the table's summary is the
mean and max of the per-case errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from simulator.cli import app
from simulator.output.validation import DEFAULT_DIR, load_cases

runner = CliRunner()


def _dig(mapping: dict, dotted: str):
    for part in dotted.split("."):
        mapping = mapping[part]
    return mapping


def test_cases_cover_every_validation_scenario():
    cases = load_cases()
    shipped = {p.name for p in DEFAULT_DIR.glob("*.yaml")}
    assert {c.scenario.name for c in cases} == shipped
    assert all(c.scenario.exists() for c in cases)


def test_published_values_are_the_reference(reference):
    for c in load_cases():
        assert c.value == pytest.approx(float(_dig(reference(c.case)["reported"], c.reported))), c.label


def test_table_summary_is_mean_and_max_of_errors(tmp_path):
    out = tmp_path / "v.json"
    result = runner.invoke(app, ["validate", "--json", str(out), "-q"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    errors = [abs(row["error"]) for row in data["cases"]]
    assert len(errors) == 8
    assert data["mean_abs_error"] == pytest.approx(sum(errors) / len(errors))
    assert data["max_abs_error"] == pytest.approx(max(errors))
    assert data["mean_abs_error"] < 0.05  # the calibration's bar (docs/cost-model.md)
    for row in data["cases"]:
        assert row["error"] == pytest.approx((row["simulated"] - row["published"]) / row["published"])


@pytest.mark.parametrize("text, field", [("cases: []\n", "cases"), ("cases:\n  - scenario: a.yaml\n", "missing"),
                                         ("{{", ""), ("cases:\n  - {scenario: a.yaml, case: c, reported: r, "
                                                      "metric: step_time_s, value: fast}\n", "value")])
def test_bad_cases_file_is_one_line_exit_2(tmp_path, text, field):
    (tmp_path / "cases.yml").write_text(text)
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 2
    assert field in result.stderr and "\n" not in result.stderr.strip()


def test_missing_folder_is_exit_2(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "not found" in result.stderr


def test_a_case_that_fails_to_simulate_is_reported(tmp_path):
    (tmp_path / "broken.yaml").write_text("model: gpt3-175b\n")
    (tmp_path / "cases.yml").write_text("cases:\n  - {scenario: broken.yaml, case: x, reported: y, "
                                        "metric: step_time_s, value: 1.0}\n")
    result = runner.invoke(app, ["validate", str(tmp_path), "-q"])
    assert result.exit_code == 1 and "broken.yaml" in result.stderr


def test_csv_has_the_json_rows(tmp_path):
    """--csv writes one line per case with the same figures as --json (it used to end in a traceback)."""
    import csv

    (tmp_path / "small.yaml").write_text(
        "model: gpt3-175b\ntopology: {preset: dgx-a100-superpod, domains: 8}\n"
        "workload: {kind: train, seq_len: 2048, global_batch: 64, micro_batch: 1, dtype: fp16}\n"
        "layout: {tp: 8, pp: 8, schedule: 1f1b}\n")
    (tmp_path / "cases.yml").write_text("cases:\n  - {scenario: small.yaml, label: small, case: made-up, "
                                        "reported: step, metric: step_time_s, value: 10.0, unit: s}\n")
    out_json, out_csv = tmp_path / "v.json", tmp_path / "out" / "v.csv"
    result = runner.invoke(app, ["validate", str(tmp_path), "--json", str(out_json), "--csv", str(out_csv), "-q"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out_csv.read_text().splitlines()))
    (want,) = json.loads(out_json.read_text())["cases"]
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == set(want)
    assert row["case"] == "small" and row["scenario"] == "small.yaml" and row["metric"] == "step_time_s"
    assert float(row["published"]) == 10.0
    assert float(row["simulated"]) == pytest.approx(want["simulated"], rel=1e-12)
    assert float(row["error"]) == pytest.approx((float(row["simulated"]) - 10.0) / 10.0, rel=1e-9)
