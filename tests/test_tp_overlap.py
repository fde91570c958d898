"""Tensor-parallel communication behind the GEMMs (layout.tp_overlap) against its closed form.

With sequence parallelism a layer's forward runs 2 all-gathers and 2 reduce-scatters over the TP
group. Chunked overlap (Transformer Engine's userbuffers) splits each GEMM in tp pieces, each piece's
collective behind the next piece's GEMM: the exposed time is max(comm / tp, comm - GEMM), and the
GEMMs that run beside the rest are slowed by the SM share s of the communication kernels,
overlapped x s / (1 - s).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from simulator.cost.pipeline import PASS_FIELDS, pass_table

ROOT = Path(__file__).resolve().parents[1]
MS = 1e-3
CAL = SimpleNamespace(comm_sms=0.15)
COL = {name: i for i, name in enumerate(PASS_FIELDS)}


def _layer(gemm_f, *, tp=4, sp=True, overlap=True, ag=1 * MS, rs=1 * MS, ar=2 * MS):
    """Seconds of one layer's passes: 20 ms forward (GEMMs gemm_f of it), 40 ms backward, 20 ms W."""
    sums = np.zeros((1, 3, 8))
    sums[0, 1] = [20 * MS, 40 * MS, 20 * MS, 2 * MS, 4 * MS, gemm_f, 2 * gemm_f, 20 * MS]
    one = np.array
    out = pass_table(sums, (one([ar]), one([ag]), one([rs])), (one([0.0]), one([0.0])), one([0]), one([sp]),
                     one([True]), CAL, tp_overlap=overlap, tp=one([tp]))
    return out[0, 1]


@pytest.mark.parametrize("gemm_f, exposed", [(16 * MS, 1 * MS), (2 * MS, 2 * MS), (0.0, 4 * MS)])
def test_forward_exposes_one_chunk_or_what_the_gemms_cannot_hide(gemm_f, exposed):
    """4 ms of collectives at TP 4: one chunk (1 ms) behind ample GEMMs, 4 - 2 ms behind 2 ms of them."""
    layer = _layer(gemm_f)
    hidden = 4 * MS - exposed
    assert layer[COL["f_tp"]] == pytest.approx(exposed, rel=1e-12)
    slowed = hidden * CAL.comm_sms / (1 - CAL.comm_sms)
    assert layer[COL["f"]] == pytest.approx(20 * MS + exposed + slowed, rel=1e-12)


def test_without_overlap_every_forward_collective_is_exposed():
    layer = _layer(16 * MS, overlap=False)
    assert layer[COL["f_tp"]] == pytest.approx(4 * MS, rel=1e-12)
    assert layer[COL["f"]] == pytest.approx(24 * MS, rel=1e-12)


def test_overlap_needs_sequence_parallelism():
    """Without SP the all-reduces stay exposed, overlap or not (Transformer Engine's userbuffers
    overlap the SP all-gather and reduce-scatter only)."""
    np.testing.assert_array_equal(_layer(16 * MS, sp=False), _layer(16 * MS, sp=False, overlap=False))


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_backward_exposes_one_chunk_behind_ample_gemms(tp):
    """Backward: 2 all-gathers and 2 reduce-scatters (4 ms) behind the input-gradient GEMMs."""
    layer = _layer(16 * MS, tp=tp)
    assert layer[COL["b_tp"]] == pytest.approx(4 * MS / tp, rel=1e-12)
    assert layer[COL["b_tp"]] < _layer(16 * MS, tp=tp, overlap=False)[COL["b_tp"]]


# ---------------------------------------------------------------- the GEMMs userbuffers split
def _chunk_case(tp_overlap: bool, tp: int = 8):
    from simulator import load_scenario
    from simulator.cost import calibration, roofline
    from simulator.cost.op_table import build_op_table
    from simulator.cost.pipeline import block_seconds, overlap_chunks

    scn = load_scenario(ROOT / "scenarios" / "llama3-405b-h100.yaml",
                        [f"layout.tp={tp}", "layout.sequence_parallel=true", "workload.dtype=fp8",
                         f"layout.tp_overlap={str(tp_overlap).lower()}"])
    dev = scn.topology.device
    cal = calibration.for_device(dev, "fp8")
    ops = build_op_table(scn)
    chunks = overlap_chunks(ops, tp, tp_overlap)
    return scn, dev, cal, ops, chunks, roofline, block_seconds


