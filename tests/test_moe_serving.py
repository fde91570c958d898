"""Serving with expert parallelism: where an expert layer turns compute-bound, against the roofline by
hand, and how that batch grows with sparsity; MoE models in the request-level simulator (EP units)
against closed forms and DeepSeek's published decode service."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from simulator import load_scenario
from simulator.cost import calibration
from simulator.scenario.hardware import DeviceSpec
from simulator.scenario.loader import MODELS_DIR, PRESETS_DIR
from simulator.scenario.spec import ModelSpec
from simulator.serving.experts import compute_bound_batch, expert_gemms, expert_layer_times, expert_rows
from simulator.serving.steps import decode_table

ROOT = Path(__file__).resolve().parents[1]
IDEAL = calibration.IDEAL


def _model(name: str) -> ModelSpec:
    return ModelSpec.model_validate(yaml.safe_load((MODELS_DIR / f"{name}.yaml").read_text()))


@pytest.fixture(scope="module")
def h100() -> DeviceSpec:
    devices = yaml.safe_load((PRESETS_DIR / "devices.yaml").read_text())
    return DeviceSpec.model_validate({"name": "h100-sxm", **devices["h100-sxm"]})


@pytest.mark.parametrize("name", ["deepseek-v3", "mixtral-8x7b", "qwen3-235b-a22b"])
def test_expert_layer_turns_compute_bound_at_the_roofline_batch(name, h100):
    """Ideal roofline (no efficiency losses), bf16 on H100: an expert's GEMMs (sum over FC1 and FC2 of
    2 N K FLOP and 2 N K + 2 M (N + K) bytes) and its activation (2 M io bytes) balance at
    M* = 1 / (HBM / peak - (sum(N + K) + io) / sum(N K)) tokens an expert, so B* = M* E / k tokens a
    step (within 0.5%: the search grid's resolution). At least peak / HBM = 295 x E / k (the GEMMs'
    weights alone), more for narrow experts whose activation traffic weighs more: at most 1.5x that."""
    model = _model(name)
    shapes = expert_gemms(model)
    io = float(expert_rows(model).io.sum())  # the SwiGLU activation: reads gate and up, writes one
    nk, n_plus_k = sum(n * k for n, k in shapes), sum(n + k for n, k in shapes) + io
    m_star = 1.0 / (h100.hbm_bandwidth / h100.peak_flops["bf16"] - n_plus_k / nk)
    sparsity = model.moe.experts / model.moe.top_k
    b = compute_bound_batch(model, h100, "bf16", "bf16", IDEAL)
    assert b == pytest.approx(m_star * sparsity, rel=0.005)
    ratio = h100.peak_flops["bf16"] / h100.hbm_bandwidth
    assert ratio <= b / sparsity <= 1.5 * ratio


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


SERVE_1152 = ROOT / "scenarios" / "scale" / "deepseek-v3-serve-gb200-1152.yaml"


def test_decode_step_grows_with_batch_and_cheapens_tokens():
    scn = load_scenario(SERVE_1152, ["layout.ep=72"])
    d = decode_table(scn, np.array([1, 8, 64, 256]), 4096)
    assert np.all(np.diff(d["step"]) > 0) and np.all(np.diff(d["tokens_per_s_per_gpu"]) > 0)
    assert np.all(d["experts"] + d["all_to_all"] < d["step"])


def test_flat_dispatch_across_racks_costs_more_at_large_batch():
    flat = decode_table(load_scenario(SERVE_1152, ["layout.ep=144", "layout.ep_dispatch=flat"]), [512], 4096)
    dedup = decode_table(load_scenario(SERVE_1152, ["layout.ep=144"]), [512], 4096)
    assert flat["all_to_all"][0] > 1.5 * dedup["all_to_all"][0]


# --- the request-level simulator with an MoE model (simulator.serving.steps + ServeExperts) -------------

TINY_MOE = {"name": "tiny-moe", "layers": 4, "hidden": 1024, "heads": 8, "ffn": 4096, "vocab": 32000,
            "ffn_kind": "swiglu", "moe": {"experts": 16, "top_k": 2, "shared_experts": 1, "expert_ffn": 1024,
                                          "dense_layers": 1}}


def _serve_moe(make_scenario, *, model=None, topology=None, layout=None, **workload):
    wl = {"kind": "serve", "prompt_len": 256, "output_len": 32, "batch": 16, "global_batch": None, **workload}
    lay = {"tp": 1, "ep": 8, **(layout or {})}
    return make_scenario(model=model or TINY_MOE, topology=topology or {"preset": "dgx-h100-superpod", "domains": 2},
                         workload=wl, layout=lay)


def test_moe_serving_runs_through_simrack_run(make_scenario, tmp_path):
    """An MoE serve scenario simulates end to end: 16 GPUs at ep 8 are 2 EP units; every request
    completes; the report names the EP degree and charges EP all-to-all traffic."""
    from typer.testing import CliRunner

    from simulator.cli import app

    scn = _serve_moe(make_scenario, arrivals={"rate": 200, "count": 300, "seed": 1})
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["run", str(scn.source), "--json", str(out), "-q"])
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(out.read_text())
    assert report["completed"] == 300 and report["rejected"] == 0
    assert report["layout"]["ep"] == 8 and report["exposed_comm_s"]["ep"] > 0
    assert report["traffic_bytes"]["nvlink"] > 0


def test_moe_flops_per_token_are_twice_the_active_linear_parameters(make_scenario):
    """FLOP a token costs in the linear layers = 2 x (attention projections of every layer, the dense
    FFN of the dense layers, router + shared + top_k routed experts of the MoE layers): the parameter
    counts of simulator.cost.ops, exact but for the MLA latent norms (elementwise, not GEMMs)."""
    from simulator.cost.params import parameter_counts
    from simulator.serving.steps import step_costs

    for name in ("deepseek-v3", "qwen3-235b-a22b"):
        model = yaml.safe_load((MODELS_DIR / f"{name}.yaml").read_text())
        scn = _serve_moe(make_scenario, model=model, topology={"preset": "gb200-nvl72", "domains": 1},
                         layout={"ep": 8, "tp": 1})
        m, c = scn.model, parameter_counts(scn.model)
        moe_layers, dense_layers = m.layers - m.moe.dense_layers, m.moe.dense_layers
        norms = 2 * m.hidden + (m.mla.q_lora_rank + m.mla.kv_lora_rank if m.mla else 0)
        active = (m.layers * (c["attention"] - norms) + dense_layers * (c["layer"] - c["attention"])
                  + moe_layers * (c["router"] + c["shared"] + m.moe.top_k * c["expert"]))
        assert step_costs(scn).flops_per_token() == pytest.approx(2 * active, rel=1e-12)


def test_moe_weights_per_device_are_the_parameter_counts(make_scenario):
    """DeepSeek-V3 at tp 1, ep 72 with 32 redundant experts, fp8 weights: one GPU holds every
    non-routed parameter (1 byte each) and 4 routed experts of each of the 58 MoE layers."""
    from simulator.cost.params import parameter_counts
    from simulator.serving.memory import serve_memory

    model = yaml.safe_load((MODELS_DIR / "deepseek-v3.yaml").read_text())
    scn = _serve_moe(make_scenario, model=model, topology={"preset": "gb200-nvl72", "domains": 1},
                     layout={"ep": 72, "redundant_experts": 32}, dtype="fp8")
    m, c = scn.model, parameter_counts(scn.model)
    moe_layers, dense_layers = m.layers - m.moe.dense_layers, m.moe.dense_layers
    latent_norms = m.mla.q_lora_rank + m.mla.kv_lora_rank
    expected = (m.layers * (c["attention"] - latent_norms) + dense_layers * (c["layer"] - c["attention"])
                + moe_layers * (c["router"] + c["shared"] + 4 * c["expert"]) + c["embedding"] + c["head"])
    assert serve_memory(scn).weights[0] == pytest.approx(expected, rel=1e-12)


def test_flat_dispatch_in_one_domain_is_the_closed_form(make_scenario):
    """Flat dispatch inside one NVL72 rack, bf16: each of n ranks sends and receives b k (n - 1) / n
    copies of h 16-bit values on NVLink, for dispatch and for combine: 2 x (b k (n-1)/n h 2 / bw + one
    latency); the report's EP bytes a token and MoE layer are k (n - 1)/n h (2 + 2)."""
    from simulator.cost.fabric import fabric_for
    from simulator.serving.steps import step_costs

    scn = _serve_moe(make_scenario, topology={"preset": "gb200-nvl72", "domains": 1},
                     layout={"ep": 8, "ep_dispatch": "flat"})
    costs = step_costs(scn)
    fabric, cal, n, k, h = fabric_for(scn.topology), costs.cal, 8, 2, 1024
    b = np.array([1, 7, 64, 300])
    by_hand = 2 * (b * k * (n - 1) / n * h * 2 / (fabric.nvlink_bw * cal.nvlink) + fabric.nvlink_lat)
    np.testing.assert_allclose(costs.moe.a2a(b), by_hand, rtol=1e-12)
    assert costs.moe.ep_bytes["nvlink"] == pytest.approx(k * (n - 1) / n * h * 4, rel=1e-12)
    assert costs.moe.ep_bytes["scaleout"] == 0.0


