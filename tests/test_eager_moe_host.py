"""The host time an eager MoE layer leaves exposed (calibration.eager_moe_host): derived from NVIDIA's DeepSeek-V3
GB200 guide (one layout before and after CUDA graphs of attention, router and dispatch preprocessing), charged to each
MoE layer's forward on Megatron-Core's eager path, and not where CUDA graphs capture those parts or another
framework's grouped kernel runs the experts. Exact (1e-12) unless stated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from simulator import load_scenario, run
from simulator.cost import calibration
from simulator.scenario.base import ScenarioError
from small_moe import H800, SMALL_MOE, ep8_step

ROOT = Path(__file__).resolve().parents[1]
SCOPE = ["attn", "moe_router", "moe_preprocess"]


def test_the_exposure_is_the_guides_step_difference_over_its_layers_and_micro_batches():
    """2048 x 4096 tokens of 249.812 GFLOP over 256 GPUs is 8.186 PFLOP a GPU: 13.404 s at 610.71 TFLOP/s eager,
    12.342 s at 663.27 with the graphs, 1.062 s saved over 8 layers x 64 micro-batches = 2.075 ms (by hand); every
    generation takes it, the ideal device none."""
    doc = yaml.safe_load((ROOT / "simulator" / "data" / "kernels.yaml").read_text())
    entry = next(e for e in doc["entries"] if e["id"] == "mcore_dsv3_gb200_guide_partial_cuda_graphs")
    assert [m["value"] for m in entry["measured"]] == [610.71, 663.27]
    flop = 2048 * 4096 * 249.812e9 / 256
    by_hand = (flop / 610.71e12 - flop / 663.27e12) / (8 * 64)
    assert by_hand == pytest.approx(2.0745e-3, rel=1e-4)
    for gen in ("ampere", "hopper", "blackwell"):
        assert calibration.fitted(gen, "bf16").eager_moe_host == pytest.approx(by_hand, rel=1e-8)
    assert calibration.IDEAL.eager_moe_host < 1e-9


def test_each_moe_layers_forward_pays_it_once(make_scenario):
    """Against the same step with attention, router and preprocessing captured: every MoE layer's FFN forward is
    eager_moe_host longer, its backward and weight-gradient passes and the dense first layer unchanged; the report
    states the figure (0 under the graphs)."""
    eager, graphed = run(ep8_step(make_scenario)), run(ep8_step(make_scenario, cuda_graph_scope=SCOPE))
    tau = calibration.for_training(eager.scenario).eager_moe_host
    assert tau == pytest.approx(calibration.fitted("hopper", "bf16").eager_moe_host, rel=1e-12)
    diff = eager.plan.moe.ffn - graphed.plan.moe.ffn
    np.testing.assert_allclose(diff[1:], np.tile([tau, 0.0, 0.0], (3, 1)), rtol=1e-9, atol=1e-15)
    assert not diff[0].any()
    assert eager.report.extra["ep"]["eager_host_s_per_layer"] == tau
    assert graphed.report.extra["ep"]["eager_host_s_per_layer"] == 0.0


def test_without_pipelining_the_step_grows_by_it_times_layers_and_micro_batches(make_scenario):
    """No pipeline (16 GPUs as DP16 with EP8), 2 micro-batches a rank, 3 MoE layers: the step is 3 x 2 x
    eager_moe_host longer (rel 1e-9; the gradient reduction overlaps the same last backward)."""
    eager, graphed = (run(ep8_step(make_scenario, **kw)).report.step_time_s for kw in ({}, {"cuda_graph_scope": SCOPE}))
    tau = calibration.fitted("hopper", "bf16").eager_moe_host
    assert eager - graphed == pytest.approx(3 * 2 * tau, rel=1e-9)


@pytest.mark.parametrize("workload, charged", [
    ({}, True),
    ({"cuda_graph_scope": ["moe_router", "moe_preprocess"]}, True),  # attention still eager: measured only together
    ({"cuda_graph_scope": SCOPE}, False),
    ({"cuda_graphs": True}, False),
    ({"expert_gemm": "single_kernel"}, False),  # another framework's grouped kernel (DeepGEMM): not Megatron's path
    ({"cuda_graph_scope": ["attn", "mlp"]}, True),  # mlp: a dense layer's MLP, nothing of the MoE layer
    ({"cuda_graph_scope": ["attn", "moe"], "routing": {"capacity_factor": 1.0}}, False),  # moe holds router, preprocess
])
def test_where_it_is_charged(make_scenario, workload, charged):
    cal = calibration.for_training(ep8_step(make_scenario, **workload))
    assert (cal.eager_moe_host > 0) == charged


@pytest.mark.parametrize("scope, experts_charged", [(["attn", "moe_router", "moe_preprocess"], True),
                                                    (["moe"], False), (["attn", "moe"], False)])
def test_the_moe_scope_captures_the_experts_launches_too(make_scenario, scope, experts_charged):
    """Megatron-Core's moe scope captures the whole MoE FFN, routed experts included (static shapes: tokens padded to
    a capacity), so their one-GEMM-an-expert host launches go as well; the narrower scopes leave them eager."""
    cal = calibration.for_training(ep8_step(make_scenario, cuda_graph_scope=scope,
                                             routing={"capacity_factor": 1.0}))
    assert (cal.expert_gemm_host > 0) == experts_charged


def test_full_recompute_runs_the_eager_forward_again(make_scenario):
    """Full recompute repeats each layer's forward, dispatcher sync included, inside its backward: the backward's
    FFN seconds carry the exposure too."""
    eager, graphed = (run(ep8_step(make_scenario, recompute="full", **kw)) for kw in ({}, {"cuda_graph_scope": SCOPE}))
    tau = calibration.for_training(eager.scenario).eager_moe_host
    diff = eager.plan.moe.ffn - graphed.plan.moe.ffn  # MoECosts.ffn: before the recompute is added
    np.testing.assert_allclose(diff[1:, 0], tau, rtol=1e-9)
    step = eager.report.step_time_s - graphed.report.step_time_s
    assert step == pytest.approx(3 * 2 * 2 * tau, rel=1e-9)


@pytest.mark.parametrize("workload", [{"cuda_graphs": True, "cuda_graph_scope": ["attn"]},
                                      {"kind": "serve", "prompt_len": 512, "output_len": 64,
                                       "cuda_graph_scope": ["attn"]},
                                      {"cuda_graph_scope": ["mamba"]},
                                      {"cuda_graph_scope": ["attn", "moe_preprocess"]},  # needs moe_router
                                      {"cuda_graph_scope": ["moe"]}])  # dropless: experts' shapes vary
def test_bad_scope_names_the_field(make_scenario, workload):
    with pytest.raises(ScenarioError, match=r"cuda_graph_scope"):
        make_scenario(model=SMALL_MOE, topology=H800, layout={"ep": 8},
                      workload={"seq_len": 4096, "global_batch": 32, **workload})


def test_on_the_guides_own_layout_the_graphs_save_what_the_guide_measured():
    """The guide's layout (simulator/data/validation/mcore-deepseek-v3-gb200-256.yaml) at its 610.71 row's settings
    (DeepEP, no graphs) against the same with the three parts captured: steps 1.062 s apart in the guide (its two
    rows' FLOP/s); simrack's pipeline, not the per-layer conversion, sets its difference: within 3%."""
    path = ROOT / "simulator" / "data" / "validation" / "mcore-deepseek-v3-gb200-256.yaml"
    steps = [run(load_scenario(path, overrides=[f"workload.cuda_graph_scope={scope}", "layout.ep_backend=deepep"]))
             .report.step_time_s for scope in ("[]", "[attn,moe_router,moe_preprocess]")]
    flop = 2048 * 4096 * 249.812e9 / 256
    assert steps[0] - steps[1] == pytest.approx(flop / 610.71e12 - flop / 663.27e12, rel=0.03)
