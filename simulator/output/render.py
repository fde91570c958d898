"""Report -> terminal table (rich), JSON, CSV. Human units appear here and nowhere else."""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from ..scenario.defaults import MEGATRON_2021_SETTINGS
from ..scenario.units import fmt_bytes, fmt_time

if TYPE_CHECKING:
    from ..serving.report import ServeReport
    from ..training.report import Report


MEMORY_CATEGORIES = ("weights", "gradients", "optimizer", "activations", "kv_cache", "reserved")
"""The memory rows of a training report, in print order (reserved: framework reserve and fragmentation)."""


def to_json(report: Report | ServeReport) -> str:
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


def to_csv(reports: list[Report | ServeReport]) -> str:
    """One row per report, one column per flattened key."""
    return rows_to_csv([flatten(r.to_dict()) for r in reports])


def markdown_table(rows: list[dict], fmt: dict | None = None) -> str:
    """A Markdown table of flat rows (columns from the first row); `fmt` maps a column to a format."""
    fmt = fmt or {}
    head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    body = "".join("| " + " | ".join(fmt.get(k, "{}").format(v) for k, v in r.items()) + " |\n" for r in rows)
    return head + body


def rows_to_csv(rows: list[dict]) -> str:
    """CSV of flat rows: the union of their keys as columns, lists joined by ';'."""
    fields = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (";".join(map(str, v)) if isinstance(v, list) else v) for k, v in row.items()})
    return buf.getvalue()


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def table(report: Report | ServeReport) -> Table:
    """The report as a two-column rich table."""
    if report.kind == "serve":
        return serve_table(report)
    t = Table(title=f"simrack: {report.scenario}", show_header=False, title_justify="left")
    t.add_column("metric", style="bold")
    t.add_column("value")
    rows = _train_rows(report)
    rows[1:1] = _default_notes(report)
    rows += [("caveat", c) for c in report.caveats]
    fl = report.extra.get("faults")
    if fl:
        rows.append(("faults", f"{fl['slowdown']:.3f}x healthy {fmt_time(fl['healthy_step_time_s'])}; "
                               f"dominant: {fl['dominant']}; time lost {fmt_time(fl['time_lost_s'])}"))
    for k, v in rows:
        t.add_row(k, v)
    return t


def _layout_line(lay: dict) -> str:
    """The report's layout as one line: degrees, schedule, micro-batches, folded experts and sharding."""
    folded = f" ETP{lay['expert_tp']}" if "expert_tp" in lay else ""
    folded += f" ({EP_BACKEND_NAMES[lay['ep_backend']]})" if "ep_backend" in lay else ""
    sp = " SP" if lay.get("sequence_parallel") and lay["tp"] > 1 else ""
    line = (f"TP{lay['tp']}{sp} PP{lay['pp']} DP{lay['dp']} CP{lay['cp']} EP{lay['ep']}{folded}, {lay['schedule']}"
            f" (chunks {lay['chunks']}), {lay['micro_batches']} micro-batches of {lay['micro_batch']}")
    if "shard_group" in lay:
        line += f", state sharded in groups of {lay['shard_group']}"
    return line


def _train_rows(r: Report) -> list[tuple[str, str]]:
    """(metric, value) rows of a training report, human units."""
    mem = r.memory_bytes
    return [
        ("GPUs / layout", f"{r.gpus} / {_layout_line(r.layout)}"),
        ("step time", fmt_time(r.step_time_s)),
        ("throughput", f"{r.tokens_per_s:,.0f} tokens/s ({r.tokens_per_s_per_gpu:,.1f} per GPU)"),
        ("MFU / HFU", f"{_pct(r.mfu)} / {_pct(r.hfu)}"),
        ("pipeline bubble", _pct(r.bubble_fraction)),
        ("exposed comm", ", ".join(f"{k.upper()} {fmt_time(v)}" for k, v in r.exposed_comm_s.items() if v > 0)
         or "none"),
        ("memory / GPU", f"{fmt_bytes(mem['total'])} of {fmt_bytes(mem['capacity'])}"
         + ("" if r.fits_in_memory else f"  OUT OF MEMORY (largest: {', '.join(r.memory_overflow[:2])})")),
        ("  by category", ", ".join(f"{k} {fmt_bytes(mem[k])}" for k in MEMORY_CATEGORIES if mem.get(k))),
        ("traffic / step", f"NVLink {fmt_bytes(r.traffic_bytes['nvlink'])}, "
                           f"scale-out {fmt_bytes(r.traffic_bytes['scaleout'])}"),
        ("busiest link", f"{r.busiest_link['tier']} of stage {r.busiest_link['stage']}: "
                         f"{_pct(r.busiest_link['utilization'])} busy"),
        ("cost", f"${r.cost_per_million_tokens:.3f} per million tokens"),
    ]


def _default_notes(r: Report) -> list[tuple[str, str]]:
    """Rows naming what `auto` chose for this GPU where it is older than the newest: the Megatron-LM 2021-2022
    settings of its published runs, then an attention kernel other than flash."""
    notes = []
    era = [ERA_PHRASES[k] for k, v in r.extra.get("defaults", {}).items()
           if k in MEGATRON_2021_SETTINGS and v == MEGATRON_2021_SETTINGS[k]]
    if era:
        notes.append(("defaults", "Megatron-LM's 2021-2022 settings, as this GPU's published runs: " + ", ".join(era)))
    attention = r.extra.get("attention", {})
    if attention.get("default") and attention["kernel"] != "flash":
        notes.append(("attention", f"{attention['kernel']} (workload.attention auto: the kernel most published "
                                   "training on this GPU ran; flash prices the newest measured)"))
    return notes


