"""Preset names: a model, topology or device preset answers to its file's (entry's) name and to its aliases, case
and punctuation ignored; no two presets of a folder answer to one name; the report does not depend on the spelling."""

import json

import pytest
import yaml

from simulator import load_scenario, simulate
from simulator.scenario import loader
from simulator.scenario.base import ScenarioError
from simulator.scenario.json_schema import scenario_schema


def _devices() -> dict:
    return yaml.safe_load((loader.PRESETS_DIR / "devices.yaml").read_text())


def _tables() -> dict:
    """{table: {preset: aliases}} for the model presets, the topology presets and devices.yaml."""
    devices = {key: entry.get("aliases") or [] for key, entry in _devices().items()}
    return {"models": loader.preset_aliases(loader.MODELS_DIR), "topologies": loader.preset_aliases(loader.PRESETS_DIR),
            "devices": devices}


@pytest.mark.parametrize("table", ["models", "topologies", "devices"])
def test_no_two_presets_answer_to_one_name(table):
    spelled = [loader.preset_key(name) for preset, aliases in _tables()[table].items() for name in (preset, *aliases)]
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
        path = tmp_path / f"{loader.preset_key(name)}.yaml"
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
