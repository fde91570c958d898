"""simrack schema: the JSON Schema accepts every shipped scenario and rejects what the loader rejects;
its unit patterns read exactly the strings simulator.scenario.units reads."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from simulator import ScenarioError, load_scenario
from simulator.cli import app
from simulator.scenario.json_schema import scenario_schema
from simulator.scenario.units import DIMENSIONS

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
# Scenarios are *.yaml; side data beside them (validation cases, study tables) is *.yml.
SHIPPED = sorted(itertools.chain((ROOT / "scenarios").rglob("*.yaml"),
                                 (ROOT / "simulator" / "data" / "validation").glob("*.yaml")))


@pytest.fixture(scope="module")
def validator():
    schema = scenario_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_there_are_shipped_scenarios():
    assert len(SHIPPED) >= 10
    assert {"gpt3-175b-selene.yaml", "serve-llama3-70b-disaggregated.yaml"} <= {p.name for p in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT)) for p in SHIPPED])
def test_every_shipped_scenario_validates(validator, path):
    load_scenario(path)  # the loader accepts it (so it is a scenario) ...
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []  # ... and so does the schema


GOOD = """\
model: llama3-8b
topology: {preset: dgx-h100-superpod, domains: 1, domain: {bandwidth: 450 GB/s}}
workload: {kind: train, seq_len: 8192, global_batch: 64, micro_batch: 1}
layout: {tp: 8, schedule: 1f1b}
"""

INLINE = """\
name: inline
model: {preset: llama3-8b, layers: 16}
topology:
  device: {preset: h100-sxm, hbm: 96 GiB}
  domain: {gpus: 8, bandwidth: 3.6 Tb/s, latency: 2us}
  scaleout: {nic_bandwidth: 400 Gbps, nics_per_domain: 8, latency: 5 µs}
  domains: 1
