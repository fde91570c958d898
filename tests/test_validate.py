"""simrack validate: each case's published figure is the reference's, and the summary is the mean and
max of the per-case errors, per group (generation x kind), in-sample and out-of-sample apart, without
the cases simrack cannot express."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulator.cli import app
from simulator.output.validation import (DEFAULT_DIR, Case, Outcome, family_stats, group_stats, load_cases,
                                         published_figure, rows, sample_stats, summary)
from simulator.training.report import EAGER_MOE

runner = CliRunner()


def test_cases_cover_every_validation_scenario():
    cases = load_cases()
    shipped = {p.name for p in DEFAULT_DIR.glob("*.yaml")}
    assert {c.scenario.name for c in cases} == shipped
    assert all(c.scenario.exists() for c in cases)


def test_published_values_are_the_reference(reference):
    for c in load_cases():
        figure = c.value if c.source_value is None else c.source_value
        assert figure == pytest.approx(float(published_figure(reference(c.case), c.reported))), c.label


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> dict:
    """The JSON of `simrack validate` over the shipped cases (exit 0)."""
    out = tmp_path_factory.mktemp("validate") / "v.json"
    result = runner.invoke(app, ["validate", "--json", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_shipped_cases_simulate_and_the_summary_is_their_errors(shipped):
    """Every shipped case simulates (exit 0); the JSON's statistics are the rows' errors, counted cases
    only (expressible ones), per group and per sample. No accuracy is asserted here: the Korthikanti
    bar is tests/validation/test_korthikanti.py's."""
    data = shipped
    assert len(data["cases"]) == len(load_cases())
    for row in data["cases"]:
        assert row["simulated"] is not None, row["case"]
        assert row["error"] == pytest.approx((row["simulated"] - row["published"]) / row["published"])
        assert row["counted"] == row["expressible"]
    counted = [row for row in data["cases"] if row["counted"]]
    errors = [abs(row["error"]) for row in counted]
    assert data["mean_abs_error"] == pytest.approx(sum(errors) / len(errors))
    assert data["max_abs_error"] == pytest.approx(max(errors))
    assert data["not_expressible"] == sum(not row["expressible"] for row in data["cases"])
    assert sum(g["cases"] for g in data["groups"]) == len(counted)
    for g in data["groups"]:
        mine = [abs(r["error"]) for r in counted if (r["group"], r["kind"]) == (g["group"], g["kind"])
                and r["fitted"] == (g["sample"] == "in-sample")]
        assert g["cases"] == len(mine) and g["mean_abs_error"] == pytest.approx(sum(mine) / len(mine))
        assert g["max_abs_error"] == pytest.approx(max(mine))
    for f in data["families"]:
        mine = [abs(r["error"]) for r in counted if r["group"] == f["group"] and r["kind"] == "train"
                and f["kind"] == ("train moe" if r["moe"] else "train dense")
                and r["fitted"] == (f["sample"] == "in-sample")]
        assert f["cases"] == len(mine) and f["mean_abs_error"] == pytest.approx(sum(mine) / len(mine))
    assert sum(f["cases"] for f in data["families"]) == sum(r["kind"] == "train" for r in counted)
    for key, fitted in (("in_sample", True), ("out_of_sample", False)):
        mine = [abs(r["error"]) for r in counted if r["fitted"] == fitted]
        assert data[key]["cases"] == len(mine)
        assert data[key]["mean_abs_error"] == (pytest.approx(sum(mine) / len(mine)) if mine else None)


def test_the_eager_moe_caveat_marks_cases_that_come_out_fast(shipped):
    """The caveat a report carries for MoE training without CUDA graphs (what simrack does not price there) is
    backed by the development set: every case that carries it is an MoE training case, and at least three in
    four of them come out faster than published (throughput above, or step time below, the published figure)."""
    counted = [row for row in shipped["cases"] if row["counted"]]
    marked = [row for row in counted if EAGER_MOE in row["caveats"]]
    assert len(marked) >= 10
    assert all(row["moe"] and row["kind"] == "train" for row in marked)
    fast = [row for row in marked if (row["error"] < 0) == row["metric"].startswith("step_time")]
    assert len(fast) >= 0.75 * len(marked), [(row["case"], row["error"]) for row in marked]
    assert not any(row["caveats"] for row in counted if not row["moe"])


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


# --- statistics on a synthetic list of outcomes -----------------------------------------------------

def _outcome(error, *, group="hopper", kind="train", fitted=False, expressible=True, simulated=True, moe=False):
    case = Case(scenario=Path("x.yaml"), label=f"{group} {kind} {error}", case="c", reported="r",
                metric="step_time_s", value=10.0, unit="s", group=group, kind=kind, fitted=fitted,
                expressible=expressible, why="" if expressible else "needs fp4", moe=moe)
    if not simulated:
        return Outcome(case, None, None, "invalid: bad", kind)
    return Outcome(case, 10.0 * (1 + error), error, None, kind)


SYNTHETIC = [
    _outcome(0.02, group="ampere", fitted=True), _outcome(-0.04, group="ampere", fitted=True),
    _outcome(0.10, group="ampere"), _outcome(-0.20, group="ampere"), _outcome(0.30, group="ampere"),
    _outcome(-0.05), _outcome(0.15),
    _outcome(0.50, expressible=False),  # listed, not counted
    _outcome(0.0, simulated=False),  # failed to simulate: not counted
    _outcome(-0.08, kind="serve"),
    _outcome(0.90, group="blackwell", expressible=False),  # a group with no counted case
]


