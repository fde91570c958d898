"""Timeline: what one simulated training step did, task by task (the engine's output, the report's input)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

KIND_INDEX = {"F": 0, "B": 1, "W": 2}
KIND_LETTERS = ("F", "B", "W", "F")  # a pair (3) is labelled by its F, then "&B..."


@dataclass(frozen=True, kw_only=True)
class Timeline:
    """What happened: one row per task (slot), in schedule order device by device, plus per-stage
    totals (seconds)."""

    device: np.ndarray  # stage of each task
    kind: np.ndarray  # 0 F, 1 B, 2 W, 3 F&B pair
    mb: np.ndarray
    chunk: np.ndarray
    pair_mb: np.ndarray  # micro-batch of the B half of an F&B pair, -1 for plain tasks
    pair_chunk: np.ndarray
    start: np.ndarray
    end: np.ndarray
    comm_wait: np.ndarray  # seconds a task waited on a transfer after its producer finished
    dp_start: np.ndarray  # (p,) gradient reduction
    dp_end: np.ndarray
    optimizer_start: np.ndarray  # (p,)
    stage_end: np.ndarray  # (p,) end of the step on each stage
    step_time: float

    @cached_property
    def labels(self) -> tuple[str, ...]:
        """Each task's label as the schedule writes it (``F3.1``, ``F4.0&B1.1``), built when asked for
        (the trace): most runs never read them."""
        own = [f"{KIND_LETTERS[k]}{mb}.{c}" for k, mb, c in zip(self.kind.tolist(), self.mb.tolist(),
                                                               self.chunk.tolist())]
        for i in np.flatnonzero(self.kind == 3).tolist():
            own[i] += f"&B{int(self.pair_mb[i])}.{int(self.pair_chunk[i])}"
        return tuple(own)
