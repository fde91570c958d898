"""Compute precisions (workload.dtype) and stored ones (weight_dtype, kv_dtype): block-scale bytes from the formats,
the cast before each low-precision GEMM, the dtype's peak and GEMM curve, and weight-only quantization (16-bit
math on low-precision weights) apart from weight-and-activation quantization (the GEMMs at the low-precision peak)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from refusals import assert_refused

from simulator import load_scenario, run
from simulator.cost import calibration, roofline
from simulator.cost.op_table import build_op_table
from simulator.cost.ops import ACT_BYTES, CAST_BYTES, DTYPE_BYTES, layer_rows
from simulator.serving.steps import step_costs

ROOT = Path(__file__).resolve().parents[1]
SERVE_H100 = ROOT / "scenarios" / "serve-llama3-70b-h100.yaml"
GB200 = ROOT / "scenarios" / "llama3-405b-nvl72-64of72.yaml"
MOE_GB200 = ROOT / "simulator" / "data" / "validation" / "bridge2608-gb200-qwen3-30b-a3b-mxfp8.yaml"

FORMATS = {  # dtype: (element bits, scale bytes, elements a scale) of the stored weights
    "fp8": (8, 0, 1), "fp8-block": (8, 4, 128 * 128), "mxfp8": (8, 1, 32), "nvfp4": (4, 1, 16), "mxfp4": (4, 1, 32)}


@pytest.mark.parametrize("dtype", sorted(FORMATS))
def test_block_scale_bytes_follow_the_formats(dtype):
    """Bytes an element: bits / 8 + scale bytes / block (OCP MX: E8M0 a 32 block; NVFP4: E4M3 a 16 block;
    DeepSeek-V3: FP32 a 128x128 weight block and a 1x128 activation tile)."""
    bits, scale, block = FORMATS[dtype]
    assert DTYPE_BYTES[dtype] == pytest.approx(bits / 8 + scale / block, rel=1e-15)
    tile = 128 if dtype == "fp8-block" else block
    assert CAST_BYTES[dtype] == pytest.approx(bits / 8 + scale / tile, rel=1e-15)


@pytest.mark.parametrize("dtype, training", [("fp8", True), ("mxfp8", True), ("nvfp4", False), ("fp8-block", True)])
def test_a_cast_before_each_low_precision_gemm(dtype, training):
    """Each GEMM but the 16-bit ones (router, head) gets a memory-bound cast that reads its k-wide 16-bit input
    and writes it at the dtype's bytes, twice in training (the transposed copy for the weight gradient): io =
    (1 + copies * CAST / 2) k 16-bit elements a token; its backward casts the n-wide output gradient."""
    scn = load_scenario(ROOT / "scenarios" / "llama3-405b-h100.yaml")
    arch = scn.topology.device.arch
    rows = layer_rows(scn.model, 8, True, dtype, training, arch=arch)
    bf16 = layer_rows(scn.model, 8, True, "bf16", training, arch=arch)
    copies = 2 if training else 1
    casts = [i for i, name in enumerate(rows.name) if name.endswith("-cast")]
    assert len(casts) == int((bf16.gemm & ~bf16.precise).sum()) > 0 and "qkv-cast" not in bf16.name
    for i in casts:
        g = rows.name.index(rows.name[i].removesuffix("-cast"))
        assert rows.io[i] == pytest.approx((1 + copies * CAST_BYTES[dtype] / ACT_BYTES) * rows.k[g], rel=1e-12)
        assert rows.bwd[i] == pytest.approx(rows.n[g] / rows.k[g] if training else 0.0)


@pytest.mark.parametrize("dtype, arch, copies", [("fp8", "hopper", 2), ("fp8", "blackwell", 1),
                                                 ("mxfp8", "blackwell", 2), ("nvfp4", "blackwell", 2)])
def test_a_training_cast_writes_a_transposed_copy_unless_the_gemm_takes_either_layout(dtype, arch, copies):
    """Training, per cast: (1 + copies x CAST / 2) k 16-bit elements a token. Hopper's FP8 GEMMs take only the TN
    layout, so Transformer Engine writes the transposed copy the weight gradient reads; Blackwell's take either, so
    per-tensor FP8 keeps one copy (its Float8 quantizers skip the transpose: non_tn_fp8_gemm_supported), while the
    block-scaled formats quantize the column-wise copy apart (its scales run along the other dimension)."""
    scn = load_scenario(ROOT / "scenarios" / "llama3-405b-h100.yaml")
    rows = layer_rows(scn.model, 8, True, dtype, True, arch=arch)
    for i in [i for i, name in enumerate(rows.name) if name.endswith("-cast")]:
        g = rows.name.index(rows.name[i].removesuffix("-cast"))
        assert rows.io[i] == pytest.approx((1 + copies * CAST_BYTES[dtype] / ACT_BYTES) * rows.k[g], rel=1e-12)


def test_a_training_cast_needs_the_device_generation():
    """How many copies a training cast writes depends on the generation (above), so the op rows assume none: a
    low-precision training layer without `arch` is refused; serving (one copy everywhere) and 16-bit need none."""
    scn = load_scenario(ROOT / "scenarios" / "llama3-405b-h100.yaml")
    with pytest.raises(ValueError, match="generation"):
        layer_rows(scn.model, 8, True, "fp8", True)
    assert layer_rows(scn.model, 8, True, "fp8", False).name == layer_rows(scn.model, 8, True, "fp8", False,
                                                                           arch="blackwell").name
    assert len(layer_rows(scn.model, 8, True, "bf16", True).name) > 0


def test_fp8_current_scaling_reads_each_cast_input_once_more(tmp_path):
    """Per-tensor FP8 with current scaling (workload.fp8_scaling: current): a separate amax kernel reads each cast's
    k-wide 16-bit input before the cast, so io = (2 + 2 x 1 / 2) k = 3 k elements a token, 1.5x delayed scaling's;
    nothing else changes, so a step grows by exactly those bytes' HBM seconds (no cast is compute-bound)."""
    scn = load_scenario(ROOT / "scenarios" / "llama3-405b-h100.yaml")
    arch = scn.topology.device.arch
    delayed = layer_rows(scn.model, 8, True, "fp8", True, arch=arch)
    current = layer_rows(scn.model, 8, True, "fp8", True, current_scaling=True, arch=arch)
    casts = np.array([name.endswith("-cast") for name in delayed.name])
    np.testing.assert_allclose(current.io[casts], 1.5 * delayed.io[casts], rtol=1e-12)
    np.testing.assert_array_equal(current.io[~casts], delayed.io[~casts])
    assert layer_rows(scn.model, 8, True, "mxfp8", True, current_scaling=True, arch=arch).io.sum() == pytest.approx(
        layer_rows(scn.model, 8, True, "mxfp8", True, arch=arch).io.sum())  # block formats scale from each block
    fp8 = ["workload.dtype=fp8", "layout.fp8_params=false"]
    step = lambda sets: run(  # noqa: E731
        load_scenario(ROOT / "scenarios" / "llama3-405b-h100.yaml", fp8 + sets)).report
    assert step(["workload.fp8_scaling=current"]).step_time_s > step([]).step_time_s
    assert_refused(ROOT / "scenarios" / "llama3-405b-h100.yaml", ["workload.fp8_scaling=current"],
                   "workload.fp8_scaling: current scales per-tensor FP8 (workload.dtype fp8), got bf16", tmp_path)
    assert_refused(SERVE_H100, ["workload.dtype=fp8", "workload.fp8_scaling=current"],
                   "workload.fp8_scaling: sets training's per-tensor FP8 scales", tmp_path)


