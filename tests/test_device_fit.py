"""Per-generation calibration (simulator/cost/device_fit.py): reproducibility, residual tolerances, physical sanity.

Tolerances are the ones the committed fit achieves, rounded up (docs/calibration.md, "Residuals"): residuals are
|predicted / measured - 1| of kernel time (GEMM) or throughput (attention, HBM, links).
"""

from __future__ import annotations

import math
from importlib import resources

import numpy as np
import pytest
import yaml

from simulator.cost import device_fit as fit
from simulator.scenario.units import parse_bandwidth


@pytest.fixture(scope="module")
def doc():
    return fit.load_kernels()


@pytest.fixture(scope="module")
def cal(doc):
    return fit.calibrate(doc)


@pytest.fixture(scope="module")
def gemm_cases(doc, cal):
    sheet = fit.data_sheet(doc)
    hbm = {g: cal["generations"][g]["hbm"]["streaming"]["value"] for g in fit.GENERATIONS}
    return [fit.gemm_case(e, sheet, hbm[fit.GENERATION[e["device"]]])
            for e in doc["entries"] if e["kind"] == "gemm" and e["device"] in fit.GENERATION]


def gemm(cal, gen, dtype):
    return cal["generations"][gen]["gemm"][dtype]


def residual(cal, case):
    return gemm(cal, case["gen"], case["dtype"])["residual_by_entry"][case["id"]]


def assert_close(a, b, path="calibration"):
    """Equal structure; floats within 1e-6 relative (1e-12 absolute near zero)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12), (path, a, b)
    else:
        assert a == b, (path, a, b)


# ---------------------------------------------------------------- reproducibility
def test_committed_calibration_is_what_the_fit_produces(cal):
    text = resources.files("simulator").joinpath("data", "calibration.yaml").read_text()
    assert_close(yaml.safe_load(yaml.safe_dump(fit._rounded(cal))), yaml.safe_load(text))


def test_fit_is_deterministic(doc, cal):
    assert_close(fit._rounded(fit.calibrate(doc)), fit._rounded(cal))


def test_transcribed_entries_are_complete_and_sourced(doc):
    ids = [e["id"] for e in doc["entries"]]
    assert len(ids) == len(set(ids))
    for e in doc["entries"]:
        assert e["device"] != "MI300X" and isinstance(e["verified"], bool) and e["config"], e["id"]
        assert all("value" in m and "unit" in m for m in e["measured"]), e["id"]
        src = e["source"]
        assert src["title"] and ("url" in src or {"repo", "path", "commit"} <= set(src)), e["id"]


def test_nothing_reads_the_shared_reference_folder():
    for name in ("device_fit.py", "device_tables.py"):
        assert "shared/reference" not in resources.files("simulator").joinpath("cost", name).read_text()


# ---------------------------------------------------------------- GEMM residuals
def test_large_gemms(gemm_cases, cal):
    """Kernels of >= 1e11 FLOP (brute-force MAMF best cases apart): mean within 8%, every one within 25%."""
    errs = [abs(residual(cal, c)) for c in gemm_cases if c["flop"] >= 1e11 and not c["id"].startswith("mamf")]
    assert len(errs) >= 30 and np.mean(errs) <= 0.08 and max(errs) <= 0.25


def test_small_m_gemms_are_memory_bound_and_within_25_percent(gemm_cases, cal):
    """DeepGEMM M=64 decode shapes: the roofline's HBM side explains them (not a tiny efficiency)."""
    small = [c for c in gemm_cases if c["id"].startswith("deepgemm") and c["dims"][0] == 64]
    assert len(small) == 6
    for c in small:
        p = gemm(cal, c["gen"], c["dtype"])
        compute = c["flop"] / (c["peak"] * fit.gemm_efficiency(c["dims"], p["eff_max"], p["half_dim"]))
        assert c["bytes"] / c["hbm"] > compute, c["id"]
    errs = [abs(residual(cal, c))
            for c in small + [c for c in gemm_cases if c["id"].startswith("deepgemm_h800_fp8_m128")]]
    assert np.mean(errs) <= 0.12 and max(errs) <= 0.25


