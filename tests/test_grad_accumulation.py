"""workload.grad_accumulation_fusion false: each micro-batch's gradients added into the accumulated ones in a pass of
their own (Megatron-LM before 2022's gradient_accumulation_fusion), checked against its closed form: 2 bytes of the
GEMM's gradient read and the main gradient read and written (2 + 2 x 2 bytes, or 2 + 2 x 4 with fp32 main gradients)
for every weight of a block, once a micro-batch, at the HBM roofline plus one kernel's fixed time."""

from __future__ import annotations

import pytest
import yaml
from refusals import assert_refused
from small_gqa import SMALL_GQA

from simulator import simulate
from simulator.cost import calibration
from simulator.cost.op_table import build_op_table
from simulator.cost.ops import BLOCK_EMBED, BLOCK_HEAD, BLOCK_LAYER

ONE_GPU = {"preset": "dgx-h100-superpod", "domains": 1, "domain": {"gpus": 1}, "scaleout": {"nics_per_domain": 1}}
TRAIN = {"seq_len": 2048, "global_batch": 4, "micro_batch": 1, "attention": "flash"}


def _scenario(make_scenario, fused: bool, **layout):
    return make_scenario(model=dict(SMALL_GQA), topology=ONE_GPU,
                         workload={**TRAIN, "grad_accumulation_fusion": fused}, layout={"tp": 1, **layout})


def _weights(block: int) -> float:
    """Weight elements of SMALL_GQA's blocks on one GPU, from its shapes."""
    h, d, a, kv, f, v = (SMALL_GQA[k] for k in ("hidden", "head_dim", "heads", "kv_heads", "ffn", "vocab"))
    layer = h * (a + 2 * kv) * d + a * d * h + 3 * h * f  # QKV, projection, SwiGLU's gate, up and down
    return {BLOCK_LAYER: layer, BLOCK_HEAD: v * h, BLOCK_EMBED: v * h}[block]


def test_fused_adds_no_row(make_scenario):
    assert "grad-accumulate" not in build_op_table(_scenario(make_scenario, True)).name


@pytest.mark.parametrize("fp32, per_weight", [(False, 6.0), (True, 10.0)])
def test_bytes_a_block(make_scenario, fp32, per_weight):
    table = build_op_table(_scenario(make_scenario, False, grad_reduce_fp32=fp32))
    rows = [i for i, n in enumerate(table.name) if n == "grad-accumulate"]
    assert len(rows) == 3
    for i in rows:
        assert table.bytes_w[i] == pytest.approx(per_weight * _weights(int(table.block[i])), rel=1e-12)
        assert table.flops_f[i] == table.flops_b[i] == table.flops_w[i] == table.bytes_f[i] == table.bytes_b[i] == 0


def test_step_grows_by_the_passes_on_one_gpu(make_scenario):
    """One GPU, 4 micro-batches, nothing to overlap: the step is longer by 4 x (4 layers' pass + the embedding's + the
    head's), each bytes / (HBM x the calibration's streaming fraction) + one kernel's fixed time."""
    fused, unfused = _scenario(make_scenario, True), _scenario(make_scenario, False)
    cal, dev = calibration.for_training(unfused), unfused.topology.device
    seconds = lambda block: 6.0 * _weights(block) / (dev.hbm_bandwidth * cal.hbm) + cal.kernel_overhead  # noqa: E731
    expected = 4 * (SMALL_GQA["layers"] * seconds(BLOCK_LAYER) + seconds(BLOCK_EMBED) + seconds(BLOCK_HEAD))
    grown = simulate(unfused).step_time_s - simulate(fused).step_time_s
    assert grown == pytest.approx(expected, rel=1e-6)


def test_refused_for_serving_and_moe(tmp_path):
    path = tmp_path / "s.yaml"
    serve = {"kind": "serve", "prompt_len": 128, "output_len": 16, "batch": 4}
    path.write_text(yaml.safe_dump({"model": dict(SMALL_GQA), "topology": ONE_GPU, "workload": serve}))
    assert_refused(path, ["workload.grad_accumulation_fusion=false"], "serving computes no gradients", tmp_path)
    path.write_text(yaml.safe_dump({"model": "mixtral-8x7b", "topology": {"preset": "dgx-h100-superpod", "domains": 1},
                                    "workload": {"kind": "train", **TRAIN}, "layout": {"tp": 8}}))
    assert_refused(path, ["workload.grad_accumulation_fusion=false"], "priced for dense models", tmp_path)
