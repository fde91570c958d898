"""Pipeline schedules as data: actions, per-device orders, routes of micro-batches.

An ``Action`` is one compute task of one device: kind ``F`` (forward), ``B`` (backward) or
``W`` (weight gradients) of micro-batch ``mb`` on the device's model chunk ``chunk``.
When a schedule splits the backward (``split_backward``), ``B`` computes input gradients
only and ``W`` the weight gradients; otherwise ``B`` is the full backward and there is no W.

Label format (``str``): kind, micro-batch, dot, chunk: ``F3.1`` is the forward of micro-batch 3
on chunk 1. ``format_grid`` drops the ``.chunk`` suffix when every device holds one chunk.

Overlapped pairs (DualPipe): a slot may hold two actions run at the same time on one device,
stored as the ``F`` action with ``paired`` set to the ``B`` action (labelled ``F4.0&B1.1``).
The slot starts when both halves are ready, lasts the F&B duration, and both halves complete
at its end. A pair's B never carries the weight gradients: its W is a separate action.

Routes: ``routes[direction, k] = (device, chunk)`` holding virtual stage ``k`` of the path of
the micro-batches whose ``direction[mb]`` is that direction. Dependencies follow from routes
(``ScheduleTable.dependencies``); within one device the order alone sequences the slots.
A chunk serves one direction only, so (device, chunk, mb) names a task uniquely.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: codes.py builds on this module
    from .codes import Codes

KINDS = ("F", "B", "W")


@dataclass(frozen=True, slots=True)
class Action:
    """One task of one device: ``kind`` of micro-batch ``mb`` on local chunk ``chunk``."""

    kind: str
    mb: int
    chunk: int = 0
    paired: Action | None = None

    def label(self, chunks: bool = True) -> str:
        """Compact label, ``F3.1`` (or ``F3`` when ``chunks`` is false); pairs joined by ``&``."""
        own = f"{self.kind}{self.mb}.{self.chunk}" if chunks else f"{self.kind}{self.mb}"
        return own if self.paired is None else f"{own}&{self.paired.label(chunks)}"

    def halves(self) -> tuple[Action, ...]:
        """The plain actions this slot runs: itself, or the F and B of a pair (without pairing)."""
        if self.paired is None:
            return (self,)
        return (Action(self.kind, self.mb, self.chunk), self.paired)

    def __str__(self) -> str:
        return self.label()


def pair(f: Action, b: Action) -> Action:
    """The overlapped slot running forward ``f`` and backward ``b`` at once on one device."""
    if f.kind != "F" or b.kind != "B" or f.paired or b.paired:
        raise ValueError(f"a pair is one plain F and one plain B, got {f} and {b}")
    return Action("F", f.mb, f.chunk, b)


class CodedOrders(Sequence):
    """Per-device orders read from a schedule's integer Codes (simulator.schedules.codes): device d's
    Actions are built the first time they are asked for, so that a run that reads only the codes (the
    engine, in_flight) never builds an object per task."""

    def __init__(self, codes: Codes):
        self.codes = codes
        self._built: dict[int, tuple[Action, ...]] = {}

    def __len__(self) -> int:
        return self.codes.p

    def __getitem__(self, d):
        if isinstance(d, slice):
            return tuple(self[i] for i in range(len(self))[d])
        d = range(len(self))[d]  # IndexError outside, negative counted from the end
        if d not in self._built:
            c, lo, hi = self.codes, self.codes.start[d], self.codes.start[d + 1]
            rows = zip(c.kind[lo:hi].tolist(), c.mb[lo:hi].tolist(), c.chunk[lo:hi].tolist(),
                       c.pmb[lo:hi].tolist(), c.pchunk[lo:hi].tolist())
            self._built[d] = tuple(Action(KINDS[k], mb, ch, Action("B", pm, pc) if pm >= 0 else None)
                                   for k, mb, ch, pm, pc in rows)
        return self._built[d]

    def __iter__(self) -> Iterator[tuple[Action, ...]]:
        return (self[d] for d in range(len(self)))


@dataclass(frozen=True, eq=False)
class ScheduleTable:
    """Per-device execution orders of a pipeline schedule with ``p`` devices and ``m`` micro-batches.

    ``v`` is the number of model chunks each device holds; ``routes`` has shape
    ``(n_directions, n_vstages, 2)`` and ``direction`` shape ``(m,)`` (see the module docstring).
    """

    name: str
    p: int
    m: int
    v: int
    orders: tuple[tuple[Action, ...], ...]
    routes: np.ndarray
    direction: np.ndarray
    split_backward: bool
    coded: Codes | None = field(default=None, repr=False)
    """The same table as integer Codes when it was built from them (ScheduleSpec.table), else None."""
    _vstage: np.ndarray = field(init=False, repr=False)

    @classmethod
    def from_codes(cls, codes: Codes) -> ScheduleTable:
        """The table of one-table Codes, its orders built from them on demand."""
        m = int(codes.m[0])
        return cls(codes.name, codes.p, m, codes.v, CodedOrders(codes), codes.routes, codes.direction[0, :m],
                   codes.split_backward, coded=codes)

    def __post_init__(self) -> None:
        routes = np.asarray(self.routes, dtype=np.int64)
        if len(self.orders) != self.p or routes.ndim != 3 or routes.shape[2] != 2:
            raise ValueError(f"{self.name}: need {self.p} orders and routes of shape (directions, "
                             f"vstages, 2), got {len(self.orders)} and {routes.shape}")
        if np.shape(self.direction) != (self.m,):
            raise ValueError(f"{self.name}: direction must have shape ({self.m},), got {np.shape(self.direction)}")
        lookup = np.full((routes.shape[0], self.p, self.v), -1, dtype=np.int64)
        for d in range(routes.shape[0]):
            lookup[d, routes[d, :, 0], routes[d, :, 1]] = np.arange(routes.shape[1])
        object.__setattr__(self, "routes", routes)
        object.__setattr__(self, "direction", np.asarray(self.direction, dtype=np.int64))
        object.__setattr__(self, "_vstage", lookup)

    @property
    def n_vstages(self) -> int:
        """Virtual stages along one micro-batch's path."""
        return int(self.routes.shape[1])

    def vstage_of(self, device: int, chunk: int, direction: int = 0) -> int:
        """Virtual stage held by (device, chunk) on the path of ``direction``; -1 if none."""
        return int(self._vstage[direction, device, chunk])

    def place(self, mb: int, vstage: int) -> tuple[int, int]:
        """(device, chunk) running virtual stage ``vstage`` of micro-batch ``mb``."""
        device, chunk = self.routes[self.direction[mb], vstage]
        return int(device), int(chunk)

    def dependencies(self, device: int, action: Action) -> list[tuple[int, Action]]:
        """Actions (with their devices) that must complete before ``action`` may start.

        F at vstage k needs F at k-1 of the same micro-batch; B at k needs B at k+1, and the
        last vstage's B its own F; W needs the B of the same (vstage, micro-batch). A pair
        needs the union of its halves' dependencies. Returned actions are plain (unpaired).
        """
        deps: list[tuple[int, Action]] = []
        for a in action.halves():
            k = self.vstage_of(device, a.chunk, int(self.direction[a.mb]))
            if a.kind == "F" and k > 0:
                deps.append(self._at(a.mb, k - 1, "F"))
            elif a.kind == "B":
                deps.append(self._at(a.mb, k + 1, "B") if k < self.n_vstages - 1
                            else (device, Action("F", a.mb, a.chunk)))
            elif a.kind == "W":
                deps.append((device, Action("B", a.mb, a.chunk)))
        return deps

    def _at(self, mb: int, vstage: int, kind: str) -> tuple[int, Action]:
        device, chunk = self.place(mb, vstage)
        return device, Action(kind, mb, chunk)

    def flat(self, device: int) -> Iterator[Action]:
        """Plain actions of ``device`` in order, a pair giving its F then its B."""
        for slot in self.orders[device]:
            yield from slot.halves()

    def format_grid(self) -> str:
        """Device x slot grid as text: one row a device, columns aligned slot by slot."""
        chunks = self.v > 1
        rows = [[s.label(chunks) for s in order] for order in self.orders]
        width = max((len(x) for r in rows for x in r), default=1)
        head = len(str(self.p - 1))
        return "\n".join(f"d{i:<{head}}| " + " ".join(x.ljust(width) for x in r).rstrip()
                         for i, r in enumerate(rows))

    def __str__(self) -> str:
        return f"{self.name} p={self.p} m={self.m} v={self.v}\n{self.format_grid()}"


