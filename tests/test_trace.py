"""The Chrome trace loads in Perfetto whole: valid JSON, no partially overlapping slices on a track,
every track and process named, every slice ending where the simulation says (to 0.5 ns)."""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from simulator import load_scenario
from simulator.output.trace import chrome_trace
from simulator.simulate import run

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
SHIPPED = [
    "gpt3-175b-selene.yaml",  # the quick-start trace: interleaved 1F1B, no data parallelism
    "llama3-405b-h100.yaml",  # training with gradient-reduction tracks (dp 128)
    "serve-llama3-70b-h100.yaml",  # serving batches
    "serve-llama3-70b-disaggregated.yaml",  # serving with KV-transfer tracks
]
# half a nanosecond (in us), plus 1e-3 ns for the float product seconds * 1e9 (its ulp is below 1e-3 ns
# for times under an hour)
HALF_NS_US = Decimal("0.0005") + Decimal("1e-6")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


@pytest.fixture(scope="module", params=SHIPPED)
def traced(request):
    """(Result, trace events with exact decimal times) for one shipped scenario."""
    res = run(load_scenario(SCENARIOS / request.param))
    text = chrome_trace(res.plan, res.timeline)
    events = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)["traceEvents"]
    return request.param, res, events


def _tracks(events) -> dict[tuple, list[tuple]]:
    out = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            out[e["pid"], e["tid"]].append((e["ts"], e["ts"] + e["dur"], e["name"]))
    return out


def _partial_overlaps(slices: list[tuple]) -> list[tuple]:
    """Pairs (outer, inner) where inner starts inside outer but ends after it (neither apart nor nested)."""
    bad, stack = [], []
    for s in sorted(slices, key=lambda x: (x[0], -x[1])):
        while stack and stack[-1][1] <= s[0]:
            stack.pop()
        if stack and s[1] > stack[-1][1]:
            bad.append((stack[-1], s))
        stack.append(s)
    return bad


def perfetto_dropped(text: str) -> int:
    """Slices an importer like Perfetto's drops: times to integer ns by llround(us * 1000), slices
    sorted by start (longer first), a slice that ends after the open slice it starts inside is dropped."""
    tracks = defaultdict(list)
    for e in json.loads(text)["traceEvents"]:
        if e["ph"] == "X":
            ts = round(e["ts"] * 1000)
            tracks[e["pid"], e["tid"]].append((ts, ts + round(e["dur"] * 1000)))
    return sum(len(_partial_overlaps(s)) for s in tracks.values())


def test_no_partially_overlapping_slices(traced):
    name, _, events = traced
    tracks = _tracks(events)
    assert tracks
    for key, slices in tracks.items():
        assert _partial_overlaps(slices) == [], f"{name}: track {key}"
        assert all(d[1] >= d[0] for d in slices)


def test_every_track_and_process_is_named(traced):
    name, _, events = traced
    threads = {(e["pid"], e["tid"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    processes = {e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    used = set(_tracks(events))
    assert used <= threads, f"{name}: unnamed tracks {sorted(used - threads)[:5]}"
    assert {pid for pid, _ in used} <= processes
    assert all(e["args"]["name"] for e in events if e["ph"] == "M")
    if name in ("serve-llama3-70b-disaggregated.yaml", "llama3-405b-h100.yaml"):  # KV transfers, gradients
        assert any(pid == 1 for pid, _ in used), f"{name}: the pid 1 tracks this test is meant to cover"


def test_slices_end_where_the_simulation_says(traced):
    """Every simulated task, reduction, optimizer, step and transfer is one slice whose start and end
    are the simulated times to within half a nanosecond."""
    name, res, events = traced
    tl = res.timeline
    slices = [e for e in events if e["ph"] == "X"]
    if hasattr(tl, "steps"):
        ends = list(tl.steps["end"]) + list(tl.transfers["end"])
        starts = list(tl.steps["start"]) + list(tl.transfers["start"])
        order = [e for e in slices if e["pid"] == 0] + [e for e in slices if e["pid"] == 1]
    else:
        reducing = [s for s in range(len(tl.dp_start)) if tl.dp_end[s] > tl.dp_start[s]]
        tasks = sorted(range(len(tl.start)), key=lambda i: tl.start[i])
        starts = [tl.start[i] for i in tasks]
        ends = [tl.end[i] for i in tasks]
        order = [e for e in slices if e["cat"] not in ("dp", "optimizer")]
        order += [e for e in slices if e["cat"] == "dp"] + [e for e in slices if e["cat"] == "optimizer"]
        starts += [tl.dp_start[s] for s in reducing] + list(tl.optimizer_start)
        ends += [tl.dp_end[s] for s in reducing] + list(tl.stage_end)
    assert len(order) == len(slices) == len(starts)
    for e, t0, t1 in zip(order, starts, ends):
        assert abs(e["ts"] - Decimal(float(t0)) * 10**6) <= HALF_NS_US
        assert abs(e["ts"] + e["dur"] - Decimal(float(t1)) * 10**6) <= HALF_NS_US


def test_quick_start_trace_loses_no_slice_in_a_perfetto_like_import():
    res = run(load_scenario(SCENARIOS / "gpt3-175b-selene.yaml"))
    text = chrome_trace(res.plan, res.timeline)
    assert sum(e["ph"] == "X" for e in json.loads(text)["traceEvents"]) == len(res.timeline.start) + res.plan.table.p
    assert perfetto_dropped(text) == 0


def test_perfetto_emulation_catches_a_one_ns_overlap():
    """The checker itself: two slices that overlap by 1 ns on one track, one is dropped."""
    ev = [{"ph": "X", "pid": 0, "tid": 0, "ts": 1.0, "dur": 1.001},
          {"ph": "X", "pid": 0, "tid": 0, "ts": 2.0, "dur": 1.0}]
    assert perfetto_dropped(json.dumps({"traceEvents": ev})) == 1
    ev[0]["dur"] = 1.0
    assert perfetto_dropped(json.dumps({"traceEvents": ev})) == 0
