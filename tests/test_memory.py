"""Memory per device against Korthikanti et al. 2022 Table 2 and Megatron-LM's state bytes.

Sources (published.yaml): korthikanti2022_activation_memory_per_layer (GPT-3 175B layer, s 2048,
b 1, h 12288, a 96, t 8; MiB = 2^20 bytes, printed rounded to whole MiB) and
megatron_weight_optimizer_bytes (18 bytes a parameter, 6 + 12/d with the distributed optimizer;
GPT-3 175B at TP 8 PP 8 ~ 49.1 GB a GPU without the embedding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator.cost.fabric import fabric_for
from simulator.cost.memory import Memory, activation_bytes_per_layer, state_bytes_per_param
from simulator.cost.op_table import build_op_table
from simulator.cost.params import parameter_counts
from simulator.cost.placement import place
from simulator.scenario.spec import ModelSpec
from simulator.training.plan import device_params, make_plan

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
GPT3 = ModelSpec(layers=96, hidden=12288, heads=96, vocab=51200, tied_embeddings=True, dropout=0.1)  # GPT has dropout
S, B, H, A, T = 2048, 1, 12288, 96, 8

# Korthikanti Table 2 row -> (tp, sequence_parallel, recompute), attention unfused (flash=False)
TABLE2 = {
    "no_parallelism_MiB": (1, False, "none"),
    "tp_MiB": (T, False, "none"),
    "tp_sp_MiB": (T, True, "none"),
    "tp_selective_MiB": (T, False, "selective"),
    "tp_sp_selective_MiB": (T, True, "selective"),
    "full_recompute_MiB": (T, False, "full"),  # 2 s b h: the layer input, kept whole without SP
}


def _act(tp, sp, recompute, flash=False, model=GPT3, tokens=S * B):
    return activation_bytes_per_layer(model, tokens=tokens, seq=S, tp=tp, sequence_parallel=sp,
                                      recompute=recompute, flash=flash)


@pytest.mark.parametrize("row", sorted(TABLE2))
def test_korthikanti_table2_points(reference, row):
    """Each published test point within 0.5 MiB (the paper rounds to whole MiB)."""
    points = reference("korthikanti2022_activation_memory_per_layer")["test_points"]
    tp, sp, recompute = TABLE2[row]
    assert _act(tp, sp, recompute) / MIB == pytest.approx(points[row], abs=0.5)


@pytest.mark.parametrize("row", sorted(TABLE2))
def test_korthikanti_table2_formulas(row):
    """The closed forms of Table 2, exactly, in bytes."""
    sbh, r = S * B * H, A * S / H
    formula = {
        "no_parallelism_MiB": sbh * (34 + 5 * r),
        "tp_MiB": sbh * (10 + 24 / T + 5 * r / T),
        "tp_sp_MiB": sbh * (34 / T + 5 * r / T),
        "tp_selective_MiB": sbh * (10 + 24 / T),
        "tp_sp_selective_MiB": sbh * 34 / T,
        "full_recompute_MiB": 2 * sbh,
    }[row]
    assert _act(*TABLE2[row]) == pytest.approx(formula, rel=1e-12)


def test_full_recompute_with_sequence_parallel_keeps_a_shard():
    """With sequence parallelism the kept layer input is split over the TP ranks: 2 s b h / t."""
    assert _act(T, True, "full") == pytest.approx(2 * S * B * H / T, rel=1e-12)
    assert _act(1, False, "full") == pytest.approx(2 * S * B * H, rel=1e-12)


def test_flash_attention_keeps_no_score_matrix():
    """A fused kernel never stores the 5 a s^2 b score terms: same as selective recompute."""
    assert _act(T, True, "none", flash=True) == pytest.approx(_act(T, True, "selective"), rel=1e-12)
    assert _act(T, False, "none", flash=True) == pytest.approx(S * B * H * (10 + 24 / T), rel=1e-12)


def test_activations_scale_with_tokens():
    assert _act(T, True, "none", tokens=4 * S) == pytest.approx(4 * _act(T, True, "none"), rel=1e-12)


def test_state_bytes_per_param(reference):
    rep = reference("megatron_weight_optimizer_bytes")["reported"]
    assert rep["bytes_per_param_no_distributed_optimizer"] == 18
    for dp in (1, 2, 8, 64):
        assert sum(state_bytes_per_param(dp, 0, False)) == 18.0
        assert state_bytes_per_param(dp, 0, False) == (2.0, 4.0, 12.0)
        assert sum(state_bytes_per_param(dp, 0, True)) == pytest.approx(6 + 12 / dp, rel=1e-12)
        assert sum(state_bytes_per_param(dp, 1, False)) == pytest.approx(6 + 12 / dp, rel=1e-12)


@pytest.mark.parametrize("zero, expected", [
    (0, lambda d: 2 + 4 + 12),
    (1, lambda d: 2 + 4 + 12 / d),
    (2, lambda d: 2 + (4 + 12) / d),
    (3, lambda d: (2 + 4 + 12) / d),
])
def test_zero_stages_shard_state(zero, expected):
    """ZeRO (Rajbhandari et al. 2020): stage 1 shards optimizer state, 2 also gradients, 3 weights."""
    for d in (1, 4, 16):
        assert sum(state_bytes_per_param(d, zero, False)) == pytest.approx(expected(d), rel=1e-12)


def test_gpt3_175b_tp8_pp8_state_per_gpu(reference):
    """A middle stage of GPT-3 175B at TP 8 PP 8 (12 layers, no embedding), 18 bytes a parameter:
    within 2% of Megatron-LM's ~49.1 GB a GPU."""
    point = reference("megatron_weight_optimizer_bytes")["test_points"][0]
    tp, pp = point["tp"], point["pp"]
    assert (tp, pp, point["d"]) == (8, 8, 1)
    layers, zeros = np.array([[96 / pp]]), np.zeros((1, 1))
    params = device_params(GPT3, tp, layers, zeros, zeros)
    assert params[0] == pytest.approx(12 * 12 * H**2 / tp, rel=1e-3)  # 12 layers of 12 h^2, / tp
    per_gpu = params[0] * sum(state_bytes_per_param(1, 0, False))
    assert per_gpu == pytest.approx(point["approx_GB_per_gpu"] * 1e9, rel=0.02)


