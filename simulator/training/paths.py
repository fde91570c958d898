"""Longest paths through a task graph when every transfer has its link to itself.

A slot starts when its device is free and its inputs have arrived: start = max(end of the device's
previous slot, arrival of each input), end = start + duration, and each output arrives its
transfer's seconds after the end. That is the max-plus recurrence of the schedule's order plus its
dependencies; every quantity it needs is an integer or float array of the TaskGraph, prepared with
numpy. The recurrence runs once over the slots in an order that respects both: sweeps over the
devices, down then up the pipeline, each device advancing as far as its arrived inputs allow (a
pipeline's forwards flow down and its backwards up, so a sweep pair moves every busy device on).
The arrays are flat machine arrays (array.array), a few reads and writes a slot: about 0.35 us of
CPU a slot at any size, no event queue and no object per task.
"""

from __future__ import annotations

from array import array

import numpy as np

from .taskgraph import TaskGraph


class ScheduleDeadlock(ValueError):
    """The orders wait on each other: no slot of any unfinished device can start."""


def _ints(x: np.ndarray) -> array:
    return array("q", np.ascontiguousarray(x, dtype=np.int64).tobytes())


def _floats(x: np.ndarray) -> array:
    return array("d", np.ascontiguousarray(x, dtype=np.float64).tobytes())


def longest_paths(g: TaskGraph) -> tuple[np.ndarray, np.ndarray]:
    """(start of every slot, arrival of every half's output), contention-free. End = start + dur."""
    n, h = len(g.dur), g.halves
    dep0, dep1, out0, out1 = _ints(g.dep[:, 0]), _ints(g.dep[:, 1]), _ints(g.out[:, 0]), _ints(g.out[:, 1])
    delay = np.append(g.delay, [0.0, 0.0])
    delay0, delay1, dur = _floats(delay[g.out[:, 0]]), _floats(delay[g.out[:, 1]]), _floats(g.dur)
    arr = array("d", [-1.0]) * h + array("d", [0.0, 0.0])  # -1: not known yet; h: no input; h + 1: a sink
    start = array("d", bytes(8 * n))
    nxt, stop = g.lo[:-1].tolist(), g.lo[1:].tolist()
    free = [0.0] * g.p
    down = [d for d in range(g.p) if nxt[d] < stop[d]]
    sweeps = (down, down[::-1])
    left = n
    while left:
        before = left
        for devices in sweeps:
            for d in devices:
                i, last = nxt[d], stop[d]
                if i == last:
                    continue
                t, first = free[d], i
                while i < last:
                    x = arr[dep0[i]]
                    if x < 0.0:
                        break
                    y = arr[dep1[i]]
                    if y < 0.0:
                        break
                    if x > t:
                        t = x
                    if y > t:
                        t = y
                    start[i] = t
                    t += dur[i]
                    arr[out0[i]] = t + delay0[i]
                    arr[out1[i]] = t + delay1[i]
                    i += 1
                if i != first:
                    left -= i - first
                    nxt[d], free[d] = i, t
        if left == before:
            raise ScheduleDeadlock(f"the schedule's orders wait on each other: {left} of {n} tasks never start")
    return np.frombuffer(start, dtype=np.float64).copy(), np.frombuffer(arr, dtype=np.float64)[:h].copy()
