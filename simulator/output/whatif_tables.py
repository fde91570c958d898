"""Tables, JSON and CSV of the what-if commands: sweep, search, validate. Human units only here."""

from __future__ import annotations

import json
import math
import shlex
import sys

from rich.console import Console
from rich.table import Table

from ..scenario.units import fmt_bytes, fmt_time
from .baseline import lookup
from .render import flatten, rows_to_csv


def console() -> Console:
    """The terminal, or a wide virtual one when output goes to a file or a CI log (no wrapping)."""
    return Console() if sys.stdout.isatty() else Console(width=200)


# (report key, column title, formatter) shown for a report, when the report has the key
COLUMNS = (
    ("step_time_s", "step", fmt_time),
    ("tokens_per_s_per_gpu", "tok/s/GPU", lambda v: f"{v:,.0f}"),
    ("mfu", "MFU", lambda v: f"{100 * v:.1f}%"),
    ("bubble_fraction", "bubble", lambda v: f"{100 * v:.1f}%"),
    ("ttft_s.p99", "TTFT p99", fmt_time),
    ("tpot_s.p99", "TPOT p99", fmt_time),
    ("e2e_latency_s.p99", "latency p99", fmt_time),
    ("output_tokens_per_s", "out tok/s", lambda v: f"{v:,.0f}"),
    ("memory_bytes.total", "mem/GPU", fmt_bytes),
    ("cost_per_million_tokens", "$/Mtok", lambda v: f"{v:.3f}"),
)


def _columns(reports: list[dict]) -> list[tuple]:
    return [c for c in COLUMNS if any(r and lookup(r, c[0]) is not None for r in reports)]


def _cell(report: dict | None, col) -> str:
    value = lookup(report, col[0]) if report else None
    return "" if value is None else col[2](value)


def _value(v) -> str:
    return "null" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else str(v)


# --- sweep --------------------------------------------------------------------------------------

def sweep_table(points, title: str) -> Table:
    fields = list(points[0].values) if points else []
    cols = _columns([p.report for p in points])
    t = Table(title=title, title_justify="left")
    for f in fields:
        t.add_column(f.split(".")[-1])
    t.add_column("status")
    for c in cols:
        t.add_column(c[1], justify="right")
    for p in points:
        status = p.status.replace("_", " ") + (f" (#{p.index})" if p.error else "")
        cells = [_cell(p.report, c) for c in cols] if p.status in ("ok", "out_of_memory") else [""] * len(cols)
        t.add_row(*[_value(p.values[f]) for f in fields], status, *cells)
    return t


def sweep_notes(points) -> list[str]:
    """One line per point that failed or did not fit: '#3 invalid: <the ScenarioError line>'."""
    return [f"#{p.index} {p.status.replace('_', ' ')}: {p.error.removeprefix('out of memory: ')}"
            for p in points if p.error]


def sweep_json(points) -> str:
    return json.dumps({"points": [p.to_dict() for p in points]}, indent=2, sort_keys=True) + "\n"


def sweep_csv(points) -> str:
    rows = []
    for p in points:
        row = {**{f"sweep.{k}": _value(v) for k, v in p.values.items()}, "status": p.status, "error": p.error or ""}
        row.update(flatten(p.report or {}))
        rows.append(row)
    return rows_to_csv(rows)


# --- search -------------------------------------------------------------------------------------

