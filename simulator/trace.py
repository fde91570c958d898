"""Timeline -> Chrome trace JSON (opens in Perfetto): one track per stage, one slice per task."""

from __future__ import annotations

import json

import numpy as np

from .engine import Timeline
from .plan import Plan

PHASE_NAMES = ("forward", "backward", "weight-grad", "forward&backward")


def chrome_trace(plan: Plan, tl: Timeline) -> str:
    """Trace events in microseconds: tasks, gradient reduction and optimizer per stage (training),
    or batches per replica and KV transfers (serving: `tl` is a ServeTimeline)."""
    from .serving import ServeTimeline

    if isinstance(tl, ServeTimeline):
        return serve_trace(tl)
    events = []
    for stage in range(plan.table.p):
        events.append({"ph": "M", "name": "thread_name", "pid": 0, "tid": stage,
                       "args": {"name": f"stage {stage} (device {int(plan.devices[stage])})"}})
    us = lambda s: round(float(s) * 1e6, 3)  # noqa: E731
    for i in np.argsort(tl.start, kind="stable"):
        events.append({"ph": "X", "pid": 0, "tid": int(tl.device[i]), "name": tl.labels[i],
                       "cat": PHASE_NAMES[tl.kind[i]], "ts": us(tl.start[i]),
                       "dur": us(tl.end[i] - tl.start[i]), "args": {"mb": int(tl.mb[i]), "chunk": int(tl.chunk[i])}})
    for stage in range(plan.table.p):
        if tl.dp_end[stage] > tl.dp_start[stage]:
            events.append({"ph": "X", "pid": 1, "tid": stage, "name": "gradient reduction", "cat": "dp",
                           "ts": us(tl.dp_start[stage]), "dur": us(tl.dp_end[stage] - tl.dp_start[stage])})
        events.append({"ph": "X", "pid": 0, "tid": stage, "name": "optimizer", "cat": "optimizer",
                       "ts": us(tl.optimizer_start[stage]),
                       "dur": us(tl.stage_end[stage] - tl.optimizer_start[stage])})
    events.append({"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "compute"}})
    events.append({"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "data-parallel comm"}})
    return json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}) + "\n"


def serve_trace(tl) -> str:
    """Serving trace in microseconds: one track per replica engine, one slice per batch step (prefill,
    decode or mixed, with its sequences and tokens), KV transfers on their own tracks."""
    from .serving import STEP_KINDS

    st, us = tl.steps, (lambda s: round(float(s) * 1e6, 3))  # noqa: E731
    events = [{"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "batches"}},
              {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "KV transfers"}}]
    for r, role in enumerate(tl.roles):
        for e in range(tl.engines):
            events.append({"ph": "M", "name": "thread_name", "pid": 0, "tid": r * tl.engines + e,
                           "args": {"name": f"replica {r} ({role})" + (f" engine {e}" if tl.engines > 1 else "")}})
    for i in range(len(st["start"])):
        events.append({"ph": "X", "pid": 0, "tid": int(st["replica"][i] * tl.engines + st["engine"][i]),
                       "name": STEP_KINDS[st["kind"][i]], "cat": STEP_KINDS[st["kind"][i]], "ts": us(st["start"][i]),
                       "dur": us(st["end"][i] - st["start"][i]),
                       "args": {"sequences": int(st["seqs"][i]), "tokens": int(st["tokens"][i]),
                                "kv_tokens": int(st["kv_tokens"][i])}})
    tr = tl.transfers
    for i in range(len(tr["start"])):
        events.append({"ph": "X", "pid": 1, "tid": int(tr["replica"][i]), "name": f"KV of request {int(tr['request'][i])}",
                       "cat": "kv-transfer", "ts": us(tr["start"][i]), "dur": us(tr["end"][i] - tr["start"][i]),
                       "args": {"bytes": float(tr["bytes"][i])}})
    return json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}) + "\n"
