"""workload.recompute_modules (Megatron-Core's): selective recompute of chosen modules.

Closed forms per token of a layer's kept activations: layernorm drops both norms' outputs (2 x cached x h bytes,
outside the TP region), mlp a dense FFN's intermediates, moe_act a routed expert copy's FC2 input (cached x width);
MLA's default selective recompute is layernorm + mla_up_proj. Time: the recomputed rows run forward again in the
backward pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from refusals import assert_refused

from simulator import load_scenario, simulate
from simulator.cost import calibration, roofline
from simulator.cost.memory import activation_bytes_per_layer, attention_activation_bytes, ffn_activation_bytes
from simulator.cost.op_table import build_op_table, recomputed
from simulator.cost.ops import BLOCK_EXPERT, MLA_RECOMPUTE_MODULES
from simulator.scenario.loader import model_preset
from simulator.scenario.model import ModelSpec
from simulator.cost.fabric import fabric_for
from simulator.cost.placement import place
from simulator.moe.costs import moe_costs
from simulator.training.halves import ffn_recompute

ROOT = Path(__file__).resolve().parents[1]
OSS = ROOT / "simulator" / "data" / "validation" / "bridge260401-b200-gpt-oss-120b-bf16.yaml"
LLAMA = ROOT / "scenarios" / "llama3-405b-h100.yaml"


def _model(name: str) -> ModelSpec:
    return ModelSpec(**model_preset(name))


@pytest.mark.parametrize("cached", [2.0, 1.0])
def test_default_modules_are_todays_selective_recompute(cached):
    """None keeps the attention core's rule; [core_attn] is the same for a standard model; MLA's default equals
    [layernorm, mla_up_proj] in 16-bit and with FP8-cached GEMM inputs (whose norm outputs take 1 byte an element)."""
    llama, ds = _model("llama3-70b"), _model("deepseek-v3")
    kw = dict(tokens=4096, seq=4096, tp=8, sequence_parallel=True, recompute="selective", flash=True)
    assert activation_bytes_per_layer(llama, **kw) == activation_bytes_per_layer(llama, modules=["core_attn"], **kw)
    kw = dict(tokens=4096, tp=1, sequence_parallel=False, recompute="selective", cached=cached)
    assert attention_activation_bytes(ds, **kw) == pytest.approx(
        attention_activation_bytes(ds, modules=["layernorm", "mla_up_proj"], **kw), rel=1e-12)


def test_mla_default_recomputes_the_rows_of_its_modules():
    """An MLA layer's selective rows without recompute_modules are those of MLA_RECOMPUTE_MODULES."""
    scn = load_scenario(ROOT / "scenarios" / "deepseek-v3-h800.yaml",
                        ["workload.recompute=selective", "workload.recompute_modules=null"])
    assert scn.workload.recompute_modules is None
    ops = build_op_table(scn)
    np.testing.assert_array_equal(ops.selective, recomputed(ops.name, MLA_RECOMPUTE_MODULES))


@pytest.mark.parametrize("cached", [2.0, 1.0])
def test_layernorm_and_mlp_drop_their_outputs(cached):
    m, t, tp = _model("llama3-70b"), 4096, 8
    kw = dict(tokens=t, seq=4096, tp=tp, sequence_parallel=True, recompute="selective", flash=True, cached=cached)
    base = activation_bytes_per_layer(m, modules=["core_attn"], **kw)
    norms = activation_bytes_per_layer(m, modules=["core_attn", "layernorm"], **kw)
    assert base - norms == pytest.approx(t * 2 * cached * m.hidden / tp, rel=1e-12)
    mlp = activation_bytes_per_layer(m, modules=["core_attn", "mlp"], **kw)
    assert base - mlp == pytest.approx(t * (2.0 * m.ffn * 2 + cached * m.ffn) / tp, rel=1e-12)


