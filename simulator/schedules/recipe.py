"""Per-device recipes: schedules written as phase-level steps, resolved into Actions.

A recipe is a list of items over two local phases (0 and 1; a phase is one of the
device's chunks or pipeline directions):
``("F", ph)`` the next forward of phase ph; ``("B", ph, defer)`` the next backward, whose
W follows at once unless ``defer``, in which case it joins a FIFO; ``("W",)`` runs the
oldest deferred W; ``("FB", ph_f, ph_b)`` an overlapped F&B pair followed by the W of its B.
Each phase runs its micro-batches in order, so the k-th F (or B) of a phase is its k-th
micro-batch; ``place(phase, k)`` names it, or returns None for padding micro-batches,
which are dropped (a pair with one padded half becomes a single action).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from .table import Action, pair

Place = Callable[[int, int], "tuple[int, int] | None"]


class _Cursor:
    """Per-phase counters turning recipe items into concrete actions."""

    def __init__(self, place: Place) -> None:
        self.place = place
        self.count = {("F", 0): 0, ("F", 1): 0, ("B", 0): 0, ("B", 1): 0}

    def take(self, kind: str, ph: int) -> Action | None:
        k = self.count[kind, ph]
        self.count[kind, ph] = k + 1
        where = self.place(ph, k)
        return None if where is None else Action(kind, where[0], where[1])


def resolve(recipe: list[tuple], place: Place) -> tuple[Action, ...]:
    """Actions of one device from its recipe; ``place(ph, k) -> (mb, chunk) | None``."""
    cur = _Cursor(place)
    deferred: deque[Action | None] = deque()
    order: list[Action] = []

    def weight(b: Action | None) -> None:
        if b is not None:
            order.append(Action("W", b.mb, b.chunk))

    for item in recipe:
        if item[0] == "W":
            weight(deferred.popleft())
            continue
        if item[0] == "FB":
            f, b = cur.take("F", item[1]), cur.take("B", item[2])
        else:
            f, b = (cur.take("F", item[1]), None) if item[0] == "F" else (None, cur.take("B", item[1]))
        order.extend([pair(f, b)] if f and b else [a for a in (f, b) if a])
        if item[0] == "B" and item[2]:
            deferred.append(b)
        else:
            weight(b)  # no-op for a lone F
    return tuple(order)
