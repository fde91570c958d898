"""The one device calibration: achieved fractions of data-sheet peaks, the same for every scenario.

A device preset may override any field under `efficiency:`; nothing else in simrack tunes a constant.
Fitted once against the Korthikanti et al. 2022 iteration times and checked against the NCCL figures
of simulator/data/published.yaml (see docs/calibration.md for the fit and its residuals).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """Achieved fractions of peak (dimensionless) and fixed overheads (seconds)."""

    gemm: float = 0.80
    """Fraction of dense peak FLOP/s a large GEMM reaches."""
    gemm_half_dim: float = 160.0
    """GEMM dimension (elements) at which that dimension alone halves efficiency: eff ~ x / (x + this)."""
    attention: float = 0.75
    """Fraction of the GEMM efficiency a fused (flash) attention kernel reaches."""
    hbm: float = 0.75
    """Fraction of HBM bandwidth a memory-bound kernel reaches."""
    nvlink: float = 0.82
    """Fraction of the NVLink per-direction bandwidth a collective reaches (NCCL bus bandwidth)."""
    scaleout: float = 0.90
    """Fraction of the NIC line rate a collective or send reaches."""
    kernel_overhead: float = 4e-6
    """Launch and synchronization time added per operator (seconds)."""


DEFAULT = Calibration()
KEYS = tuple(f.name for f in fields(Calibration))


def for_device(device) -> Calibration:
    """The calibration of a device: the default, with the preset's `efficiency` overrides."""
    overrides = getattr(device, "efficiency", None) or {}
    return replace(DEFAULT, **overrides)