def test_every_gemm_within_25_percent_and_best_cases_not_exceeded(gemm_cases, cal):
    for c in gemm_cases:
        assert abs(residual(cal, c)) <= 0.25, c["id"]
        if c["id"].startswith("mamf"):  # brute-force best shape: the model stays at or below it, within 20%
            assert 0.0 <= residual(cal, c) <= 0.20, c["id"]
    for g in fit.GENERATIONS:
        for dtype, p in cal["generations"][g]["gemm"].items():
            assert p["residuals"]["mean_abs_rel_err"] <= (0.17 if dtype == "fp4" else 0.11), (g, dtype)


def test_gemm_time_is_the_roofline_plus_fixed_time():
    case = {"flop": 2e12, "bytes": 1e9, "dims": (8192, 8192, 8192), "peak": 1e15, "hbm": 3e12}
    eff = fit.gemm_efficiency(case["dims"], 0.8, 100.0)
    assert eff == pytest.approx(0.8 * (8192 / 8292) ** 3)
    assert fit.gemm_time(case, 0.8, 100.0, 2e-6) == pytest.approx(max(2e12 / (1e15 * eff), 1e9 / 3e12) + 2e-6)


# ---------------------------------------------------------------- attention, HBM, links
def test_attention_curve_residuals(cal):
    a = {g: cal["generations"][g]["attention"] for g in fit.GENERATIONS}
    assert a["hopper"]["fwd"]["residuals"]["mean_abs_rel_err"] <= 0.06
    assert a["hopper"]["fwd"]["residuals"]["max_abs_rel_err"] <= 0.15
    assert a["hopper"]["bwd"]["residuals"]["max_abs_rel_err"] <= 0.05
    assert a["ampere"]["fwd_bwd"]["residuals"]["max_abs_rel_err"] <= 0.10
    assert a["hopper"]["fa2"]["fwd_bwd"]["residuals"]["max_abs_rel_err"] <= 0.09


def test_hopper_fa2_curves_reproduce_the_fa2_h100_sweeps(doc, cal):
    """workload.attention flash2 on Hopper: the split FA2 curves give back each fwd+bwd point of the four FA2 H100
    sweeps (3.5 / (1/fwd + 2.5/bwd), boost clock) within 9%, and the forward-only hd128 sweeps within 18% (the
    split assumes one bwd/fwd ratio, measured 0.74-0.97); FA2's forward runs at 0.5-0.62 of FA3's at 2k-16k causal."""
    peak = fit.data_sheet(doc)["H100-SXM5-80GB"]["peak"]["bf16"]
    fa2, fa3 = cal["generations"]["hopper"]["attention"]["fa2"], cal["generations"]["hopper"]["attention"]

    def eff(block, h, causal, s):
        return fit.attention_efficiency(h, causal, s, block["eff_max"], block["s_half"])

    for e in (e for e in doc["entries"] if e["id"].startswith("fa2_h100_")):
        for h, causal, s, measured in fit.attention_points(e, peak):
            f, b = eff(fa2["fwd"], h, causal, s), eff(fa2["bwd"], h, causal, s)
            predicted = f if e["kind"] == "attention_fwd" else 3.5 / (1 / f + 2.5 / b)
            assert predicted / measured == pytest.approx(1, abs=0.18 if e["kind"] == "attention_fwd" else 0.09), \
                (e["id"], s)
    for s in (2048, 4096, 8192, 16384):
        assert 0.5 <= eff(fa2["fwd"], 128, True, s) / eff(fa3["fwd"], 128, True, s) <= 0.62


def test_fa2_backward_derivation_matches_the_fa3_paper_chart(doc):
    """t_bwd = t_fwdbwd - t_fwd on the FA2 H100 entries reproduces the FA3 paper's FA2 backward bars (hd128,
    non-causal: 318 at 8k and 322 TFLOP/s at 16k, quoted in fa3paper_h100_bwd_fp16_hd128's notes) within 3%."""
    e = fit.by_id(doc)
    fwd = dict((m["seq_len"], m["value"]) for m in e["fa2_h100_fwd_fp16_hd128_noncausal"]["measured"])
    both = dict((m["seq_len"], m["value"]) for m in e["fa2_h100_fwdbwd_hd128_noncausal"]["measured"])
    for s, chart in ((8192, 318), (16384, 322)):
        assert 2.5 / (3.5 / both[s] - 1 / fwd[s]) == pytest.approx(chart, rel=0.03)


