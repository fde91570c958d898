"""One scheduler's state in the serving simulation: its queue, its running batch and the batch's totals.

The running batch is four arrays over its sequences (request ids, tokens in the KV cache, tokens to
process before the next emission, tokens emitted). A decode-only step adds one token to every
sequence's cache and emits one from each, so the engine does not touch the arrays then: it counts
the step in `lag` and keeps the totals it needs (KV tokens held, steps until the first sequence
finishes) as running sums; reading `ctx` or `gen` applies the lag first, so scheduling code sees the
arrays as if every step had been applied. The totals are recomputed whenever the arrays are replaced
(admission, eviction, retirement) or a step other than decode-only ran. Scheduling code replaces the
arrays (concatenate, keep) rather than writing into them, or calls touch() after it does.
"""

from __future__ import annotations

from collections import deque

import numpy as np


class EngineState:
    """One scheduler (virtual engine) of one replica: its queue, running batch and KV cache."""

    def __init__(self, *, replica: int, index: int, role: str, feed: np.ndarray):
        self.replica, self.index, self.role = replica, index, role  # role: serve | prefill | decode
        self.feed = feed  # request ids routed here, in arrival order (pulled as time passes)
        self.pos = 0
        self.waiting: deque = deque()
        self.inbox: deque = deque()  # decode role: requests whose KV cache arrived
        self.wake = None
        self.ids = np.zeros(0, int)
        self._ctx = np.zeros(0)  # tokens in the KV cache (before `lag`)
        self.todo = np.zeros(0)  # tokens to process before the next emission
        self._gen = np.zeros(0, int)  # tokens emitted so far (before `lag`)
        self.lag = 0  # decode-only steps not yet added to _ctx and _gen
        self.counted = None  # the ids array the totals below were computed for (None: stale)
        self.ctx_total = 0.0  # sum of ctx: KV tokens the batch holds
        self.finish_in = 0  # decode-only steps until the first sequence emits its last token
        self._todo_seen, self._all_decoding = None, False  # the todo array last checked, and whether all were 1

    def _settle(self) -> None:
        if self.lag:
            self._ctx = self._ctx + self.lag
            self._gen = self._gen + self.lag
            self.lag = 0

    @property
    def ctx(self) -> np.ndarray:
        self._settle()
        return self._ctx

    @ctx.setter
    def ctx(self, value: np.ndarray) -> None:
        self._settle()
        self._ctx = value

    @property
    def gen(self) -> np.ndarray:
        self._settle()
        return self._gen

    @gen.setter
    def gen(self, value: np.ndarray) -> None:
        self._settle()
        self._gen = value

    def keep(self, mask: np.ndarray) -> None:
        self._settle()
        self.ids, self._ctx, self.todo, self._gen = self.ids[mask], self._ctx[mask], self.todo[mask], self._gen[mask]

    def touch(self) -> None:
        """The arrays were written in place: recompute every total before the next step."""
        self.counted = self._todo_seen = None

    def decoding(self) -> bool:
        """Whether every running sequence is decoding (one token to process before its next emission)."""
        if self._todo_seen is not self.todo:
            self._all_decoding = bool(len(self.todo)) and float(self.todo.max()) == 1.0
            self._todo_seen = self.todo
        return self._all_decoding

    def count(self, output: np.ndarray) -> None:
        """Recompute the running totals (`output`: every request's output tokens)."""
        self.ctx_total = float(self.ctx.sum())
        self.finish_in = int((output[self.ids] - self.gen).min()) if len(self.ids) else 0
        self.counted = self.ids

    def decoded(self) -> None:
        """Account one decode-only step: one more token cached and emitted by every sequence."""
        self.lag += 1
        self.ctx_total += len(self.ids)
        self.finish_in -= 1
