"""Serving attention: one layer's attention core on one TP rank for a step's sequences, priced as today's kernels
run it.

Each sequence i brings n_i new queries on c_i cached keys; query j of the chunk sees c_i + j keys (causal), so a
sequence has P_i = n_i c_i + n_i (n_i + 1) / 2 query-key pairs. Decode sequences (n_i = 1) and prefill chunks run as
two kernels (FlashInfer / FlashMLA / TensorRT-LLM's XQA for decode, FlashAttention for prefill), each the roofline of
its own arithmetic intensity:

- compute: FLOP / (16-bit peak x efficiency); decode at the measured decode-kernel fraction (calibration
  `decode_attention`, FlashMLA's 660 TFLOP/s of 989 on H800), prefill at FlashAttention's fitted curve in the keys a
  query sees and the head width. The math is 16-bit whatever the cache's dtype (an FP8 cache is dequantized).
- memory: the KV cache read once per sequence at `kv_dtype` bytes plus the queries and outputs, at the decode
  kernel's streaming fraction of HBM (`hbm_decode`, FlashMLA's 3000 GB/s of 3350). An FP8 cache is dequantized to
  16-bit math on CUDA cores, which lowers the compute-bound decode rate (`decode_attention_fp8kv`: FlashMLA's
  FP8-cache kernel, 460 TFLOP/s against 660 with a BF16 cache).

GQA/MHA: 4 heads head_dim FLOP a pair. Multi-head latent attention (DeepSeek-V2/V3) runs decode in the absorbed form
(MQA over the cached latent: 2 heads (2 kv_lora_rank + rope) FLOP a pair, ~17 MFLOP a pair over DeepSeek-V3's 61
layers) and prefill in the non-absorbed form (per-head keys of qk and values of v: 2 heads (qk + v) FLOP a pair,
~5 MFLOP), as SGLang and vLLM do; a prefill chunk on cached tokens first up-projects their latent to keys and values
(a GEMM of c_i tokens, written to and read from HBM).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cost import roofline
from ..cost.kv_cache import kv_split
from ..cost.ops import ACT_BYTES, mla_dims, query_key_pairs

ACT = float(ACT_BYTES)


def attention_dims(model, tp: int, sharding: str = "heads") -> dict:
    """Per-rank attention sizes: query heads, KV heads (a rank's average share: a fraction when the sequences split
    past the heads, `sharding` batch), head widths; MLA's latent and rope. Batch sharding moves no attention work: a
    rank runs its head group's query heads for its share of the sequences, as many query-key pairs on average as the
    heads split gives it; only the cache it reads (parts' `kv_bytes`) shrinks."""
    heads, kv = model.heads // tp, model.cache_heads / kv_split(model, tp, sharding)
    if model.mla is None:
        return {"heads": heads, "kv_heads": kv, "qk": model.head_dim, "v": model.head_dim, "mla": False}
    qk, v, rope = mla_dims(model)
    return {"heads": heads, "kv_heads": kv, "qk": qk, "v": v, "mla": True,
            "latent": model.mla.kv_lora_rank, "rope": rope}


@dataclass(frozen=True)
class AttentionCosts:
    """The attention core of one layer on one TP rank (SI units): `parts(new, ctx)` gives each sequence's compute and
    memory seconds and FLOP, for the decode and prefill kernels apart."""

    dims: dict
    peak16: float  # FLOP/s of 16-bit tensor work
    hbm_bw: float
    cal: object
    dequant: bool = False  # an 8-bit (or narrower) cache, converted to 16 bits for the math
    window: int = 0  # keys a query of a windowed layer sees at most; 0: no sliding window
    windowed: float = 0.0  # share of the layers that attend through the window

    def _forms(self) -> tuple[float, float, float, float]:
        """(FLOP a pair, elements of queries and outputs a query) of the decode form, then of the prefill form."""
        a = self.dims
        if not a["mla"]:
            return (4.0 * a["heads"] * a["qk"], 2.0 * a["heads"] * a["qk"]) * 2
        absorbed = 2 * a["latent"] + a["rope"]
        return (2.0 * a["heads"] * absorbed, a["heads"] * absorbed, 2.0 * a["heads"] * (a["qk"] + a["v"]),
                2.0 * a["heads"] * (a["qk"] + a["v"]))

    def exchanged(self) -> float:
        """Elements of the queries and outputs a token's attention core takes in and gives back on one rank (the
        decode form's): what batch sharding's two all-to-alls move."""
        return self._forms()[1]

    def per_pair(self, decode: np.ndarray) -> np.ndarray:
        """FLOP per query-key pair: absorbed MLA for decode rows, non-absorbed for prefill; GQA 4 heads head_dim."""
        pair_d, _, pair_p, _ = self._forms()
        return np.where(decode, pair_d, pair_p)

    def parts(self, new: np.ndarray, ctx: np.ndarray, kv_bytes: float) -> dict:
        """Per sequence: `decode` (bool), `compute` and `memory` seconds, `flops` (the attention's, model FLOP), the
        cache holding `kv_bytes` a token on this rank and layer (kv_dtype); averaged over the layers with a sliding
        window: in the windowed share query j of a chunk sees min(c_i + j, window) keys and reads as many."""
        full = self._parts(new, ctx, kv_bytes, None)
        if not self.window or not self.windowed:
            return full
        local = self._parts(new, ctx, kv_bytes, self.window)
        f = self.windowed
        blend = {k: (1 - f) * full[k] + f * local[k] for k in ("compute", "memory", "flops")}
        return {"decode": full["decode"], **blend}

    def _parts(self, new: np.ndarray, ctx: np.ndarray, kv_bytes: float, window: int | None) -> dict:
        """parts() of layers whose queries see every earlier key (`window` None) or the last `window` of them."""
        a, cal = self.dims, self.cal
        pair_d, io_d, pair_p, io_p = self._forms()
        decode = new == 1
        pairs = query_key_pairs(new, ctx, window)
        read = ctx + new if window is None else np.minimum(ctx + new, window)  # keys the kernel reads
        stream = self.hbm_bw * cal.hbm_decode
        decode_eff = cal.decode_attention_fp8kv if self.dequant else cal.decode_attention
        if decode.all():  # a decode-only step: one kernel, one form
            flops = pair_d * pairs
            return {"decode": decode, "compute": flops / (self.peak16 * decode_eff),
                    "memory": (read * kv_bytes + new * (io_d * ACT)) / stream, "flops": flops}
        flops = np.where(decode, pair_d, pair_p) * pairs
        prefill_eff = roofline.attention_efficiency(pairs / np.maximum(new, 1.0), a["qk"], cal)
        compute = flops / (self.peak16 * np.where(decode, decode_eff, prefill_eff))
        memory = (read * kv_bytes + new * np.where(decode, io_d, io_p) * ACT) / stream
        if a["mla"]:  # a prefill chunk on cached tokens up-projects their latent to keys and values first
            up = np.where(decode, 0.0, ctx)
            width_kv = a["heads"] * (a["qk"] - a["rope"] + a["v"])
            shape = np.stack(np.broadcast_arrays(up, float(width_kv), float(a["latent"])), axis=-1)
            eff = roofline.gemm_efficiency(shape, cal)
            compute = compute + np.divide(2.0 * up * width_kv * a["latent"], self.peak16 * eff,
                                          out=np.zeros_like(up), where=up > 0)
            memory = memory + up * 2 * width_kv * ACT / stream
        return {"decode": decode, "compute": compute, "memory": memory, "flops": flops}

    def seconds(self, new: np.ndarray, ctx: np.ndarray, kv_bytes: float, ranks, nranks: int,
                overhead: float) -> tuple[float, float]:
        """(seconds of the busiest attention replica, FLOP of all): per replica, each kernel (decode, prefill) the
        longer of its sequences' compute and memory, plus one launch per kernel run."""
        p = self.parts(new, ctx, kv_bytes)
        decode, compute, memory = p["decode"], p["compute"], p["memory"]
        flops = float(p["flops"].sum())
        kinds = (decode,) if decode.all() else (decode, ~decode)
        if ranks is None:
            t = 0.0
            for k in kinds:
                c, m = (compute, memory) if len(kinds) == 1 else (compute[k], memory[k])
                if len(c):
                    t += max(float(c.sum()), float(m.sum())) + overhead
            return t, flops
        slot = 2 * ranks + (~decode)  # (replica, kernel) of each sequence
        busy = np.maximum(np.bincount(slot, compute, 2 * nranks), np.bincount(slot, memory, 2 * nranks))
        ran = np.array([True, not decode.all()]) & np.array([decode.any(), True])
        return float(np.max(busy.reshape(nranks, 2).sum(axis=1))) + overhead * float(ran.sum()), flops