def test_physical_sanity(cal):
    gens = cal["generations"]
    for g in fit.GENERATIONS:
        for p in gens[g]["gemm"].values():
            assert 0 < p["eff_max"] <= 1 and p["half_dim"] >= 0
        assert gens[g]["gemm"]["bf16"]["eff_max"] > gens[g]["gemm"].get("fp8", {"eff_max": 0})["eff_max"]
        c = gens[g]["collectives"]
        assert 0.7 < c["ring_busbw_fraction"]["value"] < 0.85 and 0.8 < c["p2p_fraction"]["value"] < 1
        assert all(5e-6 < a < 100e-6 for a in c["ring_intra"]["alpha_by_sweep"].values())
        assert 1e-6 < c["ring_intra"]["per_step_alpha"] < 5e-6
        assert 1e4 < c["ring_intra"]["ramp_bytes"] < 1e7 and 0 < c["ring_intra"]["ramp_power"] < 1
        if "nvls_busbw_fraction" in c:
            assert c["nvls_busbw_fraction"]["value"] > c["ring_busbw_fraction"]["value"]
    for g in ("ampere", "hopper"):
        fwd, bwd = gens[g]["attention"]["fwd"]["eff_max"], gens[g]["attention"]["bwd"]["eff_max"]
        assert all(0 < bwd[h] < fwd[h] <= 1 for h in bwd)
    bw = gens["blackwell"]["attention"]
    fwd, cudnn_bwd = bw["fwd"], bw["cudnn_2026_bwd"]
    assert 0 < bw["bwd"]["value"] < fwd["eff_max"][128] <= fwd["eff_max"][256] <= 1
    # cuDNN's GB200 forward sweep: its long-sequence top agrees with FlashAttention-4's B200 headline (1,613 TFLOP/s)
    # within 5%; its half-rate key count is within 2x of Hopper's; cuDNN's 2026 backward (recorded) is faster than
    # the 2025 CUTLASS figure in use and slower than the forward
    assert fwd["eff_max"][128] == pytest.approx(bw["fa4_fwd_headline"]["value"], rel=0.05)
    hopper = gens["hopper"]["attention"]["fwd"]["s_half"]
    assert hopper / 2 < fwd["s_half"] < 2 * hopper
    assert bw["bwd"]["value"] < cudnn_bwd["eff_max"][128] < fwd["eff_max"][128]
    assert max(fwd["residuals"]["max_abs_rel_err"], cudnn_bwd["residuals"]["max_abs_rel_err"]) < 0.12
    assert 0.83 <= gens["hopper"]["hbm"]["streaming"]["value"] <= 0.92
    assert 0.78 <= gens["ampere"]["hbm"]["streaming"]["value"] <= 0.88
    assert gens["hopper"]["hbm"]["streaming"]["value"] < gens["hopper"]["hbm"]["read_only_dot"]["value"] < 1
    assert 0.6 < gens["hopper"]["collectives"]["nic_fraction_efa"]["value"] < \
        gens["hopper"]["collectives"]["nic_fraction_ib"]["value"] <= 1


def test_fp8_over_bf16_large_gemm_ratio_is_below_two(cal):
    """The data imply FP8/BF16 large-GEMM speedups well under the 2x peak ratio on Hopper (MAMF: 1403 / 795)."""
    for g, top in (("hopper", 1.8), ("blackwell", 2.0)):
        ratio = 2 * gemm(cal, g, "fp8")["eff_max"] / gemm(cal, g, "bf16")["eff_max"]
        assert 1.4 < ratio < top, g


def test_data_sheet_agrees_with_the_presets(doc):
    """Peaks and HBM within 0.1% of devices.yaml; NVLink per direction equals the topology presets."""
    presets = resources.files("topologies").joinpath("presets")
    sheet = fit.data_sheet(doc)
    assert all(not {k for k in d if k != "nvlink_per_direction" and not k.startswith("peak_fp4")}
               for d in fit.calibrate(doc)["data_sheet_differences"].values())
    for device, preset in (("A100-SXM4-80GB", "dgx-a100-superpod"), ("H100-SXM5-80GB", "dgx-h100-superpod"),
                           ("H800", "hgx-h800"), ("H200-SXM", "hgx-h200"), ("B200", "hgx-b200"),
                           ("GB200", "gb200-nvl72")):
        topo = yaml.safe_load(presets.joinpath(f"{preset}.yaml").read_text())
        assert parse_bandwidth(topo["domain"]["bandwidth"]) == pytest.approx(sheet[device]["nvlink"]), device


