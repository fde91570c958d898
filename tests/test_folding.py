"""MoE parallel folding (layout.expert_tp): the experts' own grid expert_tp x ep x expert-dp over each
pipeline stage's GPUs. Closed forms: the groups (consecutive ranks), expert parameters and optimizer
state per GPU, all-to-all bytes, the expert gradient reduction's group; folding that changes nothing
changes no figure; bad layouts are one line naming the field."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from refusals import assert_refused

from simulator import load_scenario, run
from simulator.cost import calibration
from simulator.cost.fabric import fabric_for
from simulator.cost.op_table import build_op_table
from simulator.cost.params import parameter_counts
from simulator.cost.pipeline import GRAD_COMM_BYTES, data_parallel
from simulator.cost.placement import place
from simulator.training.halves import split_params
from small_moe import H800, SMALL_MOE

ROOT = Path(__file__).resolve().parents[1]


def _folded(make_scenario, **layout):
    lay = {"tp": 2, "sequence_parallel": True, "ep": 16, "expert_tp": 1, "zero": 1, **layout}
    return make_scenario(model=SMALL_MOE, topology=H800, layout=lay,
                         workload={"seq_len": 4096, "global_batch": 32, "micro_batch": 1})


# --- the grid --------------------------------------------------------------------------------------------

def test_expert_grid_is_consecutive_ranks_of_each_stage(make_scenario):
    """TP2 PP2 DP4 with EP4 x ETP2: a stage's 8 GPUs hold one EP group of 4 expert-TP pairs; an EP group
    is the GPUs of equal expert-TP rank, 2 apart; the expert-dp group is the GPU alone (8 / (4 * 2))."""
    scn = _folded(make_scenario, pp=2, ep=4, expert_tp=2)
    pl = place(scn)
    assert (scn.layout.dp, pl.sizes["dp"], pl.sizes["ep"]) == (4, 4, 1)  # attention keeps all of dp
    for d in range(16):
        stage, r = divmod(d, 8)
        j = r % 2
        np.testing.assert_array_equal(pl.expert_group_of("ep", d), 8 * stage + j + 2 * np.arange(4))
        np.testing.assert_array_equal(pl.expert_group_of("etp", d), 8 * stage + 2 * (r // 2) + np.arange(2))
    np.testing.assert_array_equal(pl.expert_replicas(pl.pipeline(0)), [[0], [8]])
    assert scn.layout.expert_dp == 1


def test_ep_over_dp_times_cp(make_scenario):
    """EP8 over DP4 x CP8 (TP1): an EP group is a CP group's 8 consecutive GPUs, one node; each
    expert's replicas are the 4 GPUs 8 apart."""
    scn = make_scenario(model=SMALL_MOE, topology={"preset": "hgx-h800", "domains": 4},
                        workload={"seq_len": 8192, "global_batch": 8, "micro_batch": 1},
                        layout={"cp": 8, "ep": 8, "expert_tp": 1, "dp": 4})
    pl = place(scn)
    np.testing.assert_array_equal(pl.expert_group_of("ep", 11), np.arange(8, 16))
    np.testing.assert_array_equal(pl.expert_group_of("ep", 11), pl.group_of("cp", 11))
    np.testing.assert_array_equal(pl.expert_replicas([3]), [[3, 11, 19, 27]])
    assert scn.layout.expert_dp == 4
    res = run(scn)
    assert res.report.extra["ep"]["domains_per_group"] == 1
    assert res.plan.moe.tokens == 8192 // 8  # b s / cp tokens an EP rank brings (tp = expert_tp = 1)


# --- parameters, memory, the gradient reduction -------------------------------------------------------------

def _dense_per_gpu(tp: int) -> float:
    """SMALL_MOE's non-expert parameters on one TP rank (test_moe's hand count): 4 attention halves, the
    dense layer's FFN, 3 routers and shared experts, embedding and head, the final norm."""
    h = 1024
    attn = h * (8 + 2 * 8) * 128 + 8 * 128 * h + 2 * h
    return (4 * attn + 3 * h * 4096 + 3 * (64 * h + 3 * h * 512) + 2 * 32000 * h + h) / tp