def test_mxfp8_casts_run_at_the_measured_quantize_rate(monkeypatch):
    """Transformer Engine's MXFP8 quantize on a B200 (kernels.yaml rocmte598_b200_mxfp8_cast, the source's figure):
    8192 x 8192 BF16 to both copies, each with its E8M0 block scales, in 52.34 us. Those bytes at the streaming rate
    times calibration.mxfp8_cast_slowdown take that time within 1%; the op table gives every training MXFP8 cast row
    (routed experts' too) that factor on its bytes and nothing else, and per-tensor FP8's casts and an ideal device's
    none."""
    nbytes = 8192 * 8192 * (ACT_BYTES + 2 * DTYPE_BYTES["mxfp8"])
    slow = calibration.mxfp8_cast_slowdown("blackwell")
    streaming = calibration.for_training(load_scenario(GB200)).hbm
    assert nbytes * slow / (8e12 * streaming) == pytest.approx(52.34e-6, rel=0.01)
    assert slow > 1.3 and calibration.mxfp8_cast_slowdown("hopper") == 1.0  # unmeasured there: casts stream
    for path, dtype, factor in ((GB200, "mxfp8", slow), (MOE_GB200, "mxfp8", slow), (GB200, "fp8", 1.0)):
        scn = load_scenario(path, [f"workload.dtype={dtype}"])
        priced = build_op_table(scn)
        monkeypatch.setattr(calibration, "mxfp8_cast_slowdown", lambda generation: 1.0)
        streamed = build_op_table(scn)
        monkeypatch.undo()
        casts = np.array([n.endswith("-cast") for n in priced.name])
        assert casts.sum() >= 4
        for col in ("bytes_f", "bytes_b"):
            a, b = getattr(priced, col), getattr(streamed, col)
            np.testing.assert_allclose(a[casts], factor * b[casts], rtol=1e-12)
            np.testing.assert_array_equal(a[~casts], b[~casts])
    ideal = load_scenario(GB200, ["workload.dtype=mxfp8", "topology.device.efficiency=ideal"])
    as_run = build_op_table(ideal).bytes_f
    monkeypatch.setattr(calibration, "mxfp8_cast_slowdown", lambda generation: 1.0)
    np.testing.assert_array_equal(as_run, build_op_table(ideal).bytes_f)  # an ideal device's casts stream


