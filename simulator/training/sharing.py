"""Shared links: the event-driven pass, from the first moment two transfers share a link.

A link (a NIC or an NVLink port) shared by n transfers gives each 1/n of its bandwidth (processor
sharing): a transfer is its seconds at full bandwidth, the link keeps each one's work left and one
timer for the next completion, re-planned when a transfer arrives or leaves. That makes a transfer's
arrival depend on what else crosses its link meanwhile, which the longest-path pass cannot know, so
this pass takes over at t0, the first instant two transfers overlap on a link in the contention-free
run. Before t0 that run is exact (no transfer was slowed), so every slot started before t0 keeps its
times, transfers in flight at t0 carry their work left, and events (slot ends, link timers, device
wake-ups) are replayed in time order from there, in plain Python over the TaskGraph's arrays.
"""

from __future__ import annotations

import heapq
import itertools
from array import array

import numpy as np

from .paths import ScheduleDeadlock
from .taskgraph import TaskGraph

SLOT_END, LINK_TIMER, TRY = 0, 1, 2
TIE = 1e-15  # transfers within this many seconds of the first to finish finish with it


class Links:
    """Every link's transfers in flight: work left (seconds at full bandwidth), last update, timer.
    Per-link state lives in lists indexed by link number (device * 3 + tier)."""

    __slots__ = ("push", "left", "updated", "version")

    def __init__(self, push, n: int):
        self.push = push
        self.left: list[dict[int, float]] = [{} for _ in range(n)]  # link -> {transfer: seconds of work left}
        self.updated = [0.0] * n
        self.version = [0] * n

    def start(self, link: int, key: int, seconds: float, now: float) -> None:
        """Transfer `key` joins `link` at `now` with `seconds` of work."""
        left = self.left[link]
        if not left:  # an idle link (the common case): nothing to charge, one timer
            left[key] = seconds
            self.updated[link] = now
            self.version[link] = v = self.version[link] + 1
            self.push(now + (seconds if seconds > 0.0 else 0.0), LINK_TIMER, link, v)
            return
        self._advance(link, now)
        left[key] = seconds
        self._plan(link, now)

    def resume(self, link: int, key: int, seconds: float, now: float) -> None:
        """A transfer already in flight at `now` (the hand-over instant) with `seconds` left."""
        self.left[link][key] = seconds
        self.updated[link] = now

    def plan_all(self, now: float) -> None:
        for link in range(len(self.left)):
            self._plan(link, now)

    def _advance(self, link: int, now: float) -> None:
        """Charge the time since the last update to every transfer in flight, equally."""
        left = self.left[link]
        if left:
            share = (now - self.updated[link]) / len(left)
            for key in left:
                left[key] -= share
        self.updated[link] = now

    def _plan(self, link: int, now: float) -> None:
        left = self.left[link]
        if not left:
            return
        self.version[link] = v = self.version[link] + 1
        self.push(now + max(min(left.values()), 0.0) * len(left), LINK_TIMER, link, v)

    def fire(self, link: int, version: int, now: float) -> list[int]:
        """The transfers a timer completes (none when a later arrival superseded it)."""
        if version != self.version[link]:
            return []
        left = self.left[link]
        if len(left) == 1:  # a transfer alone on its link ends at its timer
            self.updated[link] = now
            done = list(left)
            left.clear()
            return done
        self._advance(link, now)
        first = min(left.values())
        done = [k for k, w in left.items() if w <= first + TIE]
        for k in done:
            del left[k]
        self._plan(link, now)
        return done


def share_links(g: TaskGraph, t0: float, start: np.ndarray, end: np.ndarray, arrival: np.ndarray,
                dp_start: np.ndarray, dp_end: np.ndarray):
    """(start, end, arrival, dp_start, dp_end) with shared links, replayed from `t0` on the
    contention-free figures given (exact before t0)."""
    h, p = g.halves, g.p
    start, end, dp_start, dp_end = start.copy(), end.copy(), dp_start.copy(), dp_end.copy()
    arr = np.append(arrival, [0.0, 0.0])
    lo, hi = g.lo[:-1], g.lo[1:]
    committed = start < t0  # a prefix of each device's order
    nxt = lo + np.bincount(g.device[committed], minlength=p)
    send_start = end[g.half_slot]
    # outputs not known at t0: of slots still running, or transfers still in flight
    produced = committed[g.half_slot] & (end[g.half_slot] < t0)
    in_flight = produced & (g.link >= 0) & (arrival >= t0)
    arr[:h][~produced | in_flight] = -1.0
    lb = g.last_backward
    launched = (lb >= 0) & committed[np.maximum(lb, 0)]
    if g.dp_at_end:  # launched when that slot ended (its device's last): before t0 or not
        launched &= end[np.maximum(lb, 0)] < t0
    dp_flying = launched & (dp_end >= t0)
    dp_end[~launched | dp_flying] = -1.0
    events: list = []
    seq = itertools.count()

    def push(t, kind, a, b, _push=heapq.heappush, _next=seq.__next__):
        _push(events, (t, _next(), kind, a, b))

    links = Links(push, 3 * p)
    for k in np.flatnonzero(in_flight).tolist():
        links.resume(int(g.link[k]), k, float(g.delay[k] - (t0 - send_start[k])), t0)
    for d in np.flatnonzero(dp_flying).tolist():
        links.resume(int(g.dp_link[d]), h + 2 + d, float(g.dp_seconds[d] - (t0 - dp_start[d])), t0)
    links.plan_all(t0)
    for d in range(p):
        running = nxt[d] > lo[d] and end[nxt[d] - 1] >= t0
        if running:
            push(float(end[nxt[d] - 1]), SLOT_END, d, int(nxt[d] - 1))
        else:
            push(t0, TRY, d, 0)
    fl = lambda x: array("d", np.ascontiguousarray(x, dtype=np.float64).tobytes())  # noqa: E731
    state = _Replay(g, fl(arr), fl(start), fl(end), dp_start.tolist(), dp_end.tolist(), nxt.tolist(), hi.tolist(),
                    links, push)
    state.run(events)
    if any(i < stop for i, stop in zip(state.nxt, state.hi)):
        raise ScheduleDeadlock("the schedule's orders wait on each other: some tasks never start")
    back = lambda x: np.frombuffer(x, dtype=np.float64).copy()  # noqa: E731
    return back(state.start), back(state.end), back(state.arr)[:h], np.array(state.dp_start), np.array(state.dp_end)


