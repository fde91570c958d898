"""One GPT layer on one GPU, timed as the engine times it: the layer checks against measured layers
(tests/test_layer_check.py, tests/test_h200_measurements.py) share it."""

from simulator.cost import calibration, roofline
from simulator.cost.op_table import build_op_table
from simulator.cost.pipeline import block_seconds

ONE_GPU = {"kind": "hgx", "gpus": 8, "bandwidth": "450 GB/s", "used": 1}
"""One GPU of an 8-GPU NVLink node: nothing to communicate."""


def gpt_layer(make_scenario, *, preset: str, hidden: int, heads: int, ffn: int, seq: int, batch: int,
              dtype: str = "bf16"):
    """A one-layer GPT (pre-LayerNorm, GeLU MLP, learned positions, dropout 0.1) training one micro-batch of `batch`
    sequences on one GPU of `preset`, its attention the newest measured kernel (`flash`: the layers these tests
    compare with ran today's cuDNN and Transformer Engine)."""
    return make_scenario(
        model={"name": "gpt-layer", "layers": 1, "hidden": hidden, "heads": heads, "ffn": ffn, "ffn_kind": "gelu",
               "vocab": 32000, "rope": False, "dropout": 0.1},
        topology={"preset": preset, "domains": 1, "domain": ONE_GPU},
        workload={"seq_len": seq, "global_batch": batch, "micro_batch": batch, "dtype": dtype, "attention": "flash"},
        layout={"tp": 1, "pp": 1, "dp": 1})


def layer_seconds(scn) -> float:
    """Seconds of the layer's forward, input gradients and weight gradients, summed from its op table on the
    roofline the engine uses (cost.pipeline.block_seconds) at the scenario's calibration."""
    dev = scn.topology.device
    sums = block_seconds([build_op_table(scn)], dev.peak(scn.workload.dtype), dev.hbm_bandwidth,
                         calibration.for_training(scn), roofline.attention_peak(dev))
    return float(sums[0, 1, :3].sum())
