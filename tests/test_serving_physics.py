"""Serving physics against closed forms and kernel measurements: the TP all-reduce of serving engines, decode and
prefill attention (GQA, MLA absorbed and not, FP8 cache), the scheduler's CPU time, DeepEP's all-to-alls, the
busiest EP rank, the per-step breakdown, the paged KV cache and the token budget."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from simulator import ScenarioError, run
from simulator.cost.fabric import fabric_for
from simulator.cost.serving_fit import AR_ALGORITHMS, AR_ENTRIES
from simulator.data import path as data_path
from simulator.scenario.loader import model_preset
from simulator.serving.experts import busiest_copies
from simulator.serving.memory import serve_memory
from simulator.serving.steps import step_costs
from simulator.serving.summary import BREAKDOWN, step_breakdown

H100 = {"preset": "dgx-h100-superpod", "domains": 1}


def _model(name: str) -> dict:
    return model_preset(name)


def serve(make_scenario, *, model="llama3-70b", topology=None, layout=None, **workload):
    wl = {"kind": "serve", "prompt_len": 1024, "output_len": 128, "batch": 64, **workload}
    return make_scenario(model=model, topology=topology or H100, workload=wl, layout=layout or {"tp": 8})


@pytest.fixture(scope="module")
def kernels():
    doc = yaml.safe_load(data_path("kernels.yaml").read_text())
    return {e["id"]: e for e in doc["entries"]}


# --- TP all-reduce ------------------------------------------------------------------------------------------


def test_tp_all_reduce_reproduces_the_measured_fastest_algorithm(make_scenario, kernels):
    """vLLM's communicator benchmark on H100 in CUDA graphs (kernels.yaml vllm24111_*, TP 4 and 6, 0.5-4 MiB): at
    every point the serving all-reduce is within 20% of the fastest measured algorithm, 10% on average."""
    scn = serve(make_scenario)
    costs, fabric = step_costs(scn), fabric_for(scn.topology)
    errors = []
    for entry_id in AR_ENTRIES:
        e = kernels[entry_id]
        n = e["config"]["gpus"]
        best = {}
        for m in e["measured"]:
            if m["quantity"].split()[0] in [q for q, _ in AR_ALGORITHMS.values()]:
                best[m["message_bytes"]] = min(best.get(m["message_bytes"], np.inf), m["value"] * 1e-6)
        sizes = np.array(sorted(best), dtype=float)
        model = fabric.collective("all_reduce", sizes, np.repeat(np.arange(n)[None], len(sizes), 0), costs.cal,
                                  algorithm="serving")
        errors += list(model / np.array([best[s] for s in sorted(best)]) - 1)
    errors = np.abs(errors)
    assert errors.max() < 0.20 and errors.mean() < 0.10, errors


def test_small_messages_take_one_shot_and_large_ones_nvls(make_scenario):
    """One-shot (a rank reads its 7 peers) for a batch-1 decode's 16 KB; NVLS multimem or NCCL for a prefill's
    134 MB, whose bus bandwidth then approaches NVLS's measured 1.06 of the link (calibration nvls)."""
    costs = step_costs(serve(make_scenario))
    cal, link = costs.cal, 450e9
    small = costs.all_reduce(np.array([16384.0]))[0]
    assert small == pytest.approx(cal.ar_one_shot_alpha + 7 * 16384 / (cal.ar_one_shot * link), rel=1e-12)
    big = 8192 * 8192 * 2.0
    busbw = 2 * 7 / 8 * big / costs.all_reduce(np.array([big]))[0]
    assert 0.9 * cal.nvls * link < busbw < cal.nvls * link


# --- attention ------------------------------------------------------------------------------------------------


def test_gqa_decode_attention_streams_the_cache_at_the_decode_kernels_bandwidth(make_scenario):
    """Llama 3 70B on TP8, 64 sequences at 4K context: GQA decode attention (8 query heads a KV head, ~16 FLOP a
    cache byte) is memory-bound: one layer reads each sequence's cache (2 x 1 KV head x 128 x 2 bytes a token) and
    its queries and outputs at FlashMLA's decode bandwidth (calibration hbm_decode), plus one kernel."""
    scn = serve(make_scenario)
    costs = step_costs(scn)
    cal, hbm = costs.cal, scn.topology.device.hbm_bandwidth
    b, c = 64, 4096.0
    kv = (c + 1) * 2 * 128 * 2
    io = 8 * 2 * 128 * 2
    expected = b * (kv + io) / (hbm * cal.hbm_decode) + cal.graph_overhead
    assert costs.attention(np.ones(b), np.full(b, c))[0] == pytest.approx(expected, rel=1e-12)


