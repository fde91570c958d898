"""Pipeline schedules as data: ``SCHEDULES[name](p, m, v) -> ScheduleTable``.

p: pipeline devices; m: micro-batches per step; v: model chunks per device. gpipe, 1f1b,
zb-h1 and zb-h2 take v=1; zb-v, dualpipe and dualpipe-v take v=2; interleaved any v >= 2
(``CHUNKS`` gives each schedule's fixed chunk count, None where v is free). Invalid
parameters raise ``ValueError`` with one line naming the constraint and the numbers.
"""

from __future__ import annotations

from collections.abc import Callable

from .dualpipe import dualpipe, dualpipe_v
from .gpipe import gpipe
from .interleaved import interleaved
from .one_f_one_b import one_f_one_b
from .table import Action, ScheduleTable, in_flight, pair
from .zero_bubble import zb_h1, zb_h2, zb_v

SCHEDULES: dict[str, Callable[[int, int, int], ScheduleTable]] = {
    "gpipe": gpipe,
    "1f1b": one_f_one_b,
    "interleaved": interleaved,
    "zb-h1": zb_h1,
    "zb-h2": zb_h2,
    "zb-v": zb_v,
    "dualpipe": dualpipe,
    "dualpipe-v": dualpipe_v,
}

CHUNKS: dict[str, int | None] = {
    "gpipe": 1, "1f1b": 1, "interleaved": None, "zb-h1": 1, "zb-h2": 1,
    "zb-v": 2, "dualpipe": 2, "dualpipe-v": 2,
}

__all__ = ["CHUNKS", "SCHEDULES", "Action", "ScheduleTable", "in_flight", "pair"]