def test_plan_memory_most_loaded_device(make_scenario, reference):
    """The plan's most loaded GPU (first or last stage) adds the embedding (V h / t x 18 bytes) to
    the test point, as published.yaml's note says (fp32 gradients, as Megatron-LM 2021 counted them);
    activations: Table 2 per layer x 1F1B in flight."""
    point = reference("megatron_weight_optimizer_bytes")["test_points"][0]
    scn = make_scenario(model="gpt3-175b", workload={"attention": "unfused", "recompute": "selective"},
                        layout={"tp": 8, "pp": 8, "sequence_parallel": True, "grad_reduce_fp32": True})
    assert scn.layout.dp == 1 and scn.micro_batches == 64
    plan = make_plan(scn, build_op_table(scn), place(scn), fabric_for(scn.topology))
    mem = plan.memory
    assert isinstance(mem, Memory)
    embed = parameter_counts(GPT3)["embedding"] / 8 * 18
    state = mem.weights + mem.gradients + mem.optimizer
    assert state == pytest.approx(point["approx_GB_per_gpu"] * 1e9 + embed, rel=0.02)
    assert mem.gradients == pytest.approx(2 * mem.weights) and mem.optimizer == pytest.approx(6 * mem.weights)
    # stage 0 of 1F1B holds p = 8 micro-batches of its 12 layers at s b h 34 / t each (Table 2);
    # the last stage's fp32 logits (s x V / t x 4 bytes) may make it the most loaded instead.
    layer = S * B * H * 34 / T
    first = 8 * 12 * layer
    last = 1 * 12 * layer + S * 51200 / 8 * 4
    assert mem.activations == pytest.approx(max(first, last), rel=1e-9)
    assert mem.capacity == 80 * 2**30
    assert mem.fits


