"""Regression checks for CI: predicted throughput, step time, latency and memory against a baseline.

`simrack check FILE... --baseline BASELINE.json [--tolerance 2%] [--update]` simulates each scenario
and compares the figures of `METRICS` that its report has (training: step time, tokens/s, memory per
device; serving: TTFT, TPOT and end-to-end latency p99, output tokens/s, peak KV cache, memory) with
the baseline's. A figure worse than the baseline by more than the tolerance (relative) is a
regression: one line per scenario, exit status 1. `--update` writes the current figures instead.

The baseline is JSON keyed by the scenario file's path relative to the baseline's directory, so the
same file works from any working directory:

    {"simrack_baseline": 1, "simrack_version": "0.1.0", "scenarios": {"../scenarios/gpt3-175b-selene.yaml":
        {"kind": "train", "metrics": {"step_time_s": 13.06, "tokens_per_s": 10032.1, ...}}}}
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .._version import __version__
from ..scenario.files import FileProblem, clip, one_line, read_text
from ..scenario.limits import MAX_BASELINE_BYTES
from ..scenario.units import fmt_bytes, fmt_time

VERSION = 1

# (dotted report key, label, which way is better, unit: time | rate (tokens/s) | bytes)
METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("step_time_s", "step time", "lower", "time"),
    ("tokens_per_s", "throughput", "higher", "rate"),
    ("ttft_s.p99", "TTFT p99", "lower", "time"),
    ("tpot_s.p99", "TPOT p99", "lower", "time"),
    ("e2e_latency_s.p99", "latency p99", "lower", "time"),
    ("output_tokens_per_s", "output throughput", "higher", "rate"),
    ("kv_cache_bytes_peak", "peak KV cache", "lower", "bytes"),
    ("memory_bytes.total", "memory per GPU", "lower", "bytes"),
)


def lookup(report: dict, key: str):
    """report["a"]["b"] for key "a.b"; None when absent or not a number."""
    value = report
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def figures(report: dict) -> dict[str, float]:
    """The METRICS a report has, by key."""
    out = {}
    for key, *_ in METRICS:
        value = lookup(report, key)
        if value is not None:
            out[key] = value
    return out


def parse_tolerance(text: str) -> float:
    """'2%' -> 0.02, '0.02' -> 0.02; ValueError (one line) otherwise."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"--tolerance {text!r}: expected a fraction (0.02) or a percentage (2%)") from None
    if not 0 <= value < 10:
        raise ValueError(f"--tolerance {text!r}: must be between 0 and 1000%")
    return value


@dataclass(frozen=True)
class Finding:
    """The comparison of one scenario with its baseline entry."""

    key: str
    regressions: list[str]  # "step time 13.06 s -> 14.10 s (+8.0% > 2.0%)"
    improvements: list[str]
    missing: bool  # not in the baseline

    def line(self) -> str:
        return f"{self.key}: " + "; ".join(self.regressions)


def baseline_key(scenario: Path, baseline: Path) -> str:
    """The scenario's path relative to the baseline's directory, with forward slashes."""
    rel = os.path.relpath(Path(scenario).resolve(), Path(baseline).resolve().parent)
    return Path(rel).as_posix()


def load_baseline(path: Path) -> dict:
    """The baseline's scenarios mapping; ValueError (one line) if unreadable or corrupt: every entry
    holds metrics of METRICS, each a finite non-negative number (NaN, null, a string, a boolean or a
    negative figure would compare as no regression, hiding one)."""
    try:
        text = read_text(path, MAX_BASELINE_BYTES)
    except FileProblem as err:
        if err.detail == "file not found":
            raise ValueError(f"{path}: baseline not found (create it with --update)") from None
        raise ValueError(f"{path}: not a simrack baseline ({err.detail})") from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{path}: not a simrack baseline ({one_line(str(err), 200)})") from None
    if not isinstance(data, dict) or data.get("simrack_baseline") != VERSION or not isinstance(
            data.get("scenarios"), dict):
        raise ValueError(f"{path}: not a simrack baseline (expected simrack_baseline: {VERSION} and scenarios)")
    for key, item in data["scenarios"].items():
        problem = _entry_problem(item)
        if problem:
            raise ValueError(one_line(f"{path}: scenarios[{json.dumps(clip(key, 100))}]{problem}; a corrupt "
                                      "baseline cannot show a regression (delete it and write it anew with --update)"))
    return data["scenarios"]


def _no_constant(name: str):
    raise ValueError(f"{name} is not a figure a baseline may hold")


_KNOWN = {key for key, *_ in METRICS}


def _entry_problem(item: object) -> str | None:
    """Why a baseline entry is unusable (".metrics.step_time_s: ..."), or None."""
    if not isinstance(item, dict) or not isinstance(item.get("metrics"), dict) or not item["metrics"]:
        return ": expected {\"kind\": ..., \"metrics\": {...}} with at least one metric"
    for metric, value in item["metrics"].items():
        where = f".metrics.{clip(str(metric), 60)}"
        if metric not in _KNOWN:
            return f"{where}: unknown metric; expected some of {', '.join(sorted(_KNOWN))}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{where}: {clip(json.dumps(value), 60)} is not a number"
        if not math.isfinite(value) or value < 0:
            return f"{where}: {value:g} is not a finite non-negative number"
    return None


def compare(key: str, now: dict[str, float], then: dict[str, float] | None, tolerance: float) -> Finding:
    """Regressions and improvements beyond the tolerance, metric by metric."""
    if then is None:
        return Finding(key, [], [], True)
    worse, better = [], []
    for metric, label, way, unit in METRICS:
        if metric not in now or metric not in then or now[metric] == then[metric]:
            continue
        if then[metric] == 0:  # from zero: any rise is beyond every tolerance
            text = f"{label} {_fmt(unit, 0.0)} -> {_fmt(unit, now[metric])} (from zero"
            (worse if way == "lower" else better).append(f"{text})")
            continue
        change = now[metric] / then[metric] - 1
        loss = change if way == "lower" else -change
        text = f"{label} {_fmt(unit, then[metric])} -> {_fmt(unit, now[metric])} ({100 * change:+.1f}%"
        if loss > tolerance:
            worse.append(f"{text} > {100 * tolerance:.1f}%)")
        elif -loss > tolerance:
            better.append(f"{text})")
    return Finding(key, worse, better, False)


def _fmt(unit: str, value: float) -> str:
    """A figure in its METRICS unit: time (s), rate (tokens/s) or bytes."""

    if unit == "time":
        return fmt_time(value)
    if unit == "bytes":
        return fmt_bytes(value)
    if unit == "rate":
        return f"{value:,.1f} tokens/s"
    raise ValueError(f"unknown unit {unit!r}")


def updated(old: dict, entries: dict[str, dict]) -> str:
    """Baseline JSON with `entries` replacing their keys in `old` (other scenarios kept), stamped with the
    simrack_version that wrote it (informational: a baseline without it loads the same)."""
    scenarios = dict(old)
    scenarios.update(entries)
    return json.dumps({"simrack_baseline": VERSION, "simrack_version": __version__,
                       "scenarios": dict(sorted(scenarios.items()))}, indent=2, sort_keys=True) + "\n"


def entry(report: dict) -> dict:
    """The baseline entry of one report."""
    return {"kind": report.get("kind", "train"), "metrics": figures(report)}
