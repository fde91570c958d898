"""The serving step log: one row per batch step, kept in compact numpy columns.

A run of a million requests takes about five million steps. A row is a plain tuple appended to a
short list; every BLOCK rows the list is written into the columns, one numpy array per column with
the narrowest dtype that holds it, preallocated and grown by doubling. Each column lives in its own
anonymous memory map: pages past the last row are never touched, so they take no memory; growing
copies the rows into a map twice the size and unmaps the old one, which returns it to the system
at once (a heap allocation would leave a hole behind each doubling). The columns handed out at the
end are views of their rows. A row as Python objects took about 260 bytes; in columns it takes 29.
(tracemalloc does not see memory maps: a resident-memory measure counts the log, tracemalloc not.)
"""

from __future__ import annotations

import mmap

import numpy as np

BLOCK = 1 << 14
COLUMNS = ("replica", "engine", "start", "end", "kind", "seqs", "tokens", "sampled", "kv_tokens")


def _int_type(most: int):
    """The narrowest signed integer dtype holding 0..most."""
    for dtype in (np.int8, np.int16, np.int32):
        if most <= np.iinfo(dtype).max:
            return dtype
    return np.int64


def mapped(size: int, dtype) -> np.ndarray:
    """An uninitialised array of `size` entries in an anonymous memory map of its own."""
    dtype = np.dtype(dtype)
    return np.frombuffer(mmap.mmap(-1, max(size * dtype.itemsize, 1)), dtype=dtype, count=size)


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
        self.cols = {c: mapped(capacity, ints.get(c, np.float64)) for c in COLUMNS}
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
                self.cols[name] = self._grown(self.cols[name], max(2 * size, self.n + k))
        for name, values in zip(COLUMNS, zip(*self.rows)):
            col = self.cols[name]
            if name in self.WIDENING and max(values) > np.iinfo(col.dtype).max:
                col = self.cols[name] = self._grown(col, len(col), np.int64)
            col[self.n:self.n + k] = values
        self.n += k
        self.rows = []

    def _grown(self, col: np.ndarray, size: int, dtype=None) -> np.ndarray:
        """`col`'s rows in a new map of `size` entries (the old map goes when `col` does)."""
        out = mapped(size, dtype or col.dtype)
        out[:self.n] = col[:self.n]
        return out

    def columns(self) -> dict[str, np.ndarray]:
        """The log as one array per column: views of the rows."""
        self._flush()
        return {name: col[:self.n] for name, col in self.cols.items()}
