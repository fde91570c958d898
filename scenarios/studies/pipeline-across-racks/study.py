"""Pipelines across racks: every schedule at several micro-batch counts, where the bubble comes from, the
layouts that beat pipelining on the same racks, and the served model's batch-1 latency.

Run from the repository root:  python scenarios/studies/pipeline-across-racks/study.py
Writes results.md, results.csv (the schedules), layouts.csv, serving.csv, bubble.png, schedules.png and
layouts.png beside this file (about 5 s).

- Schedules: Llama 3 70B, TP8 PP8 with one stage a rack, 9 replicas, 8 to 64 micro-batches. Each bubble is
  split into the schedule's share (the same pipeline with equal stages: the vocabulary cut to 128 words,
  so the LM head and embedding cost nothing and every stage is its 10 layers) and the stage imbalance's
  share (the rest: mostly the last stage's LM head).
- Layouts: the pipelines against layouts without one on the same 576 GPUs and the same 144 sequences a
  step (TP8 with ZeRO-3, i.e. FSDP over the replicas; TP8 with context parallelism; the best layout of
  simulator.search by step time), and the fewest tokens a step each needs to keep its bubble under 10%.
- Serving: serve.yaml through simulator.simulate, batch 1, 1 to 8 stages across racks.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from simulator import ScenarioError, load_scenario, run, search, simulate  # noqa: E402
from simulator.output.plots import draw_pipeline  # noqa: E402
from simulator.output.render import rows_to_csv  # noqa: E402

HERE = Path(__file__).resolve().parent
TRAIN, SERVE = HERE / "scenario.yaml", HERE / "serve.yaml"
SCHEDULES = {"gpipe": 1, "1f1b": 1, "interleaved": 2, "zb-h1": 1, "zb-v": 2, "dualpipe": 2}
MICRO_BATCHES = (8, 16, 32, 64)
REPLICAS = 9  # data-parallel replicas of the TP8 PP8 pipeline on 576 GPUs
EQUAL_STAGES = ["model.vocab=128"]  # LM head and embedding of negligible cost: every stage its 10 layers
BUBBLE_LIMIT = 0.10
GiB = 2**30

# (label, overrides of scenario.yaml, granularity of micro-batches a replica: what the schedule accepts)
LAYOUTS = [
    ("TP8 PP8 DP9, 1F1B (the pipeline)", [], 1),
    ("TP8 PP8 DP9, interleaved (2 chunks)", ["layout.schedule=interleaved", "layout.chunks=2"], 8),
    ("TP8 PP8 DP9, DualPipe", ["layout.schedule=dualpipe", "layout.chunks=2"], 2),
    ("TP8 DP72, ZeRO-3 (FSDP), no pipeline", ["layout.pp=1", "layout.dp=72", "layout.zero=3"], 1),
    ("TP8 CP2 DP36, ZeRO-3, no pipeline", ["layout.pp=1", "layout.cp=2", "layout.dp=36", "layout.zero=3"], 1),
]


def scenario(overrides=()):
    return load_scenario(TRAIN, list(overrides))


def schedule_sets(schedule: str, m: int) -> list[str]:
    return [f"layout.schedule={schedule}", f"layout.chunks={SCHEDULES[schedule]}",
            f"workload.global_batch={REPLICAS * m}"]


def closed_form_bubble(schedule: str, m: int, p: int = 8) -> float | None:
    """(p-1)/(v m + p-1) for GPipe, 1F1B (v = 1) and interleaved (v chunks); None for the others."""
    if schedule not in ("gpipe", "1f1b", "interleaved"):
        return None
    return (p - 1) / (SCHEDULES[schedule] * m + p - 1)


def schedule_row(schedule: str, m: int) -> dict:
    """One (schedule, micro-batches) row: step, bubble and its two shares, memory, pipeline traffic."""
    sets = schedule_sets(schedule, m)
    scn = scenario(sets)
    res = run(scn)
    r, plan = res.report, res.plan
    equal = simulate(TRAIN, sets + EQUAL_STAGES).bubble_fraction
    cf = closed_form_bubble(schedule, m)
    return {"schedule": schedule, "micro_batches": m, "step_s": r.step_time_s, "bubble": r.bubble_fraction,
            "schedule_share": equal, "imbalance_share": r.bubble_fraction - equal,
            "closed_form": float("nan") if cf is None else cf, "mfu": r.mfu,
            "peak_memory_GiB": r.memory_bytes["total"] / GiB, "activations_GiB": r.memory_bytes["activations"] / GiB,
            "fits": r.fits_in_memory, "pp_scaleout_GB": _pp_scaleout_bytes(plan, scn) / 1e9,
            "exposed_pp_s": r.exposed_comm_s["pp"]}


def training_grid() -> list[dict]:
    return [schedule_row(s, m) for s in SCHEDULES for m in MICRO_BATCHES]


def _pp_scaleout_bytes(plan, scn) -> float:
    """Pipeline bytes that cross the scale-out tier in one step, all GPUs."""
    crossings = (plan.send_tier == 2).sum()  # (stage, chunk, direction) sends leaving a rack
    return float(crossings * scn.micro_batches * plan.send_bytes * scn.gpus // scn.layout.pp)


def stage_times(overrides=()) -> list[float]:
    """Seconds of F + B (+ W) of one micro-batch on each pipeline stage, all its chunks."""
    plan = run(scenario(overrides)).plan
    return [float(x) for x in (plan.f + plan.b + plan.w).sum(axis=1)]


# --- layouts without a pipeline --------------------------------------------------------------------------


def bubble_at(overrides, k: int, grain: int) -> float:
    """Bubble with grain x k micro-batches a replica (1.0 where the schedule refuses that count)."""
    scn = scenario(overrides)
    per = scn.layout.dp * scn.workload.micro_batch
    try:
        return simulate(TRAIN, list(overrides) + [f"workload.global_batch={per * grain * k}"]).bubble_fraction
    except ScenarioError:
        return 1.0


def micro_batches_for_bubble(overrides, grain: int = 1, limit: float = BUBBLE_LIMIT, most: int = 4096) -> int | None:
    """Fewest micro-batches a replica (a multiple of `grain`) whose simulated bubble is under `limit`:
    doubling, then bisection (the bubble falls with the micro-batches); None if `most` is not enough."""
    lo, hi = 0, 1
    while bubble_at(overrides, hi, grain) >= limit:
        lo, hi = hi, 2 * hi
        if grain * hi > most:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if bubble_at(overrides, mid, grain) < limit else (mid, hi)
    return grain * hi


def layout_row(label: str, overrides, grain: int) -> dict:
    scn = scenario(overrides)
    r = simulate(scn)
    m_min = micro_batches_for_bubble(overrides, grain)
    per = scn.layout.dp * scn.workload.micro_batch * scn.workload.seq_len  # tokens a micro-batch a replica
    mem = r.memory_bytes
    lay = scn.layout
    return {"layout": label, "tp": lay.tp, "cp": lay.cp, "pp": lay.pp, "dp": lay.dp, "zero": lay.zero,
            "micro_batch": scn.workload.micro_batch, "recompute": scn.workload.recompute,
            "step_s": r.step_time_s, "mfu": r.mfu, "bubble": r.bubble_fraction,
            "exposed_tp_s": r.exposed_comm_s["tp"], "exposed_dp_s": r.exposed_comm_s["dp"],
            "memory_GiB": mem["total"] / GiB, "activations_GiB": mem["activations"] / GiB,
            "states_GiB": (mem["weights"] + mem["gradients"] + mem["optimizer"]) / GiB, "fits": r.fits_in_memory,
            "micro_batches_for_10pct": m_min if m_min is not None else float("nan"),
            "tokens_per_step_for_10pct_M": m_min * per / 1e6 if m_min is not None else float("nan")}


SEARCHED: dict = {}  # counts of the last search (enumerated, out_of_memory, ranked)


def search_best() -> list[tuple[str, list[str]]]:
    """The best layout simulator.search finds by step time on the scenario's GPUs and batch, and of the
    layouts that tie with it the one with the least memory a GPU; as (label, overrides)."""
    res = search(TRAIN, objective="step_time", top=4, workers=1)
    SEARCHED.update(res.counts)
    best = res.best
    tied = [r for r in res.refined if r is best or r.tie]
    low = min(tied, key=lambda r: r.report["memory_bytes"]["total"])

    def sets(r):
        return [s for s in r.sets if not s.startswith("topology.")]

    out = [(f"search's best: {best.label}", sets(best))]
    if low is not best:
        out.append((f"search's best, least-memory tie: {low.label}", sets(low)))
    return out


def speedups(rows: list[dict]) -> list[dict]:
    """Each layout's step against 1F1B's and DualPipe's (how many times faster)."""
    ref = {k: next(r["step_s"] for r in rows if k in r["layout"]) for k in ("1F1B", "DualPipe")}
    return [{"layout": r["layout"], "vs_1f1b": ref["1F1B"] / r["step_s"], "vs_dualpipe": ref["DualPipe"] / r["step_s"]}
            for r in rows]


