"""Preset YAMLs: exact keys, human units, figures against the package's published.yaml."""

from __future__ import annotations

import re

import pytest
import yaml

import topologies
from simulator.data import reference

SYSTEMS = ["dgx-a100-superpod", "dgx-h100-superpod", "gb200-nvl72", "hgx-b200", "hgx-h200",
           "hgx-h800"]
DEVICES = ["a100-40gb", "a100-80gb", "h100-sxm", "h200", "h800", "b200", "gb200"]

_UNITS = {"": 1.0, "s": 1.0, "us": 1e-6, "ms": 1e-3, "GB": 1e9, "GiB": 2.0**30,
          "GB/s": 1e9, "TB/s": 1e12, "TFLOP/s": 1e12, "PFLOP/s": 1e15}


def si(value) -> float:
    """SI float from a preset's human-unit string ("300 GB/s", "2 us", "80 GiB") or a number."""
    if isinstance(value, (int, float)):
        return float(value)
    number, unit = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(\S*)\s*", value).groups()
    return float(number) * _UNITS[unit]


def lead(value) -> float:
    """The first number in a published field: "180 (HGX/DGX B200 SKU; ...)" -> 180."""
    return float(re.search(r"[0-9.]+", str(value)).group())


def dense(value) -> float:
    """The number after '->' in a published "X (sparse) -> Y dense" field."""
    return lead(str(value).split("->")[1])


def load(name: str) -> dict:
    return yaml.safe_load((topologies.PRESETS_DIR / f"{name}.yaml").read_text())


@pytest.fixture(scope="module")
def hw() -> dict:
    return {k: c["reported"] for k, c in reference().items() if k.startswith("hw_")}


@pytest.fixture(scope="module")
def devices() -> dict:
    return {name: {**d, "peak_flops": {k: si(v) for k, v in d["peak_flops"].items()},
                   "hbm": si(d["hbm"]), "hbm_bandwidth": si(d["hbm_bandwidth"])}
            for name, d in load("devices").items()}


def to_si(preset: dict) -> dict:
    """A system preset with its human units converted, as build() takes it."""
    domain, out = dict(preset["domain"]), dict(preset["scaleout"])
    domain.update(bandwidth=si(domain["bandwidth"]), latency=si(domain["latency"]))
    out.update(nic_bandwidth=si(out["nic_bandwidth"]), latency=si(out["latency"]))
    return {**preset, "domain": domain, "scaleout": out}


def test_devices_have_exactly_the_data_sheet_keys():
    raw = load("devices")
    assert sorted(raw) == sorted(DEVICES)
    for name, d in raw.items():
        sheet = {"name", "generation", "peak_flops", "hbm", "hbm_bandwidth", "tdp"}  # tdp: power caps
        assert sheet <= set(d) <= sheet | {"boost_clock", "host_link", "host_memory_bandwidth", "aliases"}, name
        assert {"bf16", "fp16"} <= set(d["peak_flops"]) <= {"bf16", "fp16", "fp8", "fp4"}, name
        assert ("fp4" in d["peak_flops"]) == (d["generation"] == "blackwell"), name
        figures = (d["hbm"], d["hbm_bandwidth"], *d["peak_flops"].values())
        assert all(isinstance(v, str) for v in figures), name
        assert ("fp8" in d["peak_flops"]) == (not name.startswith("a100")), name


@pytest.mark.parametrize("name", SYSTEMS)
def test_system_presets_have_exactly_the_topology_keys(name):
    preset = load(name)
    assert {"name", "device", "domain", "scaleout", "domains"} <= set(preset) <= {"name", "aliases", "device", "domain",
                                                                              "scaleout", "domains"}
    assert preset["name"] == name
    assert preset["device"] in load("devices")
    assert set(preset["domain"]) == {"kind", "gpus", "bandwidth", "latency"}
    assert set(preset["scaleout"]) == {"kind", "nic_bandwidth", "nics_per_domain",
                                       "oversubscription", "latency", "domains_per_leaf"}
    assert isinstance(preset["domains"], int)


