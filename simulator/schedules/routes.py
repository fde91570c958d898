"""Placement of virtual stages on devices, and the one-line parameter checks schedules share."""

from __future__ import annotations

import numpy as np


def require(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``; messages name the constraint and numbers."""
    if not ok:
        raise ValueError(message)


def check_basic(name: str, p: int, m: int) -> None:
    """At least one device and one micro-batch."""
    require(p >= 1, f"{name} needs at least 1 pipeline stage, got p={p}")
    require(m >= 1, f"{name} needs at least 1 micro-batch, got m={m}")


def check_chunks(name: str, v: int, expected: int) -> None:
    """Schedules with a fixed number of chunks per device accept exactly that number."""
    require(v == expected, f"{name} uses {expected} chunk{'s' * (expected > 1)} per device, got v={v}")


def looped_routes(p: int, v: int) -> np.ndarray:
    """Megatron placement: virtual stage k on device k % p, chunk k // p. Shape (1, p*v, 2)."""
    k = np.arange(p * v)
    return np.stack([k % p, k // p], axis=-1)[None]


def v_routes(p: int) -> np.ndarray:
    """V shape: device d holds vstage d (chunk 0) and vstage 2p-1-d (chunk 1). Shape (1, 2p, 2)."""
    k = np.arange(2 * p)
    device = np.where(k < p, k, 2 * p - 1 - k)
    return np.stack([device, (k >= p).astype(np.int64)], axis=-1)[None]


def dual_routes(p: int) -> np.ndarray:
    """DualPipe: direction 0 walks devices 0..p-1 on chunk 0, direction 1 walks p-1..0 on chunk 1."""
    k = np.arange(p)
    forward = np.stack([k, np.zeros(p, dtype=np.int64)], axis=-1)
    reverse = np.stack([p - 1 - k, np.ones(p, dtype=np.int64)], axis=-1)
    return np.stack([forward, reverse])
