"""Data-parallel collectives beside compute hold calibration.comm_sms of the SMs while they run, as the TP and EP
overlaps' do (cost.pipeline.beside): a stretch of compute c with communication m started beside it lasts
c + max(min(c, m) x s / (1 - s), m - c) for s = comm_sms. So do ZeRO-3's parameter all-gather prefetched beside
each pass (zero3_passes), the gradient reduction beside a stage's last backward (the engines' optimizer start) and
the distributed optimizer's parameter all-gather beside the next step's first forward (exposed_param_gather)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from simulator import run
from simulator.cost import calibration
from simulator.cost.pipeline import beside, exposed_param_gather, zero3_passes
from simulator.training.reference_engine import run_reference

CAL = SimpleNamespace(comm_sms=0.15)
SLOW = CAL.comm_sms / (1 - CAL.comm_sms)


@pytest.mark.parametrize("compute, gather, closed", [
    (1.0, 0.4, 1.0 + 0.4 * SLOW),  # the gather hides, slowing the compute while it runs
    (0.3, 1.0, 1.0),  # the pass waits for the gather
    (1.0, 0.0, 1.0),  # nothing gathered
])
def test_a_pass_is_its_compute_slowed_by_the_gather_or_the_gather(compute, gather, closed):
    x = np.full((1, 2, 3), compute)  # (..., p, v)
    out = zero3_passes(x, np.full((1, 2), gather), CAL)
    np.testing.assert_allclose(out, closed, rtol=1e-12)
    np.testing.assert_array_equal(zero3_passes(x, np.full((1, 2), gather), CAL, on=np.array([False])), x)


def test_zero3_passes_exceed_zero1_by_at_most_the_sms_the_gather_holds(make_scenario):
    """GPT-3 175B on 32 DGX A100 nodes, TP 8 PP 8 DP 4, 8 sequences a micro-batch (a forward outlasts its stage's
    gather over the NICs): the forward under ZeRO-3 lasts longer than under ZeRO-1, by no more than its whole
    compute slowed by comm_sms."""
    topology, workload = {"preset": "dgx-a100-superpod", "domains": 32}, {"global_batch": 256, "micro_batch": 8}
    runs = [run(make_scenario(topology=topology, workload=workload,
                              layout={"tp": 8, "pp": 8, "sequence_parallel": True, "zero": z})) for z in (1, 3)]
    f1, f3 = runs[0].plan.f, runs[1].plan.f
    s = calibration.for_device(runs[1].scenario.topology.device, "bf16").comm_sms
    assert (f3 > f1).all()
    assert (f3 <= f1 * (1 + s / (1 - s)) * (1 + 1e-12)).all()
    assert runs[1].report.step_time_s > runs[0].report.step_time_s


@pytest.mark.parametrize("compute, comm, closed", [(1.0, 0.4, 0.4 * SLOW), (0.3, 1.0, 0.7), (1.0, 0.0, 0.0)])
def test_beside_is_the_slowed_compute_or_the_communications_excess(compute, comm, closed):
    assert float(beside(compute, comm, CAL.comm_sms)) == pytest.approx(closed, rel=1e-12)


def test_the_parameter_gather_runs_beside_the_first_forward_or_before_it():
    """Overlapped over 4 chunks: a quarter of 0.8 s beside a 1 s forward, or its excess over a 0.1 s one; not
    overlapped (Megatron gathers every bucket after the optimizer step), all of it, whatever the forward."""
    assert float(exposed_param_gather(0.8, 1.0, 4, True, CAL)) == pytest.approx(0.2 * SLOW, rel=1e-12)
    assert float(exposed_param_gather(0.8, 0.1, 4, True, CAL)) == pytest.approx(0.1, rel=1e-12)
    assert float(exposed_param_gather(0.8, 0.5, 1, False, CAL)) == pytest.approx(0.8, rel=1e-12)


def test_the_gradient_reduction_slows_the_last_backward(make_scenario):
    """Llama 3 8B on 16 DGX A100 nodes, DP 128, one micro-batch of 2 sequences a replica: the optimizer starts at the
    order's end plus beside(the seconds from the last backward's start, the reduction's), in both engines, which
    agree on the step."""
    res = run(make_scenario(model="llama3-8b", topology={"preset": "dgx-a100-superpod", "domains": 16},
                            workload={"seq_len": 4096, "global_batch": 256, "micro_batch": 2},
                            layout={"tp": 1, "pp": 1, "distributed_optimizer": True, "overlap_grad_reduce": True}))
    s = calibration.for_device(res.scenario.topology.device, "bf16").comm_sms
    assert res.plan.comm_sms == s
    reference = run_reference(res.plan)
    for tl in (res.timeline, reference):
        order_end = tl.end.max()
        last, dp = order_end - tl.dp_start[0], tl.dp_end[0] - tl.dp_start[0]
        assert 0 < dp and 0 < last
        expected = order_end + max(min(last, dp) * s / (1 - s), dp - last)
        assert tl.optimizer_start[0] == pytest.approx(expected, rel=1e-12)
    assert reference.step_time == pytest.approx(res.timeline.step_time, rel=1e-12)
