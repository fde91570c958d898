"""Layout search: the Korthikanti 175B case, constraints, reasons, and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from simulator import load_scenario, simulate, sweep
from simulator.scenario.base import ScenarioError
from simulator.cli import app
from simulator.data import VALIDATION_DIR
from simulator.whatif.search import parse_constraint, search
from simulator.whatif.space import SearchSpace, enumerate_layouts, overrides, stage_split

ROOT = Path(__file__).resolve().parents[1]
KORTHIKANTI = VALIDATION_DIR / "korthikanti-175b-seqsel.yaml"
runner = CliRunner()


@pytest.fixture(scope="module")
def result():
    return search(KORTHIKANTI, gpus=[64], top=5, workers=2)


def test_best_is_no_worse_than_the_published_layout(result):
    published = simulate(load_scenario(KORTHIKANTI))
    assert result.best is not None and result.best.status == "ok"
    assert result.best.report["step_time_s"] <= published.step_time_s
    own = [r for r in result.refined if r.source != "search"]
    assert len(own) == 1 and own[0].report["step_time_s"] == pytest.approx(published.step_time_s)


def test_runners_up_say_why_they_lost(result):
    assert result.refined[0] is result.best
    for r in result.refined[1:]:
        assert r.reason and "\n" not in r.reason
        if r.status == "ok":
            assert r.report["tokens_per_s"] <= result.best.report["tokens_per_s"]
    assert result.dropped and all(n > 0 for n in result.dropped.values())
    assert any(k.startswith("out of memory") for k in result.dropped)


def test_counts_add_up(result):
    c = result.counts
    assert c["enumerated"] == c["out_of_memory"] + c["constrained"] + c["ranked"]
    assert c["constrained"] == 0


def test_engine_confirms_the_analytic_memory_filter(result):
    for r in result.refined:
        if r.source == "search":
            assert r.report["fits_in_memory"]
            assert r.report["memory_bytes"]["total"] == pytest.approx(r.analytic["memory_bytes.total"], rel=1e-9)


def test_constraint_filters_analytically_and_on_the_engine():
    cap = 60 * 2**30
    res = search(KORTHIKANTI, gpus=[64], top=3, constraints=[parse_constraint(f"memory_bytes.total<{cap}")],
                 workers=1)
    assert res.counts["constrained"] > 0
    for r in res.refined:
        if r.source == "search":
            assert r.analytic["memory_bytes.total"] < cap
    assert res.best.report["memory_bytes"]["total"] < cap


@pytest.mark.parametrize("text", ["mfu", "mfu<>0.3", "tpot_s.p99<0.05", "mfu<fast"])
def test_bad_constraints(text):
    with pytest.raises(ValueError):
        parse_constraint(text)


def test_every_enumerated_layout_loads_as_a_scenario():
    base = load_scenario(KORTHIKANTI)
    c = enumerate_layouts(base, 64, SearchSpace())
    rng = np.random.default_rng(0)
    for i in rng.choice(len(c), size=60, replace=False):
        scn = load_scenario(KORTHIKANTI, overrides(c.row(i), base.model.layers, 8, 64))
        assert scn.micro_batches == c.m[i]


def test_stage_split_is_llama_style():
    assert stage_split(126, 16) == (7,) + (8,) * 14 + (7,)
    assert stage_split(96, 8) is None
    split = stage_split(100, 7)
    assert sum(split) == 100 and max(split) - min(split) == 1


def test_cli_writes_outputs_and_rejects_bad_input(tmp_path):
    out_json, out_csv, out_png = tmp_path / "s.json", tmp_path / "s.csv", tmp_path / "s.png"
    result = runner.invoke(app, ["search", str(KORTHIKANTI), "--top", "2", "--json", str(out_json), "--csv",
                                 str(out_csv), "--plot", str(out_png), "-q", "-j", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads(out_json.read_text())
    assert data["best"]["report"]["step_time_s"] > 0 and data["counts"]["enumerated"] > 1000
    assert out_csv.read_text().startswith("rank,label")
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    for args in (["--gpus", "60"], ["--gpus", "x"], ["--objective", "speed"], ["--constraint", "mfu"],
                 ["--top", "0"]):
        bad = runner.invoke(app, ["search", str(KORTHIKANTI), *args, "--json", str(tmp_path / "bad.json")])
        assert bad.exit_code == 2 and "\n" not in bad.stderr.strip(), args
        assert not (tmp_path / "bad.json").exists()


@pytest.mark.parametrize("maximize_y", [False, True])
def test_pareto_front_is_exactly_the_non_dominated_points(maximize_y):
    from simulator.output.pareto import front

    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 30, 400).astype(float), rng.integers(0, 30, 400).astype(float)
    keep = set(front(x, y, maximize_y=maximize_y).tolist())
    yy = -y if maximize_y else y
    for i in range(len(x)):
        dominated = ((x <= x[i]) & (yy <= yy[i]) & ((x < x[i]) | (yy < yy[i]))).any()
        if i in keep:
            assert not dominated
        else:  # dominated, or a duplicate of a kept point
            assert dominated or any(x[k] == x[i] and y[k] == y[i] for k in keep)
    assert np.all(np.diff(x[sorted(keep, key=lambda k: x[k])]) > 0)


LLAMA_405B = ROOT / "scenarios" / "llama3-405b-h100.yaml"


def _rerun(line: str, tmp_path) -> dict:
    """Run a printed '#k  simrack run ...' line through the CLI; its JSON report."""
    import shlex

    words = shlex.split(line.split(None, 1)[1])
    assert words[:2] == ["simrack", "run"]
    out = tmp_path / "rerun.json"
    result = runner.invoke(app, [*words[1:], "--json", str(out), "-q"])
    assert result.exit_code == 0, (line, result.output)
    return json.loads(out.read_text())


def test_printed_commands_reproduce_the_engine_figures(tmp_path):
    """Each ranked layout's printed `simrack run` line (the search's --set first, uneven stage_layers
    spelled out, another GPU count) gives the engine figures the search reported, within 1e-9."""
    out = tmp_path / "s.json"
    one_chunk = ["layout.schedule=1f1b", "layout.chunks=1", f"layout.stage_layers=[7, {'8, ' * 14}7]"]
    sets = [a for x in ["workload.global_batch=8192", *one_chunk] for a in ("--set", x)]
    result = runner.invoke(app, ["search", str(LLAMA_405B), "--gpus", "8192", "--top", "2", *sets,
                                 "-j", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    refined = json.loads(out.read_text())["refined"]
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("#") and "simrack run" in ln]
    assert len(lines) == len(refined) == 3
    assert any("layout.stage_layers=[" in ln for ln in lines)  # uneven splits are spelled out
    assert all("workload.global_batch=8192" in ln for ln in lines)
    for ln, r in zip(lines, refined):
        assert ln.startswith(f"#{refined.index(r) + 1} ")
        report = _rerun(ln, tmp_path)
        for key in ("tokens_per_s", "step_time_s"):
            assert report[key] == pytest.approx(r["report"][key], rel=1e-9, abs=0), (ln, key)
    own = next(r for r in refined if r["source"] == "scenario")
    assert own["analytic"] == {}
    assert own["outside_search_space"] == "16384 GPUs, the search ran on 8192"


def test_own_layout_out_of_memory_still_has_an_analytic_figure():
    """Llama 3 405B's own TP8 PP16 layout under ZeRO-1 (weights and gradients whole on every rank; the
    search's split matches its 3/4/.../4/3) does not fit; its analytic step time is still a number, a
    lower bound of the engine's (the analytic families are paths of the engine's graph) within 5%."""
    res = search(LLAMA_405B, gpus=[16384], top=1, workers=1, scenario_overrides=["layout.zero=1"])
    own = next(r for r in res.refined if r.source != "search")
    assert own.outside == "" and not own.report["fits_in_memory"]
    a, engine = own.analytic["step_time_s"], own.report["step_time_s"]
    assert np.isfinite(a) and 0.95 * engine <= a <= engine * (1 + 1e-9)


def test_own_layout_outside_the_space_says_why(tmp_path):
    result = runner.invoke(app, ["search", str(KORTHIKANTI), "--top", "1", "-j", "1",
                                 "--set", "layout.sequence_parallel=false"])
    assert result.exit_code == 0, result.output
    assert "not in search space" in result.stdout and "nan" not in result.stdout
    assert ("is not in the search space: sequence_parallel off with TP8 (the search turns it on here); simulated "
            "beside the results" in result.stdout)
    assert "it ranks #" in result.stdout or "it ties the best" in result.stdout or "it is the best" in result.stdout


def test_ties_are_ties():
    """Layouts whose engine objective equals the best's within 1e-9 tie; the others lost by a visible
    percentage, never '0.0%'."""
    from simulator.whatif.search import Refined, reason_lost

    result = search(ROOT / "scenarios" / "gpt3-175b-selene.yaml", gpus=[64], top=5, workers=1)
    best = result.best
    tied = [r for r in result.refined[1:] if r.status == "ok"
            and abs(r.report["tokens_per_s"] / best.report["tokens_per_s"] - 1) <= 1e-9]
    assert tied  # on 64 GPUs, ZeRO 2 and 3 of the best mesh step alike
    for r in result.refined[1:]:
        assert r.tie == (r in tied)
        assert ("tie" in r.reason) == (r in tied) and "0.0%" not in r.reason
    assert best.tie

    def one(tps: float) -> Refined:
        rep = {**best.report, "tokens_per_s": tps}
        return Refined(row=best.row, label="x", analytic={}, report=rep, status="ok", error=None)

    base = best.report["tokens_per_s"]
    assert reason_lost(one(base * (1 - 5e-10)), best, "tokens_per_s").startswith("tie with the best")
    assert reason_lost(one(base * (1 - 1e-6)), best, "tokens_per_s").startswith("0.0001% lower tokens_per_s")
    assert reason_lost(one(base * 0.9), best, "tokens_per_s").startswith("10.0% lower tokens_per_s")


def test_an_moe_model_is_refused_with_the_sweep_that_explores_it():
    """The analytic pass prices dense models only: an MoE scenario is one line naming `model`, and the sweep it
    suggests runs on the same scenario."""
    path = Path(__file__).resolve().parents[1] / "scenarios" / "qwen3-235b-folding-h100.yaml"
    with pytest.raises(ScenarioError) as err:
        search(path, gpus=[256])
    assert "model: search covers dense models" in str(err.value) and "--grid layout.ep=" in str(err.value)
    points = sweep(path, {"layout.ep": [16, 32]})
    assert [p.status for p in points] == ["ok", "ok"]