EP_BACKEND_NAMES = {"nccl": "NCCL all-to-all", "deepep": "DeepEP", "hybridep": "HybridEP"}
"""How the report's layout row names the kernels of the experts' all-to-all (layout.ep_backend)."""

ERA_PHRASES = {"workload.cross_entropy": "loss in PyTorch ops",
               "workload.grad_accumulation_fusion": "a gradient-accumulation pass",
               "layout.overlap_grad_reduce": "gradients reduced after the backward"}
"""How the report's defaults row names each of scenario.defaults.MEGATRON_2021_SETTINGS where auto chose it."""


def _lat(d: dict) -> str:
    if d["p50"] is None or d["p50"] != d["p50"]:
        return "n/a"
    return f"p50 {fmt_time(d['p50'])}, p90 {fmt_time(d['p90'])}, p99 {fmt_time(d['p99'])}"


def _replicas(lay: dict) -> str:
    """'N replicas', or for an MoE model 'N EP units of ep' (an EP unit steps its ep replicas together)."""
    if lay["ep"] == 1:
        return f"{lay['dp']} replicas"
    return f"{lay['dp'] // lay['ep']} EP units of {lay['ep']} attention replicas"


def serve_table(r: ServeReport) -> Table:
    """A serving report as a two-column rich table."""
    t = Table(title=f"simrack: {r.scenario} (serve)", show_header=False, title_justify="left")
    t.add_column("metric", style="bold")
    t.add_column("value")
    lay, mem = r.layout, r.memory_bytes
    pools = (f", {lay['prefill_replicas']} prefill + {lay['decode_replicas']} decode replicas"
             if lay["prefill_replicas"] else "")
    slo = ("no target" if r.slo_met is None else
           f"{'met' if r.slo_met else 'MISSED'} (p99 rule; {_pct(r.slo_attainment)} of requests within both)")
    rows = [
        ("GPUs / layout", f"{r.gpus} / TP{lay['tp']} PP{lay['pp']} x {_replicas(lay)}{pools}, batch "
                          f"<= {lay['batch']}, {'chunked prefill' if lay['chunked_prefill'] else 'prefill first'}, "
                          f"weights {lay['weight_dtype']}, KV {lay['kv_dtype']}"),
        ("requests", f"{r.completed} completed, {r.rejected} rejected, {r.preemptions} preemptions "
                     f"of {r.requests}"),
        ("TTFT", _lat(r.ttft_s)),
        ("TPOT", _lat(r.tpot_s)),
        ("end to end", _lat(r.e2e_latency_s)),
        ("SLO", slo),
        ("throughput", f"{r.requests_per_s:,.2f} requests/s, {r.output_tokens_per_s:,.0f} output tokens/s "
                       f"({r.output_tokens_per_s_per_gpu:,.1f} per GPU), MFU {_pct(r.mfu)}"),
        ("step costs", f"prefill {fmt_time(r.prefill_s)} a prompt; decode {fmt_time(r.decode_step_s)} at batch "
                       f"{lay['batch'] * lay['ep']} ({r.decode_bound}-bound), TP comm "
                       f"{fmt_time(r.exposed_comm_s['tp'])}" + (f", EP all-to-all {fmt_time(r.exposed_comm_s['ep'])}"
                                                                if lay["ep"] > 1 else "")),
        *((f"{kind} step by bound", _breakdown(parts)) for kind, parts in r.step_breakdown_s.items()),
        ("memory / GPU", f"{fmt_bytes(mem['total'])} of {fmt_bytes(mem['capacity'])} (weights "
                         f"{fmt_bytes(mem['weights'])}, KV peak {fmt_bytes(mem['kv_cache'])}, activations "
                         f"{fmt_bytes(mem['activations'])})" + ("" if r.fits_in_memory else "  OUT OF MEMORY")),
        ("KV capacity", f"{r.kv_cache_tokens_capacity:,} tokens {'a replica' if lay['ep'] == 1 else 'an EP unit'}"),
        ("cost", f"${r.cost_per_million_tokens:.3f} per million output tokens"
                 if r.cost_per_million_tokens == r.cost_per_million_tokens else "n/a"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t


def _breakdown(parts: dict) -> str:
    """A step's seconds by what bounds them, largest first, the largest named as the bound."""
    shown = sorted(((v, k) for k, v in parts.items() if v > 0), reverse=True)
    total = sum(v for v, _ in shown)
    body = ", ".join(f"{k} {fmt_time(v)}" for v, k in shown)
    return f"{fmt_time(total)} = {body} ({shown[0][1]}-bound)" if shown else "0"


def print_tables(tables: list[Table], console: Console | None = None) -> None:
    """Print tables to the terminal, one after the other."""
    console = console or Console()
    for t in tables:
        console.print(t)


def print_table(report: Report, console: Console | None = None) -> None:
    """Print the report table to the terminal."""
    print_tables([table(report)], console)
