"""Per-head query and key norms (model.qk_norm; Qwen3's q_norm and k_norm, Megatron-Core's qk_layernorm): one
memory-bound row over Q and K, read and written as the layer's other norms are (backward twice the forward), and
their inputs kept for backward, 2 bytes an element of Q and K a token. MLA models norm their latents instead."""

from __future__ import annotations

import pytest

from simulator.cost.memory import activation_bytes_per_layer, attention_activation_bytes
from simulator.cost.op_table import build_op_table
from simulator.cost.ops import ACT_BYTES
from simulator.scenario.model import ModelSpec
from small_gqa import SMALL_GQA

TOKENS = 4096


def test_the_norm_row_reads_and_writes_q_and_k(make_scenario):
    table = build_op_table(make_scenario(model={**SMALL_GQA, "qk_norm": True}, workload={"seq_len": TOKENS},
                                         layout={"tp": 2}))
    i = table.name.index("qk-norm")
    elements = TOKENS * (8 + 2) * 128  # a TP2 rank's heads
    assert table.bytes_f[i] == pytest.approx(2 * elements * ACT_BYTES, rel=1e-12)
    assert table.bytes_b[i] == pytest.approx(2 * table.bytes_f[i], rel=1e-12)
    assert table.flops_f[i] == 0.0
    assert "qk-norm" not in build_op_table(make_scenario(model=SMALL_GQA, workload={"seq_len": TOKENS})).name


def test_their_inputs_are_kept_for_backward():
    normed, plain = (ModelSpec.model_validate({**SMALL_GQA, "qk_norm": q}) for q in (True, False))
    kw = dict(tokens=TOKENS, seq=TOKENS, tp=2, sequence_parallel=True, recompute="selective", flash=True)
    extra = TOKENS * (16 + 4) * 128 * ACT_BYTES / 2
    assert activation_bytes_per_layer(normed, **kw) - activation_bytes_per_layer(plain, **kw) == pytest.approx(
        extra, rel=1e-12)
    kw = dict(tokens=TOKENS, tp=2, sequence_parallel=True, recompute="selective")
    assert attention_activation_bytes(normed, **kw) - attention_activation_bytes(plain, **kw) == pytest.approx(
        extra, rel=1e-12)
    kw["recompute"] = "full"
    assert attention_activation_bytes(normed, **kw) == attention_activation_bytes(plain, **kw)