def test_expert_parameters_and_optimizer_per_gpu(make_scenario):
    """TP2 x DP8 on 16 GPUs, EP16 x ETP1 (expert-dp 1): a GPU holds E/ep = 4 whole experts a MoE layer
    (3 h f_e each) and their optimizer state unsharded, the dense part's sharded over dp = 8 (ZeRO-1):
    weights 2 (dense + experts), optimizer 12 (dense / 8 + experts / 1) bytes."""
    scn = _folded(make_scenario)
    res = run(scn)
    expert = 3 * 1024 * 512
    assert parameter_counts(scn.model)["expert"] == expert
    experts = split_params(scn, np.array([0.0]), res.plan.table, [4])[1][0]
    assert experts == 3 * (64 // 16) * expert / 1  # 3 MoE layers, 4 experts, expert_tp 1
    dense, mem = _dense_per_gpu(2), res.report.memory_bytes
    assert mem["weights"] == pytest.approx(2 * (dense + experts), rel=1e-12)
    assert mem["optimizer"] == pytest.approx(12 * (dense / 8 + experts / 1), rel=1e-12)
    # expert_tp 2 halves each expert: EP8 x ETP2 x EDP1
    two = run(_folded(make_scenario, ep=8, expert_tp=2))
    assert split_params(two.scenario, np.array([0.0]), two.plan.table, [4])[1][0] == 3 * 8 * expert / 2


def test_expert_gradients_reduce_over_the_expert_dp_group(make_scenario):
    """TP2 x DP8, EP4 x ETP1: expert-dp = 16 / 4 = 4, the GPUs 4 apart; the step's gradient reduction is
    the dense part's reduce-scatter over dp (8 GPUs, 2 apart) plus the experts' over those 4, each in buckets of
    Megatron-Core's default max(40M, 1M x dp) = 40M parameters, one collective a bucket."""
    scn = _folded(make_scenario, ep=4)
    res = run(scn)
    pl, fabric = place(scn), fabric_for(scn.topology)
    cal = calibration.for_device(scn.topology.device, "bf16")
    np.testing.assert_array_equal(pl.expert_replicas([0]), [[0, 4, 8, 12]])
    np.testing.assert_array_equal(pl.weight_replicas([0]), [np.arange(0, 16, 2)])
    experts = 3 * (64 // 4) * 3 * 1024 * 512
    assert res.plan.memory.weights == pytest.approx(2 * (_dense_per_gpu(2) + experts), rel=1e-12)
    grads = 2.0  # bf16 gradient reduction, Megatron-Core's default
    assert grads != GRAD_COMM_BYTES

    def rs(params, group):
        prof = tuple(x[None] for x in fabric.profile(np.asarray(group)[None]))
        buckets = math.ceil(params / 40e6)
        return buckets * data_parallel(np.array([[params / buckets]]), prof, [len(group)], np.array([True]), fabric,
                                       cal, scn.topology.device.hbm_bandwidth, grads)[0][0]
    expect = rs(_dense_per_gpu(2), np.arange(0, 16, 2)) + rs(experts, [0, 4, 8, 12])
    np.testing.assert_allclose(res.plan.dp, expect, rtol=1e-12)


# --- the all-to-all ------------------------------------------------------------------------------------------

def test_all_to_all_bytes_per_gpu(make_scenario):
    """TP2 PP2 DP4 with EP8 x ETP1 on each 8-GPU node: an EP rank is one GPU bringing its own
    b s / (cp tp) = 2048 tokens (sequence parallelism); a flat dispatch inside one domain sends the
    mean rank T k (n-1)/n copies of h 16-bit values (exact: the drawn copies sum to n T k), and with
    the combine and both backward all-to-alls 4 x 2 bytes an element, all on NVLink."""
    scn = _folded(make_scenario, pp=2, ep=8)
    res = run(scn)
    costs = res.plan.moe
    T, k, n, h = 4096 // 2, 8, 8, 1024
    assert costs.tokens == T
    np.testing.assert_array_equal(costs.ep_devices, np.arange(8))  # stage 0's node
    moe = np.arange(4) >= 1
    np.testing.assert_allclose(costs.sent[moe, 0], T * k * (n - 1) / n * h * 4 * 2, rtol=1e-12)
    assert (costs.sent[:, 1] == 0).all() and not costs.sent[~moe].any()
    ep = res.report.extra["ep"]
    assert ep["domains_per_group"] == 1 and ep["traffic_bytes"]["scaleout"] == 0.0
    # all GPUs, all micro-batches: 3 MoE layers a step, each micro-batch through both stages' layers once
    per_gpu = T * k * (n - 1) / n * h * 8 * 3 / 2 * scn.micro_batches
    assert ep["traffic_bytes"]["nvlink"] == pytest.approx(per_gpu * 16, rel=1e-12)


def test_expert_tp_gathers_over_its_pair_inside_the_all_to_all(make_scenario):
    """TP2 PP2 DP4 with EP4 x ETP2: an EP rank is a pair of consecutive GPUs bringing T = b s/cp x 2/2
    tokens, each GPU sending h/2 of a copy. Inside one node, a forward all-to-all layer is, per sampled
    step, dispatch + combine of the busiest rank's copies, max over ranks of max(sent (sum A - A_r)/n,
    received A_r (n-1)/n), at NVLink's rate plus one hop, each with the expert-TP pair's all-gather and
    reduce-scatter of the busiest rank's received copies (rings of 2: S/2 / NVLink + 1 step each)."""
    scn = _folded(make_scenario, pp=2, ep=4, expert_tp=2)
    costs = run(scn).plan.moe
    fabric = fabric_for(scn.topology)
    cal = calibration.for_device(scn.topology.device, "bf16")
    h, n = 1024, 4
    assert costs.tokens == 4096
    A = costs.rank_tokens  # (S, Lm, n)
    total = A.sum(axis=-1, keepdims=True)
    most = np.maximum((total - A) / n, A * (n - 1) / n).max(axis=-1)
    nv, hop = fabric.nvlink_bw * cal.nvlink, fabric.nvlink_lat
    ring = max(fabric.nvlink_lat, cal.ring_latency)
    gathered = A.max(axis=-1) * h * 2  # the busiest rank's received copies, 16-bit, whole width
    ramp = 1 + (cal.ring_ramp_bytes / (gathered / 2)) ** cal.ring_ramp_power  # NCCL's size ramp, half a rank
    gather = 2 * (gathered / 2 / nv * ramp + ring)  # all-gather + reduce-scatter over the pair
    one = most * (h / 2) * 2 / nv + hop + gather
    np.testing.assert_allclose(costs.a2a[1:, 0], (2 * one).mean(axis=0), rtol=1e-12)
    assert not costs.a2a_scaleout.any()


def test_expert_rows_split_over_expert_tp_not_tp(make_scenario):
    """TP2 with ETP1: a routed expert's forward FLOP per token is the whole 2 x 3 x h x f_e; the
    attention half's GEMMs stay split over tp."""
    ops = build_op_table(_folded(make_scenario))
    expert = ops.block == 5
    assert ops.flops_f[expert].sum() == 2 * 3 * 1024 * 512
    assert ops.bytes_fixed[expert].sum() == 2 * 3 * 1024 * 512


def test_folding_that_changes_nothing_changes_no_figure(make_scenario):
    """TP1 CP1 with EP8 carved out of DP16 already puts an EP group on 8 consecutive GPUs: folding it
    (expert_tp 1) gives the same report, figure for figure."""
    kw = dict(model=SMALL_MOE, topology=H800, workload={"seq_len": 4096, "global_batch": 32, "micro_batch": 1})
    carved = run(make_scenario(layout={"ep": 8, "zero": 1}, **kw)).report.to_dict()
    folded = run(make_scenario(layout={"ep": 8, "zero": 1, "expert_tp": 1}, **kw)).report.to_dict()
    assert carved.pop("scenario") != folded.pop("scenario")  # the files' names
    assert folded["layout"].pop("expert_tp") == 1 and "expert_tp" not in carved["layout"]
    assert folded == carved


def test_shipped_qwen3_scenario_folds_ep32_over_a_stage():
    """Megatron-Bridge's Qwen3-235B-A22B H100 recipe: TP2 PP8 on 256 GPUs leaves DP16, EP32 x ETP1 folds
    over each stage's 32 GPUs (expert-dp 1); each GPU holds 128/32 = 4 experts of each of its layers."""
    scn = load_scenario(ROOT / "scenarios" / "qwen3-235b-folding-h100.yaml")
    lay = scn.layout
    assert (lay.dp, lay.ep, lay.etp, lay.expert_dp) == (16, 32, 1, 1)
    res = run(scn)
    np.testing.assert_array_equal(res.plan.moe.ep_devices - res.plan.moe.ep_devices[0], np.arange(32))
    assert res.report.extra["ep"]["domains_per_group"] == 4
    assert res.report.fits_in_memory


# --- bad input -----------------------------------------------------------------------------------------------

MOE_TEXT = yaml.safe_dump({"model": SMALL_MOE, "topology": H800,
                           "workload": {"kind": "train", "seq_len": 4096, "global_batch": 32, "micro_batch": 1},
                           "layout": {"tp": 2, "sequence_parallel": True, "ep": 16, "expert_tp": 1}})


@pytest.mark.parametrize("sets, needle", [
    (["layout.expert_tp=null"], "layout.ep: ep (16) must divide dp (8), or set layout.expert_tp"),
    (["layout.expert_tp=3"], "layout.expert_tp: ep*expert_tp (16*3 = 48) must divide"),
    (["layout.sequence_parallel=false"], "layout.expert_tp: folding experts with tp (2) > 1 needs sequence_parallel"),
    (["model=llama3-8b", "layout.ep=1"], "layout.expert_tp: 1 folds an MoE model's experts"),
])
def test_bad_folding_is_one_line_exit_2(tmp_path, sets, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(MOE_TEXT)
    assert_refused(path, sets, needle, tmp_path)