@pytest.mark.parametrize("name", SYSTEMS)
def test_system_presets_build_with_one_latency_choice(name):
    spec = to_si(load(name))
    assert spec["domain"]["latency"] == pytest.approx(2e-6)
    assert spec["scaleout"]["latency"] == pytest.approx(5e-6)
    graph = topologies.build(spec)
    counts = topologies.summary(graph)["nodes"]
    assert counts["gpu"] == spec["domains"] * spec["domain"]["gpus"]
    assert counts["nic"] == spec["domains"] * spec["scaleout"]["nics_per_domain"]


@pytest.mark.parametrize("name, gpus, domains, nvlink, nic, kind, per_leaf", [
    ("dgx-a100-superpod", 8, 140, 300e9, 25e9, "fat_tree", 20),
    ("dgx-h100-superpod", 8, 128, 450e9, 50e9, "rail", 32),
    ("hgx-h200", 8, 32, 450e9, 50e9, "rail", 32),
    ("hgx-h800", 8, 256, 200e9, 50e9, "rail", 32),
    ("hgx-b200", 8, 32, 900e9, 50e9, "rail", 32),
    ("gb200-nvl72", 72, 8, 900e9, 50e9, "fat_tree", 8),
])
def test_system_figures(name, gpus, domains, nvlink, nic, kind, per_leaf):
    spec = to_si(load(name))
    assert spec["domain"]["gpus"] == gpus
    assert spec["domains"] == domains
    assert spec["scaleout"]["kind"] == kind
    assert spec["domain"]["bandwidth"] == nvlink
    assert spec["scaleout"]["nic_bandwidth"] == nic
    assert spec["scaleout"]["domains_per_leaf"] == per_leaf
    assert spec["scaleout"]["oversubscription"] == 1
    assert spec["scaleout"]["nics_per_domain"] == gpus  # one NIC a GPU in every preset


def test_h100_class_devices_match_published(hw, devices):
    h100, h200, h800 = devices["h100-sxm"], devices["h200"], devices["h800"]
    ref = hw["hw_h100_sxm"]
    assert h100["peak_flops"]["bf16"] == pytest.approx(ref["bf16_dense_tflops"] * 1e12)
    assert h100["peak_flops"]["fp8"] == pytest.approx(ref["fp8_dense_tflops"] * 1e12)
    assert h100["hbm_bandwidth"] == pytest.approx(ref["hbm_TBps"] * 1e12)
    # the data sheet's "80GB" is 80 GiB of HBM3 (5 stacks of 16 GiB); accept either reading
    assert h100["hbm"] in (pytest.approx(ref["hbm_GB"] * 1e9), pytest.approx(ref["hbm_GB"] * 2**30))
    ref = hw["hw_h200_sxm"]
    assert h200["peak_flops"]["bf16"] == pytest.approx(ref["bf16_dense_tflops"] * 1e12)
    assert h200["peak_flops"]["fp8"] == pytest.approx(ref["fp8_dense_tflops"] * 1e12)
    assert h200["hbm"] == pytest.approx(ref["hbm_GB"] * 1e9)
    assert h200["hbm_bandwidth"] == pytest.approx(ref["hbm_TBps"] * 1e12)
    assert "same tensor FLOP/s as H100" in hw["hw_h800"]["compute"]
    assert h800["peak_flops"] == h100["peak_flops"]


