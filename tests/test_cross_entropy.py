"""workload.cross_entropy: the loss over the vocabulary as one fused pass, or as Megatron's PyTorch ops.

Closed forms per logit: the fused pass moves 8 bytes forward and 16 backward; Megatron's vocab-parallel
cross-entropy (megatron/core/tensor_parallel/cross_entropy.py) runs, forward, a cast of the 16-bit logits to fp32, a
max, a subtraction in place, exp in place, a sum and a normalization in place, and backward a scaling in place and
the cast back. Each pass is priced by its bytes on the device's achieved HBM bandwidth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from refusals import assert_refused

from simulator import load_scenario, simulate
from simulator.cost import calibration
from simulator.cost.op_table import build_op_table

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "scenarios" / "serve-llama3-70b-h100.yaml"

FP32, BF16 = 4, 2
UNFUSED_FORWARD = [("cast to fp32", BF16, FP32), ("max", FP32, 0), ("subtract the max", FP32, FP32),
                   ("exp", FP32, FP32), ("sum", FP32, 0), ("normalize", FP32, FP32)]
UNFUSED_BACKWARD = [("scale by the loss gradient", FP32, FP32), ("cast to 16 bits", FP32, BF16)]
"""(pass, bytes read, bytes written) a logit, as the PyTorch ops of Megatron's cross-entropy run them."""


def _scenario(tmp_path: Path, cross_entropy: str, vocab: int = 131072) -> Path:
    path = tmp_path / f"ce-{cross_entropy}.yaml"
    path.write_text(
        f"model: {{name: tiny, layers: 2, hidden: 1024, heads: 8, ffn: 4096, vocab: {vocab}}}\n"
        "topology: {preset: dgx-h100-superpod, domains: 1, domain: {kind: hgx, gpus: 8, bandwidth: 450 GB/s, "
        "used: 1}}\n"
        "workload: {kind: train, seq_len: 4096, global_batch: 4, micro_batch: 1, dtype: bf16, recompute: none, "
        f"cross_entropy: {cross_entropy}}}\n"
        "layout: {tp: 1, pp: 1, dp: 1}\n")
    return path


def _logits_bytes(scn) -> tuple[float, float]:
    ops = build_op_table(scn)
    row = ops.name.index("logits")
    return float(ops.bytes_f[row]), float(ops.bytes_b[row])


def test_unfused_passes_move_38_and_14_bytes_a_logit(tmp_path):
    scn = load_scenario(_scenario(tmp_path, "unfused"))
    logits = 4096 * scn.model.vocab
    forward, backward = _logits_bytes(scn)
    assert forward == pytest.approx(logits * sum(r + w for _, r, w in UNFUSED_FORWARD), rel=1e-12)
    assert backward == pytest.approx(logits * sum(r + w for _, r, w in UNFUSED_BACKWARD), rel=1e-12)
    assert (forward / logits, backward / logits) == (38, 14)


def test_fused_pass_moves_8_and_16_bytes_a_logit(tmp_path):
    """The default: one kernel reading the 16-bit logits and writing fp32 forward (8 bytes), twice that backward."""
    scn = load_scenario(_scenario(tmp_path, "fused"))
    forward, backward = _logits_bytes(scn)
    assert (forward, backward) == pytest.approx((4096 * scn.model.vocab * 8, 4096 * scn.model.vocab * 16), rel=1e-12)
    assert load_scenario(_scenario(tmp_path, "fused")).workload.cross_entropy == "fused"


def test_tensor_parallelism_splits_the_vocabulary(tmp_path):
    scn = load_scenario(_scenario(tmp_path, "unfused"), ["layout.tp=8", "layout.sequence_parallel=true",
                                                          "topology.domain.used=8"])
    assert _logits_bytes(scn)[0] == pytest.approx(4096 * 131072 / 8 * 38, rel=1e-12)


def test_step_grows_by_the_extra_bytes_on_the_roofline(tmp_path):
    """One GPU, no communication: the step grows by micro-batches x (38 + 14 - 8 - 16) bytes a logit at the
    achieved HBM bandwidth; the LM head and everything else are unchanged."""
    fused, unfused = (load_scenario(_scenario(tmp_path, k)) for k in ("fused", "unfused"))
    cal = calibration.for_training(fused)
    hbm = fused.topology.device.hbm_bandwidth * cal.hbm
    extra = 4 * 4096 * fused.model.vocab * (38 + 14 - 8 - 16) / hbm
    assert simulate(unfused).step_time_s - simulate(fused).step_time_s == pytest.approx(extra, rel=1e-6)


def test_the_small_vocabulary_costs_proportionally_less(tmp_path):
    big, small = (simulate(load_scenario(_scenario(tmp_path, "unfused", v))).step_time_s
                  - simulate(load_scenario(_scenario(tmp_path, "fused", v))).step_time_s for v in (131072, 32768))
    assert big / small == pytest.approx(4.0, rel=1e-6)
    assert np.isfinite(big)


def test_serving_refuses_an_unfused_loss(tmp_path):
    assert_refused(SERVE, ["workload.cross_entropy=unfused"], "cross_entropy", tmp_path)
