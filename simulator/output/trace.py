"""Timeline -> Chrome trace JSON (opens in Perfetto): one track per stage, one slice per task.

Times are written in microseconds with three decimals, i.e. whole nanoseconds. Each slice's start and
end are rounded to the nanosecond and its duration is end minus start, so slices that touch in the
simulation touch in the trace: Perfetto drops a slice that partially overlaps another on its track.
Every track (pid, tid) used has a thread_name and every pid a process_name.
"""

from __future__ import annotations

import json

import numpy as np

from ..serving.timeline import STEP_KINDS, ServeTimeline
from ..training.engine import Timeline
from ..training.plan import Plan

PHASE_NAMES = ("forward", "backward", "weight-grad", "forward&backward")


def _ns(seconds: float) -> int:
    """Seconds -> whole nanoseconds."""
    return round(float(seconds) * 1e9)


def _slice(pid: int, tid: int, name: str, cat: str, start: float, end: float, args: dict | None = None) -> dict:
    """A complete ("X") event from `start` to `end` (s): ts and dur in us, both whole nanoseconds."""
    t0, t1 = _ns(start), _ns(end)
    event = {"ph": "X", "pid": pid, "tid": tid, "name": name, "cat": cat, "ts": t0 / 1000, "dur": (t1 - t0) / 1000}
    if args is not None:
        event["args"] = args
    return event


def _thread(pid: int, tid: int, name: str) -> dict:
    return {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}}


def _process(pid: int, name: str) -> dict:
    return {"ph": "M", "name": "process_name", "pid": pid, "args": {"name": name}}


def chrome_trace(plan: Plan, tl: Timeline) -> str:
    """Trace events in microseconds: tasks, gradient reduction and optimizer per stage (training),
    or batches per replica and KV transfers (serving: `tl` is a ServeTimeline)."""

    if isinstance(tl, ServeTimeline):
        return serve_trace(tl)
    events = [_process(0, "compute"), _process(1, "data-parallel comm")]
    stages = range(plan.table.p)
    name = {s: f"stage {s} (device {int(plan.devices[s])})" for s in stages}
    events += [_thread(0, s, name[s]) for s in stages]
    reducing = [s for s in stages if tl.dp_end[s] > tl.dp_start[s]]
    events += [_thread(1, s, f"{name[s]} gradient reduction") for s in reducing]
    for i in np.argsort(tl.start, kind="stable"):
        events.append(_slice(0, int(tl.device[i]), tl.labels[i], PHASE_NAMES[tl.kind[i]], tl.start[i], tl.end[i],
                             {"mb": int(tl.mb[i]), "chunk": int(tl.chunk[i])}))
    for s in stages:
        if s in reducing:
            events.append(_slice(1, s, "gradient reduction", "dp", tl.dp_start[s], tl.dp_end[s]))
        events.append(_slice(0, s, "optimizer", "optimizer", tl.optimizer_start[s], tl.stage_end[s]))
    return json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}) + "\n"


def serve_trace(tl) -> str:
    """Serving trace in microseconds: one track per replica engine, one slice per batch step (prefill,
    decode or mixed, with its sequences and tokens), KV transfers on one track per sending replica."""

    st, tr = tl.steps, tl.transfers
    events = [_process(0, "batches"), _process(1, "KV transfers")]
    for r, role in enumerate(tl.roles):
        for e in range(tl.engines):
            events.append(_thread(0, r * tl.engines + e,
                                  f"replica {r} ({role})" + (f" engine {e}" if tl.engines > 1 else "")))
    for r in sorted({int(x) for x in tr["replica"]}):
        events.append(_thread(1, r, f"replica {r} ({tl.roles[r]}) sends KV"))
    for i in range(len(st["start"])):
        kind = STEP_KINDS[st["kind"][i]]
        events.append(_slice(0, int(st["replica"][i] * tl.engines + st["engine"][i]), kind, kind,
                             st["start"][i], st["end"][i],
                             {"sequences": int(st["seqs"][i]), "tokens": int(st["tokens"][i]),
                              "kv_tokens": int(st["kv_tokens"][i])}))
    for i in range(len(tr["start"])):
        events.append(_slice(1, int(tr["replica"][i]), f"KV of request {int(tr['request'][i])}", "kv-transfer",
                             tr["start"][i], tr["end"][i], {"bytes": float(tr["bytes"][i])}))
    return json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}) + "\n"