def test_userbuffers_split_the_gemms_they_overlap():
    """TE's default methods at TP 8: QKV and FC1 forward in 8 chunks (ring exchange), projection and FC2 forward in
    4 (pipelined reduce-scatter), projection and FC2 input gradients in 8, the rest whole; without overlap none."""
    *_, ops, chunks, _, _ = _chunk_case(True)
    f, b = dict(zip(ops.name, chunks["f"])), dict(zip(ops.name, chunks["b"]))
    assert (f["qkv"], f["fc1"], f["proj"], f["fc2"]) == (8, 8, 4, 4)
    assert (b["proj"], b["fc2"], b["qkv"], b["fc1"]) == (8, 8, 1, 1)
    assert "w" not in chunks and f["attention"] == 1 and f["norm1"] == 1
    assert _chunk_case(False)[4] is None


def test_a_chunked_gemm_costs_its_chunks():
    """A GEMM run as c chunks takes c times the roofline of an M/c-row GEMM, each chunk reading the whole weight and
    paying one launch: the layer's forward with overlap equals that closed form summed, the FLOPs unchanged; the
    chunked layer is slower (smaller tiles) and W, which userbuffers run whole, is unchanged."""
    scn, dev, cal, ops, chunks, roofline, block_seconds = _chunk_case(True)
    peak, hbm = dev.peak("fp8"), dev.hbm_bandwidth
    whole = block_seconds([ops], peak, hbm, cal, roofline.attention_peak(dev))[0, 1]
    split = block_seconds([ops], peak, hbm, cal, roofline.attention_peak(dev), [chunks])[0, 1]
    fused = np.array([n == "attention" for n in ops.name])
    hand = 0.0
    layer = ops.block == 1
    for i in np.flatnonzero(layer):
        c = chunks["f"][i]
        m, n, k = ops.gemm[i]
        shape = np.array([[m / c if m else 0.0, n, k]])
        extra = (c - 1) * 2.0 * n * k if m else 0.0
        hand += c * roofline.op_times(np.array([ops.flops_f[i] / c]), np.array([(ops.bytes_f[i] + extra) / c]), shape,
                                      peak, hbm, cal, fused[i:i + 1], peak16=roofline.attention_peak(dev),
                                      precise=ops.precise[i:i + 1])[0]
    assert split[0] == pytest.approx(hand, rel=1e-9)
    assert split[0] > whole[0] and split[1] > whole[1] and split[2] == pytest.approx(whole[2], rel=1e-12)


# ---------------------------------------------------------------- layout.tp_overlap auto (the default)
def _scenario(preset: str, *sets: str):
    """Llama 3 8B at TP8 with sequence parallelism on two domains of `preset`, tp_overlap at its default, auto."""
    from simulator import load_scenario

    return load_scenario(ROOT / "scenarios" / "llama3-405b-h100.yaml",
                         [f"topology={{preset: {preset}, domains: 2}}", "model=llama3-8b", "layout.pp=1",
                          "layout.chunks=1", "layout.stage_layers=null", "layout.schedule=1f1b", "layout.zero=1",
                          "layout.tp_overlap=auto", "workload.global_batch=144", *sets])


@pytest.mark.parametrize("preset, on", [("dgx-h100-superpod", True), ("hgx-b200", True), ("gb200-nvl72", True),
                                        ("dgx-a100-superpod", False)])
def test_auto_overlaps_on_hopper_and_blackwell_only(preset, on):
    """auto resolves by the device's generation (scenario.defaults.TP_OVERLAP): Hopper and Blackwell runs
    overlap, Ampere's do not; an explicit value is kept on every generation."""
    assert _scenario(preset).tp_overlap is on
    assert _scenario(preset, "layout.tp_overlap=false").tp_overlap is False
    assert _scenario(preset, "layout.tp_overlap=true").tp_overlap is True


def test_auto_is_off_with_megatron_lm_of_2021_collectives():
    """tp_async_allreduce false (the exposed backward collectives of Megatron-LM before September 2021) rules out
    userbuffers (an explicit true is refused); auto resolves to off there."""
    assert _scenario("dgx-h100-superpod", "layout.tp_async_allreduce=false").tp_overlap is False


def test_auto_step_is_the_explicit_setting_it_resolves_to():
    """The same step as the explicit value auto resolves to: overlap on H100 with sequence parallelism (its
    exposed TP time smaller than without), none without sequence parallelism, where auto is accepted and true is
    refused (userbuffers overlap sequence parallelism's collectives)."""
    from simulator import ScenarioError, simulate

    def run(*sets):
        return simulate(_scenario("dgx-h100-superpod", *sets))

    auto, on, off = run(), run("layout.tp_overlap=true"), run("layout.tp_overlap=false")
    assert auto.step_time_s == on.step_time_s and auto.exposed_comm_s["tp"] < off.exposed_comm_s["tp"]
    no_sp = run("layout.sequence_parallel=false")
    assert no_sp.step_time_s == run("layout.sequence_parallel=false", "layout.tp_overlap=false").step_time_s
    with pytest.raises(ScenarioError, match="tp_overlap"):
        _scenario("dgx-h100-superpod", "layout.sequence_parallel=false", "layout.tp_overlap=true")