def test_the_busiest_attention_replica_sets_the_step(make_scenario):
    """A unit steps in lockstep: the same 32 decoding sequences cost more piled on one attention
    replica than spread over all 8, and the piled step equals one replica running all 32 alone
    (every term but the experts', which see the same 64 copies either way)."""
    from simulator.serving.steps import step_costs

    costs = step_costs(_serve_moe(make_scenario))
    new, ctx = np.ones(32), np.full(32, 512.0)
    spread = costs.stage_times(new, ctx, 32, np.arange(32) % 8)[0]
    piled = costs.stage_times(new, ctx, 32, np.zeros(32, int))[0]
    assert piled.sum() > spread.sum()
    alone = costs.stage_layers * (costs.linear(32) + costs.attention(new, ctx)[0] + costs.tp_comm(32))
    alone = alone + costs.moe.stage_times(32, 32)
    alone[0] += costs.embed(32)
    alone[-1] += costs.head(4)
    np.testing.assert_allclose(piled, alone, rtol=1e-12)


def test_two_batch_overlap_hides_the_all_to_all_that_compute_covers(make_scenario):
    """Two micro-batches a step: each MoE layer takes max(both halves' compute, both halves'
    all-to-alls). At a long context the attention covers the dispatch and combine, so the overlapped
    step equals the same step with free all-to-alls (to 1e-12); without overlap the step is the free
    one plus MoE layers x all-to-all of the busiest replica's 8 tokens."""
    from simulator.serving.steps import step_costs

    new, ctx = np.ones(64), np.full(64, 32768.0)
    steps = {}
    for overlap in (True, False):
        costs = step_costs(_serve_moe(make_scenario, two_batch_overlap=overlap))
        a2a = float(costs.moe.a2a(np.array([8]))[0])
        real = costs.step_time(new, ctx, 64)
        costs.moe.a2a = lambda m: np.zeros(np.shape(m))
        costs.moe._tables.clear()
        steps[overlap] = (real, costs.step_time(new, ctx, 64))
    assert a2a > 0
    assert steps[True][0] == pytest.approx(steps[True][1], rel=1e-12)
    assert steps[False][0] == pytest.approx(steps[False][1] + 3 * a2a, rel=1e-12)  # 3 MoE layers of 4


