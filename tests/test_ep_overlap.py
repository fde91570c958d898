"""layout.ep_overlap, Megatron-Core's combined 1F1B: the order against Megatron's (no pipelining, and the interleaved
warm-up plus one), every task once with independent halves, the step's closed form without pipelining, the
all-to-alls hidden and TP left exposed, one layer more in flight inside a pair, the refusals. Exact unless stated."""

from __future__ import annotations

import pytest

from simulator import run
from simulator.cost import calibration
from simulator.invariants import check_training
from simulator.schedules import SPECS, ScheduleTable, combined, combined_in_flight, in_flight
from simulator.schedules.table import peak_in_pair
from simulator.scenario.base import ScenarioError
from small_moe import H800, SMALL_MOE


def _moe(make_scenario, layout, workload=None):
    wl = {"seq_len": 4096, "global_batch": 32, "micro_batch": 1, **(workload or {})}
    return make_scenario(model=SMALL_MOE, topology=H800, workload=wl, layout={"ep": 8, **layout})


def test_without_pipelining_each_forward_pairs_with_the_previous_backward():
    """combined_1f1b_schedule_for_no_pipelining: F0 alone, then F(i+1) with B(i), then the last B."""
    table = combined(SPECS["1f1b"].table(1, 4, 1))
    assert [a.label(chunks=False) for a in table.orders[0]] == ["F0", "F1&B0", "F2&B1", "F3&B2", "B3"]


@pytest.mark.parametrize("p, v, m", [(2, 2, 4), (4, 2, 8), (4, 3, 16), (8, 2, 16), (4, 4, 4)])
def test_interleaved_warm_up_is_megatrons_plus_one(p, v, m):
    """Forwards run alone before the first pair: get_pp_rank_microbatches' 2 (p - 1 - d) + (v - 1) p, plus one
    with overlap_moe_expert_parallel_comm; then every slot is a pair until the forwards run out."""
    table = combined(SPECS["interleaved"].table(p, m, v))
    for d, order in enumerate(table.orders):
        warm = min(2 * (p - 1 - d) + (v - 1) * p + 1, m * v)
        assert all(a.kind == "F" and a.paired is None for a in order[:warm])
        assert all(a.paired is not None for a in order[warm:m * v])
        assert all(a.kind == "B" for a in order[m * v:])


@pytest.mark.parametrize("p, v, m", [(1, 1, 6), (2, 2, 4), (4, 2, 8), (4, 3, 12)])
def test_every_task_once_and_no_pair_waits_on_itself(p, v, m):
    """Each F and B of the plain schedule runs exactly once, in the plain schedule's forward and backward orders;
    a pair's backward never needs its own forward (the extra warm-up forward's purpose)."""
    name = "1f1b" if v == 1 else "interleaved"
    plain, comb = SPECS[name].table(p, m, v), combined(SPECS[name].table(p, m, v))
    for d in range(p):
        halves = [h for a in comb.orders[d] for h in a.halves()]
        for kind in "FB":
            assert [(h.mb, h.chunk) for h in halves if h.kind == kind] == \
                   [(a.mb, a.chunk) for a in plain.orders[d] if a.kind == kind]
        for a in comb.orders[d]:
            if a.paired is not None:
                assert (a.mb, a.chunk) != (a.paired.mb, a.paired.chunk)


def test_without_pipelining_the_step_is_f_then_pairs_then_b(make_scenario):
    """pp 1, m micro-batches: the device's tasks end at f + (m - 1) fb + b (nothing to wait for between them)."""
    res = run(_moe(make_scenario, {"pp": 1, "schedule": "1f1b", "ep_overlap": True}, {"global_batch": 64}))
    plan, tl, m = res.plan, res.timeline, res.scenario.micro_batches
    assert m == 4
    closed = plan.f[0, 0] + (m - 1) * plan.fb[0, 0, 0] + plan.b[0, 0]
    assert tl.end.max() - tl.start.min() == pytest.approx(closed, rel=1e-12)
    check_training(res.scenario.name, plan, tl, res.report)


