"""Pipeline schedules as data: the registry ``SPECS[name]`` and ``SCHEDULES[name](p, m, v) -> ScheduleTable``.

p: pipeline devices; m: micro-batches per step; v: model chunks per device. gpipe, 1f1b,
zb-h1 and zb-h2 take v=1; zb-v, dualpipe and dualpipe-v take v=2; interleaved any v >= 2
(``CHUNKS`` gives each schedule's fixed chunk count, None where v is free). Invalid
parameters raise ``ValueError`` with one line naming the constraint and the numbers.

Each schedule is one line below (a ScheduleSpec, simulator.schedules.registry): adding one is its
module (the table builder and its Codes builder) plus that line. SCHEDULES and CHUNKS are views of it.
"""

from __future__ import annotations

from collections.abc import Callable

from . import codes
from .combined import combined, combined_in_flight
from .dualpipe import dualpipe, dualpipe_v
from .gpipe import gpipe
from .interleaved import interleaved
from .one_f_one_b import one_f_one_b
from .registry import SPECS, ScheduleSpec
from .routes import dual_routes, looped_routes, v_routes
from .table import Action, ScheduleTable, in_flight, pair
from .zero_bubble import zb_h1, zb_h2, zb_v


def _interleaved_rule(pp: int, m: int, m_text: str | None = None) -> str | None:
    """Megatron's interleaved schedule runs micro-batches in groups of pp."""
    if m % pp:
        return f"interleaved needs micro-batches per pipeline ({m_text or m}) divisible by pp ({pp})"
    return None


def _dualpipe_rule(pp: int, m: int, m_text: str | None = None) -> str | None:
    """DualPipe's two directions meet in the middle and split the micro-batches in halves."""
    if pp % 2:
        return f"dualpipe needs an even number of stages, got pp={pp}"
    if m % 2:
        return f"dualpipe needs an even number of micro-batches per pipeline, got {m_text or m}"
    return None


_v = lambda p, v: v_routes(p)  # noqa: E731
SPECS.update((s.name, s) for s in (
    ScheduleSpec(name="gpipe", build=gpipe, codes=codes.gpipe, chunks=1, split_backward=False, routes=looped_routes,
                 steady=lambda p, v: (2, 1)),
    ScheduleSpec(name="1f1b", build=one_f_one_b, codes=codes.one_f_one_b, chunks=1, split_backward=False,
                 routes=looped_routes, steady=lambda p, v: (p + 1, 1)),
    ScheduleSpec(name="interleaved", build=interleaved, codes=codes.interleaved, chunks=None, split_backward=False,
                 routes=looped_routes, steady=lambda p, v: (3 * p, p), rule=_interleaved_rule),
    ScheduleSpec(name="zb-h1", build=zb_h1, codes=codes.zb_h1, chunks=1, split_backward=True, routes=looped_routes,
                 steady=lambda p, v: (p + 1, 1)),
    ScheduleSpec(name="zb-h2", build=zb_h2, codes=codes.zb_h2, chunks=1, split_backward=True, routes=looped_routes,
                 steady=lambda p, v: (3 * p, 1), codes_together=codes.zb_h2_batch),
    ScheduleSpec(name="zb-v", build=zb_v, codes=codes.zb_v, chunks=2, split_backward=True, routes=_v,
                 steady=lambda p, v: (2 * p + 1, 1)),
    ScheduleSpec(name="dualpipe", build=dualpipe, codes=codes.dualpipe, chunks=2, split_backward=True,
                 routes=lambda p, v: dual_routes(p), steady=lambda p, v: (2 * p + 2, 2), rule=_dualpipe_rule,
                 copies_hold_model=True),
    ScheduleSpec(name="dualpipe-v", build=dualpipe_v, codes=codes.dualpipe_v, chunks=2, split_backward=True,
                 routes=_v, steady=lambda p, v: (2 * p + 1, 1)),
))

SCHEDULES: dict[str, Callable[[int, int, int], ScheduleTable]] = {n: s.build for n, s in SPECS.items()}
CHUNKS: dict[str, int | None] = {n: s.chunks for n, s in SPECS.items()}
SCHEDULE_NAMES: tuple[str, ...] = tuple(SPECS)
"""Schedule names in registry order (the search's schedule codes index it)."""

__all__ = ["CHUNKS", "SCHEDULES", "SCHEDULE_NAMES", "SPECS", "Action", "ScheduleSpec", "ScheduleTable", "combined",
           "combined_in_flight", "in_flight", "pair"]