def test_two_batch_overlap_needs_an_moe_serving_run(make_scenario):
    from simulator import ScenarioError

    with pytest.raises(ScenarioError, match="workload.two_batch_overlap: .*dense model"):
        _serve_moe(make_scenario, model=yaml.safe_load((MODELS_DIR / "llama3-8b.yaml").read_text()),
                   layout={"ep": 1}, two_batch_overlap=True)


def test_deepseek_decode_throughput_against_its_published_service():
    """DeepSeek's inference overview (March 2025): decode units of 144 H800 (EP144, 32 redundant
    experts, attention DP, two micro-batches overlapped) give 1,850 output tokens/s a GPU at 20-22
    tokens/s a user. At 21 tokens/s a user (TPOT 1/21 s) and 4k context, simrack's per-GPU batch x 21
    lands within 35% of it: their contexts, multi-token prediction (~1.8x tokens a step at ~85%
    acceptance) and load imbalance are not given or not modelled, hence the wide band."""
    from simulator.serving.steps import step_costs

    scn = load_scenario(ROOT / "scenarios" / "deepseek-v3-serve-h800.yaml")
    costs, ep = step_costs(scn), scn.layout.ep
    batches = np.arange(8, 400, 4)
    tpot = np.array([costs.decode_step(int(b) * ep, 4096) for b in batches])
    b_star = batches[np.searchsorted(tpot, 1 / 21) - 1]
    assert float(b_star * 21) == pytest.approx(1850, rel=0.35)


def test_skewed_routing_is_refused_for_serving(make_scenario):
    """Serving costs experts at the mean load; a skewed routing would be ignored, so it is refused."""
    from simulator import ScenarioError

    with pytest.raises(ScenarioError, match="workload.routing: serving assumes uniform expert load"):
        _serve_moe(make_scenario, routing={"kind": "zipf", "skew": 0.5})
    assert _serve_moe(make_scenario, routing={"kind": "uniform"}).workload.routing.kind == "uniform"
