"""Preset names: a model, topology or device preset answers to its file's (entry's) name and to its aliases, case
and punctuation ignored; no two presets of a folder answer to one name; the report does not depend on the spelling."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from simulator import load_scenario, simulate
from simulator.cli import app
from simulator.scenario import loader
from simulator.scenario.base import ScenarioError
from simulator.scenario.json_schema import scenario_schema
from simulator.scenario.preset_names import device_aliases, preset_aliases, preset_key


def _devices() -> dict:
    return yaml.safe_load((loader.PRESETS_DIR / "devices.yaml").read_text())


def _tables() -> dict:
    """{table: {preset: aliases}} for the model presets, the topology presets and devices.yaml."""
    return {"models": preset_aliases(loader.MODELS_DIR), "topologies": preset_aliases(loader.PRESETS_DIR),
            "devices": device_aliases(loader.PRESETS_DIR)}


@pytest.mark.parametrize("table", ["models", "topologies", "devices"])
def test_no_two_presets_answer_to_one_name(table):
    spelled = [preset_key(name) for preset, aliases in _tables()[table].items() for name in (preset, *aliases)]
    assert len(spelled) == len(set(spelled)), sorted(n for n in spelled if spelled.count(n) > 1)


@pytest.mark.parametrize("alias, preset", [("H100", "h100-sxm"), ("h100 SXM5", "h100-sxm"), ("A100", "a100-80gb"),
                                           ("B200-SXM", "b200"), ("gb200", "gb200")])
def test_device_aliases(alias, preset):
    assert loader.device_preset(alias) == loader.device_preset(preset)
    assert loader.device_preset(alias)["name"] == _devices()[preset]["name"]


@pytest.mark.parametrize("alias, preset", [("Llama-3.1-405B", "llama3-405b"), ("llama3.3-70b", "llama3-70b"),
                                           ("Qwen3-235B", "qwen3-235b-a22b"), ("DeepSeek-R1", "deepseek-v3"),
                                           ("GPT-OSS-120B", "gpt-oss-120b")])
def test_model_aliases(alias, preset):
    assert loader.model_preset(alias) == loader.model_preset(preset)
    assert "aliases" not in loader.model_preset(alias)


@pytest.mark.parametrize("alias, preset", [("DGX-H100", "dgx-h100-superpod"), ("dgx-b200", "hgx-b200"),
                                           ("DGX GB200", "gb200-nvl72"), ("selene", "dgx-a100-superpod")])
def test_topology_alias_gives_the_presets_report(tmp_path, alias, preset):
    """The same step, byte for byte, whichever name the topology is given by (the report names the preset)."""
    reports = []
    for name in (alias, preset):
        path = tmp_path / f"{preset_key(name)}.yaml"
        path.write_text(yaml.safe_dump({
            "model": "llama3-8b", "topology": {"preset": name, "domains": 2},
            "workload": {"kind": "train", "seq_len": 2048, "global_batch": 144, "dtype": "bf16"},
            "layout": {"tp": 2, "pp": 1}}))
        report = simulate(load_scenario(path)).to_dict()
        reports.append(json.dumps({k: v for k, v in report.items() if k != "scenario"}, sort_keys=True))
        assert load_scenario(path).topology.name == preset
    assert reports[0] == reports[1]


def test_an_unknown_name_is_one_line_listing_the_presets():
    with pytest.raises(ScenarioError) as err:
        loader.device_preset("h100-pcie")
    assert str(err.value).startswith("topology.device: no preset 'h100-pcie'; available: a100-40gb")
    assert "\n" not in str(err.value)


def test_the_schema_lists_the_aliases():
    text = json.dumps(scenario_schema())
    for name in ("dgx-b200", "h100-sxm5", "llama3.1-405b"):
        assert f'"{name}"' in text


# --- simrack presets: the catalogue ---------------------------------------------------------------------------


def test_the_catalogue_lists_every_preset_with_its_figures(tmp_path):
    out = tmp_path / "presets.json"
    result = CliRunner().invoke(app, ["presets", "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    tables = _tables()
    assert [r["preset"] for r in rows["models"]] == list(tables["models"])
    assert [r["preset"] for r in rows["topologies"]] == list(tables["topologies"])
    assert [r["preset"] for r in rows["devices"]] == list(tables["devices"])
    models = {r["preset"]: r for r in rows["models"]}
    assert models["llama3-8b"]["parameters"] == pytest.approx(8.03e9, rel=0.01)  # Meta's model card: 8.03B
    assert models["mixtral-8x7b"]["active_parameters"] == pytest.approx(12.9e9, rel=0.015)  # Mistral: 12.9B active
    for r in rows["topologies"]:
        assert r["gpus"] == r["domains"] * r["domain_gpus"]
    devices = {r["preset"]: r for r in rows["devices"]}
    assert devices["h100-sxm"]["peak_flops"]["bf16"] == pytest.approx(989.4e12)
    assert devices["gb200"]["generation"] == "blackwell" and devices["a100-80gb"]["generation"] == "ampere"
    table = CliRunner().invoke(app, ["presets"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and all(name in table.output for name in ("llama3-405b", "gb200-nvl72", "dgx-b200"))


def test_a_preset_copied_into_a_file_loads(tmp_path):
    """A topology file made from a preset (its `aliases` line and all) is read like the preset."""
    (tmp_path / "pod.yaml").write_text((loader.PRESETS_DIR / "hgx-b200.yaml").read_text())
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({
        "model": "llama3-8b", "topology": "pod.yaml",
        "workload": {"kind": "train", "seq_len": 2048, "global_batch": 256, "dtype": "bf16"}}))
    scn = load_scenario(tmp_path / "s.yaml")
    assert (scn.topology.name, scn.gpus) == ("hgx-b200", 256)  # the name the file states


@pytest.mark.parametrize("section", ["model", "topology", "topology.device"])
def test_setting_a_preset_key_says_how_presets_are_named(section):
    with pytest.raises(ScenarioError) as err:
        load_scenario(Path(__file__).resolve().parents[1] / "scenarios" / "gpt3-175b-selene.yaml",
                      [f"{section}.preset=x"])
    assert f"{section}.preset: " in str(err.value) and f"--set {section}=NAME" in str(err.value)
