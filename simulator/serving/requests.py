"""The requests of a serve scenario: Poisson arrivals, a CSV trace, or an offline batch at time 0."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..scenario.base import ScenarioError


@dataclass(frozen=True)
class Requests:
    """Arrival time (s), prompt and output tokens of each request, in arrival order."""

    arrival: np.ndarray
    prompt: np.ndarray
    output: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival)


def make_requests(scn) -> Requests:
    """The requests of a serve scenario: Poisson arrivals, a trace file, or `batch` requests at t = 0
    for every attention replica of an EP unit (one unit: `batch` x ep)."""
    w = scn.workload
    arr = w.arrivals
    if arr is None:
        n = w.batch * scn.layout.ep
        return Requests(np.zeros(n), np.full(n, w.prompt_len), np.full(n, w.output_len))
    rng = np.random.default_rng(arr.seed)
    if arr.trace is None:
        gaps = rng.exponential(1.0 / arr.rate, arr.count)
        return Requests(np.cumsum(gaps) - gaps[0], np.full(arr.count, w.prompt_len), np.full(arr.count, w.output_len))
    times, prompt, output = _read_trace(scn)
    n = len(prompt) if arr.count is None else min(arr.count, len(prompt))
    times, prompt, output = times[:n], prompt[:n], output[:n]
    if np.isnan(times).any():
        if arr.rate is None:
            _trace_error(scn, "rows without arrival_s need workload.arrivals.rate")
        gaps = rng.exponential(1.0 / arr.rate, n)
        times = np.where(np.isnan(times), np.cumsum(gaps) - gaps[0], times)
    order = np.argsort(times, kind="stable")
    return Requests(times[order], prompt[order], output[order])


def _trace_error(scn, detail: str):
    raise ScenarioError(f"{scn.source}: workload.arrivals.trace: {detail}")


def _read_trace(scn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrival_s or NaN, prompt_len, output_len) of each row of the trace CSV."""
    path = Path(scn.workload.arrivals.trace)
    if not path.is_absolute():
        path = Path(scn.source).parent / path
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        _trace_error(scn, f"cannot read {path}: {exc.strerror or exc}")
    if not rows:
        _trace_error(scn, f"{path} has no rows")
    missing = {"prompt_len", "output_len"} - set(rows[0])
    if missing:
        _trace_error(scn, f"{path} lacks column(s) {', '.join(sorted(missing))}; has {', '.join(rows[0])}")
    times, prompt, output = [], [], []
    for line, row in enumerate(rows, start=2):
        try:
            p, o = int(row["prompt_len"]), int(row["output_len"])
            t = float(row["arrival_s"]) if row.get("arrival_s") not in (None, "") else float("nan")
        except ValueError:
            _trace_error(scn, f"{path} line {line}: not a number in {dict(row)}")
        if p < 1 or o < 1 or t < 0:
            _trace_error(scn, f"{path} line {line}: prompt_len and output_len must be >= 1, arrival_s >= 0")
        times.append(t), prompt.append(p), output.append(o)
    return np.array(times, float), np.array(prompt, int), np.array(output, int)
