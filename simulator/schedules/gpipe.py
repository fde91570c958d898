"""GPipe (Huang et al. 2019): all forwards, then all backwards, on every device."""

from __future__ import annotations

import numpy as np

from .routes import check_basic, check_chunks, looped_routes
from .table import Action, ScheduleTable


def gpipe(p: int, m: int, v: int = 1) -> ScheduleTable:
    """Device d runs F0..F(m-1) then B0..B(m-1); holds all m micro-batches' activations."""
    check_basic("gpipe", p, m)
    check_chunks("gpipe", v, 1)
    order = tuple(Action("F", i) for i in range(m)) + tuple(Action("B", i) for i in range(m))
    return ScheduleTable("gpipe", p, m, 1, (order,) * p, looped_routes(p, 1),
                         np.zeros(m, dtype=np.int64), split_backward=False)
