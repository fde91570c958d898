"""Batch size against speed and cost of decoding: Llama 3 70B on 8 H100, bf16 and fp8.

Run from the repository root:  python scenarios/studies/batch-size-cost/study.py
Writes results.md, results.csv, headline.csv and batch.png beside this file. For each batch size it reads
the decode step from the cost model (simulator.serving.steps), and at a few batch caps it checks the
request-level simulation against it: an offline batch's TPOT is the step time. The headline compares batch 1
with the largest batch whose KV cache fits, decode alone and with each request's prefill (an offline batch
of that many requests through the request-level simulation: $ = GPUs x $/GPU-s x makespan / output tokens).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from simulator import load_scenario, run, simulate  # noqa: E402
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
        price = scn.gpus * scn.options.gpu_hour_price / 3600.0
        for b in BATCHES:
            step = costs.decode_step(b, context)
            rows.append({"variant": variant, "batch": b, "step_ms": 1e3 * step,
                         "tokens_per_s_per_gpu": b / step / scn.gpus,
                         "usd_per_million_output_tokens": price * step / b * 1e6,
                         "bound": costs.decode_bound(b), "fits_memory": fits(variant, b)})
    return rows


def fits(variant: str, batch: int) -> bool:
    """Whether `batch` requests' whole KV cache fits beside the weights and the working set of a replica
    that runs `batch` sequences (the fp32 logits of the batch grow with it)."""
    scn = load_scenario(HERE / "scenario.yaml", VARIANTS[variant] + [f"workload.batch={batch}"])
    return batch <= max_batch(scn, scn.workload.prompt_len + scn.workload.output_len)


def largest_fit(variant: str) -> int:
    """The largest batch that fits, found by iterating max_batch on a replica set to run that batch."""
    b = 1
    while True:
        scn = load_scenario(HERE / "scenario.yaml", VARIANTS[variant] + [f"workload.batch={b}"])
        nxt = max_batch(scn, scn.workload.prompt_len + scn.workload.output_len)
        if nxt == b or (nxt < b and fits(variant, nxt)):
            return nxt
        b = nxt


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


def whole_requests(variant: str, batch: int) -> dict:
    """An offline batch of `batch` requests (all at t = 0, at most `batch` running) through the request-level
    simulation: prefill and decode together, $ per million output tokens over the makespan."""
    scn = load_scenario(HERE / "scenario.yaml", VARIANTS[variant] + [f"workload.batch={batch}"])
    r = simulate(scn)
    price = scn.gpus * scn.options.gpu_hour_price / 3600.0
    out = r.completed * scn.workload.output_len
    return {"makespan_s": r.makespan_s, "completed": r.completed,
            "usd_per_million_output_tokens": price * r.makespan_s / out * 1e6}


def headline(rows: list[dict]) -> list[dict]:
    """Batch 1 against the largest batch that fits (and, for reference, the largest batch of the sweep,
    which does not): $ per million output tokens of decode alone, and with the prefill of every prompt."""
    out = []
    for variant, overrides in VARIANTS.items():
        scn = load_scenario(HERE / "scenario.yaml", overrides)
        w = scn.workload
        costs = step_costs(scn)
        context = w.prompt_len + w.output_len // 2
        price = scn.gpus * scn.options.gpu_hour_price / 3600.0
        fit = largest_fit(variant)
        one = whole_requests(variant, 1)["usd_per_million_output_tokens"]
        for label, b in (("batch 1", 1), ("largest that fits", fit), ("sweep's largest (does not fit)", BATCHES[-1])):
            step = costs.decode_step(b, context)
            decode = price * step / b * 1e6
            whole = whole_requests(variant, b)["usd_per_million_output_tokens"] if b <= fit else float("nan")
            out.append({"variant": variant, "batch": label, "sequences": b, "decode_step_ms": 1e3 * step,
                        "usd_per_M_decode": decode, "usd_per_M_with_prefill": whole, "prefill_and_rest": whole - decode,
                        "batch1_over_this_decode": rows_cost(rows, variant, 1) / decode,
                        "batch1_over_this_with_prefill": one / whole})
    return out


def rows_cost(rows: list[dict], variant: str, batch: int) -> float:
    return next(r["usd_per_million_output_tokens"] for r in rows if r["variant"] == variant and r["batch"] == batch)


def fast_mode(rows: list[dict], ref: int = 256, batches=(8, 32, 64)) -> list[dict]:
    """How much faster a token comes, and how much more it costs, at a smaller batch than `ref` (bf16)."""
    at = {r["batch"]: r for r in rows if r["variant"] == "bf16"}
    return [{"batch": b, "step_ms": at[b]["step_ms"], "faster": at[ref]["step_ms"] / at[b]["step_ms"],
             "dearer": at[b]["usd_per_million_output_tokens"] / at[ref]["usd_per_million_output_tokens"]}
            for b in batches]


def nan_table(rows: list[dict], fmt: dict) -> str:
    """markdown_table with NaN printed as '-'."""
    def cell(k, v):
        return "-" if isinstance(v, float) and math.isnan(v) else fmt.get(k, "{}").format(v)

    head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    return head + "".join("| " + " | ".join(cell(k, v) for k, v in r.items()) + " |\n" for r in rows)


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
    head = headline(rows)
    (HERE / "headline.csv").write_text(rows_to_csv(head))
    fmt = {"step_ms": "{:.2f}", "tokens_per_s_per_gpu": "{:.0f}", "usd_per_million_output_tokens": "{:.3f}",
           "simulated_tpot_ms": "{:.2f}", "decode_step_ms": "{:.2f}", "usd_per_M_decode": "{:.3f}",
           "usd_per_M_with_prefill": "{:.3f}", "prefill_and_rest": "{:.3f}", "batch1_over_this_decode": "{:.1f}x",
           "batch1_over_this_with_prefill": "{:.1f}x"}
    knees = ", ".join(f"{v}: batch {crossover(v)} (peak / bandwidth x bytes / 2 = {rule_of_thumb(v):.0f})"
                      for v in VARIANTS)
    text = ("## Batch 1 against the largest batch that fits\n\n"
            "usd_per_M_with_prefill: an offline batch of that many requests (1,536-token prompts, 1,024 output "
            "tokens) through the request-level simulation, $ over the makespan (prefill and decode); "
            "prefill_and_rest: that less the decode steps' cost.\n\n"
            + nan_table(head, fmt) + "\n## Decode step against the batch\n\n"
            + markdown_table(rows, fmt) + f"\nSmallest FLOP-bound batch: {knees}.\n\n"
            "## Request-level check (offline batch, TPOT p50 against the decode step)\n\n" + markdown_table(checks, fmt)
            + "\n## A fast mode: smaller batches against batch 256 (bf16, decode)\n\n"
            + markdown_table(fast_mode(rows), {"step_ms": "{:.2f}", "faster": "{:.2f}x", "dearer": "{:.2f}x"}))
    (HERE / "results.md").write_text(text)
    plot(rows, HERE / "batch.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
