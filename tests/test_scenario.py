"""simulator.scenario.spec and simulator.scenario.loader: loading, presets, overrides, defaults and one-line errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pydantic
import pytest
import yaml

from simulator.data import VALIDATION_DIR
from simulator.scenario import loader
from simulator.scenario.base import ScenarioError
from simulator.scenario.hardware import DeviceSpec
from simulator.scenario.loader import load_scenario
from simulator.scenario.spec import Layout, ModelSpec, Scenario

DELETE = object()
"""Marker in a patch: remove this key from the base scenario."""

DEVICES = {
    "a100": {
        "name": "A100-80GB",
        "peak_flops": {"bf16": "312 TFLOP/s", "fp16": "312 TFLOP/s"},
        "hbm": "80 GiB",
        "hbm_bandwidth": "2039 GB/s",
    },
    "h100": {
        "name": "H100-SXM",
        "peak_flops": {"bf16": "989 TFLOP/s", "fp8": "1979 TFLOP/s"},
        "hbm": "80 GiB",
        "hbm_bandwidth": "3.35 TB/s",
    },
}
POD = {
    "name": "mini-pod",
    "device": "a100",
    "domain": {"kind": "hgx", "gpus": 8, "bandwidth": "300 GB/s"},
    "scaleout": {"nic_bandwidth": "200 Gb/s", "nics_per_domain": 8},
    "domains": 2,
}
BASE = {
    "model": {"layers": 8, "hidden": 512, "heads": 8},
    "topology": {**POD, "device": DEVICES["a100"]},
    "workload": {"seq_len": 1024, "global_batch": 16},
    "layout": {"tp": 2, "pp": 2},
}
"""A valid scenario: 16 GPUs, tp 2 x pp 2 -> dp auto 4, 4 micro-batches per step."""


def patched(base: dict, patch: dict) -> dict:
    """`base` with `patch` merged in, nested mappings key by key; DELETE removes a key."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = patched(out[key], value)
        else:
            out[key] = value
    return out


