"""An FFN activation run as PyTorch ops, one kernel each (workload.activation unfused; cost.op_table.activation_as_run),
as NeMo runs Nemotron's squared ReLU (its own torch.pow(relu(x), 2), not compiled). Closed forms, per element of the
activation's output (width w a token; op_table.UNFUSED_ACTIVATION from PyTorch's kernels and autograd formulas):
squared ReLU 4 w forward (relu, pow) and 10 w backward where one fused kernel moves 2 w and 4 w; SwiGLU 5 w and 13 w
where the fused one moves 3 w and 6 w; GELU one kernel either way. Memory: squared ReLU keeps one copy of the first
GEMM's output either way (relu's output); SwiGLU unfused keeps silu's input, its output and the other half, 3 w where
the fused kernel keeps its 2 w input (memory.first_gemm_outputs). Serving engines fuse it: refused there."""

from __future__ import annotations

from pathlib import Path

import pytest
from refusals import assert_refused

from simulator import load_scenario, simulate
from simulator.cost.memory import activation_bytes_per_layer, ffn_activation_bytes
from simulator.cost.op_table import build_op_table
from simulator.cost.ops import ACT_BYTES
from simulator.scenario.model import ModelSpec
from small_gqa import SMALL_GQA
from small_moe import SMALL_MOE, ep8_step

TOKENS = 4096
NEMOTRON = Path(__file__).resolve().parents[1] / "simulator/data/validation/nemo2504-gb200-nemotron4-15b.yaml"


def activation_bytes(make_scenario, kind: str, activation: str, name: str = "activation") -> tuple[float, float]:
    model = {**SMALL_GQA, "ffn_kind": kind}
    table = build_op_table(make_scenario(model=model, workload={"seq_len": TOKENS, "activation": activation}))
    i = table.name.index(name)
    return table.bytes_f[i], table.bytes_b[i]


@pytest.mark.parametrize("kind, fused, unfused", [("squared_relu", (2, 4), (4, 10)), ("swiglu", (3, 6), (5, 13)),
                                                  ("gelu", (2, 4), (2, 4))])
def test_activation_row_moves_the_fused_or_the_pytorch_elements(make_scenario, kind, fused, unfused):
    """SMALL_GQA's FFN of width 5,632 over 4,096 tokens, 16-bit elements."""
    w = TOKENS * 5632 * ACT_BYTES
    assert activation_bytes(make_scenario, kind, "fused") == pytest.approx((fused[0] * w, fused[1] * w), rel=1e-12)
    assert activation_bytes(make_scenario, kind, "unfused") == pytest.approx((unfused[0] * w, unfused[1] * w),
                                                                             rel=1e-12)


@pytest.mark.parametrize("workload, forward", [({}, 5), ({"expert_gemm": "single_kernel"}, 3)])
def test_routed_experts_run_it_unfused_unless_their_grouped_mlp_is_fused(make_scenario, workload, forward):
    """A routed copy's SwiGLU (width 512): PyTorch's ops on the eager grouped MLP, the fused kernel's in a fused one."""
    scenario = ep8_step(make_scenario, SMALL_MOE, {"ep_backend": "deepep"}, activation="unfused", **workload)
    table = build_op_table(scenario)
    assert table.bytes_f[table.name.index("expert-activation")] == pytest.approx(forward * 512 * ACT_BYTES, rel=1e-12)


def layer_bytes(kind: str, unfused: bool) -> float:
    model = ModelSpec.model_validate({**SMALL_GQA, "ffn_kind": kind})
    return activation_bytes_per_layer(model, tokens=TOKENS, seq=TOKENS, tp=2, sequence_parallel=True,
                                      recompute="none", flash=True, unfused=unfused)


def test_unfused_swiglu_keeps_half_a_first_gemm_output_more():
    """Per token on TP 2: 0.5 x 2 x 5,632 16-bit elements / 2."""
    extra = layer_bytes("swiglu", True) - layer_bytes("swiglu", False)
    assert extra == pytest.approx(TOKENS * 0.5 * 2 * 5632 * ACT_BYTES / 2, rel=1e-12)


def test_unfused_squared_relu_keeps_what_the_fused_kernel_keeps():
    assert layer_bytes("squared_relu", True) == layer_bytes("squared_relu", False)


def test_a_routed_copy_keeps_the_unfused_glu_unless_recomputed():
    """SMALL_MOE's experts of width 512: 0.5 x 2 x 512 elements more a copy; nothing more under moe_act."""
    model = ModelSpec.model_validate({**SMALL_MOE, "name": "m"})

    def copy(unfused: bool, **redo) -> float:
        return ffn_activation_bytes(model, tokens=0, tp=1, copies=1.0, unfused=unfused, **{"recompute": "none", **redo})

    assert copy(True) - copy(False) == pytest.approx(512 * ACT_BYTES, rel=1e-12)
    redo = {"recompute": "selective", "modules": ["moe_act"]}
    assert copy(True, **redo) == copy(False, **redo)


def test_nemo_nemotron_runs_are_priced_unfused_and_slower():
    """The NeMo 25.04 Nemotron-4 15B case states it; the same step fused is faster."""
    scenario = load_scenario(NEMOTRON)
    assert scenario.workload.activation == "unfused"
    fused = scenario.model_copy(update={"workload": scenario.workload.model_copy(update={"activation": "fused"})})
    assert simulate(scenario).step_time_s > simulate(fused).step_time_s


def test_serving_refuses_an_unfused_activation(tmp_path):
    serve = ["workload.kind=serve", "workload.prompt_len=1024", "workload.output_len=128"]
    assert_refused(NEMOTRON, serve, "workload.activation", tmp_path)


def test_an_unknown_kind_is_refused(tmp_path):
    assert_refused(NEMOTRON, ["workload.activation=eager"], "workload.activation", tmp_path)