# ---------------------------------------------------------------- the FP8 worked example of docs/calibration.md
LAYER = {"h": 8192, "ffn": 28672, "s": 4096, "hd": 128, "nq": 64, "nkv": 8}  # Llama-3-70B-like layer, TP 1


def layer_time(dtype, p, attn, hbm_fraction, fixed, casts):
    """Forward + backward time (s) of LAYER on H100 (989 / 1979 TFLOP/s, 3.35 TB/s): 12 GEMMs (fwd, dgrad, wgrad),
    causal attention at efficiencies attn = (fwd, bwd), HBM-bound norms/adds/SwiGLU/RoPE (x3 for backward) and, for
    FP8 with casts, a BF16->FP8 cast of both inputs of every GEMM."""
    h, ffn, s, hd, nq, nkv = (LAYER[k] for k in ("h", "ffn", "s", "hd", "nq", "nkv"))
    peak, hbm = {"bf16": 989e12, "fp8": 1979e12}[dtype], 3.35e12 * hbm_fraction
    shapes = [(s, (nq + 2 * nkv) * hd, h), (s, h, nq * hd), (s, 2 * ffn, h), (s, h, ffn)]
    t, ib = 0.0, 1 if dtype == "fp8" else 2
    for m, n, k in shapes:
        for dims in ((m, n, k), (m, k, n), (k, n, m)):
            a, b, c = dims
            case = {"flop": 2.0 * a * b * c, "bytes": ib * (a * c + c * b) + 2 * a * b, "dims": dims, "peak": peak,
                    "hbm": hbm}
            t += fit.gemm_time(case, p["eff_max"], p["half_dim"], fixed)
            if casts:
                t += 3 * (a * c + c * b) / hbm
    fwd_flop = 4 * s * s * nq * hd / 2
    t += fwd_flop / (989e12 * attn[0]) + 2.5 * fwd_flop / (989e12 * attn[1])
    elementwise = 2 * (2 * 2 * s * h) + 2 * (3 * 2 * s * h) + 3 * 2 * s * ffn + 2 * 2 * s * (nq + nkv) * hd
    return t + 3 * elementwise / hbm + 12 * fixed


def test_fp8_layer_speedup_lands_in_the_measured_range(cal):
    """Fitted hopper parameters: FP8/BF16 of one layer 1.2-1.4x (measured end-to-end pairs); the old single
    calibration (0.80 for both dtypes, attention 0.75 x GEMM, HBM 0.75, 4 us) gives > 1.7x."""
    hop, s = cal["generations"]["hopper"], LAYER["s"]
    attn = tuple(fit.attention_efficiency(128, True, s, hop["attention"][p]["eff_max"], hop["attention"][p]["s_half"])
                 for p in ("fwd", "bwd"))
    hbm, fixed = hop["hbm"]["streaming"]["value"], cal["launch"]["gemm_harness_fixed_time"]["deepgemm"]
    bf16 = layer_time("bf16", hop["gemm"]["bf16"], attn, hbm, fixed, casts=False)
    fp8 = layer_time("fp8", hop["gemm"]["fp8"], attn, hbm, fixed, casts=True)
    assert 1.2 <= bf16 / fp8 <= 1.4
    assert bf16 / fp8 == pytest.approx(1.32, abs=0.01) and bf16 == pytest.approx(28.6e-3, rel=0.01)
    old, old_attn = {"eff_max": 0.80, "half_dim": 160.0}, (0.75 * 0.80 * (s / (s + 160)) ** 3,) * 2
    assert layer_time("bf16", old, old_attn, 0.75, 4e-6, False) / layer_time("fp8", old, old_attn, 0.75, 4e-6,
                                                                            False) > 1.7


@pytest.mark.parametrize("gen, mean_tol", [("ampere", 0.09), ("hopper", 0.07), ("blackwell", 0.08)])
def test_ring_size_ramp_fits_the_sweeps_better_than_one_alpha(cal, gen, mean_tol):
    """Intra-domain all-reduce sweeps by size: each harness's alpha + wire x ramp reproduces them within the stated mean
    residual and beats one alpha + wire (which is 20-40% fast from 4 to 128 MiB)."""
    ring = cal["generations"][gen]["collectives"]["ring_intra"]
    assert ring["residuals"]["mean_abs_rel_err"] <= mean_tol
    assert ring["residuals"]["mean_abs_rel_err"] < ring["residuals_without_ramp"]["mean_abs_rel_err"]
