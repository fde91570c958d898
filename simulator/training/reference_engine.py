"""The reference engine (simpy): one process per pipeline stage, shared links as resources -> Timeline.

simrack's engine is simulator.training.engine (the task graph as integer arrays, a longest-path pass,
an event-driven pass only where transfers share a link). This is the engine it replaced, kept as an
independent implementation of the same rules: tests/test_engine_agreement.py checks the two agree on
every shipped training scenario and on generated layouts, shared links included, for which no closed
form exists to check the new engine against.

One event per (stage, micro-batch, phase, chunk) task and one per transfer, never per kernel. Each
stage runs its schedule order; a task starts when the stage is free and its inputs have arrived.
Sends share the sender's link of their tier (NVLink port or NIC) fairly, so pipeline sends and the
gradient reduction that cross one NIC slow each other down. After its last task a stage waits for its
gradient reduction (launched when its last backward starts, bucketed behind it), then steps Adam.
"""

from __future__ import annotations

import numpy as np
import simpy

from ..cost.pipeline import optimizer_start
from .plan import Plan
from .timeline import KIND_INDEX, Timeline


class Link:
    """A link (a NIC or an NVLink port) shared fairly: n transfers in flight each get 1/n of it.

    A transfer is given as its seconds at full bandwidth; the link keeps their remaining work and one
    timer for the next completion, rescheduled when a transfer arrives or leaves (processor sharing).
    """

    def __init__(self, env: simpy.Environment):
        self.env = env
        self.remaining: dict[simpy.Event, float] = {}  # arrival event -> seconds of work left
        self.updated = 0.0
        self.timer = None

    def transfer(self, seconds: float, arrived: simpy.Event) -> None:
        """Start moving `seconds` of work; `arrived` succeeds when it is done."""
        self._advance()
        self.remaining[arrived] = seconds
        self._schedule()

    def _advance(self) -> None:
        """Charge the time since the last update to every transfer in flight, equally."""
        if self.remaining:
            share = (self.env.now - self.updated) / len(self.remaining)
            for ev in self.remaining:
                self.remaining[ev] -= share
        self.updated = self.env.now

    def _schedule(self) -> None:
        if not self.remaining:
            return
        first = min(self.remaining.values())
        self.timer = timer = self.env.timeout(max(first, 0.0) * len(self.remaining))
        timer.callbacks.append(lambda _: self._complete(timer))

    def _complete(self, timer) -> None:
        if timer is not self.timer:  # superseded by a later arrival
            return
        self._advance()
        first = min(self.remaining.values())
        for ev in [e for e, left in self.remaining.items() if left <= first + 1e-15]:
            del self.remaining[ev]
            ev.succeed()
        self._schedule()


