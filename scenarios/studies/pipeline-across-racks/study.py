"""Pipelines across racks: every schedule at several micro-batch counts, plus the inference view.

Run from the repository root:  python scenarios/studies/pipeline-across-racks/study.py
Writes results.md, results.csv, bubble.png and schedules.png beside this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from simulator import load_scenario, run  # noqa: E402
from simulator.cost import calibration  # noqa: E402
from simulator.cost.fabric import fabric_for  # noqa: E402
from simulator.cost.params import total_parameters  # noqa: E402
from simulator.output.plots import draw_pipeline  # noqa: E402
from simulator.output.render import markdown_table, rows_to_csv  # noqa: E402

HERE = Path(__file__).resolve().parent
SCHEDULES = {"gpipe": 1, "1f1b": 1, "interleaved": 2, "zb-h1": 1, "zb-v": 2, "dualpipe": 2}
MICRO_BATCHES = (8, 16, 32, 64)
REPLICAS = 9


def training_grid() -> list[dict]:
    """One row per (schedule, micro-batches): step, bubble, peak memory, PP bytes on the scale-out tier."""
    rows = []
    for schedule, chunks in SCHEDULES.items():
        for m in MICRO_BATCHES:
            scn = load_scenario(HERE / "scenario.yaml", [f"layout.schedule={schedule}", f"layout.chunks={chunks}",
                                                         f"workload.global_batch={REPLICAS * m}"])
            res = run(scn)
            r, plan = res.report, res.plan
            pp_bytes = _pp_scaleout_bytes(plan, scn)
            rows.append({"schedule": schedule, "micro_batches": m, "step_s": r.step_time_s,
                         "bubble": r.bubble_fraction, "mfu": r.mfu,
                         "peak_memory_GiB": r.memory_bytes["total"] / 2**30, "fits": r.fits_in_memory,
                         "pp_scaleout_GB": pp_bytes / 1e9, "exposed_pp_s": r.exposed_comm_s["pp"]})
    return rows


def _pp_scaleout_bytes(plan, scn) -> float:
    """Pipeline bytes that cross the scale-out tier in one step, all GPUs."""
    crossings = (plan.send_tier == 2).sum()  # (stage, chunk, direction) sends leaving a rack
    return float(crossings * scn.micro_batches * plan.send_bytes * scn.gpus // scn.layout.pp)


def inference_view() -> list[dict]:
    """One request, batch 1, decode: the same weights read in sequence, plus one hop per stage boundary."""
    scn = load_scenario(HERE / "scenario.yaml")
    dev, model = scn.topology.device, scn.model
    cal = calibration.for_device(dev)
    fabric = fabric_for(scn.topology)
    weights = 2.0 * total_parameters(model)  # bf16 bytes
    tp = scn.layout.tp
    read = weights / tp / (dev.hbm_bandwidth * cal.hbm)  # seconds to stream all weights once, TP8
    hop = float(fabric.p2p(model.hidden * 2.0, 0, fabric.gpus_per_domain, cal))  # one token across racks
    rows = []
    for pp in (1, 2, 4, 8):
        rows.append({"pp": pp, "gpus": tp * pp, "token_latency_ms": 1e3 * (read + (pp - 1) * hop),
                     "weights_per_gpu_GiB": weights / tp / pp / 2**30})
    return rows


def plot_bubbles(rows: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for schedule in SCHEDULES:
        pts = [r for r in rows if r["schedule"] == schedule]
        m = [r["micro_batches"] for r in pts]
        axes[0].plot(m, [100 * r["bubble"] for r in pts], marker="o", label=schedule)
        axes[1].plot(m, [r["peak_memory_GiB"] for r in pts], marker="o", label=schedule)
    axes[0].set(xscale="log", xlabel="micro-batches per step", ylabel="pipeline bubble (%)",
                title="bubble, p = 8 stages across 8 racks")
    axes[1].set(xscale="log", xlabel="micro-batches per step", ylabel="peak memory per GPU (GiB)",
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
        scn = load_scenario(HERE / "scenario.yaml", [f"layout.schedule={schedule}",
                                                     f"layout.chunks={SCHEDULES[schedule]}"])
        res = run(scn)
        draw_pipeline(ax, res.plan, res.timeline, f"{schedule}, 16 micro-batches: bubble "
                      f"{100 * res.report.bubble_fraction:.1f}%, step {res.report.step_time_s:.2f} s")
        ax.set_xlim(0, 1300)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> int:
    rows = training_grid()
    (HERE / "results.csv").write_text(rows_to_csv(rows))
    infer = inference_view()
    fmt = {"step_s": "{:.2f}", "bubble": "{:.1%}", "mfu": "{:.1%}", "peak_memory_GiB": "{:.1f}",
           "pp_scaleout_GB": "{:.0f}", "exposed_pp_s": "{:.3f}", "token_latency_ms": "{:.2f}",
           "weights_per_gpu_GiB": "{:.1f}"}
    (HERE / "results.md").write_text("## Training step\n\n" + markdown_table(rows, fmt)
                                     + "\n## Inference, one request\n\n" + markdown_table(infer, fmt))
    plot_bubbles(rows, HERE / "bubble.png")
    plot_schedules(HERE / "schedules.png")
    print((HERE / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