def in_flight(table: ScheduleTable, unit: str = "chunk") -> np.ndarray:
    """Peak activations held per device, walking each device's order.

    An activation is held from the start of its F until its W ends (split backward, as
    Qi et al. count it) or its B ends (full backward). A pair's F is counted before its B
    releases anything (peak taken inside the slot). ``unit="chunk"`` counts micro-batch-chunks
    (int); ``unit="stage"`` scales to a non-interleaved stage's activations, i.e. multiplies
    by ``p / n_vstages`` (interleaved: 1/v a chunk; V shapes: 1/2; DualPipe: 1, each chunk
    being a full stage of one of its two pipeline copies).
    """
    if unit not in ("chunk", "stage"):
        raise ValueError(f"in_flight unit must be 'chunk' or 'stage', got {unit!r}")
    peaks = _coded_in_flight(table) if table.coded is not None else _walked_in_flight(table)
    return peaks if unit == "chunk" else peaks * (table.p / table.n_vstages)


def peak_in_pair(table: ScheduleTable) -> np.ndarray:
    """(p,) bool: each device reaches its in_flight peak only at an overlapped pair, whose F in_flight counts
    whole before its B releases anything (without the pairs' slots the peak would be lower)."""
    if table.coded is None:
        return np.array([_walk(order, table.split_backward)[1] for order in table.orders], dtype=bool)
    held, device = _coded_held(table)
    single = (table.coded.kind == 0) & (table.coded.pmb < 0)  # plain forwards
    return _device_max(held, device, table.p) > _device_max(held[single], device[single], table.p)


