"""Decode with expert parallelism: where an expert layer turns compute-bound, against the roofline by
hand, and how that batch grows with sparsity; the decode step model's monotonic behaviour."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from simulator import calibration, load_scenario
from simulator.hardware import DeviceSpec
from simulator.loader import MODELS_DIR, PRESETS_DIR
from simulator.moe_serving import compute_bound_batch, decode_step, expert_gemms, expert_layer_times
from simulator.scenario import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
IDEAL = replace(calibration.DEFAULT, gemm=1.0, gemm_half_dim=0.0, hbm=1.0, kernel_overhead=0.0)


def _model(name: str) -> ModelSpec:
    return ModelSpec.model_validate(yaml.safe_load((MODELS_DIR / f"{name}.yaml").read_text()))


@pytest.fixture(scope="module")
def h100() -> DeviceSpec:
    devices = yaml.safe_load((PRESETS_DIR / "devices.yaml").read_text())
    return DeviceSpec.model_validate({"name": "h100-sxm", **devices["h100-sxm"]})


@pytest.mark.parametrize("name", ["deepseek-v3", "mixtral-8x7b", "qwen3-235b-a22b"])
def test_expert_layer_turns_compute_bound_at_the_roofline_batch(name, h100):
    """Ideal roofline (no efficiency losses), bf16 on H100: the experts' GEMMs (sum over FC1 and FC2 of
    2 N K FLOP and 2 N K + 2 M (N + K) bytes per expert) balance at
    M* = 1 / (HBM / peak - sum(N + K) / sum(N K)) tokens an expert, so B* = M* E / k tokens a step
    (within 0.5%: the search grid's resolution). About 300 x E / k: peak / HBM is 295."""
    model = _model(name)
    shapes = expert_gemms(model)
    nk, n_plus_k = sum(n * k for n, k in shapes), sum(n + k for n, k in shapes)
    m_star = 1.0 / (h100.hbm_bandwidth / h100.peak_flops["bf16"] - n_plus_k / nk)
    sparsity = model.moe.experts / model.moe.top_k
    b = compute_bound_batch(model, h100, "bf16", "bf16", IDEAL)
    assert b == pytest.approx(m_star * sparsity, rel=0.005)
    assert b / sparsity == pytest.approx(300, rel=0.25)


def test_compute_bound_batch_grows_with_sparsity(h100):
    """Same experts, E / k from 1 to 32: the batch a replica needs grows in proportion (within 1%)."""
    base = _model("deepseek-v3")
    batches = []
    for experts in (8, 32, 128, 256):
        model = base.model_copy(update={"moe": base.moe.model_copy(update={"experts": experts})})
        batches.append(compute_bound_batch(model, h100, "bf16", "bf16", IDEAL))
    np.testing.assert_allclose(np.array(batches) / batches[0], [1, 4, 16, 32], rtol=0.01)
    calibrated = compute_bound_batch(base, h100, "bf16", "bf16")
    assert 0 < calibrated < batches[-1]  # simrack's small-GEMM efficiency makes compute dominate sooner


def test_small_batches_read_only_the_experts_that_received_tokens(h100):
    """At k tokens' copies over E experts, about k experts' weights are read (E (1 - exp(-k/E)))."""
    model = _model("deepseek-v3")
    e, k = model.moe.experts, model.moe.top_k
    weights = 2.0 * sum(n * kk for n, kk in expert_gemms(model))  # bf16 bytes of one expert
    t = expert_layer_times(model, np.array([float(k)]), e, h100, "bf16", "bf16", IDEAL)
    expected = e * (1 - np.exp(-k / e)) * weights / h100.hbm_bandwidth
    assert t["memory"][0] == pytest.approx(expected, rel=0.01)
    full = expert_layer_times(model, np.array([1e6]), e, h100, "bf16", "bf16", IDEAL)
    assert full["memory"][0] > 0.99 * e * weights / h100.hbm_bandwidth


def test_decode_step_grows_with_batch_and_cheapens_tokens():
    scn = load_scenario(ROOT / "scenarios" / "studies" / "moe-on-racks" / "gb200.yaml", ["layout.ep=72"])
    batch = np.array([1, 8, 64, 256])
    d = decode_step(scn, batch, 4096)
    assert np.all(np.diff(d["step"]) > 0) and np.all(np.diff(d["tokens_per_s_per_gpu"]) > 0)
    parts = d["attention"] + d["dense"] + d["experts"] + d["all_to_all"] + d["head"]
    np.testing.assert_allclose(parts, d["step"], rtol=1e-12)


def test_flat_dispatch_across_racks_costs_more_at_large_batch():
    path = ROOT / "scenarios" / "studies" / "moe-on-racks" / "gb200.yaml"
    flat = decode_step(load_scenario(path, ["layout.ep=144", "layout.ep_dispatch=flat"]), np.array([512]), 4096)
    dedup = decode_step(load_scenario(path, ["layout.ep=144"]), np.array([512]), 4096)
    assert flat["all_to_all"][0] > 1.5 * dedup["all_to_all"][0]
