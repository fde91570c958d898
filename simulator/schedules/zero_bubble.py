"""Zero-bubble schedules (Qi et al. 2023, arXiv 2401.10241): ZB-H1, ZB-H2, ZB-V.

The backward is split: B computes input gradients, W weight gradients; W of a micro-batch
may run any time after its B, so W passes fill what would be bubbles.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .recipe import resolve
from .routes import check_basic, check_chunks, looped_routes, v_routes
from .table import Action, ScheduleTable


def zb_h1_order(p: int, m: int, d: int) -> tuple[Action, ...]:
    """Device d: 1F1B with B input-only and each W deferred by d steady steps.

    With m >= p every device then holds p micro-batches (F run, W not yet), 1F1B's
    first-device peak, and the deferred W passes fill the cool-down.
    """
    warm = min(p - 1 - d, m)
    order = [Action("F", i) for i in range(warm)]
    waiting: deque[int] = deque()
    for j in range(m):
        if j < m - warm:
            order.append(Action("F", warm + j))
        order.append(Action("B", j))
        waiting.append(j)
        if j >= d or j >= m - warm:
            order.append(Action("W", waiting.popleft()))
    order += (Action("W", j) for j in waiting)
    return tuple(order)


def _single(name: str, p: int, m: int, orders: list) -> ScheduleTable:
    return ScheduleTable(name, p, m, 1, tuple(orders), looped_routes(p, 1),
                         np.zeros(m, dtype=np.int64), split_backward=True)


def zb_h1(p: int, m: int, v: int = 1) -> ScheduleTable:
    """ZB-H1: bubble (p-1)(T_F + T_B - T_W), same peak activations as 1F1B (p on device 0)."""
    check_basic("zb-h1", p, m)
    check_chunks("zb-h1", v, 1)
    return _single("zb-h1", p, m, [zb_h1_order(p, m, d) for d in range(p)])


class _UnitTimeList:
    """Unit-time list schedule of a one-chunk pipeline (T_F = T_B = T_W = 1): at each step
    every device takes a ready B, else an F while it holds fewer than ``cap`` micro-batches
    (F run, W not yet), else its oldest pending W. Slots started at t end at t + 1."""

    NEVER = 1 << 60

    def __init__(self, p: int, m: int, cap: int) -> None:
        self.p, self.m, self.cap = p, m, cap
        self.next_f, self.next_b, self.held = [0] * p, [0] * p, [0] * p
        self.f_end = [[self.NEVER] * m for _ in range(p)]
        self.b_end = [[self.NEVER] * m for _ in range(p)]
        self.waiting: list[deque[int]] = [deque() for _ in range(p)]

    def step(self, d: int, t: int) -> Action | None:
        """The action device d starts at time t, or None when nothing is ready."""
        j = self.next_b[d]
        if j < self.m and (self.b_end[d + 1][j] if d < self.p - 1 else self.f_end[d][j]) <= t:
            self.b_end[d][j], self.next_b[d] = t + 1, j + 1
            self.waiting[d].append(j)
            return Action("B", j)
        j = self.next_f[d]
        if j < self.m and self.held[d] < self.cap and (d == 0 or self.f_end[d - 1][j] <= t):
            self.f_end[d][j], self.next_f[d] = t + 1, j + 1
            self.held[d] += 1
            return Action("F", j)
        if self.waiting[d]:
            self.held[d] -= 1
            return Action("W", self.waiting[d].popleft())
        return None

    def orders(self) -> list[tuple[Action, ...]]:
        """Run to completion; each device's actions in the order it started them."""
        out: list[list[Action]] = [[] for _ in range(self.p)]
        left, t = 3 * self.m * self.p, 0
        while left:
            started = [(d, a) for d in range(self.p) if (a := self.step(d, t)) is not None]
            if not started:
                raise AssertionError(f"list schedule stalled at t={t} (p={self.p}, m={self.m})")
            for d, a in started:
                out[d].append(a)
            left -= len(started)
            t += 1
        return [tuple(o) for o in out]


def zb_h2(p: int, m: int, v: int = 1) -> ScheduleTable:
    """ZB-H2: up to 2p-1 micro-batches held (about 2x 1F1B). With cap 2p-1 the warm-up fills
    the wait for the first B with forwards; when T_F = T_B = T_W and m >= 2p - 1 no device
    idles inside its own span (the paper's zero bubble: a parallelogram layout)."""
    check_basic("zb-h2", p, m)
    check_chunks("zb-h2", v, 1)
    return _single("zb-h2", p, m, _UnitTimeList(p, m, 2 * p - 1).orders())


def zb_v_recipe(p: int, d: int, n: int) -> list[tuple]:
    """ZB-V steps of device d (phase = chunk; n >= 2p - 1 micro-batches).

    Warm-up forwards of chunk 0, then both chunks, then chunk 1 with B and W; a steady
    F0 B0 W0 F1 B1 W1 cycle; a cool-down of B0 B1 with W deferred, then B0 W pairs.
    """
    out: list[tuple] = [("F", 0)] * (2 * (p - d) - 1)
    out += [("F", 1), ("F", 0)] * d
    out += [("F", 1), ("B", 1, False)] * (p - d)
    cycles = max(n - p, 0)
    lead = min(max(n - (2 * p - d - 1), 0), cycles)  # steady cycles that still have a chunk-0 forward
    out += [("F", 0), ("B", 0, False), ("F", 1), ("B", 1, False)] * lead
    out += [("B", 0, False), ("F", 1), ("B", 1, False)] * (cycles - lead)
    out += [("B", 0, True), ("B", 1, True)] * d
    out += [("B", 0, True), ("W",)] * (p - d)
    return out + [("W",)] * (2 * d)


def zb_v(p: int, m: int, v: int = 2) -> ScheduleTable:
    """ZB-V: V placement (vstages d and 2p-1-d on device d), 2p chunk activations held
    (1x 1F1B); no idle inside any device's span when T_F = T_B = T_W and m >= 2p - 1.
    For m < 2p - 1 it is the m = 2p-1 table with the surplus micro-batches removed."""
    check_basic("zb-v", p, m)
    check_chunks("zb-v", v, 2)

    def place(ph: int, k: int) -> tuple[int, int] | None:
        return (k, ph) if k < m else None

    orders = tuple(resolve(zb_v_recipe(p, d, max(m, 2 * p - 1)), place) for d in range(p))
    return ScheduleTable("zb-v", p, m, 2, orders, v_routes(p), np.zeros(m, dtype=np.int64), True)
