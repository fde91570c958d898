"""Attention in FP8 (workload.fp8_attention: Transformer Engine's fp8_dot_product_attention, cuDNN's FP8 fused
attention). Its rates are the same cuDNN kernel's in BF16 times the measured speed of each pass (cuDNN 9.22 on GB200,
width 128, causal, 2K-32K: calibration.yaml's attention.fp8); its windowed backward, whose FP8 time grows as s^2, is
priced as the whole causal triangle's backward. Checked here: the speed-ups against the transcribed times, the
priced windowed backward against cuDNN's measured one (not fitted), the closed form of a step's attention rows, and
the scenario rules."""

from __future__ import annotations

import numpy as np
import pytest

from simulator import load_scenario
from simulator.cost import calibration, kernel_data, roofline
from simulator.cost.op_table import build_op_table
from simulator.cost.ops import FLASH_BACKWARD_FLOP, FUSED_ATTENTION
from simulator.scenario import spec
from simulator.scenario.base import ScenarioError

KERNELS = kernel_data.by_id(kernel_data.load_kernels())
GB200 = "scenarios/llama3-405b-nvl72-64of72.yaml"
GPT_OSS = "simulator/data/validation/bridge2608-gb200-gpt-oss-120b-mxfp8.yaml"


def times(entry_id: str) -> dict[int, float]:
    return {m["seq_len"]: m["time_ms"] * 1e-3 for m in KERNELS[entry_id]["measured"]}


@pytest.mark.parametrize("dtype", ["fp8", "mxfp8"])
@pytest.mark.parametrize("kind", ["fwd", "bwd"])
def test_speed_up_is_the_geometric_mean_of_measured_bf16_over_fp8_times(dtype, kind):
    bf16 = times(f"cudnn_gb200_sdpa_{kind}_bf16_hd128_causal")
    fp8 = times(f"cudnn_gb200_fp8attn_{kind}_{dtype}_hd128_causal")
    ratios = [bf16[s] / fp8[s] for s in sorted(bf16)]
    block = calibration.fp8_attention("blackwell")[dtype][kind]
    assert len(ratios) == 5 and block["value"] == pytest.approx(np.exp(np.mean(np.log(ratios))), rel=1e-8)
    assert block["residuals"]["max_abs_rel_err"] <= 0.25  # the backward's speed-up drifts with the sequence


def test_the_rules_name_what_calibration_yaml_holds():
    """spec's FP8 attention generations and dtypes are those calibration.yaml's attention.fp8 blocks cover."""
    measured = tuple(g for g in ("ampere", "hopper", "blackwell") if calibration.fp8_attention(g) is not None)
    assert spec.FP8_ATTENTION_MEASURED == measured
    for g in measured:
        assert all(set(calibration.fp8_attention(g)[d]) == {"fwd", "bwd"} for d in spec.FP8_ATTENTION_DTYPES)


def test_fp8_windowed_backward_grows_as_the_causal_triangle():
    """Slope of log time over log sequence, 2K-32K: BF16's windowed backward ~1 (s x 128 scores), FP8's ~2."""
    growth = calibration.fp8_attention("blackwell")["window_backward_growth"]
    assert growth["bf16"] == pytest.approx(1.0, abs=0.1)
    assert growth["fp8"] > 1.7 and growth["mxfp8"] > 1.7
    assert calibration.fp8_attention("blackwell")["window_backward"] == "causal"
    assert calibration.fp8_attention("hopper") is None


@pytest.mark.parametrize("dtype", ["fp8", "mxfp8"])
def test_priced_windowed_fp8_backward_within_10_percent_of_cudnn(dtype):
    """A check, not fitted: cuDNN's FP8 backward of GPT-OSS's 128-key window at width 64 (batch 2, 128 heads, 2K to
    32K) against simrack's price, the causal triangle's backward (2.5 x 4 b h d s^2 / 2 FLOP) at the width-64 causal
    backward efficiency times the FP8 speed-up fitted at width 128 (measured 2026-12-05: FP8 within 1%, MXFP8 4.5-6%
    under)."""
    scn = load_scenario(GB200)
    dev = scn.topology.device
    cal = calibration.with_fp8_attention(calibration.for_device(dev, dtype), "blackwell", dtype)
    peak = roofline.attention_peak(dev)
    for s, measured in times(f"cudnn_gb200_fp8attn_swa128_bwd_{dtype}_hd64").items():
        flop = FLASH_BACKWARD_FLOP * 4.0 * 2 * 128 * 64 * s * s / 2
        priced = flop / (peak * roofline.attention_efficiency(s / 2, 64, cal, True))
        assert priced / measured == pytest.approx(1.0, abs=0.10), (s, priced, measured)


