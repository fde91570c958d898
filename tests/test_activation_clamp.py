"""A clamped gated activation as Megatron-Core trains it (cost.op_table.activation_as_run): GPT-OSS clamps the gate's
input from above and the linear input both ways (model.glu_clamp); fused_bias_geglu.weighted_bias_quick_geglu_impl
clamps the two halves of the first GEMM's output in PyTorch and concatenates them before its fused activation.
Closed form, per element of that output (2 w a token for width w): 4 16-bit elements forward, 5 backward
(op_table.CLAMP_ELEMENTS), on top of the fused activation's 3 w and 6 w. A fused grouped MLP (expert_gemm
single_kernel) clamps inside its kernel; serving engines fuse it. Memory: the clamp keeps its input and the
activation the clamped copy, two copies of the first GEMM's output (2 x 2 w bytes) where one was kept, unless the
activation is recomputed (memory.first_gemm_outputs)."""

from __future__ import annotations

import pytest

from simulator import simulate
from simulator.cost.op_table import build_op_table
from simulator.cost.memory import activation_bytes_per_layer, ffn_activation_bytes
from simulator.cost.ops import ACT_BYTES
from simulator.scenario.model import ModelSpec
from small_gqa import SMALL_GQA
from small_moe import SMALL_MOE, ep8_step

CLAMPED = {**SMALL_GQA, "glu_clamp": 7.0}
TOKENS = 4096


def row_bytes(table, name: str) -> tuple[float, float]:
    i = table.name.index(name)
    return table.bytes_f[i], table.bytes_b[i]


@pytest.mark.parametrize("clamp, forward, backward", [(None, 3, 6), (7.0, 3 + 4 * 2, 6 + 5 * 2)])
def test_dense_activation_moves_the_clamp_elements(make_scenario, clamp, forward, backward):
    """Per token of width 5,632: the fused SwiGLU's 3 w and 6 w, and the clamp's 4 x 2 w and 5 x 2 w."""
    table = build_op_table(make_scenario(model={**CLAMPED, "glu_clamp": clamp}, workload={"seq_len": TOKENS}))
    w = TOKENS * 5632
    assert row_bytes(table, "activation") == pytest.approx((forward * w * ACT_BYTES, backward * w * ACT_BYTES),
                                                           rel=1e-12)


@pytest.mark.parametrize("workload, forward", [({}, 11), ({"expert_gemm": "single_kernel"}, 3)])
def test_routed_experts_clamp_unless_their_grouped_mlp_is_fused(make_scenario, workload, forward):
    """A routed copy's activation row (width 512): clamped in PyTorch on the eager grouped MLP, inside the kernel of
    the fused one."""
    model = {**SMALL_MOE, "glu_clamp": 7.0}
    table = build_op_table(ep8_step(make_scenario, model, {"ep_backend": "deepep"}, **workload))
    bytes_f, _ = row_bytes(table, "expert-activation")
    assert bytes_f == pytest.approx(forward * 512 * ACT_BYTES, rel=1e-12)


def test_serving_prices_the_activation_fused_whatever_the_clamp(make_scenario):
    serve = {"kind": "serve", "prompt_len": 1024, "output_len": 128, "batch": 8}
    reports = [simulate(make_scenario(model={**CLAMPED, "glu_clamp": c}, workload=serve)) for c in (None, 7.0)]
    assert reports[0].tpot_s == reports[1].tpot_s and reports[0].ttft_s == reports[1].ttft_s


def copy_bytes(model, clamped: bool, recompute: str = "none", modules=None) -> float:
    """Bytes one routed copy keeps for backward."""
    return ffn_activation_bytes(model, tokens=0, tp=1, copies=1.0, recompute=recompute, modules=modules,
                                clamped=clamped)


def test_a_routed_copy_keeps_one_more_first_gemm_output_unless_recomputed():
    """SMALL_MOE's experts of width 512, gated: 2 x 1,024 elements of 2 bytes more a copy; none under moe_act."""
    model = ModelSpec.model_validate({**SMALL_MOE, "name": "m", "glu_clamp": 7.0})
    assert copy_bytes(model, True) - copy_bytes(model, False) == pytest.approx(2 * 512 * ACT_BYTES, rel=1e-12)
    assert copy_bytes(model, True, "selective", ["moe_act"]) == copy_bytes(model, False, "selective", ["moe_act"])


def test_a_dense_layer_keeps_one_more_first_gemm_output():
    model = ModelSpec.model_validate(CLAMPED)
    kw = dict(tokens=TOKENS, seq=TOKENS, tp=2, sequence_parallel=True, recompute="none", flash=True)
    extra = activation_bytes_per_layer(model, **kw) - activation_bytes_per_layer(model, clamped=False, **kw)
    assert extra == pytest.approx(TOKENS * 2 * 5632 * ACT_BYTES / 2, rel=1e-12)