class _Run:
    """State of one engine run: arrival events, links and task records."""

    def __init__(self, plan: Plan):
        self.plan, self.table = plan, plan.table
        self.env = simpy.Environment()
        p = self.table.p
        self.links = [[None, Link(self.env), Link(self.env)] for _ in range(p)]
        self.arrival: dict[tuple, simpy.Event] = {}
        self.produced: dict[tuple, float] = {}
        n = sum(len(o) for o in self.table.orders)
        self.rec = {k: np.zeros(n) for k in ("start", "end", "wait")}
        self.meta = np.full((n, 6), -1, dtype=np.int64)
        self.dp = np.zeros((2, p))
        self.dp_done = [self.env.event() for _ in range(p)]
        self.opt_start, self.stage_end = np.zeros(p), np.zeros(p)

    def event(self, key: tuple) -> simpy.Event:
        ev = self.arrival.get(key)
        if ev is None:
            ev = self.arrival[key] = self.env.event()
        return ev

    def key(self, kind: str, mb: int, device: int, chunk: int) -> tuple:
        """Arrival key of the output of `kind` for micro-batch `mb` at (device, chunk)'s vstage."""
        k = self.table.vstage_of(device, chunk, int(self.table.direction[mb]))
        return (kind, mb, k)

    def duration(self, device: int, action, row: int) -> float:
        """Seconds of one task: its (device, chunk) grid entry, times the plan's per-task factor if any."""
        plan = self.plan
        if action.paired is not None:
            seconds = float(plan.fb[device, action.chunk, action.paired.chunk])
        else:
            seconds = float((plan.f, plan.b, plan.w)[KIND_INDEX[action.kind]][device, action.chunk])
        return seconds if plan.task_scale is None else seconds * float(plan.task_scale[row])

    def finish(self, device: int, action, now: float) -> None:
        """Publish a finished action's outputs: locally at once, remotely after a send."""
        table, plan = self.table, self.plan
        for a in action.halves():
            direction = int(table.direction[a.mb])
            k = table.vstage_of(device, a.chunk, direction)
            key = (a.kind, a.mb, k)
            self.produced[key] = now
            nxt = k + 1 if a.kind == "F" else k - 1
            if a.kind == "W" or not 0 <= nxt < table.n_vstages:
                self.event(key).succeed()
                continue
            dst = int(table.routes[direction, nxt, 0])
            side = 0 if a.kind == "F" else 1
            seconds, tier = plan.send[device, a.chunk, side], plan.send_tier[device, a.chunk, side]
            if dst == device or tier == 0:
                self.event(key).succeed()
            else:
                self.links[device][tier].transfer(seconds, self.event(key))

    def needs(self, device: int, action) -> list[tuple]:
        """Arrival keys this action waits for."""
        return [self.key(a.kind, a.mb, dev, a.chunk) for dev, a in self.table.dependencies(device, action)]

    def stage(self, device: int, first: int):
        """Process of one pipeline stage: its order, then gradient reduction and optimizer."""
        env, plan, order = self.env, self.plan, self.table.orders[device]
        last_backward = max((i for i, a in enumerate(order) if a.kind in "BW"), default=-1)
        after = plan.grad_reduce_after and last_backward >= 0  # launched when the order ends, not overlapped
        for i, action in enumerate(order):
            free, keys = env.now, self.needs(device, action)
            for key in keys:
                yield self.event(key)
            ready = max([free] + [self.produced.get(k, free) for k in keys])
            row = first + i
            self.rec["start"][row], self.rec["wait"][row] = env.now, env.now - ready
            if i == last_backward and not after:
                env.process(self.reduce_gradients(device))
            yield env.timeout(self.duration(device, action, row))
            self.rec["end"][row] = env.now
            paired = action.paired
            self.meta[row] = (device, 3 if paired else KIND_INDEX[action.kind], action.mb, action.chunk,
                              paired.mb if paired else -1, paired.chunk if paired else -1)
            self.finish(device, action, env.now)
        order_end = env.now
        if after:
            env.process(self.reduce_gradients(device))
        if last_backward < 0:
            self.dp[:, device] = env.now
        else:
            yield self.dp_done[device]
        opt_start = float(optimizer_start(order_end, *self.dp[:, device], plan.comm_sms))
        yield env.timeout(max(opt_start - env.now, 0.0))  # the reduction's own end, to rounding
        self.opt_start[device] = env.now
        yield env.timeout(plan.optimizer[device] + plan.param_gather[device])
        self.stage_end[device] = env.now

    def reduce_gradients(self, device: int):
        """Gradient reduction of a stage on its DP link, from the start of its last backward (from the end of its
        order with plan.grad_reduce_after)."""
        self.dp[0, device] = self.env.now
        done = self.env.event()
        self.links[device][int(self.plan.dp_tier[device])].transfer(float(self.plan.dp[device]), done)
        yield done
        self.dp[1, device] = self.env.now
        self.dp_done[device].succeed()


def run_reference(plan: Plan) -> Timeline:
    """Simulate one training step of `plan` with simpy."""
    run = _Run(plan)
    first = np.cumsum([0] + [len(o) for o in plan.table.orders])
    for device in range(plan.table.p):
        run.env.process(run.stage(device, int(first[device])))
    run.env.run()
    meta = run.meta
    return Timeline(device=meta[:, 0], kind=meta[:, 1], mb=meta[:, 2], chunk=meta[:, 3],
                    pair_mb=meta[:, 4], pair_chunk=meta[:, 5],
                    start=run.rec["start"], end=run.rec["end"], comm_wait=run.rec["wait"],
                    dp_start=run.dp[0], dp_end=run.dp[1],
                    optimizer_start=run.opt_start, stage_end=run.stage_end,
                    step_time=float(run.stage_end.max()))