def test_attention_rows_run_at_the_measured_speed_up(tmp_path):
    """Closed form on GB200 (MXFP8, no window): each fused-attention row's compute time with FP8 attention is its BF16
    time over that pass's speed-up; every other row is unchanged."""
    runs = [build_op_table(load_scenario(GB200, ["workload.dtype=mxfp8", f"workload.fp8_attention={on}"]))
            for on in ("false", "true")]
    scn = load_scenario(GB200, ["workload.dtype=mxfp8", "workload.fp8_attention=true"])
    dev = scn.topology.device
    speed = calibration.fp8_attention("blackwell")["mxfp8"]
    for x, kind in (("f", "fwd"), ("b", "bwd")):
        parts = []
        for ops, cal in zip(runs, (calibration.for_device(dev, "mxfp8"), calibration.for_training(scn))):
            fused = np.array([n in FUSED_ATTENTION for n in ops.name])
            compute, *_ = roofline.op_parts(getattr(ops, "flops_" + x), getattr(ops, "bytes_" + x), ops.gemm,
                                             dev.peak("mxfp8"), dev.hbm_bandwidth, cal, fused, backward=x == "b",
                                             peak16=roofline.attention_peak(dev), precise=ops.precise)
            parts.append((compute, fused))
        (bf16, fused), (fp8, _) = parts
        assert fused.any()
        np.testing.assert_allclose(fp8[fused], bf16[fused] / speed[kind]["value"], rtol=1e-12)
        np.testing.assert_allclose(fp8[~fused], bf16[~fused], rtol=1e-12)


def test_windowed_backward_moves_to_a_causal_row_and_the_model_flops_stay():
    """GPT-OSS (every other layer windowed): the window row keeps its forward, an attention-window-bwd row shaped as
    the causal kernel takes a backward of 2.5 x the triangle's FLOP (windowed FLOP x seq / (2 x mean keys)); the
    model FLOP (MFU's) do not change."""
    bf16, fp8 = (build_op_table(load_scenario(GPT_OSS, [f"workload.fp8_attention={on}"])) for on in ("false", "true"))
    w, w8, back = (t.name.index(n) for t, n in ((bf16, "attention-window"), (fp8, "attention-window"),
                                                (fp8, "attention-window-bwd")))
    seq = bf16.gemm[w, 0]
    assert fp8.flops_f[w8] == bf16.flops_f[w] and fp8.flops_b[w8] == 0.0 and fp8.flops_f[back] == 0.0
    assert fp8.flops_b[back] == pytest.approx(FLASH_BACKWARD_FLOP * bf16.flops_f[w] * seq / bf16.gemm[w, 1], rel=1e-12)
    assert tuple(fp8.gemm[back]) == (seq, seq, bf16.gemm[w, 2])
    assert fp8.model_flops_f.sum() == pytest.approx(bf16.model_flops_f.sum(), rel=1e-12)


@pytest.mark.parametrize("path, sets, says", [
    ("scenarios/llama3-405b-h100.yaml", [], "no FP8 attention measurement on hopper"),
    (GB200, ["workload.dtype=bf16"], "needs dtype fp8 or mxfp8"),
    (GB200, ["workload.dtype=nvfp4"], "needs dtype fp8 or mxfp8"),
    (GB200, ["workload.attention=unfused"], "needs workload.attention flash"),
    ("scenarios/serve-llama3-70b-h100.yaml", [], "a training setting"),
])
def test_fp8_attention_rules(path, sets, says):
    with pytest.raises(ScenarioError, match=says) as err:
        load_scenario(path, ["workload.dtype=fp8", "workload.fp8_attention=true", *sets])
    assert "workload.fp8_attention" in str(err.value) and "\n" not in str(err.value)
