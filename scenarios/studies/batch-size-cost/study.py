"""Batch size against speed and cost of decoding: Llama 3 70B on 8 H100, bf16 and fp8.

Run from the repository root:  python scenarios/studies/batch-size-cost/study.py
Writes results.md, results.csv and batch.png beside this file. For each batch size it reads the decode
step from the cost model (simulator.serving.steps), and at a few batch caps it checks the request-level
simulation against it: an offline batch's TPOT is the step time.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from simulator import load_scenario, run  # noqa: E402
from simulator.output.render import markdown_table, rows_to_csv  # noqa: E402
from simulator.serving.memory import max_batch  # noqa: E402
from simulator.serving.steps import step_costs  # noqa: E402

HERE = Path(__file__).resolve().parent
BATCHES = [2**k for k in range(13)]  # 1 .. 4096
VARIANTS = {
    "bf16": [],
    "fp8": ["workload.dtype=fp8", "workload.weight_dtype=fp8", "workload.kv_dtype=fp8"],
}
CHECKS = (8, 64, 256)


def sweep() -> list[dict]:
    """One row per (variant, batch): decode step, throughput, cost, bound, whether the KV cache fits."""
    rows = []
    for variant, overrides in VARIANTS.items():
        scn = load_scenario(HERE / "scenario.yaml", overrides)
        w = scn.workload
        context = w.prompt_len + w.output_len // 2
        costs = step_costs(scn)
        fits = max_batch(scn, w.prompt_len + w.output_len)
        price = scn.gpus * scn.options.gpu_hour_price / 3600.0
        for b in BATCHES:
            step = costs.decode_step(b, context)
            rows.append({"variant": variant, "batch": b, "step_ms": 1e3 * step,
                         "tokens_per_s_per_gpu": b / step / scn.gpus,
                         "usd_per_million_output_tokens": price * step / b * 1e6,
                         "bound": costs.decode_bound(b), "fits_memory": b <= fits})
    return rows


def crossover(variant: str) -> int:
    """Smallest batch whose GEMMs are FLOP-bound (bisection on the cost model's bound)."""
    costs = step_costs(load_scenario(HERE / "scenario.yaml", VARIANTS[variant]))
    lo, hi = 1, BATCHES[-1]
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if costs.decode_bound(mid) == "compute" else (mid + 1, hi)
    return lo


def rule_of_thumb(variant: str) -> float:
    """Peak FLOP/s over HBM bytes/s, times the weight bytes / 2 FLOP of a multiply-add."""
    scn = load_scenario(HERE / "scenario.yaml", VARIANTS[variant])
    dev, w = scn.topology.device, scn.workload
    return dev.peak_flops[w.dtype] / dev.hbm_bandwidth * {"bf16": 2, "fp8": 1}[w.weight_dtype] / 2


def simulated_tpot() -> list[dict]:
    """Offline batches (all requests at t = 0) through the request-level simulation."""
    out = []
    for b in CHECKS:
        scn = load_scenario(HERE / "scenario.yaml", [f"workload.batch={b}", "workload.output_len=64",
                                                     "workload.max_batch_tokens=400000"])
        report = run(scn).report
        step = step_costs(scn).decode_step(b, scn.workload.prompt_len + 32)
        out.append({"batch": b, "simulated_tpot_ms": 1e3 * report.tpot_s["p50"], "decode_step_ms": 1e3 * step})
    return out


def plot(rows: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    keys = (("step_ms", "decode step = time per output token (ms)"),
            ("tokens_per_s_per_gpu", "output tokens/s per GPU"),
            ("usd_per_million_output_tokens", r"\$ per million output tokens (\$2/GPU-hour)"))
    for variant, colour in zip(VARIANTS, ("#4C72B0", "#DD8452")):
        pts = [r for r in rows if r["variant"] == variant]
        knee = crossover(variant)
        for ax, (key, label) in zip(axes, keys):
            fit = [r for r in pts if r["fits_memory"]]
            over = fit[-1:] + [r for r in pts if not r["fits_memory"]]
            ax.plot([r["batch"] for r in fit], [r[key] for r in fit], "o-", color=colour, label=f"{variant}")
            ax.plot([r["batch"] for r in over[1:]], [r[key] for r in over[1:]], "o", color=colour, mfc="white",
                    label=f"{variant}: KV cache does not fit")
            ax.plot([r["batch"] for r in over], [r[key] for r in over], "--", color=colour)
            ax.axvline(knee, color=colour, lw=0.8, ls=":")
            ax.set(xscale="log", yscale="log", xlabel="batch (sequences decoded together)", title=label)
    axes[0].text(0.02, 0.95, "dotted: from here the GEMMs are FLOP-bound", transform=axes[0].transAxes,
                 fontsize=8, va="top")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(BATCHES[::2], [str(b) for b in BATCHES[::2]])
        ax.minorticks_off()
    fig.suptitle("Llama 3 70B on 8 H100 (TP8), decode at 2K context")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> int:
    rows = sweep()
    (HERE / "results.csv").write_text(rows_to_csv(rows))
    checks = simulated_tpot()
    fmt = {"step_ms": "{:.2f}", "tokens_per_s_per_gpu": "{:.0f}", "usd_per_million_output_tokens": "{:.3f}",
           "simulated_tpot_ms": "{:.2f}", "decode_step_ms": "{:.2f}"}
    knees = ", ".join(f"{v}: batch {crossover(v)} (peak / bandwidth x bytes / 2 = {rule_of_thumb(v):.0f})"
                      for v in VARIANTS)
    text = (markdown_table(rows, fmt) + f"\nSmallest FLOP-bound batch: {knees}.\n\n"
            "## Request-level check (offline batch, TPOT p50 against the decode step)\n\n" + markdown_table(checks, fmt))
    (HERE / "results.md").write_text(text)
    plot(rows, HERE / "batch.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