def layouts() -> list[dict]:
    return [layout_row(*x) for x in LAYOUTS] + [layout_row(label, sets, 1) for label, sets in search_best()]


# --- serving ---------------------------------------------------------------------------------------------


def serving_view(stages=(1, 2, 4, 8)) -> list[dict]:
    """Batch 1 from the serving simulator: each request alone on its replica, stages across racks."""
    rows = []
    for pp in stages:
        r = simulate(SERVE, [f"layout.pp={pp}"])
        mem = r.memory_bytes
        rows.append({"pp": pp, "gpus_per_replica": 8 * pp, "tpot_ms": 1e3 * r.tpot_s["p50"],
                     "ttft_ms": 1e3 * r.ttft_s["p50"], "pp_ms_per_token": 1e3 * r.exposed_comm_s["pp"],
                     "weights_per_gpu_GiB": mem["weights"] / GiB,
                     "kv_capacity_tokens_per_replica": r.kv_cache_tokens_capacity})
    return rows


# --- pictures --------------------------------------------------------------------------------------------


def plot_bubbles(rows: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, schedule in enumerate(SCHEDULES):
        pts = [r for r in rows if r["schedule"] == schedule]
        m = [r["micro_batches"] for r in pts]
        line, = axes[0].plot(m, [100 * r["bubble"] for r in pts], marker="o", label=schedule, color=f"C{i}")
        axes[0].plot(m, [100 * r["schedule_share"] for r in pts], ls=":", color=line.get_color())
        axes[1].plot(m, [r["peak_memory_GiB"] for r in pts], marker="o", label=schedule, color=f"C{i}")
    axes[0].axhline(100 * BUBBLE_LIMIT, color="grey", lw=0.8)
    capacity = simulate(TRAIN).memory_bytes["capacity"] / GiB
    axes[1].axhline(capacity, color="grey", lw=0.8)
    axes[1].text(MICRO_BATCHES[0], capacity * 0.95, "HBM of a GB200", color="grey", va="top", fontsize=8)
    axes[0].set(xscale="log", xlabel="micro-batches per replica", ylabel="pipeline bubble (%)",
                title="bubble, p = 8 stages across 8 racks (dotted: equal stages)")
    axes[1].set(xscale="log", xlabel="micro-batches per replica", ylabel="peak memory per GPU (GiB)",
                title="memory of the most loaded stage")
    for ax in axes:
        ax.set_xticks(MICRO_BATCHES, [str(m) for m in MICRO_BATCHES])
        ax.minorticks_off()
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_schedules(path: Path) -> None:
    fig, axes = plt.subplots(2, 1, figsize=(12, 8))
    for ax, schedule in zip(axes, ("1f1b", "dualpipe")):
        res = run(scenario([f"layout.schedule={schedule}", f"layout.chunks={SCHEDULES[schedule]}"]))
        draw_pipeline(ax, res.plan, res.timeline, f"{schedule}, 16 micro-batches: bubble "
                      f"{100 * res.report.bubble_fraction:.1f}%, step {res.report.step_time_s:.2f} s")
        ax.set_xlim(0, 1000 * res.report.step_time_s * 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_layouts(rows: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    names = [r["layout"] for r in rows]
    y = range(len(rows))
    colours = ["#DD8452" if r["pp"] > 1 else "#4C72B0" for r in rows]
    axes[0].barh(y, [r["step_s"] for r in rows], color=colours)
    axes[0].set(xlabel="step time (s), 144 sequences of 8K", title="step on 576 GB200 (orange: pipelined)")
    axes[1].barh(y, [r["activations_GiB"] for r in rows], color=colours, label="activations")
    axes[1].barh(y, [r["memory_GiB"] - r["activations_GiB"] for r in rows], left=[r["activations_GiB"] for r in rows],
                 color="lightgrey", label="weights, gradients, optimizer, reserve")
    axes[1].set(xlabel="memory per GPU (GiB)", title="memory of the most loaded GPU")
    axes[1].legend(fontsize=8)
    axes[0].set_yticks(list(y), names, fontsize=8)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def markdown_table(rows: list[dict], fmt: dict) -> str:
    """A Markdown table of flat rows; NaN prints as '-'."""
    def cell(k, v):
        return "-" if isinstance(v, float) and math.isnan(v) else fmt.get(k, "{}").format(v)

    head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    return head + "".join("| " + " | ".join(cell(k, v) for k, v in r.items()) + " |\n" for r in rows)


FMT = {"step_s": "{:.3f}", "bubble": "{:.1%}", "schedule_share": "{:.1%}", "imbalance_share": "{:+.1%}",
       "closed_form": "{:.1%}", "mfu": "{:.1%}", "peak_memory_GiB": "{:.1f}", "activations_GiB": "{:.1f}",
       "pp_scaleout_GB": "{:.0f}", "exposed_pp_s": "{:.3f}", "exposed_tp_s": "{:.3f}", "exposed_dp_s": "{:.3f}",
       "memory_GiB": "{:.1f}", "states_GiB": "{:.1f}", "micro_batches_for_10pct": "{:.0f}",
       "tokens_per_step_for_10pct_M": "{:.2f}", "tpot_ms": "{:.3f}", "ttft_ms": "{:.2f}",
       "pp_ms_per_token": "{:.4f}", "weights_per_gpu_GiB": "{:.2f}", "kv_capacity_tokens_per_replica": "{:,.0f}"}


def main() -> int:
    grid = training_grid()
    (HERE / "results.csv").write_text(rows_to_csv(grid))
    lay = layouts()
    (HERE / "layouts.csv").write_text(rows_to_csv(lay))
    serve = serving_view()
    (HERE / "serving.csv").write_text(rows_to_csv(serve))
    t = stage_times()
    equal_m = micro_batches_for_bubble(EQUAL_STAGES)
    text = ("## Training step, every schedule\n\n"
            "schedule_share: the bubble of the same pipeline with equal stages (vocabulary cut to 128 words); "
            "imbalance_share: bubble - schedule_share; closed_form: (p-1)/(v m + p-1).\n\n"
            + markdown_table(grid, FMT)
            + "\nF + B of one micro-batch a stage, 1F1B (s): " + ", ".join(f"{x:.4f}" for x in t)
            + f"; the last stage (LM head) is {t[-1] / t[1]:.3f}x a middle one, the head worth "
            f"{(t[-1] - t[1]) / (t[1] / 10):.2f} of a middle layer. With unlimited micro-batches the slowest stage "
            f"paces every slot and the others idle 1 - mean / max = {1 - sum(t) / len(t) / max(t):.1%} of the step "
            "(the imbalance's share at its limit).\n"
            + f"\n1F1B with equal stages is under a 10% bubble from {equal_m} micro-batches a replica "
            f"({REPLICAS * equal_m * 8192 / 1e6:.2f}M tokens a step; closed form: (p-1)/(m+p-1) < 0.1 from "
            f"m = 9 (p-1) + 1 = 64, {REPLICAS * 64 * 8192 / 1e6:.2f}M tokens).\n"
            + "\n## Layouts on the same 576 GPUs, 144 sequences of 8K a step\n\n"
            "micro_batches_for_10pct: fewest micro-batches a replica with a bubble under 10%; "
            "tokens_per_step_for_10pct_M: the tokens a step that takes (millions).\n\n"
            + markdown_table(lay, FMT)
            + f"\nsimrack search: {SEARCHED['enumerated']:,} layouts, {SEARCHED['out_of_memory']:,} out of memory, "
            f"{SEARCHED['ranked']:,} ranked.\n\n"
            + markdown_table(speedups(lay), {"vs_1f1b": "{:.2f}x", "vs_dualpipe": "{:.2f}x"})
            + "\n## Serving, batch 1 (simulator.simulate on serve.yaml)\n\n" + markdown_table(serve, FMT))
    (HERE / "results.md").write_text(text)
    plot_bubbles(grid, HERE / "bubble.png")
    plot_schedules(HERE / "schedules.png")
    plot_layouts(lay, HERE / "layouts.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