def test_pairs_hide_the_all_to_alls_step_by_step(make_scenario):
    """TP 2, pp 1 (one chunk of all 4 layers): a pair runs four steps, each one half's compute beside the other's
    all-to-all (combined_1f1b.py): B's combine with F's attention, B's MLP with F's dispatch, B's dispatch with F's
    MLP, B's attention with F's combine; a step lasts max(compute slowed by the SMs the communication holds, comm).
    16-bit dispatch: dispatch and combine carry half of each pass's all-to-all. Less all-to-all stays exposed than in
    1F1B, and the TP seconds reported exposed are the same (every F and B runs once, its TP inside it)."""
    lay = {"pp": 1, "tp": 2, "sequence_parallel": True, "schedule": "1f1b"}
    one = run(_moe(make_scenario, lay, {"global_batch": 64}))
    both = run(_moe(make_scenario, {**lay, "ep_overlap": True}, {"global_batch": 64}))
    assert both.report.exposed_comm_s["ep"] < 0.5 * one.report.exposed_comm_s["ep"]
    assert both.report.exposed_comm_s["tp"] == pytest.approx(one.report.exposed_comm_s["tp"], rel=1e-9)
    assert both.report.exposed_comm_s["tp"] > 0
    plan = both.plan
    ffn = plan.moe.ffn.sum(axis=0)  # F, B, W of the FFN halves of the chunk's 4 layers
    ep_f, ep_b = plan.exposed_ep[0, 0, 0], plan.exposed_ep[0, 0, 1]
    att_f, att_b = plan.f[0, 0] - ffn[0] - ep_f, plan.b[0, 0] - ffn[1] - ffn[2] - ep_b
    s = calibration.for_device(both.scenario.topology.device, "bf16").comm_sms
    step = lambda compute, comm: max(compute + min(compute, comm) * s / (1 - s), comm)  # noqa: E731
    closed = (step(att_f, ep_b / 2) + step(ffn[1] + ffn[2], ep_f / 2) + step(ffn[0], ep_b / 2)
              + step(att_b, ep_f / 2))
    assert plan.fb[0, 0, 0] == pytest.approx(closed, rel=1e-12)
    assert both.report.step_time_s < one.report.step_time_s


def test_a_pair_holds_one_layer_more_than_before_it(make_scenario):
    """A pair runs layer by layer (the forward's layer i beside the backward's last unfinished layer, each freed
    before the next two start: TransformerModelChunkSchedulePlan.run), so inside it a device holds what it held
    before it plus one layer, not plus the forward's whole chunk: 1 + 1/L micro-batch-chunks without pipelining
    (in_flight, which counts a pair's forward whole as DualPipe's chunk-granular pairs hold it, says 2), and the
    plain schedule's peak plus one layer when interleaved (its warm-up is the plain schedule's forwards before the
    first backward). Memory: one layer of the 4-layer model more than plain 1F1B's peak, where GPipe's two
    micro-batches hold a whole chunk more."""
    t = combined(SPECS["1f1b"].table(1, 4, 1))
    assert in_flight(t).tolist() == [2]
    assert combined_in_flight(t, [4]).tolist() == [1.25]
    plain = SPECS["interleaved"].table(4, 16, 2)
    comb = combined(plain)
    assert combined_in_flight(comb, [3] * 4).tolist() == pytest.approx(in_flight(plain) + 1 / 3)
    walked = ScheduleTable(comb.name, comb.p, comb.m, comb.v, tuple(comb.orders), comb.routes, comb.direction,
                           comb.split_backward)  # no integer codes: in_flight walks the Actions
    assert peak_in_pair(walked).tolist() == peak_in_pair(comb).tolist() == [True] * 4
    lay = {"pp": 1}
    one = run(_moe(make_scenario, {**lay, "schedule": "1f1b"}))
    both = run(_moe(make_scenario, {**lay, "schedule": "1f1b", "ep_overlap": True}))
    gpipe = run(_moe(make_scenario, {**lay, "schedule": "gpipe"}))
    assert both.scenario.micro_batches == 2
    acts = lambda r: r.report.memory_bytes["activations"]  # noqa: E731
    assert acts(both) - acts(one) == pytest.approx((acts(gpipe) - acts(one)) / SMALL_MOE["layers"], rel=1e-12)


