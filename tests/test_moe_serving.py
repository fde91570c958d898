"""Serving with expert parallelism: where an expert layer turns compute-bound, against the roofline by
hand, and how that batch grows with sparsity; MoE models in the request-level simulator (EP units)
against closed forms and DeepSeek's published decode service."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator import load_scenario
from simulator.cost import calibration
from simulator.scenario.hardware import DeviceSpec
from simulator.scenario.loader import device_preset, model_preset
from simulator.scenario.spec import ModelSpec
from simulator.serving.experts import compute_bound_batch, expert_gemms, expert_layer_times, expert_rows
from simulator.serving.steps import decode_table

ROOT = Path(__file__).resolve().parents[1]
IDEAL = calibration.IDEAL


def _model(name: str) -> ModelSpec:
    return ModelSpec.model_validate(model_preset(name))


@pytest.fixture(scope="module")
def h100() -> DeviceSpec:
    return DeviceSpec.model_validate(device_preset("h100-sxm"))


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
    """DeepEP's normal kernels (prefill) send a token once per remote rack when de-duplicated: across two NVL72
    racks at EP 144 flat dispatch costs over 1.5x; its low-latency kernels (decode) send every copy to its rank, so
    decode steps cost the same either way."""
    from simulator.serving.steps import step_costs

    flat = step_costs(load_scenario(SERVE_1152, ["layout.ep=144", "layout.ep_dispatch=flat"])).moe
    dedup = step_costs(load_scenario(SERVE_1152, ["layout.ep=144"])).moe
    b = np.array([512])
    assert flat.a2a(b).sum() > 1.5 * dedup.a2a(b).sum()
    np.testing.assert_allclose(flat.a2a_ll(b), dedup.a2a_ll(b), rtol=1e-12)


# --- the request-level simulator with an MoE model (simulator.serving.steps + ServeExperts) -------------

TINY_MOE = {"name": "tiny-moe", "layers": 4, "hidden": 1024, "heads": 8, "ffn": 4096, "vocab": 32000,
            "ffn_kind": "swiglu", "moe": {"experts": 16, "top_k": 2, "shared_experts": 1, "expert_ffn": 1024,
                                          "dense_layers": 1}}


DEVICE = {"dgx-h100-superpod": "h100-sxm", "gb200-nvl72": "gb200"}


def _serve_moe(make_scenario, *, model=None, topology=None, layout=None, **workload):
    """A serve scenario of an MoE model (TINY_MOE by default) whose scheduler CPU time is negligible (a device
    efficiency override), so that the GPU's step is what the tests see."""
    wl = {"kind": "serve", "prompt_len": 256, "output_len": 32, "batch": 16, "global_batch": None, **workload}
    lay = {"tp": 1, "ep": 8, **(layout or {})}
    topo = topology or {"preset": "dgx-h100-superpod", "domains": 2}
    topo = {**topo, "device": {"preset": DEVICE[topo["preset"]], "efficiency": {"scheduler_step": 1e-12}}}
    return make_scenario(model=model or TINY_MOE, topology=topo, workload=wl, layout=lay)


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
        model = model_preset(name)
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

    model = model_preset("deepseek-v3")
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
    copies of h 16-bit values on NVLink, for dispatch and for combine: b k (n-1)/n h 2 / bw + one latency each, bw
    the NVLink rate times DeepEP's measured fraction; the low-latency kernels (decode) move every copy, the normal
    kernels (prefill) one row a token and rank it needs, n (1 - C(14, 2) / C(16, 2)) / k rows a copy for 16 experts
    at top-2 (29/30); the report's EP bytes a token and MoE layer are the normal kernels' k (n - 1)/n rows h (2 + 2)."""
    from math import comb

    from simulator.cost.fabric import fabric_for
    from simulator.serving.steps import step_costs

    scn = _serve_moe(make_scenario, topology={"preset": "gb200-nvl72", "domains": 1},
                     layout={"ep": 8, "ep_dispatch": "flat"})
    costs = step_costs(scn)
    fabric, cal, n, k, h = fabric_for(scn.topology), costs.cal, 8, 2, 1024
    b = np.array([1, 7, 64, 300])
    rows = n * (1 - comb(14, 2) / comb(16, 2)) / k
    for a2a, fraction, per_copy in ((costs.moe.a2a, cal.ep_nvlink, rows), (costs.moe.a2a_ll, cal.ep_ll_nvlink, 1.0)):
        by_hand = b * k * (n - 1) / n * per_copy * h * 2 / (fabric.nvlink_bw * fraction) + fabric.nvlink_lat
        np.testing.assert_allclose(a2a(b), np.stack([by_hand, by_hand], axis=-1), rtol=1e-12)
    assert costs.moe.ep_bytes["nvlink"] == pytest.approx(k * (n - 1) / n * rows * h * 4, rel=1e-12)
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
    alone = alone + costs.moe.stage_times(32, 32, decode=True)
    alone[0] += costs.embed(32)
    alone[-1] += costs.head(4)
    np.testing.assert_allclose(piled, alone, rtol=1e-12)


def test_two_batch_overlap_runs_each_all_to_all_beside_a_compute_phase(make_scenario):
    """Two micro-batches a step (SGLang's and DeepSeek's schedule): each MoE layer lasts max(A1, d0) + max(M0, d1)
    + max(M1, c0) + max(A0, c1), A the attention part of a half, M its MoE compute, d and c its dispatch and combine;
    so the overlapped step is the step with free all-to-alls plus, per MoE layer, what each phase's all-to-all
    exceeds its compute by. Inside one node (EP 8) the attention and MoE compute cover the all-to-alls entirely;
    across two nodes (EP 16, 50 GB/s NICs) the dispatches and combines of a model with wide tokens and narrow
    experts outlast the MoE compute. Without overlap the step is the free one plus MoE layers x both halves'
    all-to-alls."""
    from simulator.serving.steps import step_costs

    narrow = {**TINY_MOE, "hidden": 4096, "heads": 32, "moe": {**TINY_MOE["moe"], "top_k": 8, "shared_experts": 0,
                                                               "expert_ffn": 128}}
    n = 2048
    new, ctx = np.ones(n), np.full(n, 32768.0)
    for ep, model, exposed in ((8, TINY_MOE, False), (16, narrow, True)):
        for overlap in (True, False):
            costs = step_costs(_serve_moe(make_scenario, model=model, two_batch_overlap=overlap, layout={"ep": ep}))
            per = n // ep // (2 if overlap else 1)  # tokens of the busiest replica in a half (or in all)
            d, c = costs.moe.a2a_ll(np.array([per]))[0]
            a = costs.linear(per) + costs.attention(np.ones(per), np.full(per, 32768.0))[0] + costs.tp_comm(per)
            m = costs.moe.parts(per, per * ep, decode=True)[1]
            real = costs.step_time(new, ctx, n)
            costs.moe.a2a_ll = lambda x: np.zeros(np.shape(x) + (2,))
            costs.moe._tables.clear()
            free = costs.step_time(new, ctx, n)
            if overlap:
                excess = max(a, d) + max(m, d) + max(m, c) + max(a, c) - 2 * (a + m)
                assert real == pytest.approx(free + 3 * excess, rel=1e-9)  # 3 MoE layers of 4
                assert (real > free * (1 + 1e-9)) == exposed
            else:
                assert real == pytest.approx(free + 3 * (d + c), rel=1e-12)


def test_prefill_overlap_shares_the_sms_with_deepep_normal_kernels(make_scenario):
    """A step that prefills uses DeepEP's normal kernels, which hold 20 of an H100's 132 SMs while they run (DeepSeek-V3
    report, section 3.2.2; calibration ep_sm_share): each compute phase beside an all-to-all phase of the other half
    lasts max(comm, compute + share x comm). EP 16 over two nodes, two 512-token prompts on every replica."""
    from simulator.serving.steps import step_costs

    costs = step_costs(_serve_moe(make_scenario, two_batch_overlap=True, layout={"ep": 16}))
    share = costs.cal.ep_sm_share
    assert share == pytest.approx(20 / 132)
    new, ctx = np.full(32, 512.0), np.zeros(32)
    d, c = costs.moe.a2a(np.array([512]))[0]
    a = costs.linear(512) + costs.attention(np.array([512.0]), np.zeros(1))[0] + costs.tp_comm(512)
    m = costs.moe.parts(512, 512 * 16)[1]
    real = costs.step_time(new, ctx, 32)
    costs.moe.a2a = lambda x: np.zeros(np.shape(x) + (2,))
    costs.moe._tables.clear()
    free = costs.step_time(new, ctx, 32)
    excess = sum(max(y, x + share * y) - x for x, y in ((a, d), (m, d), (m, c), (a, c)))
    assert real == pytest.approx(free + 3 * excess, rel=1e-9)  # 3 MoE layers of 4


def test_two_batch_overlap_needs_an_moe_serving_run(make_scenario):
    from simulator import ScenarioError

    with pytest.raises(ScenarioError, match="workload.two_batch_overlap: .*dense model"):
        _serve_moe(make_scenario, model=model_preset("llama3-8b"),
                   layout={"ep": 1}, two_batch_overlap=True)


def test_deepseek_decode_throughput_against_its_published_service(reference):
    """DeepSeek's inference overview (Feb 2025): decode units of 144 H800 (EP144, 32 redundant
    experts, attention DP, two micro-batches overlapped) give 1,850 output tokens/s a GPU at 20-22
    tokens/s a user, with a mean KV length of 4,989 tokens an output token. At 21 tokens/s a user (TPOT
    1/21 s) and that context, simrack's per-GPU batch x 21 lands within 35% of it: multi-token prediction
    (~1.8x tokens a step at ~85% acceptance), load imbalance and a day's varying load are not modelled, hence the
    wide band."""
    from simulator.serving.steps import step_costs

    case = reference("deepseek_v3_r1_online_inference_stats")
    context = case["reported"]["avg_kv_length_per_output_token"]
    scn = load_scenario(ROOT / "scenarios" / "deepseek-v3-serve-h800.yaml")
    costs, ep = step_costs(scn), scn.layout.ep
    batches = np.arange(8, 400, 2)
    tpot = np.array([costs.decode_step(int(b) * ep, context) for b in batches])
    b_star = batches[np.searchsorted(tpot, 1 / 21) - 1]
    per_gpu = case["reported"]["decode_throughput_per_node_tokens_per_s"] / 8
    assert float(b_star * 21) == pytest.approx(per_gpu, rel=0.35)


def test_skewed_routing_is_refused_for_serving(make_scenario):
    """Serving costs experts at the mean load; a skewed routing would be ignored, so it is refused."""
    from simulator import ScenarioError

    with pytest.raises(ScenarioError, match="workload.routing: serving assumes uniform expert load"):
        _serve_moe(make_scenario, routing={"kind": "zipf", "skew": 0.5})
    assert _serve_moe(make_scenario, routing={"kind": "uniform"}).workload.routing.kind == "uniform"

