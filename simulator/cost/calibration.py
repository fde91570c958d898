"""The device model: achieved fractions of data-sheet peaks and fixed overheads, one set per device
generation (ampere, hopper, blackwell) and compute dtype, built from kernel measurements.

The figures are read from simulator/data/calibration.yaml, which `python -m simulator.cost.device_fit`
fits to the kernel measurements transcribed in simulator/data/kernels.yaml (GEMMs by shape and dtype,
FlashAttention forward and backward, streaming HBM, NCCL collectives, launch costs); no end-to-end
result tunes them. docs/calibration.md gives each parameter, its measurements and residuals. A device
preset may override any field under `efficiency:` (what-ifs, tests); nothing else tunes a constant.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import lru_cache

import numpy as np
import yaml

from ..data import path as data_path

GENERATIONS = ("ampere", "hopper", "blackwell")
GEMM_KEY = {"bf16": "bf16", "fp16": "bf16", "fp8": "fp8", "fp8-block": "fp8_block", "mxfp8": "fp8",
            "nvfp4": "fp4", "mxfp4": "fp4"}
"""Which fitted GEMM curve a compute dtype runs: per-tensor FP8 is cuBLASLt's, block-scaled FP8
(DeepSeek's 1x128 / 128x128) DeepGEMM's on Hopper; Blackwell scales blocks in hardware (MXFP8, NVFP4)."""


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """One generation's device model for one compute dtype: fractions (dimensionless), sizes in
    elements or tokens, times in seconds."""

    generation: str = "hopper"
    gemm: float = 0.88
    """Fraction of the dtype's dense peak a large GEMM reaches before the tile factors (eff_max)."""
    gemm_half_dim: float = 107.0
    """GEMM dimension (elements) at which that dimension alone halves efficiency: d / (d + this)."""
    gemm_ceiling: float = 0.80
    """The best fraction of peak any measured GEMM of this dtype reached: efficiency never exceeds it."""
    attention: float = 0.70
    """FlashAttention forward at head width 128 and long sequences, fraction of the BF16 dense peak."""
    attention_bwd: float = 0.59
    """FlashAttention backward, likewise (lower than forward: more, smaller GEMMs and atomics)."""
    attention_half_seq: float = 350.0
    """Keys a query attends to (causal: half the sequence) at which attention reaches half its peak fraction."""
    attention_head_scale: tuple[tuple[int, float], ...] = ((64, 0.73), (128, 1.0), (256, 1.07))
    """Attention efficiency at each head width relative to width 128 (interpolated in log2 width)."""
    hbm: float = 0.874
    """Fraction of the data-sheet HBM bandwidth streaming (memory-bound) kernels reach."""
    nvlink: float = 0.81
    """Ring collective bus bandwidth over the NVLink per-direction bandwidth (NCCL busbw, large messages)."""
    nvls: float = 0.0
    """NVLink SHARP all-reduce bus bandwidth over the NVLink bandwidth (0: no NVLS on this generation)."""
    scaleout: float = 0.94
    """Fraction of a NIC's line rate a collective or send across domains reaches."""
    ring_latency: float = 2.5e-6
    """Seconds one ring step of an NVLink collective costs beyond its bytes (NCCL's small-message alpha)."""
    kernel_overhead: float = 2.5e-6
    """Device time per kernel beyond its roofline (launch ramp and tail), kernels queued back to back."""
    graph_overhead: float = 0.5e-6
    """The same inside a CUDA graph (decode steps of serving engines)."""


KEYS = tuple(f.name for f in fields(Calibration))
DEFAULT = Calibration()


@lru_cache(maxsize=1)
def _fitted() -> dict:
    """simulator/data/calibration.yaml, parsed once."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built in: a tenth of the start-up
    return yaml.load(data_path("calibration.yaml").read_text(encoding="utf-8"), Loader=loader)  # noqa: S506


def generation_of(device) -> str:
    """A device's generation: its preset's `generation`, else read from its name (A100 ampere, H100 /
    H200 / H800 / H20 hopper, B200 / GB200 / B300 blackwell), else hopper."""
    given = getattr(device, "generation", None)
    if given:
        return given
    name = str(getattr(device, "name", "")).upper()
    if "A100" in name or "A800" in name:
        return "ampere"
    if "B200" in name or "B300" in name or "GB2" in name or "GB3" in name:
        return "blackwell"
    return "hopper"


@lru_cache(maxsize=64)
def fitted(generation: str, dtype: str) -> Calibration:
    """The fitted Calibration of a generation running GEMMs in `dtype` (a workload dtype)."""
    gen = _fitted()["generations"][generation]
    curves = gen["gemm"]
    key = GEMM_KEY.get(dtype, "bf16")
    if key not in curves:  # e.g. block-scaled FP8 on Blackwell runs the fp8 curve (MXFP8 in hardware)
        key = "fp8" if key.startswith("fp8") and "fp8" in curves else "bf16"
    g = curves[key]
    half = g["half_dim"] if g["half_dim"] > 1e-6 else curves["bf16"]["half_dim"]
    attn = gen["attention"]
    fwd, bwd = _attention(attn, "fwd"), _attention(attn, "bwd")
    col, launch = gen["collectives"], _fitted()["launch"]
    return Calibration(
        generation=generation, gemm=g["eff_max"], gemm_half_dim=half, gemm_ceiling=g["ceiling"]["value"],
        attention=fwd[128], attention_bwd=bwd[128],
        attention_half_seq=attn["fwd"].get("s_half", DEFAULT.attention_half_seq),
        attention_head_scale=tuple((d, fwd[d] / fwd[128]) for d in sorted(fwd)),
        hbm=gen["hbm"]["streaming"]["value"], nvlink=col["ring_busbw_fraction"]["value"],
        nvls=col.get("nvls_busbw_fraction", {}).get("value", 0.0),
        scaleout=col.get("nic_fraction_ib", col.get("nic_fraction_efa", {"value": DEFAULT.scaleout}))["value"],
        ring_latency=col["allreduce_alpha_intra"]["per_step_alpha_8gpu_ring"],
        kernel_overhead=launch["gemm_harness_fixed_time"]["deepgemm"], graph_overhead=launch["graph_residue_per_kernel"],
    )


def _attention(attn: dict, kind: str) -> dict[int, float]:
    """{head width: efficiency at long sequences} of one pass; a single figure is taken at width 128."""
    block = attn[kind]
    if "eff_max" in block:
        return {int(d): float(e) for d, e in block["eff_max"].items()}
    return {128: float(block["value"])}


def for_device(device, dtype: str = "bf16") -> Calibration:
    """The calibration of a device running `dtype`: its generation's fit, with the preset's
    `efficiency` overrides."""
    overrides = getattr(device, "efficiency", None) or {}
    return replace(fitted(generation_of(device), dtype), **overrides)


def head_scale(width, cal: Calibration) -> np.ndarray:
    """Attention efficiency at head width `width` relative to width 128 (log2 interpolation, held flat
    outside the measured widths)."""
    dims, scale = zip(*cal.attention_head_scale)
    return np.interp(np.log2(np.maximum(np.asarray(width, float), 1.0)), np.log2(dims), scale)


IDEAL_OVERRIDES = {"gemm": 1.0, "gemm_half_dim": 1e-9, "gemm_ceiling": 1.0, "attention": 1.0, "attention_bwd": 1.0,
                   "attention_half_seq": 1e-9, "hbm": 1.0, "nvlink": 1.0, "scaleout": 1.0, "ring_latency": 1e-12,
                   "kernel_overhead": 1e-12, "graph_overhead": 1e-12}
"""A device's `efficiency:` overrides for the pure roofline (every fraction 1, no overheads, NVLS off):
what closed-form references such as "How to Scale Your Model" assume."""
IDEAL = replace(DEFAULT, attention_head_scale=((128, 1.0),), **IDEAL_OVERRIDES)
"""The pure-roofline Calibration."""
