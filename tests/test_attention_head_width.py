"""Attention efficiency by head width, each pass on its own: the measured widths of calibration.yaml, and below the
narrowest measured one the exponential bound. A flash-attention forward does 4 x width FLOP of tensor-core work and
one exp2 a score; the special-function unit issues 16 exp2 a clock and SM on A100, H100 and B200 (CUDA C++
Programming Guide, arithmetic instruction throughput; FlashAttention-4, Zadouri et al. 2026, for B200), so a head
narrower than (MMA FLOP a clock and SM) / 64 is bound by the exponentials. The backward does 2.5x the forward's
FLOP a score for the same exponential."""

from __future__ import annotations

import numpy as np
import pytest

from simulator import load_scenario
from simulator.cost import calibration, kernel_data, roofline
from simulator.cost.ops import window_keys


KERNELS = kernel_data.load_kernels()


@pytest.mark.parametrize("generation, device, clock", [("ampere", "A100-SXM4-80GB", "boost_MHz"),
                                                       ("hopper", "H100-SXM5-80GB", "boost_MHz_for_tensor_peak")])
def test_balance_width_is_the_mma_rate_over_four_exponentials(generation, device, clock):
    """kernels.yaml's data sheet: dense BF16 peak over SMs x boost clock is 2,048 FLOP a clock and SM on A100 and
    4,096 on H100; B200's 8,192 is FlashAttention-4's figure (its clock is not in the data sheet)."""
    sheet = KERNELS["data_sheet"][device]
    mma = sheet["bf16_dense_TFLOPs"] * 1e12 / (sheet["sms"] * sheet[clock] * 1e6)
    assert mma / (4 * 16) == pytest.approx(calibration.EXP_BALANCE_WIDTH[generation], rel=0.01)
    assert calibration.EXP_BALANCE_WIDTH["blackwell"] == 8192 / (4 * 16)


def scale_at(cal: calibration.Calibration, width: int, backward: bool = False) -> float:
    return float(calibration.head_scale(width, cal, backward))


def test_blackwell_forward_halves_at_width_64_and_its_backward_does_not():
    """B200's forward balances at width 128 (measured 0.715 there): width 64 does half the MMA work for the same
    exponentials. Its backward balances at 128 / 2.5 = 51: width 64 stays tensor-core bound (held at 128's)."""
    cal = calibration.fitted("blackwell", "bf16")
    assert scale_at(cal, 64) == pytest.approx(0.5, rel=1e-12)
    assert scale_at(cal, 32) == pytest.approx(0.25, rel=1e-12)
    assert scale_at(cal, 64, backward=True) == pytest.approx(1.0, rel=1e-12)
    assert scale_at(cal, 32, backward=True) == pytest.approx(32 / 51.2, rel=1e-12)


def test_hopper_passes_scale_by_their_own_measured_widths():
    """FA3 on H100: forward 64 / 128 from its sweep, backward from the FA3 paper's bars (0.504 / 0.595), not the
    forward's; width 32, unmeasured, is exponential-bound below the balance width 64: half of width 64."""
    attn, cal = calibration.attention_curves("hopper"), calibration.fitted("hopper", "bf16")
    fwd, bwd = attn["fwd"]["eff_max"], attn["bwd"]["eff_max"]
    assert scale_at(cal, 64) == pytest.approx(fwd[64] / fwd[128], rel=1e-12)
    assert scale_at(cal, 64, backward=True) == pytest.approx(bwd[64] / bwd[128], rel=1e-12)
    assert scale_at(cal, 64, backward=True) > scale_at(cal, 64) + 0.1
    assert scale_at(cal, 32) == pytest.approx(fwd[64] / fwd[128] / 2, rel=1e-12)


def test_ampere_holds_width_32_at_width_64s_efficiency():
    """A100 balances at width 32: no exponential bound at or above it."""
    attn, cal = calibration.attention_curves("ampere"), calibration.fitted("ampere", "bf16")
    fwd = attn["fwd"]["eff_max"]
    assert scale_at(cal, 32) == pytest.approx(fwd[64] / fwd[128], rel=1e-12)


def test_fused_row_times_follow_each_pass_scale_on_gb200():
    """Closed form: FLOP / (16-bit peak x eff_max x scale(width) x s'/(s' + s_half) x clock), the backward with its
    own top and width scale."""
    scn = load_scenario("scenarios/llama3-405b-nvl72-64of72.yaml")
    cal = calibration.for_device(scn.topology.device, "bf16")
    peak, s, flops = roofline.attention_peak(scn.topology.device), 8192, 1e12
    shape = np.array([[s, s, 64]], dtype=float)
    for backward, top, scale in ((False, cal.attention, 0.5), (True, cal.attention_bwd, 1.0)):
        t = roofline.op_times(np.array([flops]), np.array([0.0]), shape, peak, 8e12, cal, np.array([True]),
                              backward=backward, peak16=peak, overhead=0.0)
        eff = top * scale * (s / 2) / (s / 2 + cal.attention_half_seq) * cal.clock
        assert t[0] == pytest.approx(flops / (peak * eff), rel=1e-12)


@pytest.mark.parametrize("entry, backward", [("cudnn_gb200_swa128_fwd_bf16_hd64", False),
                                             ("cudnn_gb200_swa128_bwd_bf16_hd64", True)])
def test_gpt_oss_window_kernel_within_25_percent_of_cudnn_on_gb200(entry, backward):
    """A check at width 64, not fitted: cuDNN 9.22's 128-key sliding-window kernel (GPT-OSS's shape) on GB200, 2K to
    16K tokens, against simrack's price of a query seeing window_keys(seq, 128) keys (the benchmark's FLOP count,
    4 b h d s x mean keys). Width 64 held at width 128's forward efficiency priced it 1.5-1.6x fast."""
    scn = load_scenario("scenarios/llama3-405b-nvl72-64of72.yaml")
    cal, peak = calibration.for_device(scn.topology.device, "bf16"), roofline.attention_peak(scn.topology.device)
    for point in kernel_data.by_id(KERNELS)[entry]["measured"]:
        if point["seq_len"] > 16384:
            continue  # the 32K forward point falls to 104 TFLOP/s: not a width effect
        priced = roofline.attention_efficiency(window_keys(point["seq_len"], 128), 64, cal, backward) * peak
        assert priced / (point["value"] * 1e12) == pytest.approx(1.0, abs=0.25)
