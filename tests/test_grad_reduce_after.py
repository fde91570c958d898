"""The gradient reduction beside the last backward, or after the stage's last task (layout.overlap_grad_reduce).

Overlapped (Megatron-Core's overlap_grad_reduce, the default) the optimizer starts at the order's end plus
beside(the seconds since the last backward began, the reduction); not overlapped (Megatron-LM's data parallelism before
Megatron-Core's) the reduction starts when the stage's last task ends and the optimizer waits for all of it: order
end + reduction, nothing slowed. Both engines and the search's analytic pass agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator import load_scenario, run
from simulator.training.reference_engine import run_reference
from simulator.whatif.analytic import estimate
from simulator.whatif.candidates import CostModel
from simulator.whatif.space import RECOMPUTE_NAMES, enumerate_layouts, overrides

VALIDATION = Path(__file__).resolve().parents[1] / "simulator" / "data" / "validation"
LLAMA = dict(model="llama3-8b", topology={"preset": "dgx-a100-superpod", "domains": 16},
             workload={"seq_len": 4096, "global_batch": 256, "micro_batch": 2},
             layout={"tp": 1, "pp": 1, "distributed_optimizer": True, "overlap_grad_reduce": False})


def test_not_overlapped_the_reduction_follows_the_order(make_scenario):
    """Llama 3 8B on 16 DGX A100 nodes, DP 128: the reduction starts at the order's end and the optimizer at its end,
    in both engines; the step is longer than overlapped by the reduction less what the overlap left exposed."""
    res = run(make_scenario(**LLAMA))
    for tl in (res.timeline, run_reference(res.plan)):
        order_end = tl.end.max()
        assert tl.dp_start[0] == pytest.approx(order_end, rel=1e-12)
        assert tl.optimizer_start[0] == pytest.approx(order_end + res.plan.dp[0], rel=1e-12)
    overlapped = run(make_scenario(**{**LLAMA, "layout": {**LLAMA["layout"], "overlap_grad_reduce": True}}))
    assert overlapped.timeline.step_time < res.timeline.step_time
    assert res.timeline.step_time - overlapped.timeline.step_time < res.plan.dp[0]


@pytest.mark.parametrize("name", ["megatron2021-t1-145.6b.yaml", "korthikanti-530b-2240-full.yaml"])
def test_engines_agree_on_pipelines(name):
    """Pipelined runs with shared links (PP sends and the reduction on one NIC): the event-driven engine and the
    simpy reference engine give the same step with the reduction after each stage's order."""
    res = run(load_scenario(VALIDATION / name, ["layout.overlap_grad_reduce=false"]))
    reference = run_reference(res.plan)
    assert reference.step_time == pytest.approx(res.timeline.step_time, rel=1e-9)
    for tl in (res.timeline, reference):  # each stage's reduction starts as its order ends
        order_end = np.array([tl.end[tl.device == d].max() for d in range(len(tl.dp_start))])
        np.testing.assert_allclose(tl.dp_start, order_end, rtol=1e-12)


def test_the_search_prices_it_as_the_engine(make_scenario):
    """The analytic pass's tail is the reduction whole when not overlapped: on a contention-free layout (one stage, one
    gradient bucket) its step equals the engine's, and exceeds the overlapped one's."""
    one_bucket = {**LLAMA["layout"], "bucket_params": 10**12}
    steps = {}
    for overlap in (False, True):
        scn = make_scenario(**{**LLAMA, "layout": {**one_bucket, "overlap_grad_reduce": overlap}})
        cands = enumerate_layouts(scn, scn.gpus)
        pick = np.flatnonzero((cands.tp == 1) & (cands.pp == 1) & (cands.cp == 1) & (cands.zero == 0)
                              & (cands.mb == 2) & (cands.recompute == RECOMPUTE_NAMES.index("none")))[:1]
        c = cands.take(pick)
        engine = run(load_scenario(scn.source, overrides(c.row(0), scn.model.layers, 8, scn.gpus))).timeline.step_time
        steps[overlap] = estimate(CostModel(scn), c).step_time[0]
        assert steps[overlap] == pytest.approx(engine, rel=1e-9)
    assert steps[False] > steps[True]