class _Replay:
    """Devices running their orders from the hand-over on: slot ends publish outputs (at once, or as
    transfers), arrivals wake the devices waiting for them."""

    __slots__ = ("g", "arr", "start", "end", "dp_start", "dp_end", "nxt", "hi", "links", "push", "dep", "out", "dur",
                 "link", "delay", "last_backward", "launch_at_end", "h", "waiting")

    def __init__(self, g, arr, start, end, dp_start, dp_end, nxt, hi, links, push):
        self.g, self.arr, self.start, self.end = g, arr, start, end
        self.dp_start, self.dp_end = dp_start, dp_end
        self.nxt, self.hi, self.links, self.push = nxt, hi, links, push
        ints = lambda x: array("q", np.ascontiguousarray(x, dtype=np.int64).tobytes())  # noqa: E731
        floats = lambda x: array("d", np.ascontiguousarray(x, dtype=np.float64).tobytes())  # noqa: E731
        self.dep, self.out = ints(g.dep.ravel()), ints(g.out.ravel())  # slot i's pair: [2i], [2i + 1]
        self.dur, self.link, self.delay = floats(g.dur), ints(g.link), floats(g.delay)
        self.last_backward = g.last_backward.tolist()
        self.launch_at_end = g.dp_at_end
        self.h = g.halves
        self.waiting: dict[int, list[int]] = {}

    def run(self, events: list) -> None:
        """Process `events` (a heap) in time order until none is left."""
        pop, fire = heapq.heappop, self.links.fire
        slot_end, arrive, try_start = self.slot_end, self.arrive, self.try_start
        while events:
            t, _, kind, a, b = pop(events)
            if kind == SLOT_END:
                slot_end(a, b, t)
            elif kind == LINK_TIMER:
                for key in fire(a, b, t):
                    arrive(key, t)
            else:
                try_start(a, t)

    def try_start(self, d: int, now: float) -> None:
        """Start device d's next slot at `now` if its inputs have arrived, else wait for them."""
        i = self.nxt[d]
        if i >= self.hi[d]:
            return
        arr, j = self.arr, 2 * i
        k = self.dep[j]
        if arr[k] < 0.0 or arr[k := self.dep[j + 1]] < 0.0:
            self.waiting.setdefault(k, []).append(d)
            return
        self.start[i] = now
        if i == self.last_backward[d] and not self.launch_at_end:
            self.reduce(d, now)
        self.push(now + self.dur[i], SLOT_END, d, i)

    def reduce(self, d: int, now: float) -> None:
        """Device d's gradient reduction joins its DP link at `now`."""
        self.dp_start[d] = now
        self.links.start(int(self.g.dp_link[d]), self.h + 2 + d, float(self.g.dp_seconds[d]), now)

    def slot_end(self, d: int, i: int, now: float) -> None:
        self.end[i] = now
        if i == self.last_backward[d] and self.launch_at_end:
            self.reduce(d, now)
        out, link, h, j = self.out, self.link, self.h, 2 * i
        for k in (out[j], out[j + 1]):
            if k >= h:
                continue
            if link[k] < 0:
                self.arrive(k, now)
            else:
                self.links.start(link[k], k, self.delay[k], now)
        self.nxt[d] = i + 1
        self.try_start(d, now)

    def arrive(self, key: int, now: float) -> None:
        if key >= self.h + 2:  # a gradient reduction
            self.dp_end[key - self.h - 2] = now
            return
        self.arr[key] = now
        waiting = self.waiting.pop(key, None)
        if waiting:
            for d in waiting:
                self.try_start(d, now)