def test_memory_totals_and_overflow():
    """The total adds the 1.5 GiB reserve and 5% fragmentation of what is allocated."""
    gib = 2**30
    mem = Memory(weights=1 * gib, gradients=2 * gib, optimizer=3 * gib, activations=4 * gib, kv_cache=gib / 2,
                 capacity=12 * gib)
    reserved = 1.5 * gib + 0.05 * 10.5 * gib
    assert mem.reserved == pytest.approx(reserved, rel=1e-12)
    assert mem.total == pytest.approx(10.5 * gib + reserved, rel=1e-12) and mem.total > 12 * gib
    assert not mem.fits
    assert mem.as_dict() == {"weights": 1 * gib, "gradients": 2 * gib, "optimizer": 3 * gib, "activations": 4 * gib,
                             "kv_cache": gib / 2, "reserved": mem.reserved, "total": mem.total,
                             "capacity": 12 * gib}


# ---------------------------------------------------------------- FP8 primary weights (layout.fp8_params)
def test_fp8_params_weight_bytes_closed_form():
    """Transformer layers at the FP8 operand's byte, embedding and output layer 16-bit: Llama 3 8B (vocab 128,256 x
    4,096, untied) averages 2 - (1 - 2 V h / N) bytes a parameter; MXFP8 adds its E8M0 scale a 32-element block."""
    from simulator import load_scenario
    from simulator.cost.memory import weight_bytes
    from simulator.cost.params import total_parameters

    scn = load_scenario(ROOT / "simulator/data/validation/bridge2511-h100-llama3-8b.yaml")
    share = 1 - 2 * 128256 * 4096 / total_parameters(scn.model)
    assert 0.86 < share < 0.88
    assert weight_bytes(scn.model, scn.layout, "fp8") == pytest.approx(2 - share)
    assert weight_bytes(scn.model, scn.layout, "mxfp8") == pytest.approx(2 - (1 - 1 / 32) * share)
    off = scn.layout.model_copy(update={"fp8_params": False})
    assert weight_bytes(scn.model, off, "fp8") == 2.0


def test_fp8_params_shrink_weights_and_the_parameter_all_gather(make_scenario):
    """GPT-3 175B at TP8 PP8 DP2, FP8, distributed optimizer: the weights a device holds and the bytes of the
    step's parameter all-gather both scale by weight_bytes / 2; gradients and optimizer state do not change."""
    from simulator.cost.memory import weight_bytes

    def plan(fp8_params):
        scn = make_scenario(model="gpt3-175b", topology={"preset": "dgx-h100-superpod", "domains": 16},
                            workload={"dtype": "fp8", "global_batch": 16},
                            layout={"tp": 8, "pp": 8, "sequence_parallel": True, "distributed_optimizer": True,
                                    "fp8_params": fp8_params})
        return scn, make_plan(scn, build_op_table(scn), place(scn), fabric_for(scn.topology))

    (scn, bf16), (_, fp8) = plan(False), plan(True)
    ratio = weight_bytes(scn.model, scn.layout.model_copy(update={"fp8_params": True}), "fp8") / 2
    assert 0.5 < ratio < 0.51  # GPT-3's tied embedding is 0.35% of its parameters
    assert fp8.memory.weights == pytest.approx(bf16.memory.weights * ratio, rel=1e-9)
    assert (fp8.memory.gradients, fp8.memory.optimizer) == pytest.approx((bf16.memory.gradients, bf16.memory.optimizer))
    # the step's traffic: the all-gather moves 2 x ratio bytes a parameter instead of 2 (reduce-scatter unchanged)
    assert fp8.traffic["per_rank"].sum() < bf16.traffic["per_rank"].sum()
    np.testing.assert_array_less(fp8.param_gather, bf16.param_gather + 1e-15)


@pytest.mark.parametrize("sets, says", [
    ({"workload": {"dtype": "bf16"}, "layout": {"distributed_optimizer": True}}, "workload.dtype bf16 has none"),
    ({"workload": {"dtype": "fp8"}, "layout": {}}, "set layout.distributed_optimizer: true or layout.zero >= 1"),
])
def test_fp8_params_refusals(make_scenario, sets, says):
    from simulator.scenario.base import ScenarioError

    with pytest.raises(ScenarioError, match="layout.fp8_params: .*" + says.replace(".", r"\.")):
        make_scenario(topology={"preset": "dgx-h100-superpod", "domains": 8}, workload=sets["workload"],
                      layout={"fp8_params": True, **sets["layout"]})