workload: {kind: serve, prompt_len: 512, output_len: 64, slo: {ttft: 1.5 s, tpot: 50 ms}}
layout: {tp: 8, dp: 1}
faults: null
"""

DEVICE = "{name: X, peak_flops: {bf16: 989 TFLOP/s}, hbm: 80 GiB, hbm_bandwidth: 3.35 TB/s}"

BAD = [  # (id, scenario text) the loader rejects
    ("unknown-top-key", GOOD + "colour: red\n"),
    ("unknown-layout-key", GOOD.replace("schedule: 1f1b", "schedule: 1f1b, foo: 1")),
    ("unknown-key-beside-preset", GOOD.replace("domains: 1,", "domains: 1, racks: 2,")),
    ("unknown-domain-key", GOOD.replace("bandwidth: 450 GB/s", "bandwidth: 450 GB/s, lanes: 4")),
    ("negative-tp", GOOD.replace("tp: 8", "tp: -8")),
    ("zero-tp", GOOD.replace("tp: 8", "tp: 0")),
    ("tp-string", GOOD.replace("tp: 8", "tp: eight")),
    ("wrong-schedule", GOOD.replace("schedule: 1f1b", "schedule: 2f2b")),
    ("bad-unit", GOOD.replace("450 GB/s", "450 parsecs")),
    ("unit-of-another-dimension", GOOD.replace("450 GB/s", "450 GiB")),
    ("negative-bandwidth", GOOD.replace("450 GB/s", "-450 GB/s")),
    ("unit-without-number", GOOD.replace("450 GB/s", "GB/s")),
    ("wrong-type", GOOD.replace("seq_len: 8192", "seq_len: long")),
    ("list-for-mapping", GOOD.replace("layout: {tp: 8, schedule: 1f1b}", "layout: [8, 1f1b]")),
    ("unknown-model-preset", GOOD.replace("llama3-8b", "llama9-1t")),
    ("unknown-topology-preset", GOOD.replace("dgx-h100-superpod", "dgx-z9000")),
    ("unknown-device-preset", INLINE.replace("preset: h100-sxm", "preset: z9000")),
    ("source-key", GOOD + "source: elsewhere.yaml\n"),
    ("inline-domain-missing-gpus", INLINE.replace("gpus: 8, ", "")),
    ("bad-time-unit", INLINE.replace("tpot: 50 ms", "tpot: 50 parsecs")),
    ("bad-recompute", GOOD.replace("micro_batch: 1", "micro_batch: 1, recompute: some")),
    ("bool-as-string", GOOD.replace("schedule: 1f1b", "schedule: 1f1b, sequence_parallel: maybe")),
    ("auto-bool-as-string", GOOD.replace("schedule: 1f1b", "schedule: 1f1b, tp_overlap: maybe")),
    ("auto-bool-as-number", GOOD.replace("schedule: 1f1b", "schedule: 1f1b, overlap_grad_reduce: 1")),
    ("python-name-beside-preset", INLINE.replace("hbm: 96 GiB", "hbm_bytes: 96 GiB")),
    ("device-missing-hbm", INLINE.replace("{preset: h100-sxm, hbm: 96 GiB}", DEVICE.replace("hbm: 80 GiB, ", ""))),
]


@pytest.mark.parametrize("text", [GOOD, INLINE, INLINE.replace("{preset: h100-sxm, hbm: 96 GiB}", DEVICE),
                                  INLINE.replace("{preset: h100-sxm, hbm: 96 GiB}",
                                                 DEVICE.replace("hbm:", "hbm_bytes:")),
                                  GOOD.replace("schedule: 1f1b", "schedule: 1f1b, sequence_parallel: true, "
                                                                 "tp_overlap: auto, overlap_grad_reduce: false")],
                         ids=["presets", "inline", "inline-device", "python-name", "auto-settings"])
def test_good_examples_pass_both(tmp_path, validator, text):
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    load_scenario(path)
    assert list(validator.iter_errors(yaml.safe_load(text))) == []


@pytest.mark.parametrize("text", [t for _, t in BAD], ids=[i for i, _ in BAD])
def test_what_the_loader_rejects_the_schema_rejects(tmp_path, validator, text):
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError):
        load_scenario(path)
    assert not validator.is_valid(yaml.safe_load(text))


@pytest.mark.parametrize("value", [450e9, 0.5e12])
def test_bare_number_in_a_dimensional_field_follows_the_loader(tmp_path, validator, value):
    """A bare number where a unit belongs: the schema accepts it exactly when the loader does
    (simrack is moving to require units; the schema follows simulator.scenario.units)."""
    text = GOOD.replace("450 GB/s", repr(value))
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_scenario(path)
        loads = True
    except ScenarioError:
        loads = False
    assert validator.is_valid(yaml.safe_load(text)) == loads


NUMBERS = ["1", "2.5", ".5", "10.", "1e3", "1E-3", "+3", "0", "-1", "1,5", "e3", "1e", "--1", ""]


def _loader_reads(dim, text: str) -> bool:
    """The loader reads it: a value >= 0 written without a minus sign (the schema refuses "-0 s" too),
    with a unit (a bare number is refused from YAML)."""
    try:
        dim.require_unit(text)
        return dim.parse(text) >= 0 and not text.lstrip().startswith("-")
    except ValueError:
        return False


@pytest.mark.parametrize("name", list(DIMENSIONS))
def test_unit_pattern_matches_exactly_what_the_loader_reads(name):
    import re

    dim = DIMENSIONS[name]
    pattern = re.compile(dim.pattern)
    names = list(dim.units) + ["parsecs", "gb", "GB/h", "B B", "TFLOPs"]
    for number, sep, unit in itertools.product(NUMBERS, ["", " ", "  "], names + [""]):
        text = f"{number}{sep}{unit}"
        assert bool(pattern.search(text)) == _loader_reads(dim, text), text


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(DIMENSIONS)), st.text(alphabet="0123456789.eE+- kMGTPiBb/spsFLOPmnuµhi", max_size=12))
def test_unit_pattern_agrees_with_the_loader_on_any_text(name, text):
    import re

    dim = DIMENSIONS[name]
    assert bool(re.search(dim.pattern, text)) == _loader_reads(dim, text)


def test_the_schema_uses_the_units_patterns():
    """Every dimensional field of the schema carries simulator.scenario.units' pattern (one place for units)."""
    text = json.dumps(scenario_schema())
    for dim in DIMENSIONS.values():
        assert json.dumps(dim.pattern)[1:-1] in text, dim.kind


def test_cli_prints_the_schema_and_writes_it(tmp_path):
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == scenario_schema()
    out = tmp_path / "sub" / "simrack.schema.json"
    result = runner.invoke(app, ["schema", "--out", str(out)])
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(out.read_text()) == scenario_schema()


def test_cli_unwritable_out_is_one_line_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["schema", "--out", str(blocker / "s.json")])
    assert result.exit_code == 2
    assert result.stderr.startswith("simrack: ") and "--out" in result.stderr
    assert "\n" not in result.stderr.strip()


def test_readme_gives_the_modeline_and_the_command():
    readme = (ROOT / "README.md").read_text()
    assert "# yaml-language-server: $schema=" in readme
    assert "simrack schema --out simrack.schema.json" in readme