def test_interleaved_runs_and_checks(make_scenario):
    """pp 2 x 2 chunks over two nodes: the engine completes the combined order and the step's invariants hold."""
    res = run(_moe(make_scenario, {"pp": 2, "schedule": "interleaved", "chunks": 2, "ep_overlap": True,
                                   "stage_layers": [1, 1, 1, 1]}, {"global_batch": 16}))
    check_training(res.scenario.name, res.plan, res.timeline, res.report)
    assert (res.timeline.kind == 3).sum() > 0


@pytest.mark.parametrize("model, workload, layout, why", [
    ("dense", {}, {"ep": 1, "pp": 1, "schedule": "1f1b"}, "needs an MoE model"),
    ("moe", {}, {"pp": 2, "schedule": "1f1b"}, "interleaved or with 1f1b at pp 1"),
    ("moe", {}, {"pp": 2, "schedule": "gpipe"}, "interleaved or with 1f1b at pp 1"),
])
def test_refusals(make_scenario, model, workload, layout, why):
    with pytest.raises(ScenarioError, match=rf"layout\.ep_overlap.*{why}"):
        if model == "dense":
            make_scenario(topology=H800, layout={**layout, "ep_overlap": True})
        else:
            _moe(make_scenario, {**layout, "ep_overlap": True}, workload)


def test_a_straggler_slows_the_pairs_by_their_compute(make_scenario):
    """pp 1, TP 1, a GPU 1.5x slower: each pair becomes max(1.5 x its computes, its all-to-alls) (the
    communication does not slow), so the step grows, by less than 1.5x."""
    lay = {"pp": 1, "schedule": "1f1b", "ep_overlap": True}
    healthy = run(_moe(make_scenario, lay, {"global_batch": 64}))
    slow = run(make_scenario(model=SMALL_MOE, topology=H800, layout={"ep": 8, **lay},
                             workload={"seq_len": 4096, "global_batch": 64, "micro_batch": 1},
                             faults={"straggler": {"gpu": 0, "slowdown": 1.5}}))
    ratio = slow.report.step_time_s / healthy.report.step_time_s
    assert 1.0 < ratio < 1.5


def test_fp8_dispatch_is_a_third_of_the_forward_all_to_all(make_scenario):
    """With layout.fp8_dispatch the dispatch carries 1 byte an element and the combine 2: F's dispatch step holds
    1/3 of the forward all-to-all, its combine step 2/3 (the backward's gradients stay halves)."""
    res = run(_moe(make_scenario, {"pp": 1, "schedule": "1f1b", "ep_overlap": True, "fp8_dispatch": True},
                   {"global_batch": 64, "dtype": "fp8"}))
    plan = res.plan
    ffn = plan.moe.ffn.sum(axis=0)
    ep_f, ep_b = plan.exposed_ep[0, 0, 0], plan.exposed_ep[0, 0, 1]
    att_f, att_b = plan.f[0, 0] - ffn[0] - ep_f, plan.b[0, 0] - ffn[1] - ffn[2] - ep_b
    s = calibration.for_device(res.scenario.topology.device, "fp8").comm_sms
    step = lambda compute, comm: max(compute + min(compute, comm) * s / (1 - s), comm)  # noqa: E731
    closed = (step(att_f, ep_b / 2) + step(ffn[1] + ffn[2], ep_f / 3) + step(ffn[0], ep_b / 2)
              + step(att_b, 2 * ep_f / 3))
    assert plan.fb[0, 0, 0] == pytest.approx(closed, rel=1e-12)