def test_blackwell_devices_match_published(hw, devices):
    b200, gb200 = devices["b200"], devices["gb200"]
    ref = hw["hw_b200"]
    assert b200["peak_flops"]["bf16"] == pytest.approx(ref["bf16_dense_pflops"] * 1e15)
    assert b200["peak_flops"]["fp8"] == pytest.approx(ref["fp8_dense_pflops"] * 1e15)
    assert b200["hbm"] == pytest.approx(lead(ref["hbm_GB"]) * 1e9)
    assert b200["hbm_bandwidth"] == pytest.approx(ref["hbm_TBps"] * 1e12)
    ref = hw["hw_gb200_nvl72"]
    gpus = ref["gpus_per_nvlink_domain"]
    rack_bf16, rack_fp8 = dense(ref["rack_bf16_pflops"]), dense(ref["rack_fp8_pflops"])
    assert gb200["peak_flops"]["bf16"] * gpus == pytest.approx(rack_bf16 * 1e15)
    assert gb200["peak_flops"]["fp8"] * gpus == pytest.approx(rack_fp8 * 1e15)
    assert gb200["hbm_bandwidth"] == pytest.approx(ref["per_gpu_hbm_TBps"] * 1e12)
    assert gb200["hbm"] * gpus == pytest.approx(lead(ref["rack_hbm_TB"]) * 1e12, rel=0.01)


def test_a100_devices_match_the_data_sheet(devices):
    for name, hbm_bw, hbm in [("a100-40gb", 1555e9, 40), ("a100-80gb", 2039e9, 80)]:
        d = devices[name]
        assert d["peak_flops"] == {"bf16": 312e12, "fp16": 312e12}
        assert d["hbm_bandwidth"] == hbm_bw
        assert d["hbm"] == hbm * 2**30


def test_fp16_equals_bf16_dense_on_every_device(devices):
    for name, d in devices.items():
        assert d["peak_flops"]["fp16"] == d["peak_flops"]["bf16"], name
        if "fp8" in d["peak_flops"]:
            fp8 = d["peak_flops"]["fp8"]
            assert fp8 == pytest.approx(2 * d["peak_flops"]["bf16"], rel=1e-3), name


def test_links_match_published(hw):
    gens = {g["gpu"]: g["gpu_to_gpu_GBps"] * 1e9
            for g in hw["hw_nvlink_and_superpod_tables"]["nvlink_generations"]}
    link = lambda name: to_si(load(name))["domain"]["bandwidth"]  # noqa: E731
    assert link("dgx-a100-superpod") == gens["Ampere"]
    assert link("dgx-h100-superpod") == gens["Hopper"]
    assert link("dgx-h100-superpod") == hw["hw_h100_sxm"]["nvlink_GBps_per_direction"] * 1e9
    assert link("hgx-h200") == hw["hw_h200_sxm"]["nvlink_GBps_bidirectional"] / 2 * 1e9
    assert link("hgx-h800") == hw["hw_h800"]["nvlink_GBps_per_direction"] * 1e9
    assert link("hgx-b200") == gens["Blackwell"]
    assert link("hgx-b200") == hw["hw_b200"]["nvlink_GBps_per_direction"] * 1e9
    assert link("gb200-nvl72") == hw["hw_gb200_nvl72"]["per_gpu_nvlink_GBps_per_direction"] * 1e9
    nic = lambda name: to_si(load(name))["scaleout"]["nic_bandwidth"]  # noqa: E731
    assert nic("hgx-h800") == hw["hw_h800"]["ib_per_gpu_GBps"] * 1e9
    assert nic("dgx-a100-superpod") == hw["hw_infiniband_connectx"]["hdr_port_Gbps"] / 8 * 1e9
    assert nic("dgx-h100-superpod") == hw["hw_infiniband_connectx"]["ndr_port_GBps"] * 1e9


@pytest.mark.parametrize("name, key", [("dgx-h100-superpod", "h100"), ("hgx-b200", "b200"),
                                       ("gb200-nvl72", "gb200_nvl72")])
def test_domain_egress_matches_published(hw, name, key):
    """NICs x NIC bandwidth of a domain = the published node/rack scale-out egress (bytes/s)."""
    spec = to_si(load(name))
    egress = spec["scaleout"]["nics_per_domain"] * spec["scaleout"]["nic_bandwidth"]
    ref = hw["hw_nvlink_and_superpod_tables"]["node_egress"][key]
    assert egress == pytest.approx(float(ref["node_egress_Bps"]))
    assert spec["domain"]["gpus"] == ref["gpus"]
