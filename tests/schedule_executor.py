"""Reference executor for schedule tests (no simpy): run each device's order in sequence.

Each slot starts at max(device free, its dependencies done), communication is free, and it
lasts the duration of its kind (``F``, ``B``, ``W``; an overlapped pair lasts ``FB``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.schedules.table import Action, ScheduleTable


class Deadlock(RuntimeError):
    """Some device's next action can never become ready."""


@dataclass(frozen=True)
class Run:
    """Timeline of one executed table: per-device start/end arrays aligned with the orders."""

    start: list[np.ndarray]
    end: list[np.ndarray]
    busy: np.ndarray

    @property
    def makespan(self) -> float:
        return float(max(e[-1] for e in self.end if len(e)))

    @property
    def idle(self) -> np.ndarray:
        """Per device: makespan minus busy time (idle before, between and after its slots)."""
        return self.makespan - self.busy

    @property
    def span(self) -> np.ndarray:
        """Per device: end of its last slot minus start of its first."""
        return np.array([e[-1] - s[0] for s, e in zip(self.start, self.end)])

    @property
    def inner_idle(self) -> np.ndarray:
        """Per device: idle time between its first start and last end."""
        return self.span - self.busy

    @property
    def bubble_fraction(self) -> float:
        """Mean over devices of idle / makespan (DESIGN.md's definition)."""
        return float(np.mean(self.idle) / self.makespan)


def _duration(slot: Action, times: dict[str, float]) -> float:
    return times["FB"] if slot.paired is not None else times[slot.kind]


def execute(table: ScheduleTable, F: float = 1.0, B: float = 1.0, W: float = 1.0,
            FB: float | None = None) -> Run:
    """Run ``table`` with per-kind durations; ``FB`` defaults to F + B (no overlap gain)."""
    times = {"F": F, "B": B, "W": W, "FB": F + B if FB is None else FB}
    deps = [[[(d, (a.kind, a.mb, a.chunk)) for d, a in table.dependencies(dev, s)]
             for s in order] for dev, order in enumerate(table.orders)]
    done: dict[tuple[int, tuple[str, int, int]], float] = {}
    pos = [0] * table.p
    free = [0.0] * table.p
    start = [np.zeros(len(o)) for o in table.orders]
    end = [np.zeros(len(o)) for o in table.orders]
    remaining = sum(len(o) for o in table.orders)
    while remaining:
        progressed = False
        for dev, order in enumerate(table.orders):
            while pos[dev] < len(order):
                i = pos[dev]
                ready = [done.get(dep) for dep in deps[dev][i]]
                if any(t is None for t in ready):
                    break
                s = max([free[dev], *ready])
                e = s + _duration(order[i], times)
                for a in order[i].halves():
                    done[(dev, (a.kind, a.mb, a.chunk))] = e
                start[dev][i], end[dev][i], free[dev] = s, e, e
                pos[dev] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            stuck = {d: str(table.orders[d][pos[d]]) for d in range(table.p) if pos[d] < len(table.orders[d])}
            raise Deadlock(f"{table.name}: no device can proceed; next actions {stuck}")
    busy = np.array([float(np.sum(e - s)) for s, e in zip(start, end)])
    return Run(start, end, busy)
