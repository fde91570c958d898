"""DualPipe and DualPipeV (DeepSeek-V3 report, Table 2; github.com/deepseek-ai/DualPipe).

Both follow DeepSeek's per-device recipe of eight steps: warm-up forwards, forwards of both
phases, zero-bubble B/W/F, the steady state of overlapped F&B pairs, B with F&B, the
cool-down B of both phases (the later half with deferred W), W with B, the last W.
A device's phase 0 is the path it meets early, phase 1 the one it meets late.
DeepSeek runs some backwards unsplit; here such a B is followed at once by its W, so every
B has a W; an overlapped pair is ``pair(F, B)`` followed by the W of its B.
"""

from __future__ import annotations

import numpy as np

from .recipe import resolve
from .routes import check_basic, check_chunks, dual_routes, require, v_routes
from .table import ScheduleTable


def dual_recipe(half: int, h: int, n: int) -> list[tuple]:
    """DeepSeek's eight steps for a device ``h`` devices away from its end of the pipeline.

    ``half`` is the number of devices from an end to the middle (p/2 for DualPipe, p for
    DualPipeV); ``n`` the micro-batches of each phase, at least ``2 * half``.
    """
    out: list[tuple] = [("F", 0)] * (2 * (half - h - 1))
    out += [("F", 0), ("F", 1)] * (h + 1)
    out += [("B", 1, True), ("W",), ("F", 1)] * (half - h - 1)
    steady = max(n - 2 * half + h + 1, 0)
    if steady and h == half - 1:  # middle device: its first F and B not overlapped
        out += [("F", 0), ("B", 1, False), ("FB", 1, 0)]
        steady -= 1
    out += [("FB", 0, 1), ("FB", 1, 0)] * steady
    out += [("B", 1, False), ("FB", 1, 0)] * (half - h - 1)
    defer = False
    for i in range(h + 1):  # the later half of these backwards defer their W
        defer = defer or (i == (h + 1) // 2 and h % 2 == 1)
        out.append(("B", 1, defer))
        defer = defer or (i == (h + 1) // 2 and h % 2 == 0)
        out.append(("B", 0, defer))
    out += [("W",), ("B", 0, True)] * (half - h - 1)
    return out + [("W",)] * (h + 1)


def _check(name: str, p: int, m: int, v: int) -> None:
    check_basic(name, p, m)
    check_chunks(name, v, 2)


def dualpipe(p: int, m: int, v: int = 2) -> ScheduleTable:
    """DualPipe: two pipeline copies run in opposite directions, m/2 micro-batches each.

    Device d holds stage d of the direction-0 copy (chunk 0) and stage p-1-d of the
    direction-1 copy (chunk 1): 2x parameters. Micro-batches 0..m/2-1 enter at device 0,
    m/2..m-1 at device p-1. Needs even p and even m. DeepSeek's code also asserts m >= 2p;
    below that this is the m = 2p table with the surplus micro-batches removed (valid and
    deadlock-free, but its bubble is larger than Table 2's).
    """
    _check("dualpipe", p, m, v)
    require(p % 2 == 0, f"dualpipe needs an even number of stages, got p={p}")
    require(m % 2 == 0, f"dualpipe needs an even number of micro-batches, got m={m}")
    n, half = m // 2, p // 2
    orders = []
    for d in range(p):
        near = int(d >= half)  # the direction whose early stages this device holds

        def place(ph: int, k: int, near: int = near) -> tuple[int, int] | None:
            return ((ph ^ near) * n + k, ph ^ near) if k < n else None

        orders.append(resolve(dual_recipe(half, min(d, p - 1 - d), max(n, p)), place))
    direction = (np.arange(m) >= n).astype(np.int64)
    return ScheduleTable("dualpipe", p, m, 2, tuple(orders), dual_routes(p), direction, True)


def dualpipe_v(p: int, m: int, v: int = 2) -> ScheduleTable:
    """DualPipeV: DualPipe cut in half, a V on p devices (vstages d and 2p-1-d on device d).

    One direction, 1x parameters. DeepSeek and torch require m >= 2p; below that this is the
    m = 2p table with the surplus micro-batches removed (valid, bubble above the paper's).
    """
    _check("dualpipe-v", p, m, v)

    def place(ph: int, k: int) -> tuple[int, int] | None:
        return (k, ph) if k < m else None

    orders = tuple(resolve(dual_recipe(p, d, max(m, 2 * p)), place) for d in range(p))
    return ScheduleTable("dualpipe-v", p, m, 2, orders, v_routes(p), np.zeros(m, dtype=np.int64), True)
