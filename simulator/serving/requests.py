"""The requests of a serve scenario: Poisson arrivals, a CSV trace, or an offline batch at time 0."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..scenario.base import ScenarioError
from ..scenario.files import FileProblem, clip, one_line, quote, read_text, resolve
from ..scenario.limits import (MAX_DECODE_STEPS, MAX_REQUESTS, MAX_SERVE_CONTEXT, MAX_SPAN_S, MAX_TRACE_BYTES,
                               decode_steps)
from .memory import serve_memory
from .steps import step_costs


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
        return _bounded(scn, Requests(np.zeros(n), np.full(n, w.prompt_len), np.full(n, w.output_len)),
                        "workload.batch")
    rng = np.random.default_rng(arr.seed)
    if arr.trace is None:
        gaps = rng.exponential(1.0 / arr.rate, arr.count)
        return _bounded(scn, Requests(np.cumsum(gaps) - gaps[0], np.full(arr.count, w.prompt_len),
                                      np.full(arr.count, w.output_len)), "workload.arrivals")
    times, prompt, output = _read_trace(scn)
    n = len(prompt) if arr.count is None else min(arr.count, len(prompt))
    times, prompt, output = times[:n], prompt[:n], output[:n]
    if np.isnan(times).any():
        if arr.rate is None:
            _trace_error(scn, "rows without arrival_s need workload.arrivals.rate")
        if n / arr.rate > MAX_SPAN_S:
            _trace_error(scn, f"{n:,} rows without arrival_s at rate {arr.rate:g}/s span {n / arr.rate:g} s, over "
                         f"simrack's limit of {MAX_SPAN_S:g} s (float time loses the microseconds beyond)")
        gaps = rng.exponential(1.0 / arr.rate, n)
        times = np.where(np.isnan(times), np.cumsum(gaps) - gaps[0], times)
    order = np.argsort(times, kind="stable")
    return _bounded(scn, Requests(times[order], prompt[order], output[order]), "workload.arrivals.trace")


def _bounded(scn, req: Requests, field: str) -> Requests:
    """`req`, unless simulating it takes more decode steps than simrack's limit (simulator.scenario.
    limits), or it holds a request the KV cache takes that is longer than MAX_SERVE_CONTEXT;
    ScenarioError at `field` then. Sequences a step: what a replica's KV cache holds, and under a
    light load what arrives while one is served (Little's law with the step costs, the decode
    steps stretched by the share of the replica's time that the arriving prompts' prefill takes)."""
    memory = serve_memory(scn)
    kv_tokens = memory.kv_tokens
    fits = memory.held(req.prompt + req.output) <= kv_tokens  # the others are rejected, not run
    longest = int((req.prompt + req.output)[fits].max()) if fits.any() else 0
    if longest > MAX_SERVE_CONTEXT:
        raise ScenarioError(one_line(f"{scn.source}: {field}: a request of {longest:,} tokens (prompt + output) "
                                     f"that the KV cache holds is over simrack's limit of {MAX_SERVE_CONTEXT:,} "
                                     "(tables by context length)"))
    if not fits.any() or int(req.output[fits].sum()) <= MAX_DECODE_STEPS:
        return req  # even one sequence a step is within the limit
    prompt, output, arrival = req.prompt[fits], req.output[fits], req.arrival[fits]
    context = float(np.mean(prompt + output))
    at_once = min(int(kv_tokens // memory.held(max(int(context), 1))), scn.workload.batch * scn.layout.ep)
    why = ""
    span = float(arrival.max() - arrival.min()) if len(arrival) > 1 else 0.0
    if span > 0 and not np.isnan(span):
        replicas = max(1, scn.layout.dp // scn.layout.ep - (scn.workload.disaggregated.prefill_replicas
                                                            if scn.workload.disaggregated else 0))
        rate = len(arrival) / span / replicas
        costs, busy = step_costs(scn), 1.0
        prefill = float(costs.prefill(int(np.mean(prompt))))
        share = min(rate * prefill, 0.99)  # of a replica's time spent in the prompts' prefill, stretching decode
        for _ in range(4):  # Little's law: in the system = arrival rate x (prefill + output x step time)
            running = max(1, round(min(busy, at_once)))  # never more than the cache and the batch hold
            step = float(costs.decode_step(running, int(context))) / (1.0 - share)
            busy = rate * (prefill + float(np.mean(output)) * step)
        if busy < at_once:
            at_once, why = busy, f" at {rate:.3g} arrivals/s a replica"
    problem = decode_steps(scn, int(output.sum()), int(output.max()), field, at_once, why)
    if problem:
        raise ScenarioError(one_line(f"{scn.source}: {problem[0]}: {problem[1]}"))
    return req


def _trace_error(scn, detail: str):
    raise ScenarioError(one_line(f"{scn.source}: workload.arrivals.trace: {detail}"))


def _read_trace(scn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrival_s or NaN where the field is empty, prompt_len, output_len) of each row of the trace
    CSV; every problem is one line naming the scenario, the field, the trace and its line."""
    path = resolve(scn.workload.arrivals.trace, Path(scn.source).parent)
    shown = clip(str(path))
    try:
        text = read_text(path, MAX_TRACE_BYTES)
    except FileProblem as exc:
        _trace_error(scn, f"cannot read {shown}: {exc.detail}")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        missing = {"prompt_len", "output_len"} - set(header)
        if not header:
            _trace_error(scn, f"{shown} has no rows")
        if missing:
            _trace_error(scn, f"{shown} lacks column(s) {', '.join(sorted(missing))}; has "
                         f"{clip(', '.join(header))}")
        if len(set(header)) < len(header):
            _trace_error(scn, f"{shown} line 1: a column is named twice: {clip(', '.join(header))}")
        at = {name: header.index(name) for name in ("prompt_len", "output_len", "arrival_s") if name in header}
        times, prompt, output = [], [], []
        for row in reader:
            line = reader.line_num
            if not row or row == [""]:
                continue  # a blank line
            where = f"{shown} line {line}"
            if len(row) != len(header):
                _trace_error(scn, f"{where}: {len(row)} fields, the header has {len(header)}")
            if len(prompt) == MAX_REQUESTS:
                _trace_error(scn, f"{shown}: more than {MAX_REQUESTS:,} requests, simrack's limit (per-request "
                             "arrays and events)")
            p, o = (_tokens(scn, where, name, row[at[name]]) for name in ("prompt_len", "output_len"))
            times.append(_seconds(scn, where, row[at["arrival_s"]]) if "arrival_s" in at else math.nan)
            prompt.append(p), output.append(o)
    except csv.Error as exc:
        _trace_error(scn, f"{shown} line {reader.line_num}: not CSV ({one_line(str(exc), 100)})")
    if not prompt:
        _trace_error(scn, f"{shown} has no rows")
    return np.array(times, float), np.array(prompt, np.int64), np.array(output, np.int64)


MAX_ROW_TOKENS = 2**31 - 1  # a request longer than MAX_SERVE_CONTEXT is refused if the KV cache holds it


def _tokens(scn, where: str, name: str, text: str) -> int:
    """A token count of the trace: a whole number from 1 to MAX_ROW_TOKENS."""
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        _trace_error(scn, f"{where}: {name} {quote(text)} is not a whole number of tokens")
    if len(text) > 12 or not 1 <= int(text) <= MAX_ROW_TOKENS:
        _trace_error(scn, f"{where}: {name} {quote(text)} is not between 1 and {MAX_ROW_TOKENS:,} tokens")
    return int(text)


def _seconds(scn, where: str, text: str) -> float:
    """An arrival time of the trace: NaN where empty (drawn at workload.arrivals.rate), else a finite
    number of seconds from 0 to MAX_SPAN_S."""
    text = text.strip()
    if not text:
        return math.nan
    try:
        value = float(text) if len(text) <= 40 else math.nan
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_SPAN_S:  # NaN, infinities and words fail this too
        _trace_error(scn, f"{where}: arrival_s {quote(text)} is not a number of seconds from 0 to {MAX_SPAN_S:g}")
    return value