def test_mla_decode_is_absorbed_and_prefill_is_not(make_scenario):
    """DeepSeek-V3 (61 layers, 128 heads, latent 512 + rope 64, per-head keys 192 and values 128): a query-key
    pair costs 2 x 128 x (2 x 512 + 64) = 278,528 FLOP a layer in the absorbed decode form (17.0 MFLOP over the
    model) and 2 x 128 x (192 + 128) = 81,920 in the non-absorbed prefill form (5.0 MFLOP)."""
    scn = serve(make_scenario, model=_model("deepseek-v3"), layout={"tp": 1, "ep": 8}, dtype="fp8")
    attn = step_costs(scn).attn
    decode, prefill = attn.per_pair(np.array([True, False]))
    assert decode == 2 * 128 * (2 * 512 + 64) and prefill == 2 * 128 * (192 + 128)
    assert 61 * decode == pytest.approx(17.0e6, rel=0.01) and 61 * prefill == pytest.approx(5.0e6, rel=0.01)
    p = attn.parts(np.array([1.0, 4096.0]), np.array([4096.0, 0.0]), 576 * 2)
    assert p["flops"][0] == decode * 4097 and p["flops"][1] == prefill * 4096 * 4097 / 2


def test_mla_decode_turns_compute_bound_near_128_query_heads():
    """FlashMLA's deep dive (kernels.yaml flashmla_h800_dense_decode_memory_bound): dense MLA decode with a BF16
    cache is compute-bound from h_q x s_q of about 128 on H800. The model's crossover (decode FLOP against the
    cache read, at the decode kernel's measured rates) lies within 25% of it."""
    from simulator.cost import calibration
    from simulator.serving.attention import AttentionCosts

    cal = calibration.fitted("hopper", "bf16")
    heads = np.arange(8, 400)
    bound = []
    for h in heads:
        dims = {"heads": int(h), "kv_heads": 1, "qk": 192, "v": 128, "group": int(h), "mla": True, "latent": 512,
                "rope": 64}
        p = AttentionCosts(dims, 989.4e12, 3.35e12, cal).parts(np.ones(1), np.full(1, 32768.0), 576 * 2)
        bound.append(p["compute"][0] > p["memory"][0])
    crossover = heads[int(np.argmax(bound))]
    assert crossover == pytest.approx(128, rel=0.25)


def test_fp8_cache_dequantizes_to_16_bit_math(make_scenario):
    """An FP8 cache halves the bytes a token but is converted to BF16 for the math: compute-bound MLA decode runs
    at the FP8-cache kernel's rate (FlashMLA 460 TFLOP/s against 660 with a BF16 cache), at the 16-bit peak."""
    base = dict(model=_model("deepseek-v3"), layout={"tp": 1, "ep": 8}, dtype="fp8")
    bf16, fp8 = (step_costs(serve(make_scenario, kv_dtype=kv, **base)) for kv in ("bf16", "fp8"))
    new, ctx = np.ones(64), np.full(64, 4096.0)
    p16, p8 = bf16.attn.parts(new, ctx, bf16.kv_rank_layer), fp8.attn.parts(new, ctx, fp8.kv_rank_layer)
    assert np.all(p8["compute"] > p8["memory"])
    np.testing.assert_allclose(p8["compute"] / p16["compute"], 660 / 460, rtol=1e-6)
    np.testing.assert_allclose(p8["compute"], p8["flops"] / (989.4e12 * fp8.cal.decode_attention_fp8kv), rtol=1e-12)
    assert fp8.kv_rank_layer == bf16.kv_rank_layer / 2


# --- launches and the scheduler ------------------------------------------------------------------------------


def test_a_step_lasts_at_least_the_schedulers_cpu_time(make_scenario):
    """Engines overlap the scheduler's CPU work with the GPU's previous step: a step lasts max(GPU, CPU). A small
    model's batch-1 decode is CPU-bound at the measured 2.75 ms; a large step is the GPU's alone."""
    tiny = {"name": "tiny", "layers": 2, "hidden": 512, "heads": 8, "ffn": 2048, "vocab": 32000}
    costs = step_costs(serve(make_scenario, model=tiny, layout={"tp": 1}))
    assert costs.cal.scheduler_step == pytest.approx(2.75e-3)
    assert costs.decode_step(1, 128) == pytest.approx(costs.cal.scheduler_step, rel=1e-12)
    big = step_costs(serve(make_scenario))
    ideal_cpu = serve(make_scenario, topology={**H100, "device": {"preset": "h100-sxm",
                                                                   "efficiency": {"scheduler_step": 1e-12}}})
    assert big.decode_step(64, 4096) == pytest.approx(step_costs(ideal_cpu).decode_step(64, 4096), rel=1e-12)


def test_cuda_graphs_leave_the_residue_per_kernel(make_scenario):
    """Decode steps replayed from CUDA graphs pay calibration graph_overhead a kernel instead of kernel_overhead."""
    on, off = (step_costs(serve(make_scenario, cuda_graphs=g)) for g in (True, False))
    names = ("norm1", "qkv", "rope", "proj", "norm2", "fc1", "activation", "fc2")
    assert on.rows.layer.name == names  # a Llama layer's kernels on one TP rank (attention core apart; add-norms fused)
    kernels = len(names)
    delta = (off.cal.kernel_overhead - on.cal.graph_overhead) * kernels
    assert off.linear(64) - on.linear(64) == pytest.approx(delta, rel=1e-9)


