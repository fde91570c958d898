"""A fresh clone and an installed wheel both work: simrack reads only its own files, found through the
package, and says which version wrote a report."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import simulator
from simulator import _version, data, load_scenario, simulate
from simulator.cli import app
from simulator.output.baseline import baseline_key, load_baseline
from simulator.output.render import to_json
from simulator.serving.report import ServeReport

ROOT = Path(__file__).resolve().parents[1]
# a path into the folder of reference material kept beside some checkouts (a fresh clone has none)
OUTSIDE = re.compile(r"\.\./shared|/\s*[\"']shared[\"']|[\"']shared[\"']\s*/|[\"']reference[\"']\s*/\s*[\"']published")
SOURCES = ("simulator", "topologies", "tests", "benchmarks", "scenarios", ".ci")
SMALL_TRAIN = """\
model: llama3-70b
topology: {preset: dgx-h100-superpod, domains: 2}
workload: {kind: train, seq_len: 4096, global_batch: 16, micro_batch: 1, dtype: bf16, recompute: full}
layout: {tp: 8, pp: 2, zero: 1}
"""
SMALL_SERVE = """\
model: llama3-8b
topology: {preset: dgx-h100-superpod, domains: 1}
workload: {kind: serve, prompt_len: 512, output_len: 16, batch: 8, arrivals: {rate: 4.0, count: 16, seed: 1}}
layout: {tp: 1, dp: 8}
"""
runner = CliRunner()


def test_nothing_reads_the_folder_beside_the_checkout():
    files = [p for top in SOURCES for p in sorted((ROOT / top).rglob("*"))
             if p.is_file() and (p.suffix in {".py", ".yaml", ".yml", ".toml", ""}) and "__pycache__" not in p.parts]
    assert any(p.name == "conftest.py" for p in files) and any(p.suffix == ".yaml" for p in files)
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in files
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, "\n".join(hits)


def test_published_figures_ship_inside_the_package():
    package = Path(simulator.__file__).resolve().parent
    assert data.PUBLISHED.resolve().is_relative_to(package)
    cases = data.reference()
    assert "korthikanti2022_iteration_times" in cases and "hw_h100_sxm" in cases
    for key, case in cases.items():
        assert case["id"] == key
        assert isinstance(case["source"]["title"], str) and case["source"]["title"].strip(), key
        assert isinstance(case["verified"], bool), key
        assert "reported" in case or "test_points" in case or "derived" in case, key


def test_reference_is_a_copy():
    first = data.reference()
    first["korthikanti2022_iteration_times"]["reported"] = None
    assert data.reference()["korthikanti2022_iteration_times"]["reported"] is not None


# --- the version: `simrack --version`, every JSON report ------------------------------------------

def test_version_option_prints_the_installed_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"simrack {metadata.version('simrack')}\n"
    assert re.fullmatch(r"simrack \d+\.\d+\.\d+\S*\n", result.stdout)


def test_version_falls_back_to_the_checkouts_pyproject(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(_version, "version", missing)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _version._find() == project["version"]


def test_json_reports_carry_the_version(tmp_path):
    scenario = tmp_path / "small.yaml"
    scenario.write_text(SMALL_TRAIN)
    out = tmp_path / "out" / "report.json"
    result = runner.invoke(app, ["run", str(scenario), "--json", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["simrack_version"] == simulator.__version__ == metadata.version("simrack")
    serve = tmp_path / "serve.yaml"
    serve.write_text(SMALL_SERVE)
    report = simulate(load_scenario(serve))
    assert isinstance(report, ServeReport)
    assert json.loads(to_json(report))["simrack_version"] == simulator.__version__


# --- an installed wheel, away from the checkout ---------------------------------------------------

def _call(cmd: list, cwd: Path, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, a working folder outside the checkout, environment): the wheel built from a copy
    of the sources, installed (not editable) into a fresh venv that sees this interpreter's packages."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    src = tmp / "src"  # a copy: the build writes build/ and *.egg-info beside the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("simulator", "topologies"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    _call([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w", tmp / "dist", "-q"], src, env, 300)
    wheel, = (tmp / "dist").glob("simrack-*.whl")
    venv = tmp / "venv"
    _call([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], tmp, env)
    site = Path(_call([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                      tmp, env).stdout.strip())
    # a venv's --system-site-packages is its base interpreter's: add this interpreter's site folders
    # (plain paths, after the venv's own, so their .pth files, editable installs among them, stay off)
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_simrack_test_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    _call([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
           "-q", wheel], tmp, env)
    work = tmp / "elsewhere"
    work.mkdir()
    return venv / "bin", work, env


def test_wheel_imports_from_the_venv_not_the_checkout(installed):
    bin_, work, env = installed
    out = _call([bin_ / "python", "-c", "import simulator, topologies, simulator.data as d; "
                 "print(simulator.__file__); print(topologies.__file__); print(d.PUBLISHED); "
                 "print(simulator.__version__)"],
                work, env).stdout.split()
    venv = bin_.parent.resolve()
    assert all(Path(p).resolve().is_relative_to(venv) for p in out[:3]), out
    assert not any(Path(p).resolve().is_relative_to(ROOT) for p in out[:3]), out
    assert out[3] == metadata.version("simrack")
    assert (Path(out[0]).parent / "py.typed").is_file()


def test_wheel_runs_a_scenario_of_presets(installed):
    bin_, work, env = installed
    (work / "my.yaml").write_text(SMALL_TRAIN)
    done = _call([bin_ / "simrack", "run", "my.yaml", "--json", "my.json"], work, env)
    report = json.loads((work / "my.json").read_text())
    assert "step time" in done.stdout and report["simrack_version"] == metadata.version("simrack")
    assert report["gpus"] == 16 and report["layout"]["tp"] == 8 and report["layout"]["pp"] == 2
    assert report["tokens_per_s"] == pytest.approx(16 * 4096 / report["step_time_s"], rel=1e-9)  # batch x seq
    assert 0.2 < report["mfu"] < 0.6 and report["fits_in_memory"] is True


def test_wheel_validates_and_says_its_version(installed):
    bin_, work, env = installed
    done = _call([bin_ / "simrack", "validate", "--json", "v.json", "-q"], work, env)
    result = json.loads((work / "v.json").read_text())
    shipped = yaml.safe_load((ROOT / "simulator" / "data" / "validation" / "cases.yml").read_text())["cases"]
    assert len(result["cases"]) == len(shipped) and all(c["problem"] is None for c in result["cases"]), done.stderr
    errors = [abs(c["error"]) for c in result["cases"] if c["reference"] == "korthikanti2022_iteration_times"]
    assert len(errors) == 8 and sum(errors) / 8 <= 0.05 and max(errors) <= 0.10  # the README's bar
    version = _call([bin_ / "simrack", "--version"], work, env).stdout
    assert version == f"simrack {metadata.version('simrack')}\n"


# --- CI: a copy of the checkout, the README's commands, the committed baseline -------------------

def _readme_block_line(start: str) -> str:
    lines = [line.strip() for line in (ROOT / "README.md").read_text().splitlines()]
    found = [line for line in lines if line.startswith(start)]
    assert len(found) == 1, found
    return found[0]


def test_ci_checks_the_shipped_scenarios_as_the_readme_says():
    command = _readme_block_line("simrack check ")
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci
    baseline = ROOT / command.split("--baseline ")[1].split()[0]
    scenarios = sorted([*ROOT.glob("scenarios/*.yaml"), *ROOT.glob("scenarios/scale/*.yaml")])
    assert len(scenarios) > 2
    stored = load_baseline(baseline)
    assert set(stored) == {baseline_key(p, baseline) for p in scenarios}
    for key, entry in stored.items():
        assert entry["kind"] in {"train", "serve"}, key
        assert ("step_time_s" if entry["kind"] == "train" else "ttft_s.p99") in entry["metrics"], key
    assert json.loads(baseline.read_text())["simrack_version"]


def test_ci_runs_the_readme_test_command_in_a_copy_of_the_checkout():
    readme = _readme_block_line("python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]'")
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = readme.split(" && ")[-1]
    assert test_command == "python -m pytest -q" and f"\n{test_command} " in ci
    assert "git ls-files -z | xargs -0 cp --parents" in ci and "mktemp -d" in ci
    assert ci.index("cd \"$copy\"") < ci.index("pip install") < ci.index(test_command)