def write(folder: Path, data: dict | str, name: str = "scenario.yaml") -> str:
    """Write `data` (a mapping, or raw YAML text) to folder/name; return the path as a string."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.fixture
def presets(tmp_path, monkeypatch):
    """A topology presets folder holding devices.yaml and mini-pod.yaml, used by the loader."""
    folder = tmp_path / "presets"
    write(folder, DEVICES, "devices.yaml")
    write(folder, POD, "mini-pod.yaml")
    monkeypatch.setattr(loader, "PRESETS_DIR", folder)
    return folder


# --- a valid scenario ---------------------------------------------------------------------------


def test_valid_scenario_loads_with_si_values_and_defaults(tmp_path):
    path = write(tmp_path, BASE)
    s = load_scenario(path)
    assert (s.name, s.source) == ("scenario", path)
    device = s.topology.device
    assert device.hbm_bytes == 80 * 2**30
    assert device.hbm_bandwidth == 2.039e12
    assert device.peak_flops == {"bf16": 3.12e14, "fp16": 3.12e14}
    assert device.efficiency is None
    assert s.topology.domain.bandwidth == 3e11
    assert s.topology.domain.latency == pytest.approx(2e-6)
    scaleout = s.topology.scaleout
    assert scaleout.nic_bandwidth == 2.5e10  # 200 Gb/s
    assert (scaleout.kind, scaleout.oversubscription, scaleout.domains_per_leaf) == ("fat_tree", 1.0, 16)
    assert scaleout.latency == pytest.approx(5e-6)


def test_model_defaults_follow_design(tmp_path):
    m = load_scenario(write(tmp_path, BASE)).model
    assert (m.kv_heads, m.head_dim, m.ffn) == (8, 64, 2048)
    assert (m.ffn_kind, m.vocab, m.tied_embeddings, m.moe, m.name) == ("gelu", 51200, False, None, "custom")


def test_workload_layout_options_defaults(tmp_path):
    s = load_scenario(write(tmp_path, BASE))
    w, lay, o = s.workload, s.layout, s.options
    assert (w.kind, w.micro_batch, w.dtype, w.recompute, w.attention) == ("train", 1, "bf16", "selective", "auto")
    assert (w.prompt_len, w.output_len, w.batch, w.arrivals, w.slo) == (None,) * 5
    assert (lay.ep, lay.cp, lay.sequence_parallel, lay.schedule, lay.chunks) == (1, 1, False, "1f1b", 1)
    assert (lay.zero, lay.distributed_optimizer, lay.stage_layers) == (0, False, None)
    assert lay.order == ("tp", "cp", "ep", "dp", "pp")
    assert (o.seed, o.gpu_hour_price) == (0, 2.0)


def test_dp_auto_resolves_and_derived_figures(tmp_path):
    s = load_scenario(write(tmp_path, BASE))
    assert s.gpus == 16
    assert s.layout.dp == 4
    assert s.micro_batches == 4
    assert s.layout.degrees() == {"tp": 2, "cp": 1, "ep": 1, "dp": 4, "pp": 2}
    assert list(s.layout.degrees()) == list(s.layout.order)


def test_scenario_is_frozen(tmp_path):
    s = load_scenario(write(tmp_path, BASE))
    with pytest.raises(pydantic.ValidationError):
        s.layout.tp = 4
    with pytest.raises(pydantic.ValidationError):
        s.name = "other"



def test_construction_validates_without_the_loader():
    layout = Layout(tp=2)
    assert layout.dp == "auto"
    data = patched(BASE, {"layout": {"tp": 3}})
    with pytest.raises(pydantic.ValidationError, match=r"heads \(8\) not divisible by tp \(3\)"):
        Scenario.model_validate({"name": "x", **data})


def test_full_scenario_fields_round_trip(tmp_path):
    data = patched(BASE, {
        "name": "explicit",
        "model": {"kv_heads": 2, "ffn": 1376, "ffn_kind": "swiglu", "vocab": 32000, "tied_embeddings": True},
        "workload": {"micro_batch": 2, "dtype": "fp16", "recompute": "full", "global_batch": 32},
        "layout": {"tp": 2, "pp": 2, "dp": 2, "cp": 2, "sequence_parallel": True, "schedule": "interleaved",
                   "chunks": 2, "zero": 1, "distributed_optimizer": True, "order": ["cp", "tp", "dp", "ep", "pp"],
                   "stage_layers": [1, 3, 3, 1]},
        "options": {"seed": 7, "gpu_hour_price": 3.5},
    })
    s = load_scenario(write(tmp_path, data))
    assert s.name == "explicit"
    assert (s.model.kv_heads, s.model.ffn, s.model.ffn_kind) == (2, 1376, "swiglu")
    assert s.layout.stage_layers == (1, 3, 3, 1)
    assert s.layout.order == ("cp", "tp", "dp", "ep", "pp")
    assert s.micro_batches == 8
    assert (s.options.seed, s.options.gpu_hour_price) == (7, 3.5)


def test_serve_fields_are_accepted(tmp_path):
    data = patched(BASE, {"workload": {
        "kind": "serve", "seq_len": DELETE, "global_batch": DELETE, "prompt_len": 1000, "output_len": 200,
        "batch": 32, "arrivals": {"rate": 2.5, "count": 100}, "slo": {"ttft": "500 ms", "tpot": "50 ms"},
    }})
    w = load_scenario(write(tmp_path, data)).workload
    assert (w.kind, w.seq_len, w.batch, w.arrivals.rate, w.arrivals.seed) == ("serve", 1200, 32, 2.5, 0)
    assert (w.slo.ttft, w.slo.tpot) == pytest.approx((0.5, 0.05))


def test_moe_fields_are_accepted(tmp_path):
    data = patched(BASE, {"model": {"moe": {"experts": 8, "top_k": 2}}, "layout": {"ep": 2}})
    s = load_scenario(write(tmp_path, data))
    assert (s.model.moe.experts, s.model.moe.expert_ffn, s.model.moe.shared_experts) == (8, 2048, 0)
    assert s.layout.ep == 2


def test_dump_round_trips(tmp_path):
    s = load_scenario(write(tmp_path, patched(BASE, {"model": {"moe": MOE}, "layout": {"ep": 2}})))
    assert Scenario.model_validate(s.model_dump()) == s


def test_yaml_anchors_and_merge_keys_are_allowed(tmp_path):
    text = yaml.safe_dump(patched(BASE, {"layout": DELETE}), sort_keys=False)
    text += "layout:\n  <<: {tp: 4, pp: 2}\n  tp: 2\n"
    assert load_scenario(write(tmp_path, text)).layout.tp == 2


# --- presets ------------------------------------------------------------------------------------


def test_model_preset_by_name(tmp_path):
    s = load_scenario(write(tmp_path, patched(BASE, {
        "model": "gpt3-175b", "topology": {"domains": 16}, "workload": {"global_batch": 64},
        "layout": {"tp": 8, "pp": 8}})))
    assert (s.model.name, s.model.layers, s.model.hidden, s.model.ffn) == ("gpt3-175b", 96, 12288, 49152)
    assert s.layout.dp == 2


def test_model_preset_with_overrides(tmp_path):
    s = load_scenario(write(tmp_path, patched(BASE, {"model": {"preset": "llama3-8b", "layers": 8}})))
    assert (s.model.name, s.model.layers, s.model.kv_heads, s.model.ffn) == ("llama3-8b", 8, 8, 14336)


def test_topology_preset_by_name(tmp_path, presets):
    s = load_scenario(write(tmp_path, patched(BASE, {"topology": "mini-pod"})))
    assert (s.topology.name, s.topology.device.name, s.gpus) == ("mini-pod", "A100-80GB", 16)


def test_topology_preset_with_overrides(tmp_path, presets):
    topology = {"preset": "mini-pod", "domains": 4, "domain": {"bandwidth": "450 GB/s"},
                "device": {"preset": "a100", "hbm": "40 GiB", "efficiency": {"gemm": 0.7}}}
    s = load_scenario(write(tmp_path, patched(BASE, {"topology": topology, "workload": {"global_batch": 32}})))
    assert (s.gpus, s.layout.dp, s.topology.domain.bandwidth) == (32, 8, 4.5e11)
    assert (s.topology.domain.gpus, s.topology.device.hbm_bytes) == (8, 40 * 2**30)
    assert s.topology.device.efficiency == {"gemm": 0.7}


def test_topology_file_relative_to_scenario(tmp_path, presets, monkeypatch):
    pod = {key: value for key, value in POD.items() if key != "name"} | {"device": "h100"}
    write(tmp_path / "systems", pod, "pod.yaml")
    path = write(tmp_path, patched(BASE, {"topology": "systems/pod.yaml"}))
    monkeypatch.chdir(presets)
    s = load_scenario(path)
    assert (s.topology.name, s.topology.device.name, s.gpus) == ("pod", "H100-SXM", 16)


def test_device_preset_by_name(tmp_path, presets):
    s = load_scenario(write(tmp_path, patched(BASE, {"topology": {"device": "h100"}})))
    assert s.topology.device.peak_flops["fp8"] == 1.979e15


# --- overrides ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        pytest.param(["layout.pp=4"], lambda s: (s.layout.pp, s.layout.dp) == (4, 2), id="int"),
        pytest.param(["layout.dp=2", "layout.pp=4"], lambda s: s.layout.dp == 2, id="two-in-order"),
        pytest.param(["layout.order=[tp,dp,pp,cp,ep]"], lambda s: s.layout.order == ("tp", "dp", "pp", "cp", "ep"),
                     id="list"),
        pytest.param(["topology.domain.bandwidth=450 GB/s"], lambda s: s.topology.domain.bandwidth == 4.5e11,
                     id="unit-string"),
        pytest.param(["topology.device.peak_flops.fp8=624 TFLOP/s", "workload.dtype=fp8"],
                     lambda s: s.topology.device.peak_flops["fp8"] == 6.24e14, id="new-dict-key"),
        pytest.param(["layout.sequence_parallel=true"], lambda s: s.layout.sequence_parallel is True, id="bool"),
        pytest.param(["name=renamed"], lambda s: s.name == "renamed", id="top-level"),
        pytest.param(["model=llama3-8b"], lambda s: s.model.hidden == 4096, id="names-a-preset"),
        pytest.param(["model.moe.experts=4", "model.moe.top_k=1"], lambda s: s.model.moe.experts == 4,
                     id="creates-missing-section"),
    ],
)
def test_overrides_apply(tmp_path, overrides, check):
    assert check(load_scenario(write(tmp_path, BASE), overrides))


def test_overrides_reach_into_an_expanded_preset(tmp_path, presets):
    path = write(tmp_path, patched(BASE, {"topology": "mini-pod", "options": DELETE}))
    s = load_scenario(path, ["topology.domains=4", "topology.device=h100", "options.seed=3"])
    assert (s.gpus, s.layout.dp, s.topology.device.name, s.options.seed) == (32, 8, "H100-SXM", 3)


# --- real presets -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "shape"),
    [
        pytest.param("gpt3-175b", (96, 12288, 96, 96, 49152, "gelu", 51200, True), id="gpt3-175b"),
        pytest.param("megatron-22b", (48, 6144, 64, 64, 24576, "gelu", 51200, True), id="megatron-22b"),
        pytest.param("megatron-175b", (96, 12288, 96, 96, 49152, "gelu", 51200, True), id="megatron-175b"),
        pytest.param("megatron-530b", (105, 20480, 128, 128, 81920, "gelu", 51200, True), id="megatron-530b"),
        pytest.param("megatron-1t", (128, 25600, 160, 160, 102400, "gelu", 51200, True), id="megatron-1t"),
        pytest.param("llama3-8b", (32, 4096, 32, 8, 14336, "swiglu", 128256, False), id="llama3-8b"),
        pytest.param("llama3-70b", (80, 8192, 64, 8, 28672, "swiglu", 128256, False), id="llama3-70b"),
        pytest.param("llama3-405b", (126, 16384, 128, 8, 53248, "swiglu", 128256, False), id="llama3-405b"),
    ],
)
def test_model_presets(name, shape):
    data = loader.model_preset(name)
    m = ModelSpec.model_validate(data)
    assert m.name == name
    assert (m.layers, m.hidden, m.heads, m.kv_heads, m.ffn, m.ffn_kind, m.vocab, m.tied_embeddings) == shape


def test_model_presets_agree_with_published_figures(reference):
    megatron = reference("korthikanti2022_iteration_times")["config"]["models"]
    for size, cfg in megatron.items():
        m = ModelSpec.model_validate(loader.model_preset(f"megatron-{size.lower()}"))
        assert (m.layers, m.hidden, m.heads) == (cfg["layers"], cfg["hidden"], cfg["heads"])
    llama = reference("scalingbook_llama3_70b_training_tpu_v5p")["config"]["model"]
    m = ModelSpec.model_validate(loader.model_preset("llama3-70b"))
    assert (m.layers, m.hidden, m.ffn, m.heads, m.kv_heads, m.head_dim, m.vocab) == (
        llama["layers"], llama["d_model"], llama["ffn"], llama["heads"], llama["kv_heads"], llama["head_dim"],
        llama["vocab"])


REAL_TOPOLOGIES = sorted(p.stem for p in loader.PRESETS_DIR.glob("*.yaml") if p.stem != "devices")


REPO_SCENARIOS = sorted([*(Path(__file__).resolve().parents[1] / "scenarios").rglob("*.yaml"),
                         *VALIDATION_DIR.glob("*.yaml")])


@pytest.mark.parametrize("path", REPO_SCENARIOS or [pytest.param(None, marks=pytest.mark.skip("none"))],
                         ids=lambda p: p.stem if p else "none")
def test_repository_scenarios_load(path):
    s = load_scenario(path)
    assert s.gpus == s.layout.tp * s.layout.pp * s.layout.dp * s.layout.cp


@pytest.mark.parametrize("name", REAL_TOPOLOGIES or [pytest.param("none", marks=pytest.mark.skip("no presets"))])
def test_real_topology_presets_load(tmp_path, name):
    preset = yaml.safe_load((loader.PRESETS_DIR / f"{name}.yaml").read_text())
    gpus = preset["domains"] * preset["domain"]["gpus"]  # every preset states both
    data = patched(BASE, {"topology": name, "layout": {"tp": 1, "pp": 1},
                          "workload": {"global_batch": 2 * gpus}})
    s = load_scenario(write(tmp_path, data))
    assert s.gpus == s.layout.dp > 0
    assert isinstance(s.topology.device, DeviceSpec)


# --- malformed scenarios: one line, file path first, field path named, numbers quoted -----------

MOE = {"experts": 8, "top_k": 2}
BAD = [
    # (id, patch of BASE, expected field path, fragments the message must quote)
    ("unknown-top-level-key", {"colour": "red"}, "colour", ["unknown field", "model"]),
    ("unknown-layout-key", {"layout": {"tpp": 2}}, "layout.tpp", ["unknown field", "tp, pp"]),
    ("unknown-model-key", {"model": {"hiden": 512}}, "model.hiden", ["unknown field"]),
    ("unknown-device-key", {"topology": {"device": {"hbm_gb": 80}}}, "topology.device.hbm_gb", ["unknown field"]),
    ("wrong-type-int", {"model": {"hidden": "big"}}, "model.hidden", ["valid integer", "'big'"]),
    ("float-for-int", {"model": {"layers": 8.5}}, "model.layers", ["8.5"]),
    ("bool-for-int", {"layout": {"tp": True}}, "layout.tp", ["True"]),
    ("negative-layers", {"model": {"layers": -3}}, "model.layers", ["-3"]),
    ("zero-global-batch", {"workload": {"global_batch": 0}}, "workload.global_batch", ["0"]),
    ("negative-price", {"options": {"gpu_hour_price": -1.5}}, "options.gpu_hour_price", ["-1.5"]),
    ("dp-zero", {"layout": {"dp": 0}}, "layout.dp", ["0", "auto"]),
    ("heads-not-divisible-by-tp", {"layout": {"tp": 3}}, "layout.tp", ["heads (8)", "tp (3)"]),
    ("kv-heads-vs-tp", {"model": {"hidden": 768, "heads": 12, "kv_heads": 3}},
     "layout.tp", ["kv_heads (3)", "tp (2)"]),
    ("heads-not-divisible-by-kv-heads", {"model": {"kv_heads": 3}}, "model.kv_heads", ["(8)", "(3)"]),
    ("hidden-not-divisible-by-heads", {"model": {"hidden": 500}}, "model.head_dim", ["(500)", "(8)"]),
    ("layers-not-divisible-by-stages", {"model": {"layers": 9}}, "layout.pp", ["(9)", "2*1 = 2"]),
    ("stage-layers-wrong-length", {"layout": {"stage_layers": [4, 3, 1]}},
     "layout.stage_layers", ["3 entries", "2*1 = 2"]),
    ("stage-layers-wrong-sum", {"layout": {"stage_layers": [3, 4]}}, "layout.stage_layers", ["sum 7", "(8)"]),
    ("stage-layers-negative-stage", {"layout": {"stage_layers": [9, -1]}}, "layout.stage_layers.1", ["-1"]),
    ("interleaved-one-chunk", {"layout": {"schedule": "interleaved"}}, "layout.chunks", ["interleaved", "1"]),
    ("interleaved-micro-batches-vs-pp", {"layout": {"schedule": "interleaved", "chunks": 2},
                                         "workload": {"global_batch": 12}},
     "layout.schedule", ["= 3", "pp (2)"]),
    ("1f1b-with-chunks", {"layout": {"chunks": 2}}, "layout.chunks", ["1f1b", "2"]),
    ("zb-v-needs-two-chunks", {"layout": {"schedule": "zb-v", "chunks": 3}}, "layout.chunks", ["zb-v", "3"]),
    ("global-batch-vs-micro-batch-dp", {"workload": {"global_batch": 10}},
     "workload.global_batch", ["(10)", "1*4 = 4"]),
    ("dp-auto-not-divisible", {"layout": {"cp": 3}}, "layout.dp", ["gpus (16)", "2*2*3 = 12"]),
    ("mesh-product-vs-gpus", {"layout": {"dp": 8}}, "layout", ["2*2*8*1 = 32", "16 GPUs"]),
    ("seq-len-vs-cp", {"layout": {"cp": 2}, "workload": {"seq_len": 1025}}, "workload.seq_len", ["1025", "(2)"]),
    ("sequence-parallel-vs-tp", {"layout": {"sequence_parallel": True}, "workload": {"seq_len": 1023}},
     "workload.seq_len", ["1023", "tp (2)"]),
    ("order-not-a-permutation", {"layout": {"order": ["tp", "dp", "pp"]}}, "layout.order", ["[tp, dp, pp]"]),
    ("order-unknown-axis", {"layout": {"order": ["tp", "cp", "ep", "dp", "xp"]}}, "layout.order.4", ["'xp'"]),
    ("ep-without-moe", {"layout": {"ep": 2}}, "layout.ep", ["ep (2)", "moe"]),
    ("ep-not-dividing-dp", {"model": {"moe": MOE}, "layout": {"ep": 8}}, "layout.ep", ["ep (8)", "dp (4)"]),
    ("experts-not-divisible-by-ep", {"model": {"moe": {"experts": 6, "top_k": 2}}, "layout": {"ep": 4}},
     "layout.ep", ["experts (6)", "ep (4)"]),
    ("moe-top-k-above-experts", {"model": {"moe": {"experts": 4, "top_k": 5}}}, "model.moe.top_k", ["(5)", "(4)"]),
    ("dtype-not-on-device", {"workload": {"dtype": "fp8"}}, "workload.dtype", ["fp8", "A100-80GB", "bf16, fp16"]),
    ("unknown-dtype", {"workload": {"dtype": "fp4"}}, "workload.dtype", ["'fp4'"]),
    ("unknown-schedule", {"layout": {"schedule": "zb-h3"}}, "layout.schedule", ["'zb-h3'", "dualpipe"]),
    ("unknown-recompute", {"workload": {"recompute": "partial"}}, "workload.recompute", ["'partial'"]),
    ("unknown-attention-kernel", {"workload": {"attention": "fused"}}, "workload.attention", ["'fused'"]),
    ("unknown-workload-kind", {"workload": {"kind": "infer"}}, "workload.kind", ["'infer'"]),
    ("zero-stage-above-3", {"layout": {"zero": 4}}, "layout.zero", ["4"]),
    ("bad-bandwidth-unit", {"topology": {"domain": {"bandwidth": "300 GBs"}}},
     "topology.domain.bandwidth", ["'300 GBs'", "900 GB/s"]),
    ("bits-for-a-size", {"topology": {"device": {"hbm": "80 Gb"}}}, "topology.device.hbm", ["'80 Gb'"]),
    ("bad-flops-unit", {"topology": {"device": {"peak_flops": {"bf16": "312 TB/s"}}}},
     "topology.device.peak_flops.bf16", ["'312 TB/s'"]),
    ("negative-latency", {"topology": {"domain": {"latency": "-2 us"}}}, "topology.domain.latency", ["'-2 us'"]),
    ("efficiency-above-one", {"topology": {"device": {"efficiency": {"gemm": 1.5}}}},
     "topology.device.efficiency.gemm", ["1.5"]),
    ("oversubscription-below-one", {"topology": {"scaleout": {"oversubscription": 0.5}}},
     "topology.scaleout.oversubscription", ["0.5"]),
    ("unknown-domain-kind", {"topology": {"domain": {"kind": "nvl36"}}}, "topology.domain.kind", ["'nvl36'"]),
    ("missing-section", {"workload": DELETE}, "workload", ["required field missing"]),
    ("train-needs-global-batch", {"workload": {"global_batch": DELETE}}, "workload.global_batch", ["train"]),
    ("section-not-a-mapping", {"layout": [2, 2]}, "layout", ["[2, 2]"]),
    ("unknown-model-preset", {"model": "gpt-9"}, "model", ["no preset 'gpt-9'", "gpt3-175b", "llama3-70b"]),
    ("unknown-model-preset-key", {"model": {"preset": "gpt-9"}}, "model.preset", ["'gpt-9'"]),
    ("source-in-file", {"source": "elsewhere.yaml"}, "source", ["loader"]),
]


@pytest.mark.parametrize(("patch", "field", "fragments"), [pytest.param(*case[1:], id=case[0]) for case in BAD])
def test_malformed_scenario_is_one_line_error(tmp_path, patch, field, fragments):
    path = write(tmp_path, patched(BASE, patch), "bad.yaml")
    assert_one_line_error(path, field, fragments)


@pytest.mark.parametrize(
    ("patch", "field", "fragments"),
    [
        pytest.param({"topology": "no-such-pod"}, "topology", ["'no-such-pod'", "mini-pod"], id="topology"),
        pytest.param({"topology": {"device": "b300"}}, "topology.device", ["'b300'", "a100, h100"], id="device"),
        pytest.param({"topology": "missing/pod.yaml"}, "topology", ["missing/pod.yaml", "file not found"],
                     id="topology-file"),
    ],
)
def test_unknown_presets_are_one_line_errors(tmp_path, presets, patch, field, fragments):
    assert_one_line_error(write(tmp_path, patched(BASE, patch), "bad.yaml"), field, fragments)


@pytest.mark.parametrize(
    ("text", "field", "fragments"),
    [
        pytest.param("model: {layers: 8\nworkload: [", None, ["line 2"], id="yaml-syntax-error"),
        pytest.param("layout: {tp: 2, tp: 4}\n", None, ["duplicate key 'tp'", "line 1"], id="duplicate-key"),
        pytest.param("- model\n- layout\n", None, ["mapping", "['model', 'layout']"], id="top-level-list"),
        pytest.param("", None, ["mapping", "None"], id="empty-file"),
    ],
)
def test_malformed_yaml_is_one_line_error(tmp_path, text, field, fragments):
    assert_one_line_error(write(tmp_path, text, "bad.yaml"), field, fragments)


def test_missing_file_is_one_line_error(tmp_path):
    assert_one_line_error(str(tmp_path / "absent.yaml"), None, ["file not found"])


@pytest.mark.parametrize(
    ("override", "field", "fragments"),
    [
        pytest.param("layout.pp", "--set", ["'layout.pp'", "dotted.path=value"], id="no-equals"),
        pytest.param("=4", "--set", ["'=4'"], id="empty-path"),
        pytest.param("layout..pp=4", "--set", ["'layout..pp=4'"], id="empty-segment"),
        pytest.param("layout.foo=1", "layout.foo", ["'layout.foo=1'", "unknown field"], id="unknown-field"),
        pytest.param("fabric.kind=torus", "fabric", ["unknown field"], id="unknown-section"),
        pytest.param("layout.pp.x=1", "layout.pp", ["'layout.pp.x=1'", "not a section"], id="through-a-leaf"),
        pytest.param("layout.order=[tp, dp", "layout.order", ["not valid YAML"], id="bad-yaml-value"),
        pytest.param("layout.cp=8", "layout.dp", ["gpus (16)", "2*2*8 = 32"], id="valid-override-bad-result"),
        pytest.param("model.hidden=big", "model.hidden", ["'big'"], id="bad-value-type"),
    ],
)
def test_bad_override_is_one_line_error(tmp_path, override, field, fragments):
    assert_one_line_error(write(tmp_path, BASE, "bad.yaml"), field, fragments, [override])


def assert_one_line_error(path: str, field: str | None, fragments: list[str], overrides=()) -> None:
    """load_scenario(path) raises ScenarioError "<path>: <field>: ..." on one line, quoting fragments."""
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    if field is not None:
        assert message.startswith(f"{path}: {field}: "), message
    for fragment in fragments:
        assert fragment in message, message
