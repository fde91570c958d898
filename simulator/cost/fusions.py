"""What a serving engine fuses that training's operator rows keep apart: serving_rows is cost.ops.layer_rows at
inference with two fusions every current engine runs (vLLM's fused_add_rms_norm and its RMSNorm + quant and
SiLU-and-mul + quant compile passes, SGLang's kernels, TensorRT-LLM's fused norm and activation plugins):

- the residual add in the RMSNorm that follows it: one kernel reads the block's output and the residual and writes the
  new residual and the normalized output, where training runs the add (Megatron's bias-dropout-add) and the norm apart;
- a low-precision GEMM's input quantized by the norm or activation that produces it: that kernel writes the operand
  at the dtype's bytes and the cast row (cost.ops.cast_rows) goes. Casts after anything else stay (the attention
  output's, which vLLM leaves unfused by default; the routed experts' after the token permutation), as does RoPE.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .ops import ACT_BYTES, CAST_BYTES, OpRows, layer_rows

RESIDUAL_INTO_NORM = {"residual1": "norm2", "residual2": "norm1"}
"""The residual add of each half of a layer and the norm it fuses into (residual2 into the next layer's first)."""


def serving_rows(model, tp: int, sp: bool = False, dtype: str = "bf16") -> OpRows:
    """A layer's operator rows at inference on one TP rank, as a serving engine runs them."""
    return fused(layer_rows(model, tp, sp, dtype, training=False), dtype)


def fused(rows: OpRows, dtype: str) -> OpRows:
    """`rows` with each residual add inside the norm after it and each cast inside the norm or activation before
    it (one TP rank, memory-bound io in 16-bit elements a token)."""
    io, keep = rows.io.copy(), np.ones(len(rows.name), dtype=bool)
    at = {name: i for i, name in enumerate(rows.name)}
    for residual, norm in RESIDUAL_INTO_NORM.items():
        if residual in at and norm in at:  # reads x and the residual, writes both outputs: norm io + residual io - h
            io[at[norm]] += io[at[residual]] - io[at[norm]] / 2
            keep[at[residual]] = False
    cast = CAST_BYTES.get(dtype)
    for i, name in enumerate(rows.name):
        if cast is None or not name.endswith("-cast") or i == 0 or rows.block[i] != rows.block[i - 1]:
            continue
        if _quantizes_output(rows.name[i - 1]):  # the producer writes k elements at `cast` bytes, not 16-bit
            io[i - 1] -= io[i] * (ACT_BYTES - cast) / (ACT_BYTES + cast)
            keep[i] = False
    return replace(rows, io=io).where(keep)


def _quantizes_output(producer: str) -> bool:
    """Whether a row's kernel can write its output quantized: an RMSNorm or a (gated) activation."""
    return producer.endswith("norm") or producer in ("norm1", "norm2") or producer.endswith("activation")
