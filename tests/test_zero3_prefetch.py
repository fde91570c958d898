"""ZeRO-3 / FSDP's parameter all-gather, prefetched beside each pass's compute (cost.pipeline.zero3_passes): the
collective's kernels hold calibration.comm_sms of the SMs while it runs, as the TP and EP overlaps' do, so a pass
lasts max(compute + min(compute, gather) x s / (1 - s), gather) for s = comm_sms."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from simulator import run
from simulator.cost import calibration
from simulator.cost.pipeline import zero3_passes

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
