"""Roofline op times, vectorized: an op takes max(FLOP / (peak * eff), bytes / (HBM * eff)) + overhead."""

from __future__ import annotations

import numpy as np

from .calibration import Calibration


def gemm_efficiency(shapes: np.ndarray, cal: Calibration) -> np.ndarray:
    """Fraction of peak reached by GEMMs of shape (..., 3) = (M, N, K): small dimensions waste tiles."""
    return cal.gemm * np.prod(tile_factor(shapes, cal), axis=-1)


def tile_factor(dim, cal: Calibration) -> np.ndarray:
    """Each GEMM dimension's factor of gemm_efficiency: d / (d + gemm_half_dim), d at least 1 (array)."""
    d = np.maximum(np.asarray(dim, dtype=float), 1.0)
    return d / (d + cal.gemm_half_dim)


def attention_efficiency(q_rows, keys, width, cal: Calibration) -> np.ndarray:
    """Fraction of peak a fused attention kernel reaches: the GEMM efficiency of its score tiles
    (query rows x keys x head width; arrays broadcast together), times cal.attention."""
    return cal.gemm * tile_factor(q_rows, cal) * tile_factor(keys, cal) * tile_factor(width, cal) * cal.attention


def op_times(flops, nbytes, shapes, peak: float, hbm_bw: float, cal: Calibration,
             fused_attention=None) -> np.ndarray:
    """Seconds per op: roofline of compute and HBM traffic plus a per-kernel overhead.

    flops (FLOP), nbytes (bytes), shapes (n, 3) GEMM dims; peak (FLOP/s) and hbm_bw (bytes/s) are the
    data-sheet figures; `fused_attention` (bool per op) scales those ops' efficiency by cal.attention.
    """
    flops, nbytes = np.asarray(flops, float), np.asarray(nbytes, float)
    eff = gemm_efficiency(shapes, cal)
    if fused_attention is not None:  # the shape of an attention row is (queries, keys, head width)
        eff = np.where(fused_attention, attention_efficiency(*np.moveaxis(shapes, -1, 0), cal), eff)
    compute = np.divide(flops, peak * eff, out=np.zeros_like(flops), where=flops > 0)
    memory = nbytes / (hbm_bw * cal.hbm)
    active = (flops > 0) | (nbytes > 0)
    return np.maximum(compute, memory) + np.where(active, cal.kernel_overhead, 0.0)


def mfu(model_flops: float, step_time: float, gpus: int, peak: float) -> float:
    """Model FLOPs utilization: model FLOP / (step time (s) * GPUs * dense peak (FLOP/s))."""
    return model_flops / (step_time * gpus * peak)
