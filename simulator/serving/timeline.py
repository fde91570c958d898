"""ServeTimeline: what one serving simulation did, step by step and request by request (the engine's
output, the report's and the trace's input), and the step kinds. Apart from the engine so that reading
a report loads no simulation code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only
    from .requests import Requests
    from .summary import StepSummary

PREFILL, DECODE, MIXED = 0, 1, 2
STEP_KINDS = ("prefill", "decode", "mixed")


@dataclass
class ServeTimeline:
    """What the simulation produced: one row per step, per request and per KV transfer."""

    requests: Requests
    first_token: np.ndarray  # s; NaN if never
    finish: np.ndarray  # s; NaN if never
    rejected: np.ndarray  # bool
    preemptions: np.ndarray  # times each request was evicted
    roles: tuple[str, ...]  # per replica: serve | prefill | decode
    engines: int  # virtual engines (pipeline stages) per replica
    steps: dict  # arrays: replica, engine, start, end, kind, seqs, tokens, sampled, kv_tokens
    transfers: dict  # arrays: request, replica, start, end, bytes, tier (1 nvlink, 2 scale-out)
    kv_tokens_peak: np.ndarray  # per replica, most KV tokens held at once
    end_time: float
    summary: StepSummary  # the step's reference figures, computed once from the cost model
    attn_flops: float = 0.0  # attention FLOP of one layer on one rank, summed over every step
