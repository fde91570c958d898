"""Interleaved 1F1B (Narayanan et al. 2021, Sec 2.2.2) in Megatron-LM's order."""

from __future__ import annotations

import numpy as np

from .routes import check_basic, looped_routes, require
from .table import Action, ScheduleTable


def _nth(k: int, p: int, v: int, backward: bool) -> tuple[int, int]:
    """(micro-batch, chunk) of a device's k-th forward (or backward): groups of p micro-batches."""
    chunk = (k // p) % v
    return (k // (p * v)) * p + k % p, (v - 1 - chunk if backward else chunk)


def interleaved_order(p: int, m: int, v: int, d: int) -> tuple[Action, ...]:
    """Device d: Megatron's warm-up of 2(p-1-d) + (v-1)p forwards (capped at m*v), then 1F1B,
    then cool-down. (Megatron makes every device all-warm-up when m == p; the cap already
    does so on device 0, and the bubble is the same.)"""
    total = m * v
    warm = min(2 * (p - 1 - d) + (v - 1) * p, total)
    order = [Action("F", *_nth(k, p, v, False)) for k in range(warm)]
    for j in range(total - warm):
        order += (Action("F", *_nth(warm + j, p, v, False)), Action("B", *_nth(j, p, v, True)))
    order += (Action("B", *_nth(j, p, v, True)) for j in range(total - warm, total))
    return tuple(order)


def interleaved(p: int, m: int, v: int = 2) -> ScheduleTable:
    """Interleaved 1F1B: device d chunk c holds virtual stage c*p + d; needs m % p == 0, v >= 2."""
    check_basic("interleaved", p, m)
    require(v >= 2, f"interleaved needs at least 2 chunks per device, got v={v}")
    require(m % p == 0, f"interleaved needs micro-batches (m={m}) divisible by pipeline stages (p={p})")
    orders = tuple(interleaved_order(p, m, v, d) for d in range(p))
    return ScheduleTable("interleaved", p, m, v, orders, looped_routes(p, v),
                         np.zeros(m, dtype=np.int64), split_backward=False)
