"""Long context: KV cache per sequence, the largest batch that fits, and cost per token, 2K to 1M tokens.

Run from the repository root:  python scenarios/studies/long-context/study.py
Writes results.md, results.csv and context.png beside this file. Five replicas of 8 H100: Llama 3 70B
(GQA) and the same model with MLA, each under TP8 and under PP8 (one GPU a stage, up to eight virtual
engines in flight sharing the KV cache, as vLLM pipelines decode), and MLA under TP8 with its latent cache
split over the sequences (layout.kv_sharding batch: each GPU the cache of 1/8 of them, as data-parallel
attention holds it). For each context the batch is the most
sequences whose cache fits (at most 256), and the decode step comes from simulator.serving.steps at that batch
and context; x_hbm_roofline is that step over its HBM roofline (every stage's weights and cache read once).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from simulator import load_scenario  # noqa: E402
from simulator.cost.kv_cache import kv_bytes_per_token  # noqa: E402
from simulator.output.render import markdown_table, rows_to_csv  # noqa: E402
from simulator.serving.memory import serve_memory  # noqa: E402
from simulator.serving.steps import step_costs  # noqa: E402

HERE = Path(__file__).resolve().parent
CONTEXTS = [2048 * 2**k for k in range(10)]  # 2K .. 1M (2K and 4K show where the GQA knee starts)
SERIES = {"GQA, TP8": ("gqa.yaml", ["layout.tp=8"]), "GQA, PP8": ("gqa.yaml", ["layout.tp=1", "layout.pp=8"]),
          "MLA, TP8": ("mla.yaml", ["layout.tp=8"]), "MLA, PP8": ("mla.yaml", ["layout.tp=1", "layout.pp=8"]),
          "MLA, TP8, cache by batch": ("mla.yaml", ["layout.tp=8", "layout.kv_sharding=batch"])}
CAP = 256


def point(name: str, context: int) -> dict:
    """One (series, context) row: cache sizes, batch that fits, decode step, throughput and cost."""
    file, overrides = SERIES[name]
    scn = load_scenario(HERE / file, overrides + [f"workload.prompt_len={context}"])
    w, pp = scn.workload, scn.layout.pp
    held = w.prompt_len + w.output_len  # tokens a sequence holds at its end
    mem = serve_memory(scn)
    batch = min(CAP, mem.kv_tokens // held)
    row = {"series": name, "context": context,
           "kv_per_sequence_GB": held * kv_bytes_per_token(scn.model, w.kv_dtype) / 1e9,
           "kv_per_sequence_per_GPU_GB": held * float(mem.kv_per_token.max()) / 1e9, "batch": batch,
           "step_ms": float("nan"), "x_hbm_roofline": float("nan"), "tokens_per_s_per_gpu": 0.0,
           "usd_per_million_output_tokens": float("nan")}
    if batch:
        engines = min(pp, batch)  # virtual engines in flight, sharing the cache
        per_engine = -(-batch // engines)
        step = step_costs(scn).decode_step(per_engine, context + w.output_len // 2)  # one engine's step
        rate = batch / step  # each engine's step passes every stage once; with engines <= pp they never queue
        # HBM roofline of that step: every stage's GPU reads its weights and its share of the engine's cache
        roof = (float(mem.weights.sum()) + per_engine * (context + w.output_len // 2) * float(mem.kv_per_token.sum())
                ) / scn.topology.device.hbm_bandwidth
        row.update(step_ms=1e3 * step, x_hbm_roofline=step / roof, tokens_per_s_per_gpu=rate / scn.gpus,
                   usd_per_million_output_tokens=scn.gpus * scn.options.gpu_hour_price / 3600 / rate * 1e6)
    return row


def ratios(rows: list[dict]) -> list[dict]:
    """Per context: GQA's PP8 cost over its TP8 cost; MLA on PP8 against GQA on TP8 (batch, and cost the
    other way round); GQA TP8's cost over its cost at half the context."""
    cost = {(r["series"], r["context"]): r["usd_per_million_output_tokens"] for r in rows}
    batch = {(r["series"], r["context"]): r["batch"] for r in rows}
    out = []
    for c in CONTEXTS:
        g, gp, mp = ("GQA, TP8", c), ("GQA, PP8", c), ("MLA, PP8", c)
        out.append({"context": c, "gqa_pp8_over_tp8_cost": cost[gp] / cost[g],
                    "mla_pp8_over_gqa_tp8_batch": batch[mp] / batch[g], "gqa_tp8_over_mla_pp8_cost": cost[g] / cost[mp],
                    "cost_over_half_context": cost[g] / cost.get(("GQA, TP8", c // 2), float("nan"))})
    return out


def plot(rows: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = {"GQA, TP8": ("#4C72B0", "-"), "GQA, PP8": ("#4C72B0", "--"),
              "MLA, TP8": ("#DD8452", "-"), "MLA, PP8": ("#DD8452", "--"), "MLA, TP8, cache by batch": ("#DD8452", ":")}
    for name, (colour, ls) in styles.items():
        pts = [r for r in rows if r["series"] == name]
        x = [r["context"] for r in pts]
        axes[0].plot(x, [r["kv_per_sequence_per_GPU_GB"] for r in pts], marker="o", color=colour, ls=ls, label=name)
        axes[1].plot(x, [r["batch"] for r in pts], marker="o", color=colour, ls=ls, label=name)
        fit = [r for r in pts if r["batch"]]
        axes[2].plot([r["context"] for r in fit], [r["usd_per_million_output_tokens"] for r in fit], marker="o",
                     color=colour, ls=ls, label=name)
    axes[0].set(ylabel="GB", title="KV cache of one sequence, per GPU (GQA: TP8 = PP8; MLA: PP8 = by batch)")
    axes[1].set(ylabel="sequences", title=f"largest batch that fits (cap {CAP})")
    axes[2].set(ylabel=r"\$ per million output tokens", title=r"decode cost (\$2/GPU-hour)")
    for ax in axes:
        ax.set(xscale="log", yscale="log", xlabel="context (tokens)")
        ax.set_xticks(CONTEXTS[::2], [f"{c // 1024}K" for c in CONTEXTS[::2]])
        ax.minorticks_off()
    axes[1].legend(fontsize=8)
    fig.suptitle("Llama 3 70B on 8 H100: GQA against a what-if MLA cache, TP8 against PP8 (and MLA's cache by batch)")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> int:
    rows = [point(name, c) for name in SERIES for c in CONTEXTS]
    (HERE / "results.csv").write_text(rows_to_csv(rows))
    fmt = {"kv_per_sequence_GB": "{:.2f}", "kv_per_sequence_per_GPU_GB": "{:.2f}", "step_ms": "{:.1f}",
           "x_hbm_roofline": "{:.2f}",
           "tokens_per_s_per_gpu": "{:.1f}", "usd_per_million_output_tokens": "{:.2f}"}
    text = (markdown_table(rows, fmt) + "\n## Ratios between the series\n\n"
            + markdown_table(ratios(rows), dict.fromkeys(("gqa_pp8_over_tp8_cost", "mla_pp8_over_gqa_tp8_batch",
                                                          "gqa_tp8_over_mla_pp8_cost", "cost_over_half_context"),
                                                         "{:.2f}")))
    (HERE / "results.md").write_text(text)
    plot(rows, HERE / "context.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
