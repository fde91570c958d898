"""Gradient buckets (cost/pipeline.bucket_params, data_parallel): Megatron-Core reduces gradients and gathers the
distributed optimizer's parameters one bucket at a time, each collective paying its own latency.

Closed forms: n = ceil(N / B) buckets of N / n parameters for N parameters on a device and B a bucket, B =
layout.bucket_params or Megatron-Core's default max(40M, 1M x dp x cp) (megatron/core/distributed/
distributed_data_parallel_config.py, bucket_size); the reduction lasts n x collective(N / n).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from refusals import assert_refused

from simulator import load_scenario, run
from simulator.cost import calibration
from simulator.cost.fabric import fabric_for
from simulator.cost.pipeline import bucket_params, data_parallel
from simulator.scenario.layout import Layout

GPT3 = Path(__file__).parent.parent / "scenarios" / "gpt3-175b-selene.yaml"


@pytest.mark.parametrize("dp, cp, expect", [(1, 1, 40e6), (8, 4, 40e6), (40, 1, 40e6), (64, 1, 64e6),
                                            (336, 1, 336e6), (128, 2, 256e6)])
def test_default_bucket_is_megatron_cores(dp, cp, expect):
    assert float(bucket_params(Layout(), [dp * cp])[0]) == expect
    assert float(bucket_params(Layout(bucket_params=1000), [dp * cp])[0]) == 1000


@pytest.mark.parametrize("sharded", [True, False])
def test_each_bucket_pays_its_collective(sharded):
    """64 GPUs of 8 nodes, a device's 1e9 parameters in buckets of 1e8: ten reduce-scatters (all-reduces without
    sharding) of a tenth of the gradients, and ten parameter all-gathers; ZeRO-3's per-pass gather stays whole."""
    scn = load_scenario(GPT3)
    fabric, cal = fabric_for(scn.topology), calibration.for_device(scn.topology.device, "bf16")
    groups = np.arange(0, 64, 8)[None]  # one GPU a node: the scale-out tier
    profile = tuple(x[None] for x in fabric.profile(groups))
    params, grad_bytes = 1e9, 2.0
    out = data_parallel(np.array([[params]]), profile, [8], np.array([sharded]), fabric, cal,
                        scn.topology.device.hbm_bandwidth, grad_bytes, bucket=np.array([1e8]))
    kind = "reduce_scatter" if sharded else "all_reduce"
    one = float(fabric.collective(kind, params / 10 * grad_bytes, groups, cal)[0])
    assert out[0][0, 0] == pytest.approx(10 * one, rel=1e-12)
    gather = float(fabric.collective("all_gather", params * 2.0, groups, cal)[0])
    gather_bucket = float(fabric.collective("all_gather", params / 10 * 2.0, groups, cal)[0])
    assert out[2][0, 0] == pytest.approx(10 * gather_bucket if sharded else 0.0, rel=1e-12)
    assert out[4][0, 0] == pytest.approx(gather, rel=1e-12)
    # buckets add latency, never bandwidth: more buckets cost more, and one bucket is the whole collective
    whole = data_parallel(np.array([[params]]), profile, [8], np.array([sharded]), fabric, cal,
                          scn.topology.device.hbm_bandwidth, grad_bytes, bucket=np.array([1e12]))
    assert whole[0][0, 0] == pytest.approx(float(fabric.collective(kind, params * grad_bytes, groups, cal)[0]))
    assert whole[0][0, 0] < out[0][0, 0]


def test_simulated_step_reduces_in_default_buckets():
    """The shipped GPT-3 175B layout (TP8 PP8) at DP4 on 256 GPUs: a device holds about 175B / 64 = 2.7B
    parameters, 69 default buckets of 40M, so every stage's reduction takes longer than in one bucket."""
    scn = load_scenario(GPT3, ["topology.domains=32", "workload.global_batch=64"])
    res = run(scn)
    assert scn.layout.dp == 4
    one = run(load_scenario(GPT3, ["topology.domains=32", "workload.global_batch=64",
                                   "layout.bucket_params=1000000000000"]))
    assert (res.plan.dp > one.plan.dp).all()  # dozens of buckets, each with its latencies


@pytest.mark.parametrize("value, needle", [("0", "layout.bucket_params"), ("-5", "layout.bucket_params"),
                                           ("1.5", "layout.bucket_params"), ("many", "layout.bucket_params"),
                                           (str(1 << 51), "layout.bucket_params")])
def test_bad_bucket_is_one_line_exit_2(tmp_path, value, needle):
    assert_refused(GPT3, [f"layout.bucket_params={value}"], needle, tmp_path)
