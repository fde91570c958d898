"""1F1B, PipeDream-Flush (Narayanan et al. 2021, Sec 2.2.1)."""

from __future__ import annotations

import numpy as np

from .routes import check_basic, check_chunks, looped_routes
from .table import Action, ScheduleTable


def one_f_one_b_order(p: int, m: int, d: int) -> tuple[Action, ...]:
    """Device d: min(p-1-d, m) warm-up forwards, then F/B alternating, then the remaining B."""
    warm = min(p - 1 - d, m)
    order = [Action("F", i) for i in range(warm)]
    for j in range(m - warm):
        order += (Action("F", warm + j), Action("B", j))
    order += (Action("B", j) for j in range(m - warm, m))
    return tuple(order)


def one_f_one_b(p: int, m: int, v: int = 1) -> ScheduleTable:
    """1F1B on p devices: at most min(p - d, m) micro-batches in flight on device d."""
    check_basic("1f1b", p, m)
    check_chunks("1f1b", v, 1)
    orders = tuple(one_f_one_b_order(p, m, d) for d in range(p))
    return ScheduleTable("1f1b", p, m, 1, orders, looped_routes(p, 1),
                         np.zeros(m, dtype=np.int64), split_backward=False)
