"""The schedule registry: one ScheduleSpec per pipeline schedule, every fact about it in one entry.

A ScheduleSpec says how to build the schedule's table (and the integer Codes the analytic pass
reads), how many chunks a device holds, whether the backward splits into B and W, where each
virtual stage sits (routes), how many virtual stages the layers split over, which (pp, micro-batch)
counts the schedule accepts, and from which micro-batch count its analytic structure grows linearly.
simulator.schedules fills SPECS, one line per schedule, in the order the search numbers them; the
schema (simulator.scenario.spec), the search (simulator.whatif.space, simulator.whatif.candidates,
simulator.whatif.analytic) and the structures read it. The table lives here, apart from the package's __init__, so that
schedules.codes reads it without an import cycle (the entries refer to the builders there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .routes import check_basic
from .table import ScheduleTable

if TYPE_CHECKING:  # annotations only: codes.py reads SPECS
    from .codes import Codes


def any_count(pp: int, m: int, m_text: str | None = None) -> str | None:
    """The rule of a schedule that runs any pp and micro-batch count: no problem."""
    return None


@dataclass(frozen=True, kw_only=True)
class ScheduleSpec:
    """A pipeline schedule: its builders and the facts the schema and the search need without one."""

    name: str
    build: Callable[[int, int, int], ScheduleTable]
    """(p stages, m micro-batches, v chunks) -> the schedule's table."""
    codes: Callable[[int, Sequence[int], int], Codes]
    """(p, micro-batch counts, v) -> the tables at each count as integer arrays (analytic pass)."""
    chunks: int | None
    """Chunks (virtual stages) per device; None: any number from 2 (interleaved)."""
    split_backward: bool
    """B computes input gradients only and a separate W the weight gradients."""
    routes: Callable[[int, int], np.ndarray]
    """(p, v) -> (directions, virtual stages, 2) (device, chunk) of each virtual stage, as the table's."""
    steady: Callable[[int, int], tuple[int, int]]
    """(p, v) -> (m1, period): from m1 micro-batches on, adding `period` only lengthens the steady
    state, so the analytic structure extends linearly in m (tests check it for p up to 16)."""
    rule: Callable[..., str | None] = any_count
    """(pp, m, m_text=None) -> what is wrong with m micro-batches on pp stages (m_text: how m was
    counted, for the message), or None."""
    copies_hold_model: bool = False
    """Two pipeline copies each hold the whole model (DualPipe): the layers split over pp stages."""
    codes_together: Callable[[list[tuple[int, tuple]]], list[Codes]] | None = None
    """Codes of several (p, micro-batch counts) built in one pass, where that is faster (zb-h2)."""

    def table(self, p: int, m: int, v: int) -> ScheduleTable:
        """The table of `build(p, m, v)` from the integer Codes (numpy; tests/test_schedule_codes.py
        checks them slot by slot against the tables): its orders are Actions only when read. The same
        parameters are refused with a ValueError naming the constraint."""
        check_basic(self.name, p, m)
        problem = self.chunk_problem(v) or self.rule(p, m)
        if problem:
            raise ValueError(problem)
        return ScheduleTable.from_codes(self.codes(p, (m,), v))

    def virtual_stages(self, pp: int, chunks: int) -> int:
        """Stages the model's layers split over."""
        return pp if self.copies_hold_model else pp * chunks

    def chunk_problem(self, chunks: int) -> str | None:
        """What is wrong with this many chunks per device, or None."""
        if self.chunks is None:
            return None if chunks >= 2 else f"schedule {self.name} needs chunks >= 2, got {chunks}"
        if chunks == self.chunks:
            return None
        if self.chunks == 1:
            return f"schedule {self.name} runs one chunk per device, got chunks {chunks}"
        return f"schedule {self.name} needs chunks {self.chunks}, got {chunks}"


SPECS: dict[str, ScheduleSpec] = {}
"""Every schedule by name, in the search's order; filled by simulator.schedules."""