# --- MoE: DeepEP and the busiest rank ------------------------------------------------------------------------


def test_deepep_low_latency_all_to_all_against_its_measured_latency(make_scenario, kernels):
    """DeepEP's low-latency kernels at EP 64 (8 H800 nodes, 128 tokens a rank, top 8, hidden 7168, FP8 dispatch,
    BF16 combine): dispatch 173 us and combine 314 us measured (kernels.yaml deepep_h800_lowlatency_ep64); the model
    (every copy to its rank, NVLink inside a node and the NIC across, at DeepEP's fractions) within 15%."""
    scn = serve(make_scenario, model=_model("deepseek-v3"), topology={"preset": "hgx-h800", "domains": 8},
                layout={"tp": 1, "ep": 64}, dtype="fp8")
    d, c = step_costs(scn).moe.a2a_ll(np.array([128]))[0]
    e = kernels["deepep_h800_lowlatency_ep64"]
    measured = {m["quantity"].split()[0]: m["value"] * 1e-6 for m in e["measured"] if m["unit"] == "us"}
    assert d == pytest.approx(measured["dispatch"], rel=0.15)
    assert c == pytest.approx(measured["combine"], rel=0.15)


@pytest.mark.parametrize("ranks, copies", [(8, 1000), (72, 147456), (144, 9216 * 8)])
def test_busiest_rank_is_the_median_largest_multinomial_draw(ranks, copies):
    """Uniform routing deals `copies` over `ranks` EP ranks as a multinomial: the median over 4000 draws of the
    largest rank's count is within 2% of busiest_copies' normal approximation."""
    rng = np.random.default_rng(0)
    draws = rng.multinomial(copies, np.full(ranks, 1.0 / ranks), size=4000).max(axis=1)
    assert float(busiest_copies(np.array([copies]), ranks)[0]) == pytest.approx(np.median(draws), rel=0.02)


# --- the breakdown ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["dense", "pp2", "moe", "moe-overlap"])
def test_step_breakdown_adds_up_to_the_step(make_scenario, case):
    moe = dict(model=_model("deepseek-v3"), topology={"preset": "hgx-h800", "domains": 2}, layout={"tp": 1, "ep": 16},
               dtype="fp8")
    scn = {"dense": lambda: serve(make_scenario), "pp2": lambda: serve(make_scenario, layout={"tp": 4, "pp": 2}),
           "moe": lambda: serve(make_scenario, **moe),
           "moe-overlap": lambda: serve(make_scenario, two_batch_overlap=True, **moe)}[case]()
    costs = step_costs(scn)
    for new, ctx in ((np.ones(256), np.full(256, 2048.0)), (np.append(np.ones(40), 512.0), np.full(41, 1024.0)),
                     (np.full(2, 4096.0), np.zeros(2))):
        parts = step_breakdown(costs, new, ctx, 40)
        assert set(parts) == set(BREAKDOWN) and min(parts.values()) >= 0
        assert sum(parts.values()) == pytest.approx(costs.step_time(new, ctx, 40), rel=1e-9)


def test_report_carries_the_breakdown(make_scenario):
    r = run(serve(make_scenario, arrivals={"rate": 2.0, "count": 20})).report
    for kind, step in (("decode", r.decode_step_s), ("prefill", r.prefill_s)):
        assert sum(r.step_breakdown_s[kind].values()) == pytest.approx(step, rel=1e-9)


# --- batching: token budget, paged cache ----------------------------------------------------------------------


def test_max_num_tokens_and_its_former_name(make_scenario):
    assert serve(make_scenario).workload.max_num_tokens == 8192
    assert serve(make_scenario, max_batch_tokens=4096).workload.max_num_tokens == 4096
    assert serve(make_scenario, max_num_tokens=2048).workload.max_batch_tokens == 2048
    with pytest.raises(ScenarioError, match="workload.max_num_tokens: 2048 differs from max_batch_tokens 4096"):
        serve(make_scenario, max_num_tokens=2048, max_batch_tokens=4096)


@pytest.mark.parametrize("block", [1, 1024])
def test_paged_cache_holds_whole_blocks(make_scenario, block):
    """A 20 GB H100 node (~46K KV tokens): 200 requests of 1025 tokens (1000 + 25) at once. With blocks of 1 token
    a request holds 1025; with blocks of 1024, two blocks (2048: the second nearly empty). Reserving prompt and
    output, the most sequences a step runs is the capacity over what each holds."""
    topo = {**H100, "device": {"preset": "h100-sxm", "hbm": "20 GB"}}
    scn = serve(make_scenario, topology=topo, prompt_len=1000, output_len=25, batch=1000, kv_block=block)
    mem = serve_memory(scn)
    assert mem.kv_tokens % block == 0
    res = run(scn)
    held = -(-1025 // block) * block
    assert int(res.timeline.steps["seqs"].max()) == mem.kv_tokens // held
    assert res.timeline.kv_tokens_peak.max() <= mem.kv_tokens