def test_fp4_gemms_run_at_the_fp4_peak_on_blackwell():
    """A large NVFP4 GEMM on GB200: 2 M N K / (fp4 peak x the fp4 curve's efficiency at M, N, K x the clock)."""
    dev = load_scenario(GB200).topology.device
    cal = calibration.for_device(dev, "nvfp4")
    shape = np.array([[8192.0, 16384.0, 16384.0]])
    flops = 2 * shape.prod()
    t = roofline.op_times(np.array([flops]), np.array([0.0]), shape, dev.peak("nvfp4"), dev.hbm_bandwidth, cal,
                          overhead=0.0)
    eff = min(cal.gemm * np.prod(shape / (shape + cal.gemm_half_dim)), cal.gemm_ceiling) * cal.clock
    assert dev.peak("nvfp4") == dev.peak_flops["fp4"] == 10e15
    assert t[0] == pytest.approx(flops / (10e15 * eff), rel=1e-12)
    assert cal.gemm != calibration.for_device(dev, "fp8").gemm  # its own curve, not FP8's


def test_fp4_on_hopper_is_refused(tmp_path):
    assert_refused(SERVE_H100, ["workload.dtype=nvfp4"], "workload.dtype: nvfp4 runs at the fp4 peak, fp4 not in "
                   "peak_flops of H100", tmp_path)


def test_weight_only_against_weight_and_activation_quantization():
    """Llama 3 70B on 8 H100. Batch 1 is bound by reading the weights: FP8 weights halve that read whether the math
    is 16-bit (weight-only) or FP8 (W8A8). Batch 2048 is bound by the GEMMs: weight-only runs them at the BF16 peak
    (as BF16 does), W8A8 at the FP8 peak: the step at least 20% shorter (its attention, casts and all-reduces stay;
    FP8 GEMMs run about 1.3-1.5x BF16's at these shapes)."""
    def decode(batch, **workload):
        sets = [f"workload.{k}={v}" for k, v in workload.items()]
        return step_costs(load_scenario(SERVE_H100, sets)).decode_step(batch, 1152)

    bf16, w8, w8a8 = decode(1), decode(1, weight_dtype="fp8"), decode(1, dtype="fp8")
    assert 0.5 < w8 / bf16 < 0.6 and w8a8 == pytest.approx(w8, rel=0.05)
    bf16, w8, w8a8 = decode(2048), decode(2048, weight_dtype="fp8"), decode(2048, dtype="fp8")
    assert w8 == pytest.approx(bf16, rel=0.05) and w8a8 < 0.8 * bf16
