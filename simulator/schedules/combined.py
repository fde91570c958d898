"""Megatron-Core's combined 1F1B (`overlap_moe_expert_parallel_comm`): a schedule's steady state run as overlapped
F&B pairs, one micro-batch's expert all-to-alls behind another micro-batch's compute.

Each device keeps its schedule's order of forwards and of backwards, runs one forward more in the warm-up (so that
no pair's halves depend on each other: megatron/core/pipeline_parallel/schedules.py, get_pp_rank_microbatches),
then runs each further forward paired with its next backward, and the backwards left alone. Without pipelining
that is F0, F1&B0, F2&B1, ..., B(m-1) (combined_1f1b.py, combined_1f1b_schedule_for_no_pipelining); with the
interleaved schedule, Megatron's warm-up plus one.

A pair runs its two halves layer by layer (megatron/core/models/common/model_chunk_schedule_plan.py,
TransformerModelChunkSchedulePlan.run: the forward's layer i beside the backward's last unfinished layer, whose state
is released before the next two layers start), so inside a pair a device holds what it held before it plus one
layer: combined_in_flight.
"""

from __future__ import annotations

import numpy as np

from .codes import B, F, Codes, codes_of
from .table import ScheduleTable, in_flight, peak_in_pair


def combined_codes(codes: Codes) -> Codes:
    """The combined-1F1B Codes of one table of forwards and full backwards (1f1b, interleaved)."""
    if len(codes.m) != 1 or codes.split_backward or (codes.pmb >= 0).any():
        raise ValueError(f"combined 1F1B pairs the forwards and full backwards of one table; {codes.name} "
                         "splits its backward or already pairs")
    rows = [_combined_row(codes, d) for d in range(codes.p)]
    start = np.concatenate([[0], np.cumsum([len(r[0]) for r in rows])])
    cols = [np.concatenate([r[i] for r in rows]) for i in range(5)]
    return Codes(f"{codes.name}, combined 1F1B", codes.p, codes.v, codes.m, start, *cols, codes.routes,
                 codes.direction, False)


def _combined_row(codes: Codes, d: int) -> tuple[np.ndarray, ...]:
    """(kind, mb, chunk, pair mb, pair chunk) of device d: warm-up forwards, F&B pairs, the backwards left."""
    lo, hi = codes.start[d], codes.start[d + 1]
    kind, mb, chunk = codes.kind[lo:hi], codes.mb[lo:hi], codes.chunk[lo:hi]
    f, b = np.flatnonzero(kind == F), np.flatnonzero(kind == B)
    warm = int(np.searchsorted(f, b[0])) if len(b) else len(f)  # the forwards before the first backward
    paired = len(f) - warm
    alone = b[paired:]
    none = np.full(warm, -1), np.full(len(alone), -1)
    return (np.concatenate([np.full(len(f), F), np.full(len(alone), B)]),
            np.concatenate([mb[f], mb[alone]]), np.concatenate([chunk[f], chunk[alone]]),
            np.concatenate([none[0], mb[b[:paired]], none[1]]),
            np.concatenate([none[0], chunk[b[:paired]], none[1]]))


def combined(table: ScheduleTable) -> ScheduleTable:
    """A ScheduleTable of forwards and full backwards, run as Megatron-Core's combined 1F1B."""
    return ScheduleTable.from_codes(combined_codes(table.coded if table.coded is not None else codes_of(table)))


def combined_in_flight(table: ScheduleTable, chunk_layers) -> np.ndarray:
    """(p,) micro-batch-chunks of activations each device of a combined-1F1B table holds at its peak (floats):
    in_flight, less, where a device peaks inside a pair, the pair's forward chunk but one of its `chunk_layers` (p,)
    layers (the pair grows its forward one layer as it frees one of its backward's)."""
    layers = np.maximum(np.asarray(chunk_layers, dtype=float), 1.0)
    return in_flight(table) - peak_in_pair(table) * (1.0 - 1.0 / layers)
