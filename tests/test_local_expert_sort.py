"""Megatron-Core's all-to-all token dispatcher (layout.ep_backend nccl, ep_dispatch flat) sorts the token copies a rank
receives by local expert before its experts and back after them (token_dispatcher.py's permutation 2 and
unpermutation 2, sort_chunks_by_idxs; the drop-and-pad path's transposed copy likewise): two memory-bound passes over
the rank's k / tp copies a token, beside the permutation before the dispatch and after the combine. DeepEP-style
dispatch (the flex dispatcher's DeepEP or HybridEP, or ep_dispatch dedup) permutes the received tokens once, and a
rank holding one expert has nothing to sort."""

from __future__ import annotations

import numpy as np
import pytest

from simulator import run
from simulator.cost import calibration, op_table
from simulator.cost.ops import ACT_BYTES, BLOCK_MOE
from simulator.cost.op_table import build_op_table
from simulator.cost.roofline import op_times
from small_moe import H800, SMALL_MOE

ONE_EXPERT_A_RANK = {**SMALL_MOE, "moe": {**SMALL_MOE["moe"], "experts": 8, "top_k": 2}}
"""SMALL_MOE with 8 experts (top-2): at EP8 each rank holds one."""


def step(make_scenario, model=SMALL_MOE, **layout):
    """SMALL_MOE (64 experts, top-8, hidden 1,024) on 16 H800 as EP8 x DP2, plain 1F1B, 4,096 tokens a micro-batch,
    2 micro-batches a rank; `layout` overrides."""
    return make_scenario(model=model, topology=H800, layout={"ep": 8, "schedule": "1f1b", **layout},
                         workload={"seq_len": 4096, "global_batch": 32, "micro_batch": 1})


def test_two_passes_over_the_received_copies(make_scenario):
    """Each pass reads and writes the k = 8 copies of every token the rank brings (16-bit, hidden 1,024): 2 x 8 x
    1,024 x 2 bytes a token, no FLOP, in the MoE layer's fixed block; its backward is the inverse permutation, the
    same bytes."""
    table = build_op_table(step(make_scenario))
    for name in ("sort", "unsort"):
        i = table.name.index(name)
        assert table.block[i] == BLOCK_MOE and table.flops_f[i] == 0.0
        assert table.bytes_f[i] == pytest.approx(4096 * 2 * 8 * 1024 * ACT_BYTES, rel=1e-12)
        assert table.bytes_b[i] == table.bytes_f[i] and table.bytes_w[i] == 0.0


@pytest.mark.parametrize("model, layout, sorted_", [
    (SMALL_MOE, {}, True),
    (SMALL_MOE, {"ep_backend": "deepep"}, False),
    (SMALL_MOE, {"ep_backend": "hybridep"}, False),
    (SMALL_MOE, {"ep_dispatch": "dedup"}, False),
    (ONE_EXPERT_A_RANK, {}, False),
])
def test_only_megatrons_all_to_all_dispatcher_with_several_local_experts_sorts(make_scenario, model, layout, sorted_):
    names = build_op_table(step(make_scenario, model, **layout)).name
    assert ("sort" in names) == sorted_ and ("unsort" in names) == sorted_


def test_each_moe_layer_is_longer_by_the_two_passes(make_scenario, monkeypatch):
    """Against the same step without the sort: every MoE layer's FFN forward and backward are longer by the two rows'
    roofline (HBM-bound) plus a kernel each, the weight-gradient pass and the dense first layer unchanged."""
    scn = step(make_scenario)
    sorted_, table = run(scn), build_op_table(scn)
    rows = np.isin(np.array(table.name), ["sort", "unsort"])
    dev, cal = scn.topology.device, calibration.for_training(scn)
    passes = [op_times(getattr(table, f)[rows], getattr(table, b)[rows], table.gemm[rows], dev.peak("bf16"),
                       dev.hbm_bandwidth, cal, backward=i == 1).sum()
              for i, (f, b) in enumerate((("flops_f", "bytes_f"), ("flops_b", "bytes_b")))]
    monkeypatch.setattr(op_table, "sorts_by_local_expert", lambda model, layout: False)
    unsorted = run(step(make_scenario))
    diff = sorted_.plan.moe.ffn - unsorted.plan.moe.ffn
    np.testing.assert_allclose(diff[1:], np.tile([*passes, 0.0], (3, 1)), rtol=1e-9, atol=1e-15)
    assert not diff[0].any()
    assert passes[0] == pytest.approx(2 * (4096 * 2 * 8 * 1024 * ACT_BYTES / (dev.hbm_bandwidth * cal.hbm)
                                           + cal.kernel_overhead), rel=1e-12)
