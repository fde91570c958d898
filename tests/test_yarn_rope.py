"""RoPE as Megatron-Core runs it in training (cost.op_table.rope_as_run): its fused kernel reads and writes each
query and key element once (backward twice that), but takes no YaRN attention factor other than 1
(rope_utils.apply_rotary_pos_emb falls back to PyTorch ops); GPT-OSS's factor, 0.1 ln 32 + 1, sends it to the
PyTorch path: 12 16-bit elements a query or key element forward, 10 backward (op_table.ROPE_UNFUSED). Serving
engines fuse it whatever the factor."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from refusals import assert_refused

from simulator import load_scenario, simulate
from simulator.cost.op_table import build_op_table
from simulator.cost.ops import ACT_BYTES
from small_gqa import SMALL_GQA

TOKENS = 4096
GPT_OSS = Path(__file__).resolve().parents[1] / "simulator/data/validation/bridge260401-b200-gpt-oss-120b-bf16.yaml"


def rope_bytes(make_scenario, mscale: float) -> tuple[float, float]:
    table = build_op_table(make_scenario(model={**SMALL_GQA, "rope_mscale": mscale}, workload={"seq_len": TOKENS}))
    i = table.name.index("rope")
    return table.bytes_f[i], table.bytes_b[i]


def test_gpt_oss_attention_factor_is_yarns_of_its_factor_32():
    """Megatron-Core's _yarn_get_mscale(32) = 0.1 ln 32 + 1, the preset's figure to 4 decimals."""
    assert load_scenario(GPT_OSS).model.rope_mscale == pytest.approx(0.1 * math.log(32) + 1, abs=5e-5)


@pytest.mark.parametrize("mscale, forward, backward", [(1.0, 2, 4), (0.1 * math.log(32) + 1, 12, 10)])
def test_rope_row_moves_the_fused_or_the_pytorch_elements(make_scenario, mscale, forward, backward):
    elements = TOKENS * (16 + 4) * 128
    assert rope_bytes(make_scenario, mscale) == pytest.approx(
        (forward * elements * ACT_BYTES, backward * elements * ACT_BYTES), rel=1e-12)


def test_serving_prices_rope_fused_whatever_the_factor(make_scenario):
    serve = {"kind": "serve", "prompt_len": 1024, "output_len": 128, "batch": 8}
    reports = [simulate(make_scenario(model={**SMALL_GQA, "rope_mscale": m}, workload=serve)) for m in (1.0, 1.3466)]
    assert reports[0].tpot_s == reports[1].tpot_s and reports[0].ttft_s == reports[1].ttft_s


def test_a_factor_of_zero_is_refused(tmp_path):
    assert_refused(GPT_OSS, ["model.rope_mscale=0"], "model.rope_mscale", tmp_path)
