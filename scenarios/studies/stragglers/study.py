"""Stragglers: how one slow GPU or one degraded NIC stalls a synchronous training step at 1k and 16k GPUs.

Run from the repository root:  python scenarios/studies/stragglers/study.py
Writes results.md, results.csv and stragglers.png beside this file (a few seconds).

Llama 3 405B, TP8 PP16, 1F1B, 128 micro-batches of one 8K sequence per pipeline, on DGX H100 nodes:
1,024 GPUs (DP8) and 16,384 GPUs (DP128, the Llama 3 paper's layout), global batch scaled with dp so
each pipeline's work is the same. Faults (simulator.training.faults): one GPU 1.1x, 1.5x, 2x slower, placed in
the first stage (gpu 0) or the last (the first GPU of stage 15); one GPU's NIC at half and a quarter of
its bandwidth (gpu 0, whose stage's pipeline sends and data-parallel reduction cross the NIC).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from simulator import load_scenario  # noqa: E402
from simulator.simulate import run  # noqa: E402

HERE = Path(__file__).resolve().parent
LLAMA = HERE.parents[1] / "llama3-405b-h100.yaml"
SIZES = {"1k": 128, "16k": 2048}  # DGX H100 domains of 8 GPUs
FACTORS = (1.1, 1.5, 2.0)


def scenario(domains: int, fault: str | None):
    sets = [f"topology.domains={domains}", f"workload.global_batch={domains * 8 // 128 * 128}"]
    return load_scenario(LLAMA, sets + ([f"faults={fault}"] if fault else []))


def cases(domains: int):
    """(label, fault mapping as YAML) of the study."""
    last = 15 * domains * 8 // 16  # first GPU of the last stage (pp outermost)
    out = []
    for s in FACTORS:
        out.append((f"GPU {s:g}x, first stage", f"{{straggler: {{gpu: 0, slowdown: {s}}}}}"))
        out.append((f"GPU {s:g}x, last stage", f"{{straggler: {{gpu: {last}, slowdown: {s}}}}}"))
    for f in (0.5, 0.25):
        out.append((f"NIC at {f:g}", f"{{degraded_link: {{gpu: 0, tier: scaleout, fraction: {f}}}}}"))
    return out


def main() -> int:
    rows = []
    for size, domains in SIZES.items():
        for label, fault in cases(domains):
            rep = run(scenario(domains, fault)).report
            fl = rep.extra["faults"]
            lost = (fl["step_time_s"] - fl["healthy_step_time_s"]) * rep.gpus / 3600
            rows.append({"gpus": rep.gpus, "size": size, "fault": label, "healthy_step_s": fl["healthy_step_time_s"],
                         "step_s": fl["step_time_s"], "slowdown": fl["slowdown"], "dominant": fl["dominant"],
                         "gpu_hours_lost_per_step": lost})
    with open(HERE / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    lines = ["| GPUs | fault | healthy step | step | slowdown | dominant | GPU-hours lost a step |",
             "|---:|---|---:|---:|---:|---|---:|"]
    lines += [f"| {r['gpus']:,} | {r['fault']} | {r['healthy_step_s']:.2f} s | {r['step_s']:.2f} s | "
              f"{r['slowdown']:.3f}x | {r['dominant']} | {r['gpu_hours_lost_per_step']:.2f} |" for r in rows]
    (HERE / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot(rows)
    print("\n".join(lines))
    return 0


def plot(rows) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, size in zip(axes, SIZES):
        sub = [r for r in rows if r["size"] == size]
        ax.barh([r["fault"] for r in sub], [r["slowdown"] for r in sub], color="tab:red")
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_title(f"Llama 3 405B, {sub[0]['gpus']:,} GPUs (TP8 PP16, 1F1B, m=128)")
        ax.set_xlabel("step time / healthy step time")
        ax.set_xlim(0.9, max(r["slowdown"] for r in rows) * 1.05)
    axes[0].invert_yaxis()  # shared y axis: once
    fig.tight_layout()
    fig.savefig(HERE / "stragglers.png", dpi=120)


if __name__ == "__main__":
    sys.exit(main())
