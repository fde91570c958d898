"""Report -> terminal table (rich), JSON, CSV. Human units appear here and nowhere else."""

from __future__ import annotations

import csv
import io
import json

from rich.console import Console
from rich.table import Table

from .report import Report
from .units import fmt_bytes, fmt_time


def to_json(report: Report) -> str:
    """Stable JSON (sorted keys, fixed float precision): same scenario and seed, same bytes."""
    return json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n"


def flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def to_csv(reports: list[Report]) -> str:
    """One row per report, one column per flattened key."""
    rows = [flatten(r.to_dict()) for r in reports]
    fields = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (";".join(map(str, v)) if isinstance(v, list) else v) for k, v in row.items()})
    return buf.getvalue()


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def table(report: Report) -> Table:
    """The report as a two-column rich table."""
    r = report
    lay = r.layout
    t = Table(title=f"simrack: {r.scenario}", show_header=False, title_justify="left")
    t.add_column("metric", style="bold")
    t.add_column("value")
    layout = (f"TP{lay['tp']} PP{lay['pp']} DP{lay['dp']} CP{lay['cp']} EP{lay['ep']}, {lay['schedule']}"
              f" (chunks {lay['chunks']}), {lay['micro_batches']} micro-batches of {lay['micro_batch']}")
    mem = r.memory_bytes
    rows = [
        ("GPUs / layout", f"{r.gpus} / {layout}"),
        ("step time", fmt_time(r.step_time_s)),
        ("throughput", f"{r.tokens_per_s:,.0f} tokens/s ({r.tokens_per_s_per_gpu:,.1f} per GPU)"),
        ("MFU / HFU", f"{_pct(r.mfu)} / {_pct(r.hfu)}"),
        ("pipeline bubble", _pct(r.bubble_fraction)),
        ("exposed comm", ", ".join(f"{k.upper()} {fmt_time(v)}" for k, v in r.exposed_comm_s.items() if v > 0)
         or "none"),
        ("memory / GPU", f"{fmt_bytes(mem['total'])} of {fmt_bytes(mem['capacity'])}"
         + ("" if r.fits_in_memory else f"  OUT OF MEMORY (largest: {', '.join(r.memory_overflow[:2])})")),
        ("  by category", ", ".join(f"{k} {fmt_bytes(mem[k])}" for k in
                                    ("weights", "gradients", "optimizer", "activations", "kv_cache") if mem[k])),
        ("traffic / step", f"NVLink {fmt_bytes(r.traffic_bytes['nvlink'])}, "
                           f"scale-out {fmt_bytes(r.traffic_bytes['scaleout'])}"),
        ("busiest link", f"{r.busiest_link['tier']} of stage {r.busiest_link['stage']}: "
                         f"{_pct(r.busiest_link['utilization'])} busy"),
        ("cost", f"${r.cost_per_million_tokens:.3f} per million tokens"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t


def print_table(report: Report, console: Console | None = None) -> None:
    """Print the report table to the terminal."""
    (console or Console()).print(table(report))
