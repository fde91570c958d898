"""OpTable FLOPs and parameter counts against closed forms and published model sizes.

Sources: Narayanan et al. 2021 (arXiv 2104.04473) Sec 5.1 for the 24 b s h^2 + 4 b s^2 h layer
forward FLOPs and the 12 l h^2 (1 + 13/12h + (V+s)/12lh) parameter count; Korthikanti et al. 2022
(arXiv 2205.05198) for the 72 B s l h^2 (1 + s/6h + V/16lh) model FLOPs and the MFU table
(published.yaml korthikanti2022_iteration_times); Llama 3 parameter counts from the released
models (8.03B, 70.6B, 405.9B; Llama Team 2024, arXiv 2407.21783, Table 3 shapes).
"""

from __future__ import annotations

import numpy as np
import pytest

from simulator.cost.op_table import build_op_table
from simulator.cost.ops import BLOCK_HEAD, BLOCK_LAYER
from simulator.cost.params import model_flops_per_token, parameter_counts, total_parameters
from simulator.scenario.loader import model_preset
from simulator.scenario.spec import ModelSpec

S = 2048
H = 12288


def _gpt3_table(make_scenario, *, tp=1, micro_batch=1, attention="unfused", sp=False):
    scn = make_scenario(workload={"micro_batch": micro_batch, "global_batch": 64 * micro_batch,
                                  "attention": attention},
                        layout={"tp": tp, "sequence_parallel": sp})
    return build_op_table(scn)


@pytest.mark.parametrize("b", [1, 4])
def test_layer_forward_flops_unfused_is_24bsh2_plus_4bs2h(make_scenario, b):
    """Unfused attention computes the full score matrix: 24 b s h^2 + 4 b s^2 h FLOP, exactly."""
    ops = _gpt3_table(make_scenario, micro_batch=b)
    expected = 24 * b * S * H**2 + 4 * b * S**2 * H
    assert ops.total("flops_f", BLOCK_LAYER) == expected


def test_layer_forward_flops_flash_skips_masked_half(make_scenario):
    """A causal flash kernel skips half the score/value products; MFU still counts them in full."""
    ops = _gpt3_table(make_scenario, attention="flash")
    assert ops.total("flops_f", BLOCK_LAYER) == 24 * S * H**2 + 2 * S**2 * H
    assert ops.total("model_flops_f", BLOCK_LAYER) == 24 * S * H**2 + 4 * S**2 * H


def test_gemm_backward_is_twice_forward(make_scenario):
    """Every GEMM's backward (input gradients + weight gradients) costs 2x its forward."""
    ops = _gpt3_table(make_scenario)
    gemm = (ops.gemm > 0).all(axis=1) & (ops.flops_f > 0)
    assert gemm.sum() >= 7  # qkv, scores, values, proj, fc1, fc2, lm-head
    np.testing.assert_array_equal(ops.flops_b[gemm] + ops.flops_w[gemm], 2 * ops.flops_f[gemm])
    layer = ops.block == BLOCK_LAYER
    assert (ops.flops_b + ops.flops_w)[layer].sum() == 2 * ops.flops_f[layer].sum()


def test_weight_gradients_only_on_weight_gemms(make_scenario):
    """Score and value products have no weights, so no W pass; weight GEMMs split B and W evenly."""
    ops = _gpt3_table(make_scenario)
    names = list(ops.name)
    for n in ("scores", "values"):
        assert ops.flops_w[names.index(n)] == 0
    for n in ("qkv", "proj", "fc1", "fc2", "lm-head"):
        i = names.index(n)
        assert ops.flops_w[i] == ops.flops_b[i] == ops.flops_f[i] > 0


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_tensor_parallel_divides_gemm_flops(make_scenario, tp):
    """Megatron's column/row-parallel split: each TP rank does 1/tp of every GEMM (head included)."""
    one, split = _gpt3_table(make_scenario, tp=1), _gpt3_table(make_scenario, tp=tp)
    assert one.name == split.name
    gemm = (one.gemm > 0).all(axis=1) & (one.flops_f > 0)
    for field in ("flops_f", "flops_b", "flops_w"):
        np.testing.assert_allclose(getattr(split, field)[gemm] * tp, getattr(one, field)[gemm],
                                   rtol=1e-12)
    assert split.total("flops_f", BLOCK_LAYER) * tp == pytest.approx(
        (24 * S * H**2 + 4 * S**2 * H), rel=1e-12)
    assert split.total("flops_f", BLOCK_HEAD) * tp == pytest.approx(2 * S * H * 51200, rel=1e-12)


