"""Roofline op times, vectorized: an op takes max(FLOP / (peak * eff), bytes / (HBM * eff)) plus its
kernel's fixed time; the efficiencies are the device model's (simulator.cost.calibration)."""

from __future__ import annotations

import numpy as np

from .calibration import Calibration, head_scale


def gemm_efficiency(shapes: np.ndarray, cal: Calibration) -> np.ndarray:
    """Fraction of the data-sheet peak reached by GEMMs of shape (..., 3) = (M, N, K): small dimensions
    waste tiles; never above the best measured GEMM of the dtype (cal.gemm_ceiling); at the sustained
    clock of a loaded GPU (cal.clock)."""
    return np.minimum(cal.gemm * np.prod(tile_factor(shapes, cal), axis=-1), cal.gemm_ceiling) * cal.clock


def tile_factor(dim, cal: Calibration) -> np.ndarray:
    """Each GEMM dimension's factor of gemm_efficiency: d / (d + gemm_half_dim), d at least 1 (array)."""
    d = np.maximum(np.asarray(dim, dtype=float), 1.0)
    return d / (d + cal.gemm_half_dim)


def attention_efficiency(keys, width, cal: Calibration, backward: bool = False) -> np.ndarray:
    """Fraction of the attention dtype's peak a fused (flash) attention kernel reaches when each query
    attends to `keys` keys on average (causal: half the sequence) at head width `width`: the measured
    long-sequence fraction of the pass, times keys / (keys + cal.attention_half_seq)."""
    keys = np.maximum(np.asarray(keys, dtype=float), 1.0)
    top = cal.attention_bwd if backward else cal.attention
    return top * head_scale(width, cal, backward) * keys / (keys + cal.attention_half_seq) * cal.clock


def attention_peak(device) -> float:
    """FLOP/s of 16-bit tensor work: attention, the router and the LM head, which stay in BF16 under
    low-precision GEMMs."""
    peaks = device.peak_flops
    return peaks.get("bf16", peaks.get("fp16", max(peaks.values())))


def op_times(flops, nbytes, shapes, peak: float, hbm_bw: float, cal: Calibration, fused_attention=None,
             backward: bool = False, peak16: float | None = None, precise=None,
             overhead: float | None = None) -> np.ndarray:
    """Seconds per op: roofline of compute and HBM traffic plus a per-kernel fixed time.

    flops (FLOP), nbytes (bytes), shapes (..., 3) GEMM dims; peak (FLOP/s) and hbm_bw (bytes/s) are the
    data-sheet figures. `fused_attention` (bool per op) marks flash-attention rows, whose shape is
    (queries, keys, head width) of a causal kernel: they run at attention_efficiency (the backward
    pass's when `backward`). `precise` rows (bool) and attention run at `peak16`, the 16-bit peak
    (default `peak`). `overhead`: seconds per kernel (default cal.kernel_overhead; inside CUDA graphs
    cal.graph_overhead), an array broadcast against the rows.
    """
    compute, memory, fixed = op_parts(flops, nbytes, shapes, peak, hbm_bw, cal, fused_attention, backward, peak16,
                                      precise, overhead)
    return np.maximum(compute, memory) + fixed


def op_parts(flops, nbytes, shapes, peak: float, hbm_bw: float, cal: Calibration, fused_attention=None,
             backward: bool = False, peak16: float | None = None, precise=None,
             overhead: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(compute seconds, HBM seconds, fixed seconds) per op, the three terms of op_times (same arguments)."""
    flops, nbytes = np.asarray(flops, float), np.asarray(nbytes, float)
    eff = gemm_efficiency(shapes, cal)
    rate = np.full(eff.shape, float(peak))
    if precise is not None:
        rate = np.where(precise, float(peak16 or peak), rate)
    if fused_attention is not None and np.any(fused_attention):
        attn = attention_efficiency(shapes[..., 1] / 2, shapes[..., 2], cal, backward)
        eff = np.where(fused_attention, attn, eff)
        rate = np.where(fused_attention, float(peak16 or peak), rate)
    compute = np.divide(flops, rate * eff, out=np.zeros_like(flops), where=flops > 0)
    memory = nbytes / (hbm_bw * cal.hbm)
    active = (flops > 0) | (nbytes > 0)
    fixed = cal.kernel_overhead if overhead is None else overhead
    return compute, memory, np.where(active, fixed, 0.0)


def mfu(model_flops: float, step_time: float, gpus: int, peak: float) -> float:
    """Model FLOPs utilization: model FLOP / (step time (s) * GPUs * dense peak (FLOP/s))."""
    return model_flops / (step_time * gpus * peak)
