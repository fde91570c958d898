"""Serving step costs against closed forms: KV bytes, weights, the decode roofline, TP collectives."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.cost.kv_cache import kv_bytes_per_token, kv_bytes_per_token_per_rank
from simulator.cost.params import parameter_counts
from simulator.serving.memory import max_batch, serve_memory
from simulator.serving.steps import DTYPE_BYTES, layer_weight_elements, step_costs

LLAMA3_70B = "llama3-70b"
H100 = {"preset": "dgx-h100-superpod", "domains": 1}
IDEAL = "ideal"  # the pure roofline


def serve(make_scenario, *, model=LLAMA3_70B, topology=None, layout=None, **workload):
    wl = {"kind": "serve", "prompt_len": 1024, "output_len": 128, "batch": 64, **workload}
    return make_scenario(model=model, topology=topology or H100, workload=wl, layout=layout or {"tp": 8})


def ideal_h100(domains=1):
    """An H100 node whose device reaches its data-sheet peaks (pure roofline)."""
    return {"preset": "dgx-h100-superpod", "domains": domains,
            "device": {"preset": "h100-sxm", "efficiency": IDEAL}}


def test_kv_bytes_per_token_closed_forms(make_scenario):
    scn = serve(make_scenario)
    m = scn.model
    assert kv_bytes_per_token(m, "bf16") == 2 * 80 * 8 * 128 * 2 == 327680
    assert kv_bytes_per_token(m, "fp8") == kv_bytes_per_token(m, "int8") == 163840
    assert kv_bytes_per_token(m, "int4") == 81920
    # per rank: 8 KV heads split over tp 8, replicated beyond (tp 16 keeps one head a rank)
    assert kv_bytes_per_token_per_rank(m, "bf16", 8, 80) == 327680 / 8
    assert kv_bytes_per_token_per_rank(m, "bf16", 16, 80) == 327680 / 8
    assert kv_bytes_per_token_per_rank(m, "bf16", 4, 40) == 327680 / 4 / 2


def test_mla_cache_is_the_latent(make_scenario):
    """DeepSeek-V2: (d_c + d_R) * l = 4.5 d_h * l elements a token, whole on every TP rank."""
    model = {"name": "mla", "layers": 60, "hidden": 5120, "heads": 128, "head_dim": 128, "ffn": 12288,
             "ffn_kind": "swiglu", "vocab": 102400, "mla": {"kv_lora_rank": 512, "qk_rope_head_dim": 64}}
    scn = serve(make_scenario, model=model)
    assert kv_bytes_per_token(scn.model, "bf16") == (512 + 64) * 60 * 2 == 4.5 * 128 * 60 * 2
    assert kv_bytes_per_token_per_rank(scn.model, "bf16", 8, 60) == kv_bytes_per_token(scn.model, "bf16")
    assert step_costs(scn).decode_step(8, 4096) > 0


def test_layer_weights_match_the_parameter_count(make_scenario):
    m = serve(make_scenario).model
    assert layer_weight_elements(m, 1) == parameter_counts(m)["layer"]
    # TP splits the projections and the FFN; norms stay whole on every rank
    assert layer_weight_elements(m, 8) == pytest.approx((parameter_counts(m)["layer"] - 2 * m.hidden) / 8
                                                        + 2 * m.hidden)


def test_weights_and_kv_dtype_bytes(make_scenario):
    bf16 = serve_memory(serve(make_scenario))
    int8 = serve_memory(serve(make_scenario, weight_dtype="int8", kv_dtype="fp8"))
    np.testing.assert_allclose(int8.weights, bf16.weights / 2)
    np.testing.assert_allclose(int8.kv_per_token, bf16.kv_per_token / 2)
    assert int8.kv_tokens > 2 * bf16.kv_tokens  # half the KV bytes and more free HBM
    assert DTYPE_BYTES["int4"] == 0.5


def test_small_batch_decode_is_the_hbm_read(make_scenario):
    """Ideal device, batch 1: a step reads the stage's weights and the KV cache once (+ tiny activations)."""
    scn = serve(make_scenario, topology=ideal_h100())
    costs, mem = step_costs(scn), serve_memory(scn)
    hbm = scn.topology.device.hbm_bandwidth
    embed_table = -(-scn.model.vocab // 8) * scn.model.hidden * 2  # the lookup reads rows, not the table
    expected = (mem.weights[0] - embed_table + 4096 * mem.kv_per_token[0]) / hbm
    assert costs.decode_step(1, 4096) == pytest.approx(expected + 2 * 80 * costs.all_reduce(8192 * 2), rel=0.01)


def test_memory_to_compute_crossover_near_peak_over_bandwidth(make_scenario):
    """Ideal device: a layer's GEMMs turn FLOP-bound where 2 M sum(nk) / peak = (w sum(nk) + 2 M sum(n+k)) / bw,
    i.e. at M* = (w / 2) R / (1 - R sum(n+k) / sum(nk)) with R = peak / bw (295 for H100): the weights' bytes
    against the FLOPs, shifted a little by the activations each GEMM reads and writes."""
    gemms = np.array([(1280, 8192), (8192, 1024), (7168, 8192), (8192, 3584)], float)  # Llama 3 70B / TP8
    nk, n_plus_k = (gemms[:, 0] * gemms[:, 1]).sum(), gemms.sum()
    for dtype in ("bf16", "int8", "int4"):
        scn = serve(make_scenario, topology=ideal_h100(), weight_dtype=dtype)
        dev = scn.topology.device
        r = dev.peak_flops["bf16"] / dev.hbm_bandwidth
        knee = DTYPE_BYTES[dtype] / 2 * r / (1 - r * n_plus_k / nk)
        costs = step_costs(scn)
        assert costs.decode_bound(int(0.97 * knee)) == "memory"
        assert costs.decode_bound(int(1.03 * knee) + 1) == "compute"


def test_large_prefill_is_compute_bound(make_scenario):
    """Ideal device, an 8K prompt: GEMM and attention FLOPs over the peak, plus the memory-bound norms with the
    residual adds fused in (4 h values a token each: two read, two written) and the activation (3 ffn / tp), plus the
    TP all-reduces."""
    scn = serve(make_scenario, topology=ideal_h100(), prompt_len=8192)
    costs = step_costs(scn)
    m, s = scn.model, 8192
    p = parameter_counts(m)
    linear = 2 * (m.layers * (p["layer"] - 2 * m.hidden)) * s / 8
    attention = 4 * 128 * (64 / 8) * (s * (s + 1) / 2) * m.layers  # causal: half the score matrix
    head = 2 * p["head"] / 8
    elementwise = m.layers * s * 2 * (8 * m.hidden + 3 * m.ffn / 8) + s * 2 * 2 * m.hidden  # + embedding rows
    dev = scn.topology.device
    expected = (linear + attention + head) / dev.peak_flops["bf16"] + elementwise / dev.hbm_bandwidth
    assert costs.prefill(s) == pytest.approx(expected + 80 * costs.tp_comm(s), rel=0.01)


def test_tp_all_reduce_is_the_fastest_serving_algorithm(make_scenario):
    """Inside one NVLink domain a serving engine's TP all-reduce is the fastest of one-shot (alpha + (n - 1) S / bw),
    two-shot, NVLS multimem and NCCL (alpha + 2 (n - 1) / n S / bw each), with the calibration's alphas and link
    fractions (calibration.yaml, fitted to vLLM's CUDA-graph benchmark on H100); one-shot wins small messages."""
    scn = serve(make_scenario)
    costs, cal, n, link = step_costs(scn), step_costs(scn).cal, 8, 450e9
    size = np.array([16384.0, 64 * 8192 * 2, 512 * 8192 * 2, 8192 * 8192 * 2])
    bus = 2 * (n - 1) / n * size
    forms = [max(cal.ar_one_shot_alpha, 4e-6) + (n - 1) * size / (cal.ar_one_shot * link),
             cal.ar_two_shot_alpha + bus / (cal.ar_two_shot * link),
             cal.ar_multimem_alpha + bus / (cal.ar_multimem * link),
             cal.ar_nccl_alpha + bus / (cal.nvls * link)]
    np.testing.assert_allclose(costs.all_reduce(size), np.min(forms, axis=0), rtol=1e-12)
    assert costs.all_reduce(size[:1]) == pytest.approx(forms[0][0], rel=1e-12)
    assert costs.tp_comm(64) == pytest.approx(2 * costs.all_reduce(size[1])[0], rel=1e-12)


def test_decode_grows_with_batch_and_context(make_scenario):
    costs = step_costs(serve(make_scenario))
    by_batch = [costs.decode_step(b, 2048) for b in (1, 8, 64, 256, 1024)]
    by_ctx = [costs.decode_step(32, c) for c in (128, 2048, 32768, 131072)]
    assert np.all(np.diff(by_batch) > 0) and np.all(np.diff(by_ctx) > 0)
    # per token, a bigger batch is cheaper
    assert np.all(np.diff(np.array(by_batch) / [1, 8, 64, 256, 1024]) < 0)


def test_pipeline_step_is_the_sum_of_stages_and_hops(make_scenario):
    one = step_costs(serve(make_scenario, layout={"tp": 4, "pp": 2}))
    new, ctx = np.ones(16), np.full(16, 1000.0)
    stages, _ = one.stage_times(new, ctx, 16)
    assert len(stages) == 2
    assert one.step_time(new, ctx, 16) == pytest.approx(stages.sum() + one.pp_hop(16))
    assert one.pp_hop(16) > 0


def test_max_batch_is_free_memory_over_kv_per_sequence(make_scenario):
    scn = serve(make_scenario)
    mem = serve_memory(scn)
    free = mem.capacity - mem.weights[0] - mem.activations[0]
    assert max_batch(scn, 8192) == int(free // mem.kv_per_token[0]) // 8192
    assert max_batch(scn, 1 << 20) < max_batch(scn, 8192)


def test_weights_that_do_not_fit(make_scenario):
    scn = serve(make_scenario, layout={"tp": 1}, topology={"preset": "dgx-h100-superpod", "domains": 1},
                )
    # tp 1 on 8 GPUs: dp 8 replicas, each holding all 141 GB of weights on one 80 GiB GPU
    mem = serve_memory(scn)
    assert not mem.fits_weights and mem.kv_tokens == 0


def test_tp_group_across_two_domains_runs_hierarchically(make_scenario):
    """TP 16 on two 8-GPU H100 nodes: reduce-scatter + all-gather on NVLink (k = 8), an all-reduce of
    S / 8 across the two domains on the NICs (50 GB/s a GPU, 5 us one way), as training's collectives."""
    costs = step_costs(serve(make_scenario, topology={"preset": "dgx-h100-superpod", "domains": 2},
                             layout={"tp": 16}))
    nv, lat, nic = 450e9 * costs.cal.nvlink, max(2e-6, costs.cal.ring_latency), 50e9 * costs.cal.scaleout
    so_lat = max(5e-6, costs.cal.scaleout_ring_latency)  # the path's latency or NCCL's inter-node alpha
    size = np.array([0.0, 64 * 8192 * 2, 1e9])
    ar = 2 * (7 / 8 * size / nv + 7 * lat) + (2 * 1 / 2 * size / 8 / nic + 2 * so_lat)
    ag = (7 / 8 * size / nv + 7 * lat) + (1 / 2 * size / 8 / nic + so_lat)
    np.testing.assert_allclose(costs.all_reduce(size), np.where(size > 0, ar, 0.0), rtol=1e-12)
    np.testing.assert_allclose(costs.all_gather(size), np.where(size > 0, ag, 0.0), rtol=1e-12)
    assert costs.tp_comm(64) == pytest.approx(2 * ar[1], rel=1e-12)
    assert costs.decode_step(8, 1024) > costs.tp_comm(8) * 80


def test_serving_a_tp_group_across_domains_simulates(tmp_path):
    """`simrack run serve-llama3-70b-h100.yaml --set layout.tp=16 --set topology.domains=2` (was an
    IndexError traceback) reports every request."""
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from simulator.cli import app

    scenario = Path(__file__).resolve().parents[1] / "scenarios" / "serve-llama3-70b-h100.yaml"
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["run", str(scenario), "--set", "layout.tp=16", "--set", "topology.domains=2",
                                      "--set", "workload.arrivals.count=200", "--json", str(out), "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["completed"] == 200 and report["gpus"] == 16
