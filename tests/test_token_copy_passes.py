"""Passes over the routed token copies a GPU holds, besides the permutation before the dispatch and after the combine
(cost.op_table.copy_passes), each reading and writing the rank's k / tp copies a token, its backward the inverse:
- Megatron-Core's all-to-all token dispatcher (layout.ep_backend nccl, ep_dispatch flat) sorts the copies a GPU
  receives by local expert before its experts and back after them (token_dispatcher.py's permutation 2 and
  unpermutation 2, sort_chunks_by_idxs); DeepEP-style dispatch permutes once, and one expert a GPU needs no sort.
- Transformer Engine's grouped MLP (workload.expert_gemm multi_stream) under a low-precision dtype copies its input and
  output padded to the GEMMs' alignment (Fp8Padding, Fp8Unpadding), unless the counts are aligned already: by the
  router (routing.pad_for_quantization), a capacity, or HybridEP's dispatch.
- The same grouped MLP adds biased experts' second bias per expert in PyTorch, weighted by the router
  (TEGroupedMLP._apply_bias, model.moe.expert_bias): 16-bit router weights 6 elements a copy element forward
  (bias x weight written; its sum with the GEMM output: 2 read, 1 written; the concatenation: 1 read, 1 written) and
  6 backward (two gradients, each a product and a sum); FP32 weights, as DeepEP and HybridEP dispatch them, 14 and
  18 (the same at 4 bytes, the casts of the output and of its gradient)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator import run
from simulator.cost import calibration, op_table
from simulator.cost.op_table import build_op_table, copy_passes
from simulator.cost.ops import ACT_BYTES, BLOCK_MOE
from simulator.cost.roofline import op_times
from small_moe import SMALL_MOE, ep8_step

ONE_EXPERT_A_RANK = {**SMALL_MOE, "moe": {**SMALL_MOE["moe"], "experts": 8, "top_k": 2}}
"""SMALL_MOE with 8 experts (top-2): at EP8 each rank holds one."""
BIASED = {**SMALL_MOE, "moe": {**SMALL_MOE["moe"], "expert_bias": True}}
"""SMALL_MOE with biased experts (GPT-OSS's kind)."""
COPY_BYTES = 4096 * 2 * 8 * 1024 * ACT_BYTES
"""One pass over a micro-batch's copies: 4,096 tokens x 8 copies x hidden 1,024, read and written, 16-bit."""


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_each_pass_reads_and_writes_the_copies_once(make_scenario, dtype):
    """No FLOP, in the MoE layer's fixed block; forward and backward the same bytes."""
    table = build_op_table(ep8_step(make_scenario, dtype=dtype))
    names = ("sort", "unsort") + (("pad", "unpad") if dtype == "fp8" else ())
    assert [n for n in table.name if n in ("sort", "unsort", "pad", "unpad")] == list(names)
    for name in names:
        i = table.name.index(name)
        assert table.block[i] == BLOCK_MOE and table.flops_f[i] == 0.0
        assert table.bytes_f[i] == pytest.approx(COPY_BYTES, rel=1e-12)
        assert table.bytes_b[i] == table.bytes_f[i] and table.bytes_w[i] == 0.0


@pytest.mark.parametrize("model, workload, layout, passes", [
    (SMALL_MOE, {}, {}, ("sort", "unsort")),
    (SMALL_MOE, {}, {"ep_backend": "deepep"}, ()),
    (SMALL_MOE, {}, {"ep_backend": "hybridep"}, ()),
    (SMALL_MOE, {}, {"ep_dispatch": "dedup"}, ()),
    (ONE_EXPERT_A_RANK, {}, {}, ()),
    (SMALL_MOE, {"dtype": "mxfp8"}, {"ep_backend": "deepep"}, ("pad", "unpad")),
    (SMALL_MOE, {"dtype": "mxfp8"}, {"ep_backend": "hybridep"}, ()),  # HybridEP's dispatch pads
    (SMALL_MOE, {"dtype": "fp8", "routing": {"pad_for_quantization": True}}, {}, ("sort", "unsort")),
    (SMALL_MOE, {"dtype": "fp8", "routing": {"capacity_factor": 1.0}}, {}, ("sort", "unsort")),
    (SMALL_MOE, {"dtype": "fp8", "expert_gemm": "single_kernel"}, {"ep_backend": "deepep"}, ()),
    (BIASED, {}, {}, ("sort", "unsort", "expert-bias")),
    (BIASED, {}, {"ep_backend": "hybridep"}, ("expert-bias-fp32",)),
    (BIASED, {}, {"ep_backend": "deepep"}, ("expert-bias-fp32",)),
    (BIASED, {"expert_gemm": "single_kernel"}, {"ep_backend": "deepep"}, ()),  # a fused grouped MLP adds it inside
])
def test_which_framework_runs_which_passes(make_scenario, model, workload, layout, passes):
    assert copy_passes(ep8_step(make_scenario, model, layout, **workload)) == passes


def test_each_moe_layer_is_longer_by_the_passes(make_scenario, monkeypatch):
    """Against the same step without them: every MoE layer's FFN forward and backward are longer by the four rows'
    roofline (HBM-bound) plus a kernel each, the weight-gradient pass and the dense first layer unchanged."""
    scn = ep8_step(make_scenario, dtype="fp8")
    with_passes, table = run(scn), build_op_table(scn)
    rows = np.isin(np.array(table.name), ["sort", "unsort", "pad", "unpad"])
    dev, cal = scn.topology.device, calibration.for_training(scn)
    passes = [op_times(getattr(table, f)[rows], getattr(table, b)[rows], table.gemm[rows], dev.peak("fp8"),
                       dev.hbm_bandwidth, cal, backward=i == 1).sum()
              for i, (f, b) in enumerate((("flops_f", "bytes_f"), ("flops_b", "bytes_b")))]
    monkeypatch.setattr(op_table, "copy_passes", lambda scenario: ())
    without = run(ep8_step(make_scenario, dtype="fp8"))
    diff = with_passes.plan.moe.ffn - without.plan.moe.ffn
    np.testing.assert_allclose(diff[1:], np.tile([*passes, 0.0], (3, 1)), rtol=1e-9, atol=1e-15)
    assert not diff[0].any()
    assert passes[0] == pytest.approx(4 * (COPY_BYTES / (dev.hbm_bandwidth * cal.hbm) + cal.kernel_overhead),
                                      rel=1e-12)


@pytest.mark.parametrize("layout, name, forward, backward", [({}, "expert-bias", 6, 6),
                                                            ({"ep_backend": "hybridep"}, "expert-bias-fp32", 14, 18)])
def test_the_expert_bias_pass_moves_its_elements_a_copy(make_scenario, layout, name, forward, backward):
    """4,096 tokens x 8 copies x hidden 1,024 copy elements at 2 bytes an element counted, no FLOP."""
    table = build_op_table(ep8_step(make_scenario, BIASED, layout))
    i = table.name.index(name)
    assert table.block[i] == BLOCK_MOE and table.flops_f[i] == 0.0 and table.flops_b[i] == 0.0
    elements = COPY_BYTES / (2 * ACT_BYTES)
    assert table.bytes_f[i] == pytest.approx(forward * elements * ACT_BYTES, rel=1e-12)
    assert table.bytes_b[i] == pytest.approx(backward * elements * ACT_BYTES, rel=1e-12)
    assert table.bytes_w[i] == 0.0
