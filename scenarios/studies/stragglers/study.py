"""Stragglers: how one slow GPU or one degraded NIC stalls a synchronous training step at 1k and 16k GPUs.

Run from the repository root:  python scenarios/studies/stragglers/study.py
Writes results.md, results.csv and stragglers.png beside this file (a few seconds).

Llama 3 405B as Meta published it (scenarios/llama3-405b-h100.yaml): TP8 PP16, interleaved with 2 chunks,
16 micro-batches of one 8K sequence per pipeline, on DGX H100 nodes: 16,384 GPUs (DP128, the shipped
scenario) and 1,024 GPUs (DP8, the same 16 micro-batches a pipeline). Faults (simulator.training.faults):
one GPU 1.1x, 1.5x, 2x slower in the first, a middle (8) or the last (15) pipeline stage; one GPU's NIC
at half and a quarter of its bandwidth (gpu 0). A second table repeats the 2x GPU with 128 micro-batches a
pipeline (8x Meta's batch), where the pipeline bubble is small.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from simulator import load_scenario  # noqa: E402
from simulator.cost.placement import place  # noqa: E402
from simulator.simulate import run  # noqa: E402
from simulator.training.faults import compute_parts, stage_of  # noqa: E402

HERE = Path(__file__).resolve().parent
LLAMA = HERE.parents[1] / "llama3-405b-h100.yaml"
SIZES = {"1k": 128, "16k": 2048}  # DGX H100 domains of 8 GPUs
MICRO_BATCHES = 16  # a pipeline, as Meta trained it (2,048 sequences over DP128)
FACTORS = (1.1, 1.5, 2.0)
STAGES = {"first": 0, "middle": 8, "last": 15}


def scenario(domains: int, fault: str | None = None, micro_batches: int = MICRO_BATCHES):
    dp = domains * 8 // (8 * 16)  # GPUs / (TP8 x PP16)
    sets = [f"topology.domains={domains}", f"workload.global_batch={dp * micro_batches}"]
    return load_scenario(LLAMA, sets + ([f"faults={fault}"] if fault else []))


def first_gpu(scn, stage: int) -> int:
    """The lowest GPU index of pipeline stage `stage` (the layout's own mesh order)."""
    pl = place(scn)
    return next(g for g in range(scn.gpus) if stage_of(pl, g) == stage)


def stage_work(scn, stage: int) -> dict:
    """The healthy stage's seconds a step: its tasks (F, B, W of every micro-batch and chunk) and their
    compute part (without the exposed TP communication a straggler does not slow)."""
    plan = run(scn).plan
    m = scn.micro_batches
    cf, cb = compute_parts(plan)
    busy = m * float(plan.f[stage].sum() + plan.b[stage].sum() + plan.w[stage].sum()) + float(plan.optimizer[stage])
    compute = m * float(cf[stage].sum() + cb[stage].sum() + plan.w[stage].sum()) + float(plan.optimizer[stage])
    return {"busy_s": busy, "compute_s": compute}


def straggler(s: float, gpu: int) -> str:
    return f"{{straggler: {{gpu: {gpu}, slowdown: {s}}}}}"


def one(domains: int, label: str, fault: str, stage: int | None = None, s: float = 1.0,
        micro_batches: int = MICRO_BATCHES) -> dict:
    scn = scenario(domains, fault, micro_batches)
    rep = run(scn).report
    fl = rep.extra["faults"]
    row = {"gpus": rep.gpus, "micro_batches": micro_batches, "fault": label,
           "healthy_step_s": fl["healthy_step_time_s"], "step_s": fl["step_time_s"], "slowdown": fl["slowdown"],
           "dominant": fl["dominant"],
           "gpu_hours_lost_per_step": (fl["step_time_s"] - fl["healthy_step_time_s"]) * rep.gpus / 3600,
           "bubble_healthy": float("nan"), "stage_busy_s": float("nan"), "bound_low": float("nan"),
           "bound_high": float("nan")}
    if stage is not None:  # the slow stage must do all its slowed work; it cannot add more than its extra work
        healthy = scenario(domains, None, micro_batches)
        w = stage_work(healthy, stage)
        extra = (s - 1) * w["compute_s"]
        row.update(bubble_healthy=run(healthy).report.bubble_fraction, stage_busy_s=w["busy_s"],
                   bound_low=(w["busy_s"] + extra) / fl["healthy_step_time_s"],
                   bound_high=(fl["healthy_step_time_s"] + extra) / fl["healthy_step_time_s"])
    return row


def cases(domains: int) -> list[tuple]:
    """(label, fault as YAML, stage, factor) of the main table."""
    scn = scenario(domains)
    out = []
    for s in FACTORS:
        for name, k in STAGES.items():
            out.append((f"GPU {s:g}x, {name} stage", straggler(s, first_gpu(scn, k)), k, s))
    for f in (0.5, 0.25):
        out.append((f"NIC at {f:g}", f"{{degraded_link: {{gpu: 0, tier: scaleout, fraction: {f}}}}}", None, 1.0))
    return out


def main_table() -> list[dict]:
    return [{"size": size, **one(domains, label, fault, k, s)} for size, domains in SIZES.items()
            for label, fault, k, s in cases(domains)]


def bubble_table(domains: int = SIZES["16k"], s: float = 2.0) -> list[dict]:
    """The 2x GPU in each stage at Meta's 16 micro-batches a pipeline and at 128 (small bubble)."""
    rows = []
    for m in (MICRO_BATCHES, 128):
        scn = scenario(domains, None, m)
        for name, k in STAGES.items():
            rows.append(one(domains, f"GPU {s:g}x, {name} stage", straggler(s, first_gpu(scn, k)), k, s, m))
    return rows


HEAD = ("| GPUs | micro-batches | fault | healthy step | step | slowdown | bounds | dominant "
        "| GPU-hours lost a step |\n|---:|---:|---|---:|---:|---:|---:|---|---:|\n")


def line(r: dict) -> str:
    bounds = "" if math.isnan(r["bound_low"]) else f"{r['bound_low']:.3f}-{r['bound_high']:.3f}x"
    return (f"| {r['gpus']:,} | {r['micro_batches']} | {r['fault']} | {r['healthy_step_s']:.2f} s | "
            f"{r['step_s']:.2f} s | {r['slowdown']:.3f}x | {bounds} | {r['dominant']} | "
            f"{r['gpu_hours_lost_per_step']:.2f} |\n")


def main() -> int:
    rows = main_table()
    bub = bubble_table()
    with open(HERE / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["table", *rows[0]], lineterminator="\n")
        w.writeheader()
        w.writerows({"table": "main", **r} for r in rows)
        w.writerows({"table": "bubble", "size": "16k", **r} for r in bub)
    busy = {name: stage_work(scenario(SIZES["16k"]), k)["busy_s"] for name, k in STAGES.items()}
    text = ("## Llama 3 405B as Meta trained it (TP8 PP16 interleaved, 16 micro-batches a pipeline)\n\n"
            "bounds: the slow stage's slowed work / healthy step (it must do all of it) and (healthy step + its "
            "extra work) / healthy step (it cannot add more).\n\n" + HEAD + "".join(line(r) for r in rows)
            + "\nHealthy busy seconds a step (16k GPUs): "
            + ", ".join(f"{name} stage {b:.2f} s" for name, b in busy.items())
            + f"; healthy bubble {run(scenario(SIZES['16k'])).report.bubble_fraction:.1%}.\n"
            "\n## The 2x GPU at 16 and 128 micro-batches a pipeline (16,384 GPUs)\n\n" + HEAD
            + "".join(line(r) for r in bub)
            + "\nHealthy bubble: " + ", ".join(f"{r['micro_batches']} micro-batches {r['bubble_healthy']:.1%}"
                                              for r in bub[::len(STAGES)]) + ".\n")
    (HERE / "results.md").write_text(text, encoding="utf-8")
    plot(rows, bub)
    print(text)
    return 0


def plot(rows, bub) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), gridspec_kw={"width_ratios": [1, 1, 0.8]})
    for ax, size in zip(axes, SIZES):
        sub = [r for r in rows if r["size"] == size]
        ax.barh([r["fault"] for r in sub], [r["slowdown"] for r in sub], color="tab:red")
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_title(f"Llama 3 405B, {sub[0]['gpus']:,} GPUs (TP8 PP16, interleaved, m=16)", fontsize=10)
        ax.set_xlabel("step time / healthy step time")
        ax.set_xlim(0.9, max(r["slowdown"] for r in rows + bub) * 1.05)
        ax.invert_yaxis()
    axes[1].set_yticklabels([])
    ax = axes[2]
    names = list(STAGES)
    for i, m in enumerate((MICRO_BATCHES, 128)):
        vals = [r["slowdown"] for r in bub if r["micro_batches"] == m]
        bubble = next(r["bubble_healthy"] for r in bub if r["micro_batches"] == m)
        ax.bar([j + 0.4 * i for j in range(len(names))], vals, width=0.4,
               label=f"{m} micro-batches (bubble {bubble:.0%})")
    ax.set_xticks([j + 0.2 for j in range(len(names))], [f"2x GPU, {n} stage" for n in names], fontsize=8)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set(ylabel="step time / healthy", title="the bubble hides part of a straggler (16k GPUs)")
    ax.title.set_fontsize(10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "stragglers.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
