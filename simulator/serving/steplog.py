"""The serving step log: one row per batch step, kept in compact numpy columns.

A run of a million requests takes about five million steps. A row is a plain tuple appended to a
short list; every BLOCK rows the list is written into the columns, one numpy array per column with
the narrowest dtype that holds it, preallocated and grown by doubling (a new uninitialised array,
the rows copied over, the old one freed: one column at a time, and the pages past the last row are
never touched, so they take no memory). At the end each column is copied to its exact length. A row
as Python objects took about 260 bytes; in columns it takes 29.
"""

from __future__ import annotations

import numpy as np

BLOCK = 1 << 14
COLUMNS = ("replica", "engine", "start", "end", "kind", "seqs", "tokens", "sampled", "kv_tokens")


def _int_type(most: int):
    """The narrowest signed integer dtype holding 0..most."""
    for dtype in (np.int8, np.int16, np.int32):
        if most <= np.iinfo(dtype).max:
            return dtype
    return np.int64


class StepLog:
    """Rows (replica, engine, start s, end s, kind, sequences, tokens, sampled, KV tokens) of every
    step, and the running total of the attention FLOP of one layer on one rank. `replicas` * `engines`
    bounds the replica and engine columns (so that replica * engines + engine, an engine's lane, stays
    in their dtype), `sequences` (the most a step runs) the sequence counts; tokens and KV tokens start
    narrow and widen when a value needs it (WIDENING)."""

    WIDENING = ("tokens", "kv_tokens")

    def __init__(self, replicas: int, engines: int, sequences: int, capacity: int = BLOCK):
        lanes = _int_type(replicas * engines)  # replica * engines + engine (a lane) stays in range
        ints = {"replica": lanes, "engine": lanes, "kind": np.int8,
                "seqs": _int_type(sequences), "tokens": np.int16, "sampled": _int_type(sequences),
                "kv_tokens": np.int32}
        self.cols = {c: np.empty(capacity, dtype=ints.get(c, np.float64)) for c in COLUMNS}
        self.n = 0
        self.rows: list[tuple] = []
        self.attn_flops = 0.0

    def add(self, row: tuple, attn_flops: float) -> None:
        self.rows.append(row)
        self.attn_flops += attn_flops
        if len(self.rows) >= BLOCK:
            self._flush()

    def __len__(self) -> int:
        return self.n + len(self.rows)

    def _flush(self) -> None:
        k = len(self.rows)
        if not k:
            return
        size = len(self.cols["start"])
        if self.n + k > size:
            for name in COLUMNS:
                self.cols[name] = self._copy(self.cols[name], max(2 * size, self.n + k))
        for (name, col), values in zip(self.cols.items(), zip(*self.rows)):
            if name in self.WIDENING and max(values) > np.iinfo(col.dtype).max:
                col = self.cols[name] = col.astype(np.int64)
            col[self.n:self.n + k] = values
        self.n += k
        self.rows = []

    def columns(self) -> dict[str, np.ndarray]:
        """The log as one array per column, trimmed to its rows."""
        self._flush()
        for name in COLUMNS:
            self.cols[name] = self._copy(self.cols[name], self.n)
        return self.cols

    def _copy(self, col: np.ndarray, size: int) -> np.ndarray:
        """`col`'s rows in a new array of `size` entries (uninitialised past them)."""
        out = np.empty(size, dtype=col.dtype)
        out[:self.n] = col[:self.n]
        return out