def search_table(res, title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for name, just in (("#", "right"), ("layout", "left"), ("GPUs", "right"), ("step", "right"),
                       ("analytic", "right"), ("tok/s/GPU", "right"), ("MFU", "right"), ("bubble", "right"),
                       ("mem/GPU", "right"), ("$/Mtok", "right"), ("refined", "left"), ("why it lost", "left")):
        t.add_column(name, justify=just)
    for i, r in enumerate(res.refined):
        rep = r.report or {}
        tag = {"scenario": " (scenario)", "search+scenario": " (= scenario)"}.get(r.source, "")
        a = r.analytic.get("step_time_s")
        analytic = "not in search space" if r.outside else fmt_time(a) if a is not None and math.isfinite(a) else "-"
        if r.report is None:
            t.add_row(str(i + 1), r.label + tag, str(r.row["gpus"]), "", analytic, "", "", "", "", "", "",
                      r.error or r.status)
            continue
        why = ("best (tie)" if r.tie else "best") if r is res.best else r.reason
        t.add_row(str(i + 1), r.label + tag, str(r.row["gpus"]), fmt_time(rep["step_time_s"]),
                  analytic, f"{rep['tokens_per_s_per_gpu']:,.0f}", f"{100 * rep['mfu']:.1f}%",
                  f"{100 * rep['bubble_fraction']:.1f}%", fmt_bytes(rep["memory_bytes"]["total"]),
                  f"{rep['cost_per_million_tokens']:.3f}", refined_text(r), why)
    return t


def refined_text(r) -> str:
    """'no (exact)' when the analytic figure is the engine's, else why the engine refined it."""
    return getattr(r, "refined", "") or "no (exact)"


def run_command(scenario, r) -> str:
    """The `simrack run` command line that reproduces a searched layout (shell-quoted)."""
    return shlex.join(["simrack", "run", str(scenario), *(a for s in r.sets for a in ("--set", s))])


def search_commands(res, scenario) -> list[str]:
    """'#1  simrack run <scenario> --set layout.tp=4 ...' for each layout the engine ranked."""
    return [f"#{i + 1}  {run_command(scenario, r)}" for i, r in enumerate(res.refined)]


def search_summary(res) -> list[str]:
    c, tm = res.counts, res.timings
    lines = [f"{c['enumerated']:,} layouts on {', '.join(map(str, res.gpus))} GPUs, all through the analytic pass "
             f"in {tm['analytic']:.2f} s ({c['enumerated'] / max(tm['analytic'], 1e-9):,.0f} layouts/s): "
             f"{c['out_of_memory']:,} out of memory, {c['constrained']:,} break a constraint, {c['ranked']:,} "
             f"ranked; engine on {len(res.refined)} in {tm.get('engine', 0):.1f} s ("
             f"{sum(bool(r.refined) for r in res.refined)} refined, the others' analytic figures exact); "
             f"total {tm['total']:.1f} s"]
    if res.dropped:
        lines.append("not simulated: " + "; ".join(f"{n:,} {why}" for why, n in res.dropped.items()))
    own = next((r for r in res.refined if r.source != "search"), None)
    if own is None:
        return lines
    name = f"the scenario's own layout ({own.label})"
    if own.outside:  # simulated beside the results all the same: say so once, with its rank below
        lines.append(f"{name} is not in the search space: {own.outside}; simulated beside the results")
        name = "it"
    if res.best is not None:
        if own is res.best:
            lines.append(f"{name} is the best found" + (" (tied)" if own.tie else ""))
        elif own.tie:
            lines.append(f"{name} ties the best found")
        elif own.report is not None:
            key = {"tokens_per_s": "tokens_per_s", "step_time": "step_time_s"}.get(res.objective, res.objective)
            lines.append(f"{name} ranks #{res.refined.index(own) + 1}: {own.reason or own.status} "
                         f"({key} {own.report[key]:.6g} vs best {res.best.report[key]:.6g})")
    return lines


def search_json(res) -> str:
    def ref(r):
        return {"layout": r.row, "label": r.label, "source": r.source, "status": r.status, "error": r.error,
                "reason": r.reason, "tie": r.tie, "analytic": r.analytic, "outside_search_space": r.outside or None,
                "sets": list(r.sets), "report": r.report,
                "refined": bool(r.report is not None and r.refined), "refined_because": r.refined or None}

    data = {"objective": res.objective, "gpus": res.gpus, "constraints": [str(c) for c in res.constraints],
            "counts": res.counts, "timings_s": res.timings, "dropped": res.dropped,
            "best": ref(res.best) if res.best else None, "refined": [ref(r) for r in res.refined],
            "pareto_front": res.front}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def search_csv(res) -> str:
    rows = []
    for i, r in enumerate(res.refined):
        row = {"rank": i + 1, "label": r.label, "source": r.source, "status": r.status, "reason": r.reason,
               "tie": r.tie, "refined": r.refined, "outside_search_space": r.outside, "sets": " ".join(r.sets),
               **{f"layout.{k}": v for k, v in r.row.items()},
               **{f"analytic.{k}": v for k, v in r.analytic.items()}}
        row.update(flatten(r.report or {}))
        rows.append(row)
    return rows_to_csv(rows)


# --- validate -----------------------------------------------------------------------------------

def _pct_err(x: float) -> str:
    return f"{100 * x:+.1f}%"


def _notes(o) -> str:
    notes = []
    if o.case.fitted:
        notes.append("in-sample")
    if not o.case.expressible:
        notes.append("not expressible")
    if o.fits_in_memory is False:
        notes.append("over memory")
    if o.case.unmodelled:
        notes.append("unmodelled: " + ", ".join(o.case.unmodelled))
    return "; ".join(notes)


def validate_table(outcomes, mean: float, worst: float) -> Table:
    """One row per case: label, group, kind, published, simulated, error (in parentheses when the case
    is not expressible: it is not counted) and notes."""
    counted = sum(o.counted for o in outcomes)
    t = Table(title=f"simrack validate: {len(outcomes)} published figures", title_justify="left",
              caption=f"mean absolute error {100 * mean:.2f}%, max {100 * worst:.2f}% over {counted} counted cases "
                      f"({sum(not o.case.expressible for o in outcomes)} not expressible, not counted)",
              caption_justify="left")
    for name, just in (("case", "left"), ("group", "left"), ("kind", "left"), ("published", "right"),
                       ("simulated", "right"), ("error", "right"), ("notes", "left")):
        t.add_column(name, justify=just)
    for o in outcomes:
        fmt = (lambda v, unit=o.case.unit: f"{v:.4g} {unit}".strip())
        error = "" if o.error is None else _pct_err(o.error) if o.case.expressible else f"({_pct_err(o.error)})"
        t.add_row(o.case.label, o.case.group or "-", o.kind or "-", fmt(o.case.value),
                  fmt(o.simulated) if o.simulated is not None else (o.problem or "failed"), error, _notes(o))
    return t


def validate_groups_table(stats, samples: dict | None = None, title: str = "errors by group (expressible cases)"
                          ) -> Table:
    """Mean and max absolute error per group (generation x kind), in-sample and out-of-sample apart,
    then, given `samples`, per sample over all groups."""
    t = Table(title=title, title_justify="left")
    for name, just in (("group", "left"), ("kind", "left"), ("sample", "left"), ("cases", "right"),
                       ("mean |error|", "right"), ("max |error|", "right")):
        t.add_column(name, justify=just)

    def row(s, group, kind):
        na = s.cases == 0
        t.add_row(group, kind, s.sample, str(s.cases), "-" if na else f"{100 * s.mean:.1f}%",
                  "-" if na else f"{100 * s.max:.1f}%")

    for s in stats:
        row(s, s.group or "-", s.kind or "-")
    if samples is not None:
        t.add_section()
        for key in ("in_sample", "out_of_sample", "all"):
            row(samples[key], "all", "all")
    return t


def validate_not_expressible(outcomes) -> list[str]:
    """'label: why' for each case that simrack cannot express yet (listed, not counted)."""
    return [f"  {o.case.label}: {o.case.why}" for o in outcomes if not o.case.expressible]


def validate_csv(rows: list[dict]) -> str:
    """CSV of validate's rows (simulator.output.validation.rows): one line per case."""
    return rows_to_csv(rows)