def _coded_held(table: ScheduleTable) -> tuple[np.ndarray, np.ndarray]:
    """(held after each slot's F, device of each slot), over the integer codes: a running sum of +1 per F and
    -1 per release."""
    c = table.coded
    release = 2 if table.split_backward else 1
    up = (c.kind == 0).astype(np.int64)
    down = (c.kind == release).astype(np.int64) + ((c.pmb >= 0) & (release == 1))
    net = np.cumsum(up - down)
    lo, sizes = c.start[:-1], np.diff(c.start)
    before = np.concatenate([[0], net])[lo]  # held when each device's order begins, in the running sum
    held = np.concatenate([[0], net[:-1]]) - np.repeat(before, sizes) + up  # after each slot's F
    return held, np.repeat(np.arange(table.p), sizes)


def _coded_in_flight(table: ScheduleTable) -> np.ndarray:
    """in_flight's walk over the integer codes, every device at once: the running sum's peak taken after each
    slot's F."""
    return _device_max(*_coded_held(table), table.p)


def _device_max(held: np.ndarray, device: np.ndarray, p: int) -> np.ndarray:
    """(p,) the largest of `held` on each device (0 where it has none)."""
    peaks = np.zeros(p, dtype=np.int64)
    np.maximum.at(peaks, device, held)
    return peaks


def _walked_in_flight(table: ScheduleTable) -> np.ndarray:
    return np.array([_walk(order, table.split_backward)[0] for order in table.orders], dtype=np.int64)


def _walk(order, split_backward: bool) -> tuple[int, bool]:
    """(peak activations held, whether only a pair's F reaches it) of one device's order, Action by Action."""
    release = "W" if split_backward else "B"
    held = peak = plain = 0
    for slot in order:
        if slot.kind == "F":
            held += 1
            peak = max(peak, held)
            plain = plain if slot.paired else max(plain, held)
        for a in slot.halves():
            held -= a.kind == release
    return peak, peak > plain
