"""Routed experts issued one GEMM an expert from the host (workload.expert_gemm: multi_stream, Transformer Engine's
grouped GEMM): the host's seconds per expert GEMM from its kernel measurement, the pass's floor of local experts x
GEMMs x that cost, and where it does not apply (one grouped kernel, CUDA graphs, device-bound experts). Exact
(1e-12) unless stated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from simulator import run
from simulator.cost import calibration
from simulator.cost.op_table import build_op_table
from simulator.cost.ops import BLOCK_MOE
from simulator.cost.roofline import attention_peak
from simulator.moe.costs import block_times, host_launches
from simulator.scenario.base import ScenarioError
from small_moe import H800, SMALL_MOE, ep8_step

ROOT = Path(__file__).resolve().parents[1]


def test_host_cost_an_expert_gemm_is_the_measured_multi_stream_call():
    """TE PR #3134 on B200: the multi-stream grouped GEMM of 8 experts took 0.267 ms, 33.4 us an expert GEMM;
    every generation takes it (a host cost), and the pure roofline none."""
    doc = yaml.safe_load((ROOT / "simulator" / "data" / "kernels.yaml").read_text())
    entry = next(e for e in doc["entries"] if e["id"] == "te3134_b200_multistream_grouped_gemm")
    pure = next(m["value"] for m in entry["measured"] if m["quantity"] == "multi-stream, pure")
    for gen in ("ampere", "hopper", "blackwell"):
        assert calibration.fitted(gen, "bf16").expert_gemm_host == pytest.approx(pure * 1e-3 / 8, rel=1e-9)
    assert calibration.IDEAL.expert_gemm_host < 1e-9


def test_host_launches_count_gemm_rows_and_experts_holding_tokens():
    """Two GEMM rows with FLOP and one memory-bound row (n = 0); 3 of 4 experts hold tokens: 3 x 2 launches."""
    cal = calibration.fitted("hopper", "bf16")
    reads = np.array([[1.0, 1.0, 0.0, 1.0]])
    got = host_launches(np.array([2.0, 0.0, 2.0]), np.array([1024, 0, 512]), reads, cal)
    assert got == pytest.approx([3 * 2 * cal.expert_gemm_host], rel=1e-12)
    weight_grad_of_activation = host_launches(np.array([2.0, 3.0, 0.0]), np.array([1024, 0, 512]), reads, cal)
    assert weight_grad_of_activation == pytest.approx([3 * 1 * cal.expert_gemm_host], rel=1e-12)


def test_host_bound_experts_take_experts_times_gemms_times_the_host_cost(make_scenario):
    """64 experts over EP 8 on H800, 4,096 tokens an expert, each expert's two GEMMs 7-14 us on the device against
    33 us of host each: every MoE layer's FFN pass lasts its fixed part (router, permutation, shared expert) plus
    8 experts x 2 GEMMs x expert_gemm_host, in F, B and W, and the forward the eager pre-dispatch host time
    (eager_moe_host, tests/test_eager_moe_host.py); the dense first layer is unchanged. The report's
    extra.ep.expert_host_wait_s_per_layer is what the experts' launches add over their device time."""
    scn = ep8_step(make_scenario)
    cal = calibration.for_training(scn)
    ops, dev = build_op_table(scn), scn.topology.device
    fixed = block_times(ops, BLOCK_MOE, dev.peak(scn.workload.dtype), dev.hbm_bandwidth, cal, attention_peak(dev))
    res = run(scn)
    multi, wait = res.plan.moe.ffn, res.plan.moe.host_wait
    single = run(ep8_step(make_scenario, expert_gemm="single_kernel")).plan.moe.ffn
    eager = np.array([cal.eager_moe_host, 0.0, 0.0])
    np.testing.assert_allclose(multi[1:], np.tile(fixed + 8 * 2 * cal.expert_gemm_host + eager, (3, 1)), rtol=1e-12)
    assert (single[1:] < multi[1:]).all()
    np.testing.assert_allclose(multi[0], single[0], rtol=1e-12)
    # what the report shows: the wait beyond the device time, per MoE layer and micro-batch (F + B + W)
    np.testing.assert_allclose(wait[1:], (multi - single)[1:] - eager, rtol=1e-9, atol=1e-15)
    assert not wait[0].any()
    assert res.report.extra["ep"]["expert_host_wait_s_per_layer"] == pytest.approx(wait[1:].sum(1).mean(), rel=1e-9)


def test_device_bound_experts_and_cuda_graphs_pay_no_host_time(make_scenario):
    """One 8,192-token expert a rank with an 8,192-wide FFN (0.2-0.5 ms a GEMM on the device) hides its two 33 us
    host calls: multi_stream with its pre-dispatch part in CUDA graphs equals single_kernel. A whole-iteration CUDA
    graph removes the host launches of the small model's host-bound experts: the step equals single_kernel's."""
    wide = {**SMALL_MOE, "moe": {**SMALL_MOE["moe"], "experts": 8, "top_k": 2, "expert_ffn": 8192}}
    scope = ["attn", "moe_router", "moe_preprocess"]
    device_bound = [run(ep8_step(make_scenario, model=wide, **kw)).report.step_time_s
                    for kw in ({"cuda_graph_scope": scope}, {"expert_gemm": "single_kernel"})]
    assert device_bound[0] == pytest.approx(device_bound[1], rel=1e-12)
    graphs = run(ep8_step(make_scenario, cuda_graphs=True)).report.step_time_s
    single = run(ep8_step(make_scenario, expert_gemm="single_kernel")).report.step_time_s
    eager = run(ep8_step(make_scenario)).report.step_time_s
    assert graphs == pytest.approx(single, rel=1e-12)
    assert eager > 1.05 * single


def test_serving_refuses_multi_stream(make_scenario):
    with pytest.raises(ScenarioError, match=r"expert_gemm"):
        make_scenario(model=SMALL_MOE, topology=H800, layout={"ep": 8},
                      workload={"kind": "serve", "prompt_len": 512, "output_len": 64, "expert_gemm": "multi_stream"})


def test_eager_moe_reports_carry_the_caveat(make_scenario):
    """An MoE step without CUDA graphs says what it prices only in part (the host's time beyond the experts'
    launches, one measured exposure a layer) in its report, JSON and table, or, with the experts as one grouped
    kernel (another framework's path, no exposure charged), that the host is not priced; with whole-iteration graphs,
    or a dense model, it says nothing. tests/test_validate.py checks the caveat against the development set."""
    from io import StringIO

    from rich.console import Console

    from simulator.output.render import print_table
    from simulator.training.report import EAGER_MOE, EAGER_MOE_GROUPED

    eager = run(ep8_step(make_scenario)).report
    assert eager.caveats == [EAGER_MOE] and eager.to_dict()["caveats"] == [EAGER_MOE]
    grouped = run(ep8_step(make_scenario, expert_gemm="single_kernel")).report
    assert grouped.caveats == [EAGER_MOE_GROUPED] and grouped.extra["ep"]["eager_host_s_per_layer"] == 0.0
    assert run(ep8_step(make_scenario, cuda_graphs=True)).report.caveats == []
    assert run(make_scenario(layout={"dp": 64})).report.caveats == []
    out = StringIO()
    print_table(eager, Console(file=out, width=200))
    assert "caveat" in out.getvalue() and "measured exposure" in out.getvalue()