def test_group_statistics_are_the_closed_form_means():
    stats = {(s.group, s.kind, s.sample): s for s in group_stats(SYNTHETIC)}
    assert list(stats) == [("ampere", "train", "in-sample"), ("ampere", "train", "out-of-sample"),
                           ("hopper", "train", "out-of-sample"), ("hopper", "serve", "out-of-sample")]
    expect = {("ampere", "train", "in-sample"): (2, (0.02 + 0.04) / 2, 0.04),
              ("ampere", "train", "out-of-sample"): (3, (0.10 + 0.20 + 0.30) / 3, 0.30),
              ("hopper", "train", "out-of-sample"): (2, (0.05 + 0.15) / 2, 0.15),
              ("hopper", "serve", "out-of-sample"): (1, 0.08, 0.08)}
    for key, (n, mean, worst) in expect.items():
        assert (stats[key].cases, stats[key].mean, stats[key].max) == (n, pytest.approx(mean), pytest.approx(worst))
    samples = sample_stats(SYNTHETIC)
    assert (samples["in_sample"].cases, samples["in_sample"].mean) == (2, pytest.approx(0.03))
    out = [0.10, 0.20, 0.30, 0.05, 0.15, 0.08]
    assert (samples["out_of_sample"].cases, samples["out_of_sample"].mean) == (6, pytest.approx(sum(out) / 6))
    assert samples["out_of_sample"].max == pytest.approx(0.30)
    mean, worst = summary(SYNTHETIC)
    assert mean == pytest.approx((0.06 + sum(out)) / 8) and worst == pytest.approx(0.30)
    assert samples["all"].cases == 8 and samples["all"].mean == pytest.approx(mean)


def test_family_statistics_split_the_training_cases_into_dense_and_moe():
    """Training cases only, by (group, dense or MoE, sample): the serving case, the uncounted ones and the other
    groups' cases stay out of each row."""
    outcomes = SYNTHETIC + [_outcome(0.40, moe=True), _outcome(-0.20, moe=True), _outcome(0.60, moe=True, kind="serve")]
    stats = {(s.group, s.kind, s.sample): s for s in family_stats(outcomes)}
    assert list(stats) == [("ampere", "train dense", "in-sample"), ("ampere", "train dense", "out-of-sample"),
                           ("hopper", "train dense", "out-of-sample"), ("hopper", "train moe", "out-of-sample")]
    expect = {("ampere", "train dense", "out-of-sample"): (3, 0.20, 0.30),
              ("hopper", "train dense", "out-of-sample"): (2, 0.10, 0.15),
              ("hopper", "train moe", "out-of-sample"): (2, 0.30, 0.40)}
    for key, (n, mean, worst) in expect.items():
        assert (stats[key].cases, stats[key].mean, stats[key].max) == (n, pytest.approx(mean), pytest.approx(worst))


def test_no_counted_case_gives_nan_not_an_error():
    mean, worst = summary([_outcome(0.5, expressible=False)])
    assert math.isnan(mean) and math.isnan(worst)
    assert group_stats([_outcome(0.5, expressible=False)]) == []


def test_rows_carry_the_case_fields():
    (row,) = rows([_outcome(0.5, group="blackwell", expressible=False)])
    assert (row["group"], row["kind"], row["expressible"], row["counted"], row["why"]) == \
        ("blackwell", "train", False, False, "needs fp4")
    assert row["error"] == pytest.approx(0.5) and row["published"] == 10.0


# --- cases files: the new fields, and paths into published.yaml ---------------------------------------

CASE = "{scenario: a.yaml, case: c, reported: r, metric: step_time_s, value: 1.0"


@pytest.mark.parametrize("extra, field", [(", fitted: yes-ish", "fitted"), (", kind: infer", "kind"),
                                          (", expressible: false", "why"), (", unmodelled: fp4", "unmodelled"),
                                          (", source_value: many", "source_value"), (", colour: red", "colour")])
def test_bad_case_fields_are_one_line_exit_2(tmp_path, extra, field):
    (tmp_path / "cases.yml").write_text(f"cases:\n  - {CASE}{extra}}}\n")
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 2
    assert field in result.stderr and "\n" not in result.stderr.strip()


def test_case_defaults(tmp_path):
    (tmp_path / "cases.yml").write_text(f"cases:\n  - {CASE}}}\n")
    (case,) = load_cases(tmp_path)
    assert (case.group, case.kind, case.fitted, case.verified, case.expressible, case.moe) == \
        ("", "", False, True, True, False)
    assert case.source_value is None and case.unmodelled == ()


PUBLISHED = {"reported": {"columns": ["gpus", "cp", "tflops"], "rows": [[8192, 1, 430], [16384, 1, 400],
                                                                         [16384, 16, 380]],
                          "times": {"22B": {"full": 1.42}, 10752: 0.93}, "list": [4.98, 12.13]},
             "derived": {"step": 0.9256}}


@pytest.mark.parametrize("path, value", [("reported.rows[gpus=8192].tflops", 430),
                                         ("reported.rows[gpus=16384,cp=16].tflops", 380),
                                         ("reported.times.22B.full", 1.42), ("reported.times.10752", 0.93),
                                         ("reported.list.1", 12.13), ("derived.step", 0.9256)])
def test_published_figure_paths(path, value):
    assert published_figure(PUBLISHED, path) == value


@pytest.mark.parametrize("path", ["reported.rows[gpus=16384].tflops", "reported.rows[gpus=1].tflops",
                                  "reported.nothing", "derived.step.more"])
def test_published_figure_needs_one_match(path):
    with pytest.raises((KeyError, TypeError)):
        published_figure(PUBLISHED, path)