def test_unfused_scores_kept_unless_core_attn_is_recomputed():
    m = _model("llama3-8b")
    kw = dict(tokens=2048, seq=2048, tp=1, sequence_parallel=False, recompute="selective", flash=False)
    kept = activation_bytes_per_layer(m, modules=["layernorm"], **kw)
    dropped = activation_bytes_per_layer(m, modules=["layernorm", "core_attn"], **kw)
    assert kept - dropped == pytest.approx(2048 * 5.0 * m.heads * 2048, rel=1e-12)


@pytest.mark.parametrize("clamped, dropped", [(False, 2.0), (True, 2.0 + 2.0 * 2)])
def test_moe_act_drops_each_copys_fc2_input(clamped, dropped):
    """Each copy's FC2 input (2 w bytes); with GPT-OSS's clamp run in PyTorch also the clamped copy of the first GEMM's
    output (2 x 2 w)."""
    m = _model("gpt-oss-120b")
    kw = dict(tokens=0, tp=1, copies=1.0, cached=2.0, recompute="selective", clamped=clamped)
    assert (ffn_activation_bytes(m, **kw) - ffn_activation_bytes(m, modules=["moe_act"], **kw)
            == pytest.approx(dropped * m.moe.expert_ffn, rel=1e-12))
    assert ffn_activation_bytes(m, **{**kw, "recompute": "none"}, modules=["moe_act"]) == ffn_activation_bytes(m, **kw)


def test_recomputed_rows_run_forward_again_in_backward():
    """The expert activation's forward, over the busiest rank's copies, is added to each MoE layer's backward."""
    scn = load_scenario(OSS)  # its recipe's recompute_modules: layernorm, moe_act
    ops = build_op_table(scn)
    assert {n for n, s in zip(ops.name, ops.selective) if s} == {"norm1", "norm2", "expert-activation"}
    dev, cal = scn.topology.device, calibration.for_device(scn.topology.device, "bf16", "flash")
    fabric = fabric_for(scn.topology)
    costs = moe_costs(scn, ops, place(scn), fabric, cal)
    row = (ops.block == BLOCK_EXPERT) & np.array([n == "expert-activation" for n in ops.name])
    want = [float(roofline.op_times(np.zeros(1), ops.bytes_f[row] * c, np.zeros((1, 3)), dev.peak("bf16"),
                                    dev.hbm_bandwidth, cal).sum()) for c in costs.act_copies]
    assert ffn_recompute(scn, ops, costs, cal) == pytest.approx(want, rel=1e-12)


def test_gpt_oss_recipe_recompute_fits_and_costs_time():
    """Bridge 26.04.01's GPT-OSS 120B on 64 B200 (layernorm and moe_act recomputed, as its recipe): less memory than
    without recompute, a longer step, and within the B200's 180 GB."""
    plain = simulate(load_scenario(OSS, ["workload.recompute=none", "workload.recompute_modules=null"]))
    redo = simulate(load_scenario(OSS))
    assert load_scenario(OSS).workload.recompute_modules == ["layernorm", "moe_act"]
    assert redo.memory_bytes["activations"] < plain.memory_bytes["activations"]
    assert redo.step_time_s > plain.step_time_s
    assert redo.fits_in_memory


def test_modules_are_ignored_outside_selective_recompute():
    """As Megatron-Core's: a search or sweep that switches recompute keeps the list and gets plain none / full."""
    for mode in ("none", "full"):
        plain = simulate(load_scenario(LLAMA, [f"workload.recompute={mode}"]))
        listed = simulate(load_scenario(LLAMA, [f"workload.recompute={mode}",
                                                "workload.recompute_modules=[layernorm]"]))
        assert listed.step_time_s == plain.step_time_s
        assert listed.memory_bytes == plain.memory_bytes


@pytest.mark.parametrize("sets, says", [
    (["workload.recompute=selective", "workload.recompute_modules=[mla_up_proj]"],
     "workload.recompute_modules: mla_up_proj: model"),
    (["workload.recompute=selective", "workload.recompute_modules=[moe_act]"],
     "workload.recompute_modules: moe_act: model"),
])
def test_recompute_modules_that_cannot_apply_are_refused(tmp_path, sets, says):
    assert_refused(LLAMA, sets, says, tmp_path)