def test_model_flops_per_token_matches_korthikanti(reference):
    """6N + 12 l h s per token within 0.5% of 72 B s l h^2 (1 + s/6h + V/16lh) / (B s)."""
    case = reference("korthikanti2022_iteration_times")
    cfg = case["config"]
    s, vocab = cfg["seq_len"], cfg["vocab"]
    assert set(cfg["models"]) == {"22B", "175B", "530B", "1T"}
    for name, m in cfg["models"].items():
        l, h = m["layers"], m["hidden"]
        model = ModelSpec(layers=l, hidden=h, heads=m["heads"], vocab=vocab, tied_embeddings=True)
        korthikanti = 72 * l * h**2 * (1 + s / (6 * h) + vocab / (16 * l * h))
        assert model_flops_per_token(model, s) == pytest.approx(korthikanti, rel=5e-3), name


def test_mfu_reproduces_korthikanti_table(reference):
    """MFU = tokens x FLOP/token / (GPUs x iteration time x 312 TFLOP/s) reproduces the paper's
    MFU of the sequence-parallel + selective runs (reported to 0.1 point) within 1%."""
    case = reference("korthikanti2022_iteration_times")
    cfg, rep = case["config"], case["reported"]
    s, vocab = cfg["seq_len"], cfg["vocab"]
    for name, m in cfg["models"].items():
        model = ModelSpec(layers=m["layers"], hidden=m["hidden"], heads=m["heads"], vocab=vocab,
                          tied_embeddings=True)
        tokens = m["global_batch"] * s
        step = rep["iteration_time_s"][name]["seqsel"]
        mfu = tokens * model_flops_per_token(model, s) / (m["gpus"] * step * 312e12)
        assert 100 * mfu == pytest.approx(rep["mfu_seqsel_pct"][name], rel=1e-2), name


def test_gpt3_175b_parameters():
    """GPT-3 175B: 12 l h^2 (1 + 13/12h + (V+s)/12lh) = 174.6e9 (Narayanan et al. 2021 Sec 5.1,
    biases and learned position embeddings included there), within 0.1%."""
    l, h, v, s = 96, H, 51200, S
    model = ModelSpec(layers=l, hidden=h, heads=96, vocab=v, tied_embeddings=True)
    narayanan = 12 * l * h**2 * (1 + 13 / (12 * h) + (v + s) / (12 * l * h))
    assert narayanan == pytest.approx(174.6e9, rel=1e-3)
    assert total_parameters(model) == pytest.approx(narayanan, rel=1e-3)
    assert parameter_counts(model)["layer"] == pytest.approx(12 * h**2, rel=1e-4)
    assert parameter_counts(model)["embedding"] == v * h


def test_untied_head_counts_a_second_embedding():
    model = ModelSpec(layers=2, hidden=64, heads=4, vocab=1000, tied_embeddings=False)
    tied = ModelSpec(layers=2, hidden=64, heads=4, vocab=1000, tied_embeddings=True)
    assert total_parameters(model) - total_parameters(tied) == 1000 * 64


@pytest.mark.parametrize("shape, published", [
    (dict(layers=32, hidden=4096, heads=32, kv_heads=8, ffn=14336), 8.03e9),
    (dict(layers=80, hidden=8192, heads=64, kv_heads=8, ffn=28672), 70.6e9),
    (dict(layers=126, hidden=16384, heads=128, kv_heads=8, ffn=53248), 405.9e9),
], ids=["8B", "70B", "405B"])
def test_llama3_parameters(shape, published):
    """Llama 3 (GQA, SwiGLU, untied 128256-token vocab) totals within 1% of the released sizes."""
    model = ModelSpec(**shape, head_dim=128, ffn_kind="swiglu", vocab=128256, tied_embeddings=False)
    assert total_parameters(model) == pytest.approx(published, rel=1e-2)
    h, kv, d, f = shape["hidden"], shape["kv_heads"], 128, shape["ffn"]
    # q and o: h x h each; k and v: h x kv*d each; SwiGLU: three h x f matrices
    assert parameter_counts(model)["layer"] == pytest.approx(2 * h * h + 2 * h * kv * d + 3 * h * f,
                                                             rel=1e-4)


@pytest.mark.parametrize("name, published, tol", [("llama2-7b", 6_738_415_616, 1e-9),
                                                  ("llama2-13b", 13_015_864_320, 1e-9),
                                                  ("nemotron4-15b", 15.7e9, 1e-2), ("nemotron4-340b", 340e9, 1e-2)])
def test_dense_presets_total_parameters(name, published, tol):
    """Llama 2 7B and 13B: the released checkpoints' exact counts (Hugging Face model cards); Nemotron-4 15B and 340B:
    their reports' 15.7B (3.2B embedding + 12.5B) and 340B within 1% (a squared-ReLU FFN has two matrices: 2 h f)."""
    model = ModelSpec.model_validate(model_preset(name))
    assert total_parameters(model) == pytest.approx(published, rel=tol)
    if model.ffn_kind == "squared_relu":
        h, kv, d = model.hidden, model.kv_heads, model.head_dim
        layer = 2 * h * h + 2 * h * kv * d + 2 * h * model.ffn
        assert parameter_counts(model)["layer"] == pytest.approx(layer, rel=1e-4)
