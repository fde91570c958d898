"""Hybrid sharded data parallelism (layout.shard_group): state sharded inside groups of shard_group
data-parallel ranks, replicated across them. Closed forms: memory bytes per parameter, the per-pass
ZeRO-3 gather over the shard group against the collective formula, the reduce-scatter plus the
cross-group all-reduce of the gradient shards (seconds, tier and volume); bad layouts are one line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from refusals import assert_refused
from typer.testing import CliRunner

from simulator import load_scenario, run
from simulator.cli import app
from simulator.cost import calibration, collectives
from simulator.cost.fabric import fabric_for
from simulator.cost.params import total_parameters
from simulator.cost.placement import place, shard_split

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"layers": 8, "hidden": 2048, "heads": 16, "ffn": 8192, "ffn_kind": "swiglu", "vocab": 32000,
         "tied_embeddings": False}
A100 = {"preset": "dgx-a100-superpod", "domains": 2}  # 16 GPUs: two 8-GPU nodes, 300 GB/s NVLink, 25 GB/s NICs


def _scn(make_scenario, seq_len=2048, **layout):
    """HSDP as FSDP runs it: gradients reduced within the backward, no accumulation pass of its own (the A100
    defaults are Megatron-LM's of 2021)."""
    return make_scenario(model=SMALL, topology=A100, layout={"zero": 3, "shard_group": 8, "overlap_grad_reduce": True,
                                                             **layout},
                         workload={"seq_len": seq_len, "global_batch": 16, "micro_batch": 1,
                                   "grad_accumulation_fusion": True})


@pytest.mark.parametrize("zero, grad_fp32, per_param", [
    (3, False, (2 / 8, 2 / 8, 12 / 8)),    # FSDP's hybrid shard: (2 + 2 + 12) / shard_group
    (3, True, (2 / 8, 4 / 8, 12 / 8)),     # fp32 gradients
    (2, False, (2.0, 2 / 8, 12 / 8)),
    (1, False, (2.0, 2.0, 12 / 8)),        # Megatron's distributed optimizer in dp*cp/shard_group instances
])
def test_memory_bytes_per_parameter(make_scenario, zero, grad_fp32, per_param):
    """Weights, gradients and optimizer bytes a GPU holds: each sharded part over shard_group = 8, not
    over all 16 data-parallel ranks."""
    scn = _scn(make_scenario, zero=zero, grad_reduce_fp32=grad_fp32)
    mem = run(scn).report.memory_bytes
    n = total_parameters(scn.model)
    for cat, b in zip(("weights", "gradients", "optimizer"), per_param):
        assert mem[cat] == pytest.approx(n * b, rel=1e-12), cat
    full = run(_scn(make_scenario, zero=zero, grad_reduce_fp32=grad_fp32, shard_group=None)).report.memory_bytes
    assert full["optimizer"] == pytest.approx(n * 12 / 16, rel=1e-12)


def test_shard_and_cross_groups(make_scenario):
    """TP2 on 16 GPUs leaves DP8 (ranks 2 apart); shard groups of 4: device 0 shards with 2, 4, 6 (its
    node) and all-reduces its shard with 8 (the same place in the other node's group)."""
    scn = _scn(make_scenario, tp=2, shard_group=4)
    pl = place(scn)
    shards, cross = shard_split(pl.weight_replicas([0, 10]), [0, 10], 4)
    np.testing.assert_array_equal(shards, [[0, 2, 4, 6], [8, 10, 12, 14]])
    np.testing.assert_array_equal(cross, [[0, 8], [2, 10]])


def test_gather_before_each_pass_rides_nvlink_inside_the_shard_group(make_scenario):
    """Short sequences make the gathers longer than compute: each forward and backward then lasts the
    all-gather of the device's bf16 weights 2N over the 8 GPUs of its node, a ring: 7/8 x 2N / NVLink +
    7 steps (collectives.flat); sharding over all 16 adds the hierarchical step across the two nodes,
    2N/8 over the NICs."""
    scn = _scn(make_scenario, seq_len=128)
    plan = run(scn).plan
    fabric = fabric_for(scn.topology)
    cal = calibration.for_device(scn.topology.device, "bf16")
    size = 2.0 * total_parameters(scn.model)
    nv, lat = fabric.nvlink_bw * cal.nvlink, max(fabric.nvlink_lat, cal.ring_latency)
    nv = nv / (1 + (cal.ring_ramp_bytes / (size / 8)) ** cal.ring_ramp_power)  # NCCL's size ramp, S/8 a rank
    gather = 7 / 8 * size / nv + 7 * lat
    assert float(collectives.flat("all_gather", size, 8, nv, lat)) == pytest.approx(gather, rel=1e-12)
    assert plan.f[0, 0] == pytest.approx(gather, rel=1e-12)
    assert plan.b[0, 0] == pytest.approx(gather, rel=1e-12)
    full = run(_scn(make_scenario, seq_len=128, shard_group=None)).plan
    across = size / 8 / 2 / (fabric.nic_bw * cal.scaleout) + max(fabric.scaleout_lat, cal.scaleout_ring_latency)
    assert full.f[0, 0] == pytest.approx(gather + across, rel=1e-12)


def test_gradients_reduce_scatter_in_the_group_then_all_reduce_across(make_scenario):
    """The gradient reduction: reduce-scatter of the bf16 gradients G = 2N over the node (7/8 G / NVLink
    + 7 steps), then an all-reduce of the G/8 shard across the two nodes (2 x 1/2 x G/8 / NIC + 2
    latencies), on the scale-out tier, once per gradient bucket (Megatron-Core's default: max(40M, 1M x 16)
    parameters, each collective paying its latencies); the step's scale-out bytes are that all-reduce's,
    16 GPUs x 2 x 1/2 x G/8 (everything else stays in the node)."""
    scn = _scn(make_scenario)
    res = run(scn)
    fabric = fabric_for(scn.topology)
    cal = calibration.for_device(scn.topology.device, "bf16")
    buckets = math.ceil(total_parameters(scn.model) / 40e6)
    assert buckets > 1
    grads = 2.0 * total_parameters(scn.model) / buckets  # one bucket's
    nv, lat = fabric.nvlink_bw * cal.nvlink, max(fabric.nvlink_lat, cal.ring_latency)
    nv = nv / (1 + (cal.ring_ramp_bytes / (grads / 8)) ** cal.ring_ramp_power)  # NCCL's size ramp
    rs = 7 / 8 * grads / nv + 7 * lat
    so_lat = max(fabric.scaleout_lat, cal.scaleout_ring_latency)  # the path's latency or NCCL's inter-node alpha
    ar = 2 * (1 / 2) * grads / 8 / (fabric.nic_bw * cal.scaleout) + 2 * so_lat
    assert res.plan.dp[0] == pytest.approx(buckets * (rs + ar), rel=1e-12)
    grads *= buckets
    assert res.plan.dp_tier[0] == 2
    assert res.report.traffic_bytes["scaleout"] == pytest.approx(16 * 2 * (1 / 2) * grads / 8, rel=1e-12)
    # one shard group spanning all 16: no cross-group all-reduce, the reduce-scatter crosses the nodes
    full = run(_scn(make_scenario, shard_group=16)).plan
    np.testing.assert_array_equal(full.dp, run(_scn(make_scenario, shard_group=None)).plan.dp)


def test_moe_experts_shard_over_as_many_groups(make_scenario):
    """An MoE model: dp*cp / shard_group = 2 groups; each expert's 16 / ep = 2 replicas split into
    those 2, so expert state is not sharded (1 a group) and dense state is sharded over 8."""
    moe = {**SMALL, "moe": {"experts": 16, "top_k": 2, "expert_ffn": 1024}}
    scn = make_scenario(model=moe, topology=A100, layout={"zero": 1, "shard_group": 8, "ep": 8},
                        workload={"seq_len": 2048, "global_batch": 16, "micro_batch": 1})
    assert scn.layout.expert_dp == 2
    res = run(scn)
    unsharded = run(make_scenario(model=moe, topology=A100, layout={"zero": 0, "ep": 8},
                                  workload={"seq_len": 2048, "global_batch": 16, "micro_batch": 1}))
    expert = 3 * 2048 * 1024 * 2 * 8  # 2 experts a rank, 8 layers
    dense = unsharded.report.memory_bytes["weights"] / 2 - expert
    assert res.report.memory_bytes["optimizer"] == pytest.approx(12 * (dense / 8 + expert), rel=1e-12)


def test_shipped_llama2_hsdp_scenario():
    """IBM's Llama 2 7B recipe: 128 A100, shard groups of one node (8), 16 replicas; weights 2N/8."""
    scn = load_scenario(ROOT / "scenarios" / "llama2-7b-hsdp-a100.yaml")
    assert (scn.layout.dp, scn.layout.shard_group, scn.layout.zero) == (128, 8, 3)
    res = run(scn)
    n = total_parameters(scn.model)
    assert n == pytest.approx(6.74e9, rel=0.005)
    assert res.report.memory_bytes["weights"] == pytest.approx(2 * n / 8, rel=1e-12)
    assert res.report.layout["shard_group"] == 8 and res.report.fits_in_memory
    assert res.plan.dp_tier[0] == 2


TEXT = yaml.safe_dump({"model": SMALL, "topology": A100,
                       "workload": {"kind": "train", "seq_len": 2048, "global_batch": 16, "micro_batch": 1},
                       "layout": {"zero": 3, "shard_group": 8}})


@pytest.mark.parametrize("sets, needle", [
    (["layout.shard_group=3"], "layout.shard_group: shard_group (3) must divide the data-parallel ranks, dp*cp"),
    (["layout.zero=0"], "layout.shard_group: 8 shards ZeRO or distributed-optimizer state"),
    (["layout.shard_group=0"], "layout.shard_group"),
    (["layout.shard_group=4194304"], "layout.shard_group: 4,194,304 is over simrack's limit"),
])
def test_bad_shard_group_is_one_line_exit_2(tmp_path, sets, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(TEXT)
    assert_refused(path, sets, needle, tmp_path)


def test_search_refuses_a_hybrid_sharded_scenario_in_one_line(tmp_path):
    """The search's candidates shard over all data-parallel ranks; a scenario with shard groups would be
    ranked as one and refined as the other, so it is refused (exit 2) until the search enumerates them."""
    path = tmp_path / "bad.yaml"
    path.write_text(TEXT)
    result = CliRunner().invoke(app, ["search", str(path), "--gpus", "16"])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message and "bad.yaml: layout.shard_group: search shards" in message, message
    ok = CliRunner().invoke(app, ["search", str(path), "--gpus", "16", "--set", "layout.shard_group=null",
                                  "--top", "1", "-j", "1"])
    assert ok.exit_code == 0, ok.output
