"""simrack check: a slower scenario fails with one line, an unchanged one passes, --update rewrites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulator.cli import app
from simulator.output.baseline import compare, figures, lookup, parse_tolerance

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
SCENARIO = """\
model: gpt3-175b
topology: {preset: dgx-a100-superpod, domains: 8}
workload: {kind: train, seq_len: 2048, global_batch: 64, micro_batch: 1, dtype: fp16, recompute: selective}
layout: {tp: 8, pp: 8, sequence_parallel: true, schedule: 1f1b}
"""


def _check(*args):
    return runner.invoke(app, ["check", *map(str, args)])


@pytest.fixture
def setup(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(SCENARIO)
    b.write_text(SCENARIO.replace("pp: 8", "pp: 4").replace("domains: 8", "domains: 4"))
    base = tmp_path / "ci" / "baseline.json"
    result = _check(a, b, "--baseline", base, "--update")
    assert result.exit_code == 0, result.output
    return a, b, base


def test_unchanged_scenarios_pass(setup):
    a, b, base = setup
    result = _check(a, b, "--baseline", base)
    assert result.exit_code == 0, result.output


def test_slower_scenario_fails_with_one_line_naming_it(setup):
    a, b, base = setup
    a.write_text(SCENARIO.replace("recompute: selective", "recompute: full"))  # recompute costs a forward
    result = _check(a, b, "--baseline", base)
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("../a.yaml: ")
    assert "step time" in lines[0] and "throughput" in lines[0]


def test_tolerance_decides(setup):
    a, b, base = setup
    a.write_text(SCENARIO.replace("recompute: selective", "recompute: full"))
    assert _check(a, b, "--baseline", base, "--tolerance", "50%").exit_code == 0


def test_update_rewrites_the_baseline(setup):
    a, b, base = setup
    before = json.loads(base.read_text())["scenarios"]
    a.write_text(SCENARIO.replace("recompute: selective", "recompute: full"))
    assert _check(a, "--baseline", base, "--update").exit_code == 0
    assert _check(a, b, "--baseline", base).exit_code == 0
    after = json.loads(base.read_text())["scenarios"]
    assert set(after) == {"../a.yaml", "../b.yaml"}  # b kept, a replaced
    assert after["../b.yaml"] == before["../b.yaml"]
    assert after["../a.yaml"]["metrics"]["step_time_s"] > before["../a.yaml"]["metrics"]["step_time_s"]


def test_memory_growth_is_a_regression():
    then = {"step_time_s": 10.0, "tokens_per_s": 100.0, "memory_bytes.total": 50e9}
    now = dict(then, **{"memory_bytes.total": 52e9})
    finding = compare("x.yaml", now, then, 0.02)
    assert len(finding.regressions) == 1 and "memory" in finding.regressions[0]
    assert not compare("x.yaml", now, then, 0.05).regressions


def test_directions_of_better():
    then = {"step_time_s": 10.0, "tokens_per_s": 100.0, "ttft_s.p99": 0.2, "output_tokens_per_s": 50.0}
    faster = {"step_time_s": 9.0, "tokens_per_s": 111.0, "ttft_s.p99": 0.1, "output_tokens_per_s": 60.0}
    assert not compare("k", faster, then, 0.02).regressions
    assert len(compare("k", then, faster, 0.02).regressions) == 4


def test_serving_report_figures():
    report = {"kind": "serve", "ttft_s": {"p50": 0.1, "p99": 0.3}, "tpot_s": {"p99": 0.02},
              "e2e_latency_s": {"p99": 2.0}, "output_tokens_per_s": 900.0, "kv_cache_bytes_peak": 3e9}
    assert figures(report) == {"ttft_s.p99": 0.3, "tpot_s.p99": 0.02, "e2e_latency_s.p99": 2.0,
                               "output_tokens_per_s": 900.0, "kv_cache_bytes_peak": 3e9}
    assert lookup(report, "ttft_s.p50") == 0.1 and lookup(report, "nope.x") is None


@pytest.mark.parametrize("text, value", [("2%", 0.02), ("0.05", 0.05), (" 10 % ", 0.10), ("0", 0.0)])
def test_parse_tolerance(text, value):
    assert parse_tolerance(text) == pytest.approx(value)


@pytest.mark.parametrize("args", [["--tolerance", "lots"], ["--tolerance", "-1%"]])
def test_bad_input_exits_2_with_one_line(setup, args):
    a, _, base = setup
    before = base.read_text()
    result = _check(a, "--baseline", base, *args)
    assert result.exit_code == 2 and "\n" not in result.stderr.strip()
    assert base.read_text() == before


def test_missing_baseline_or_invalid_scenario_exit_2(tmp_path, setup):
    a, _, base = setup
    assert _check(a, "--baseline", tmp_path / "none.json").exit_code == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(SCENARIO.replace("tp: 8", "tp: 7"))
    result = _check(bad, "--baseline", base)
    assert result.exit_code == 2 and "bad.yaml" in result.stderr and "\n" not in result.stderr.strip()


def test_baseline_records_the_version_and_loads_without_it(setup):
    from simulator import __version__

    a, b, base = setup
    data = json.loads(base.read_text())
    assert data["simrack_version"] == __version__ and __version__ != "0+unknown"
    del data["simrack_version"]  # a baseline written before simrack recorded its version
    base.write_text(json.dumps(data))
    assert _check(a, b, "--baseline", base).exit_code == 0


# (metric, baseline, now, the regression line by hand: fmt_time 3 significant digits, fmt_bytes in GiB
# (2**30 bytes), rates with one decimal)
UNIT_CASES = [
    ("step_time_s", 13.06, 14.1, "step time 13.1 s -> 14.1 s (+8.0% > 2.0%)"),
    ("tokens_per_s", 10708.0, 8048.0, "throughput 10,708.0 tokens/s -> 8,048.0 tokens/s (-24.8% > 2.0%)"),
    ("ttft_s.p99", 0.2, 0.3, "TTFT p99 200 ms -> 300 ms (+50.0% > 2.0%)"),
    ("tpot_s.p99", 0.02, 0.025, "TPOT p99 20 ms -> 25 ms (+25.0% > 2.0%)"),
    ("e2e_latency_s.p99", 2.0, 2.5, "latency p99 2 s -> 2.5 s (+25.0% > 2.0%)"),
    ("output_tokens_per_s", 900.0, 800.0,
     "output throughput 900.0 tokens/s -> 800.0 tokens/s (-11.1% > 2.0%)"),
    ("kv_cache_bytes_peak", 3 * 2**30, 4 * 2**30, "peak KV cache 3 GiB -> 4 GiB (+33.3% > 2.0%)"),
    ("memory_bytes.total", 50e9, 52e9, "memory per GPU 46.6 GiB -> 48.4 GiB (+4.0% > 2.0%)"),
]


@pytest.mark.parametrize("metric, then, now, line", UNIT_CASES, ids=[c[0] for c in UNIT_CASES])
def test_each_metric_is_printed_in_its_unit(metric, then, now, line):
    assert compare("k", {metric: now}, {metric: then}, 0.02).regressions == [line]


def test_every_metric_has_a_unit_case():
    from simulator.output.baseline import METRICS

    assert {m for m, *_ in METRICS} == {c[0] for c in UNIT_CASES}


def test_cli_regression_line_gives_throughput_in_tokens_per_s(setup):
    a, b, base = setup
    a.write_text(SCENARIO.replace("recompute: selective", "recompute: full"))
    line = _check(a, b, "--baseline", base).stdout.strip()
    throughput = next(p for p in line.split("; ") if p.startswith("throughput"))
    assert throughput.count(" tokens/s") == 2 and " s " not in throughput
    step = next(p for p in line.split(": ", 1)[1].split("; ") if p.startswith("step time"))
    assert step.split(" -> ")[0].endswith(" s")
