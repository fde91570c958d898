"""scenarios/studies/api-prices: simulated long-context costs against rooflines, and the backward
(price -> KV cache) inversions against their forward models. A few points only, so it runs in seconds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

STUDY = Path(__file__).resolve().parents[2] / "scenarios" / "studies" / "api-prices" / "study.py"
spec = importlib.util.spec_from_file_location("api_prices_study", STUDY)
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)

GQA_H100 = "Llama 3 70B (GQA), H100"
MLA_GB200 = "DeepSeek-V3 (MLA), GB200"
LLAMA70_PARAMS = 70.55e9  # 80 x (8192 x 128 x (64 + 64 + 16) + 3 x 8192 x 28672) + 2 x 128256 x 8192
H100_HBM = 3.35e12  # bytes/s (devices.yaml)


def test_kv_bytes_per_token_from_the_published_shapes():
    # Llama 3 70B: 2 (K, V) x 80 layers x 8 KV heads x 128 x 2 bytes; DeepSeek-V3: 61 x (512 + 64) x 2 bytes
    assert study.Replica(GQA_H100, 8192).scn.model.kv_heads == 8
    scn = study.Replica(GQA_H100, 8192).scn
    assert study.kv_bytes_per_token(scn.model, "bf16") == 2 * 80 * 8 * 128 * 2
    scn = study.Replica(MLA_GB200, 8192).scn
    assert study.kv_bytes_per_token(scn.model, "bf16") == 61 * (512 + 64) * 2


@pytest.mark.parametrize("context", [131072, 1048576])
def test_long_context_decode_against_the_hbm_roofline(context):
    """Llama 3 70B on 8 H100 (TP8): a decode step reads each GPU's 1/8 of the weights and of the batch's
    cache. The simulated $ per output token is at least that roofline (weights + batch x KV) / HBM
    bandwidth and at most 1.6x it: decode attention streams the cache at the measured decode-kernel rate
    and the weights at the calibrated HBM fraction; all-reduces and launches add the rest (about 1.2x)."""
    row = study.point(GQA_H100, context)
    b = row["batch"]
    assert b == min(256, int((80 * 2**30 - 17.8e9) // ((context + 1024) * 2 * 80 * 128 * 2)))  # 1 KV head a GPU
    weights_gpu = LLAMA70_PARAMS * 2 / 8
    kv_gpu = 2 * 80 * 1 * 128 * 2  # bytes a token on one GPU
    roofline = (weights_gpu + b * (context + 512) * kv_gpu) / H100_HBM  # s a step
    usd_roofline = 8 * 2.0 / 3600 * roofline / b * 1e6
    assert usd_roofline <= row["usd_per_M_output"] <= 1.6 * usd_roofline
    assert row["x_hbm_roofline"] == pytest.approx(row["usd_per_M_output"] / usd_roofline, rel=0.02)


def test_memory_forces_the_batch_down():
    batches = [study.point(GQA_H100, c)["batch"] for c in (8192, 65536, 1048576)]
    assert batches[0] > batches[1] > batches[2] >= 1
    assert study.point("DeepSeek-V3 (MLA), H100", 1048576)["batch"] == 0  # 74 GB of bf16 latent > free HBM of an H100


def test_chunked_prefill_of_one_chunk_is_the_prefill_step():
    rep = study.Replica(GQA_H100, 8192)
    assert rep.prefill(8192) == pytest.approx(1e6 * rep.usd_per_s * rep.costs.prefill(8192) / 8192, rel=1e-12)


def test_prefill_against_the_flop_roofline():
    """An input token costs at least its FLOP at peak: 2N + 4 L a d x (causal mean context) on 8 H100; at
    most 2.5x that: simrack's GEMMs and its prefill attention (FlashAttention's fitted curve) run at about
    half of peak or better, which puts 128K near 1.9x."""
    c = 131072
    usd = study.point(GQA_H100, c)["usd_per_M_input"]
    flops = 2 * LLAMA70_PARAMS + 4 * 80 * 64 * 128 * c / 2
    floor = 8 * 2.0 / 3600 * flops / (8 * 989.4e12) * 1e6
    assert floor <= usd <= 2.5 * floor


def test_roofline_inverse_is_the_closed_form_and_inverts_the_forward():
    """While the batch cap binds, (W/cap + T k) / (W/cap + c0 k) = r gives k = (r - 1) W/cap / (T - r c0)
    on one GPU (mean contexts T + o/2, c0 + o/2); plugged back into the forward roofline it returns r."""
    p = study.roofline_inputs(GQA_H100)
    assert p["spread"] == 8  # TP8 splits Llama's 8 KV heads: one a GPU
    for threshold, r in ((200000, 1.5), (128000, 2.0), (272000, 1.5)):
        k = study.implied_kv_roofline(GQA_H100, threshold, r)
        closed = (r - 1) * p["weights"] / 256 / ((threshold + 512) - r * (8192 + 512)) * 8
        assert k == pytest.approx(closed, rel=1e-12)
        forward = study.roofline_cost(k, threshold, p) / study.roofline_cost(k, 8192, p)
        assert forward == pytest.approx(r, rel=1e-6)
    # a ratio that needs memory to force the batch down (bisection branch) still inverts
    k = study.implied_kv_roofline(GQA_H100, 256000, 24.0)
    assert study.roofline_cost(k, 256000, p) / study.roofline_cost(k, 8192, p) == pytest.approx(24.0, rel=1e-4)


def test_simrack_inverse_inverts_the_forward():
    """The what-if cache: with kv_scale 1 it is the plain replica; the cost ratio grows with the cache; a
    ratio above the no-cache floor is inverted to a cache whose forward ratio matches."""
    plain = study.point(GQA_H100, 65536)["usd_per_M_output"]
    assert study.Replica(GQA_H100, 65536, 1.0).decode(65536)["usd_per_M_output"] == pytest.approx(plain, rel=1e-12)
    ratios = [study.simrack_ratio(GQA_H100, 65536, s) for s in (0.01, 0.1, 1.0, 3.0)]
    assert ratios == sorted(ratios)
    target = (ratios[0] + ratios[2]) / 2  # reachable: between the no-cache floor and the real cache
    out = study.implied_kv_simrack(GQA_H100, 65536, target)
    real = study.kv_bytes_per_token(study.Replica(GQA_H100, 8192).scn.model, "bf16")
    assert out["kv_bytes"] is not None
    # 1%: the batch is a whole number of sequences, so the forward ratio moves in small steps
    assert study.simrack_ratio(GQA_H100, 65536, out["kv_bytes"] / real) == pytest.approx(target, rel=1e-2)
    assert study.implied_kv_simrack(GQA_H100, 65536, 0.5 * out["floor_ratio"])["kv_bytes"] is None


def test_flop_floor_and_its_inverse():
    linear, out = 136.9e9, 1024
    a = 4 * 80 * 64 * 128  # Llama 3 70B attention FLOP per context token
    assert study.attention_flops_per_context_token(study.Replica(GQA_H100, 8192).scn.model) == a
    r = study.flop_floor_ratio(linear, a, 200000, out)
    assert r == pytest.approx((linear + a * 200512) / (linear + a * 8704), rel=1e-12)
    assert study.implied_attention_flops(linear, r, 200000, out) == pytest.approx(a, rel=1e-9)
    # DeepSeek-V3 decodes MLA absorbed: 61 layers x 2 x 128 heads x (2 x 512 + 64)
    assert study.attention_flops_per_context_token(study.Replica(MLA_GB200, 8192).scn.model) == 61 * 2 * 128 * 1088


def test_price_data_is_sourced_and_rises():
    entries = yaml.safe_load((STUDY.parent / "prices.yml").read_text())
    assert len(entries) >= 5
    for e in entries:
        assert e["sources"] and all(src["url"] and src["says"] for src in e["sources"]) and e["seen"]
        starts = [t["from"] for t in e["tiers"]]
        assert starts[0] == 0 and starts == sorted(starts)
        for key in ("input", "output"):
            prices = [t[key] for t in e["tiers"] if t[key] is not None]
            assert prices == sorted(prices)
    steps = {(t["model"], t["threshold"]): (t["input_ratio"], t["output_ratio"]) for t in study.tiers()}
    assert steps[("Gemini 2.5 Pro", 200000)] == (2.0, 1.5)
    assert steps[("Claude Sonnet 4 / 4.5 (1M context)", 200000)] == (2.0, 1.5)


def test_committed_forward_costs_are_price_times_step_over_batch():
    """Every row of results.csv: $ per M output = GPUs x $/GPU-s x step / batch (H100 $2, GB200 $3 an hour);
    the README's 8K-to-longest ratios are ratios of these rows."""
    import csv

    with open(STUDY.parent / "results.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["batch"] not in ("", "0")]
    for r in rows:
        price = (2.0 if "H100" in r["series"] else 3.0) / 3600
        usd = float(r["gpus"]) * price * float(r["step_ms"]) / 1e3 / float(r["batch"]) * 1e6
        assert float(r["usd_per_M_output"]) == pytest.approx(usd, rel=1e-9)
    llama = [r for r in rows if r["series"] == GQA_H100]
    assert float(llama[-1]["context"]) == 1048576 and float(llama[0]["context"]) == 8192
    ratio = float(llama[-1]["usd_per_M_output"]) / float(llama[0]["usd_per_M_output"])
    # the batch falls from its 8K value to 1, the step barely moves: ratio ~ batch(8K) x step(1M) / step(8K)
    assert ratio == pytest.approx(float(llama[0]["batch"]) * float(llama[-1]["step_ms"]) / float(llama[0]["step_ms"]),
                                  rel=1e-9)
