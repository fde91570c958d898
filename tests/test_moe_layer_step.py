"""model.moe.layer_step (Megatron-Core's moe_layer_freq): after the dense layers, one MoE layer in every layer_step.

Closed forms: which layers hold experts; the parameter counts of Llama 4 Scout and Maverick against Meta's
(109B / 400B total with 17B active; Scout's 109B counts its vision encoder, the preset is the text model); the dense
layers of an interleaved model priced as dense FFNs, layer by layer; serving's stages counting each kind.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from simulator.cost import calibration
from simulator.cost.fabric import fabric_for
from simulator.cost.op_table import build_op_table
from simulator.cost.ops import BLOCK_DENSE_FFN
from simulator.cost.params import active_parameters, total_parameters
from simulator.cost.placement import place
from simulator.moe.costs import block_times, moe_costs
from simulator.scenario.loader import model_preset
from simulator.scenario.model import ModelSpec
from simulator.serving.experts import stage_layer_kinds


def _preset(name: str) -> dict:
    return model_preset(name)


@pytest.mark.parametrize("dense, step, layers, want", [
    (0, 1, 4, [1, 1, 1, 1]), (0, 2, 6, [0, 1, 0, 1, 0, 1]), (1, 2, 6, [0, 0, 1, 0, 1, 0]), (3, 1, 5, [0, 0, 0, 1, 1]),
    (0, 3, 7, [0, 0, 1, 0, 0, 1, 0])])
def test_which_layers_hold_experts(dense, step, layers, want):
    moe = ModelSpec(layers=layers, hidden=64, heads=4, ffn_kind="swiglu",
                    moe={"experts": 4, "top_k": 1, "dense_layers": dense, "layer_step": step}).moe
    assert [int(x) for x in moe.is_moe(layers)] == want


@pytest.mark.parametrize("name, total, active, tol", [("llama4-maverick", 400e9, 17e9, 0.02),
                                                      ("llama4-scout", 109e9, 17e9, 0.02)])
def test_llama4_presets_have_metas_parameter_counts(name, total, active, tol):
    m = ModelSpec(**_preset(name))
    assert total_parameters(m) == pytest.approx(total, rel=tol)
    assert active_parameters(m) == pytest.approx(active, rel=0.02)


def test_interleaved_dense_layers_cost_a_dense_ffn(make_scenario):
    """Llama 4 Maverick on 64 GB200 (EP64): each even layer's FFN is the dense block's roofline, each odd one more."""
    scn = make_scenario(model="llama4-maverick", topology={"preset": "gb200-nvl72", "domains": 1,
                                                          "domain": {"gpus": 64}},
                        workload={"seq_len": 8192, "global_batch": 64, "dtype": "bf16"},
                        layout={"ep": 64, "distributed_optimizer": True})
    ops, cal = build_op_table(scn), calibration.for_device(scn.topology.device, "bf16")
    costs = moe_costs(scn, ops, place(scn), fabric_for(scn.topology), cal)
    dense = block_times(ops, BLOCK_DENSE_FFN, scn.topology.device.peak("bf16"), scn.topology.device.hbm_bandwidth, cal,
                        scn.topology.device.peak("bf16"))
    assert np.allclose(costs.ffn[0::2], dense, rtol=1e-12)
    assert (costs.ffn[1::2, 0] > dense[0]).all() and (costs.a2a[0::2] == 0).all() and (costs.a2a[1::2] > 0).all()


def test_serving_stages_count_each_kind(make_scenario):
    scn = make_scenario(model="llama4-maverick", topology={"preset": "gb200-nvl72", "domains": 1,
                                                          "domain": {"gpus": 64}},
                        workload={"kind": "serve", "prompt_len": 1024, "output_len": 16, "batch": 8},
                        layout={"tp": 1, "pp": 2, "ep": 32})
    dense, experts = stage_layer_kinds(scn)
    assert dense.tolist() == [12.0, 12.0] and experts.tolist() == [12.0, 12.0]


def test_a_step_that_leaves_no_moe_layer_is_refused():
    with pytest.raises(ValidationError, match="leave no MoE layer of 4"):
        ModelSpec(layers=4, hidden=64, heads=4, moe={"experts": 4, "top_k": 1, "dense_layers": 1, "layer_step": 4})
