"""Long context from API prices: what a token costs at 8K to 1M tokens of context, and what a price tier implies.

Run from the repository root:  python scenarios/studies/api-prices/study.py
Writes results.md, results.csv and prices.png beside this file.

Forward: four serving replicas (Llama 3 70B with GQA and DeepSeek-V3 with MLA, each on DGX H100 and on
a GB200 NVL72, the *.yaml beside this file). For each context c, a request is c prompt tokens and
`output_len` generated ones; the decode batch is the most sequences whose whole cache fits beside the
weights (at most `workload.batch` an attention replica), and
    $ per output token = GPUs x $/GPU-s x decode step(batch, c + output_len / 2) / batch,
    $ per input token  = GPUs x $/GPU-s x (the prompt's chunked prefill, max_batch_tokens a chunk) / c.
Backward, as the lecture does: a provider whose price per output token is r times higher above a
threshold T than at short context (8K here) is telling us that cost(T) / cost(8K) is about r. Which KV
bytes per token make that so, on each replica? Two answers:
  - simrack: the replica with its KV cache made k bytes a token (capacity and cache reads scaled,
    weights and attention arithmetic unchanged), solved for k by bisection;
  - roofline: the lecture's back-of-envelope, step = (weights + batch x context x KV) / HBM bandwidth
    with the batch capped at the same limit and by the same free HBM, solved for k in closed form.
HBM per user = k x T.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from simulator import load_scenario  # noqa: E402
from simulator.serving.memory import serve_memory  # noqa: E402  (serving step costs: the one internal import)
from simulator.serving.steps import step_costs  # noqa: E402  (serving step costs: the one internal import)

HERE = Path(__file__).resolve().parent
SERIES = {"Llama 3 70B (GQA), H100": "gqa-h100.yaml", "Llama 3 70B (GQA), GB200": "gqa-gb200.yaml",
          "DeepSeek-V3 (MLA), H100": "mla-h100.yaml", "DeepSeek-V3 (MLA), GB200": "mla-gb200.yaml"}
CONTEXTS = [8192 * 2**k for k in range(8)]  # 8K .. 1M
BASE = CONTEXTS[0]  # the short context a base-tier price is compared with
PRICES = yaml.safe_load((HERE / "prices.yml").read_text())
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "int4": 0.5}


# --- one replica at one context ---------------------------------------------------------------------------


def scenario(series: str, context: int):
    return load_scenario(HERE / SERIES[series], [f"workload.prompt_len={context}"])


def kv_bytes_per_token(model, kv_dtype: str) -> float:
    """The model's KV cache a token, all layers: GQA 2 x layers x kv_heads x head_dim; MLA layers x
    (latent + RoPE key); times the cache dtype's bytes."""
    if model.mla:
        per_layer = model.mla.kv_lora_rank + model.mla.qk_rope_head_dim
    else:
        per_layer = 2 * model.kv_heads * model.head_dim
    return model.layers * per_layer * DTYPE_BYTES[kv_dtype]


@functools.lru_cache(maxsize=None)
def _simrack(series: str, context: int):
    """(scenario, step costs, memory) of one replica at one context, built once."""
    scn = scenario(series, context)
    return scn, step_costs(scn), serve_memory(scn)


class Replica:
    """simrack's step costs and memory of one serving replica (an MoE model: one EP unit), with the KV
    cache optionally made `kv_scale` times its real size (what-if: capacity and cache reads scale; the
    weights and attention arithmetic do not). The only place that reaches into simrack's serving model."""

    def __init__(self, series: str, context: int, kv_scale: float = 1.0):
        scn, costs, mem = _simrack(series, context)
        self.scn = scn
        if kv_scale != 1.0:
            costs = dataclasses.replace(costs, kv_rank_layer=costs.kv_rank_layer * kv_scale)
            mem = dataclasses.replace(mem, kv_per_token=mem.kv_per_token * kv_scale)
        self.costs, self.mem = costs, mem
        lay = scn.layout
        self.ranks = lay.ep  # attention replicas stepping together (1 for a dense model)
        self.gpus = lay.tp * lay.pp * lay.ep
        self.usd_per_s = self.gpus * scn.options.gpu_hour_price / 3600

    def linear_flops_per_token(self) -> float:
        """FLOP of the linear layers a token costs over the whole replica (simrack's count, LM head excluded)."""
        return self.costs.flops_per_token()

    def batch(self, held: int) -> int:
        """Most sequences of `held` tokens whose cache fits, at most workload.batch an attention replica."""
        per_rank = self.mem.kv_tokens // self.ranks
        return self.ranks * min(self.scn.workload.batch, per_rank // held)

    def decode(self, context: int) -> dict:
        w = self.scn.workload
        b = self.batch(context + w.output_len)
        if b == 0:
            return {"batch": 0, "step_ms": math.nan, "usd_per_M_output": math.nan}
        step = self.costs.decode_step(b, context + w.output_len // 2)
        return {"batch": b, "step_ms": 1e3 * step, "usd_per_M_output": 1e6 * self.usd_per_s * step / b}

    def prefill(self, context: int) -> float:
        """$ per million input tokens: each attention replica prefills one prompt in chunks of
        max_batch_tokens on top of the chunks before it (chunked prefill, so no 1M-token step)."""
        chunk, r = self.scn.workload.max_batch_tokens, self.ranks
        seconds, done = 0.0, 0
        while done < context:
            n = min(chunk, context - done)
            last = done + n == context  # the last chunk samples the first output token
            seconds += self.costs.step_time(np.full(r, float(n)), np.full(r, float(done)), r if last else 0)
            done += n
        return 1e6 * self.usd_per_s * seconds / (r * context)

    def hbm_roofline_ms(self, context: int, batch: int) -> float:
        """The decode step's HBM roofline on one GPU: its weights plus the batch's cache (its share of the
        batch: batch / attention replicas) read once at data-sheet bandwidth."""
        w = self.scn.workload
        cache = batch / self.ranks * (context + w.output_len // 2) * float(self.mem.kv_per_token.max())
        return 1e3 * (float(self.mem.weights.max()) + cache) / self.scn.topology.device.hbm_bandwidth


def point(series: str, context: int) -> dict:
    rep = Replica(series, context)
    scn = rep.scn
    d = rep.decode(context)
    held = context + scn.workload.output_len
    row = {"series": series, "context": context, "gpus": rep.gpus,
           "kv_KiB_per_token": kv_bytes_per_token(scn.model, scn.workload.kv_dtype) / 1024,
           "kv_GB_per_sequence_per_gpu": held * float(rep.mem.kv_per_token.max()) / 1e9, **d,
           "x_hbm_roofline": d["step_ms"] / rep.hbm_roofline_ms(context, d["batch"]) if d["batch"] else math.nan,
           "usd_per_M_input": rep.prefill(context) if d["batch"] else math.nan}  # no prompt whose cache does not fit
    return row


# --- backward: the KV bytes a price ratio implies -----------------------------------------------------------


def simrack_ratio(series: str, threshold: int, kv_scale: float, base: int = BASE) -> float:
    """Decode cost at `threshold` over decode cost at `base` with the cache made kv_scale times its size."""
    hi = Replica(series, threshold, kv_scale).decode(threshold)["usd_per_M_output"]
    lo = Replica(series, base, kv_scale).decode(base)["usd_per_M_output"]
    return hi / lo


def _bisect_log(f, target, lo, hi, iters=60):
    """x in [lo, hi] with f(x) = target for increasing f, by bisection in log x (None if out of range)."""
    if not (f(lo) <= target <= f(hi)):
        return None
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
    return math.sqrt(lo * hi)


def implied_kv_simrack(series: str, threshold: int, ratio: float, base: int = BASE) -> dict:
    """KV bytes a token (whole model) for which simrack's decode cost at `threshold` is `ratio` times that
    at `base`; or None with the ratio a vanishing cache (1 byte a token) still gives."""
    scn = scenario(series, base)
    real = kv_bytes_per_token(scn.model, scn.workload.kv_dtype)
    lo, hi = 1.0 / real, 1e8 / real  # 1 byte .. 100 MB a token
    def f(s):  # a cache too big to hold one sequence costs without bound
        r = simrack_ratio(series, threshold, s, base)
        return math.inf if math.isnan(r) else r

    scale = _bisect_log(f, ratio, lo, hi, iters=40)
    return {"kv_bytes": None if scale is None else scale * real,
            "floor_ratio": simrack_ratio(series, threshold, lo, base)}


def roofline_inputs(series: str, cap: int | None = None) -> dict:
    """What the back-of-envelope needs, from simrack's memory model of the replica: one GPU's weight
    bytes and free HBM for cache, HBM bandwidth, the batch cap, and the ratio of the model's KV bytes a
    token to one GPU's (TP splits GQA heads; MLA's latent is whole on each attention replica)."""
    scn, _, mem = _simrack(series, BASE)
    per_gpu = float(mem.kv_per_token.max())
    free = float(np.min(mem.capacity - mem.weights - mem.activations))
    return {"weights": float(mem.weights.max()), "free": free, "hbm": scn.topology.device.hbm_bandwidth,
            "cap": cap or scn.workload.batch, "output": scn.workload.output_len,
            "spread": kv_bytes_per_token(scn.model, scn.workload.kv_dtype) / per_gpu}


def roofline_cost(k_model: float, context: int, p: dict) -> float:
    """Seconds of one GPU per output token when a step reads the weights and the batch's cache at HBM
    bandwidth, the batch (per GPU) being the most sequences that fit, at most the cap."""
    k = k_model / p["spread"]  # bytes a token on one GPU
    held, mean = context + p["output"], context + p["output"] / 2
    b = min(p["cap"], math.floor(p["free"] / (held * k)))
    return (p["weights"] + b * mean * k) / p["hbm"] / b if b >= 1 else math.inf


def implied_kv_roofline(series: str, threshold: int, ratio: float, base: int = BASE,
                        cap: int | None = None) -> float | None:
    """Closed form while the cap binds at both contexts: (W/cap + T k) / (W/cap + c0 k) = r gives
    k = (r - 1) W / cap / (T - r c0) a GPU; past the point where memory forces the batch down, bisection."""
    p = roofline_inputs(series, cap)
    mean_t, mean_b = threshold + p["output"] / 2, base + p["output"] / 2
    if ratio * mean_b >= mean_t:
        return None
    k_gpu = (ratio - 1) * p["weights"] / p["cap"] / (mean_t - ratio * mean_b)
    if p["cap"] * (threshold + p["output"]) * k_gpu <= p["free"]:  # the cap still binds at T: exact
        return k_gpu * p["spread"]
    return _bisect_log(lambda k: roofline_cost(k, threshold, p) / roofline_cost(k, base, p), ratio,
                       1e-3 * k_gpu * p["spread"], k_gpu * p["spread"])


def attention_flops_per_context_token(model) -> float:
    """FLOP one generated token spends on each token of its context, all layers: GQA/MHA 4 x heads x
    head_dim (scores and values); MLA in the absorbed form DeepSeek decodes with, 2 x heads x (2 x latent
    + RoPE) (scores on latent + RoPE key, values on the latent)."""
    if model.mla:
        return model.layers * 2.0 * model.heads * (2 * model.mla.kv_lora_rank + model.mla.qk_rope_head_dim)
    return model.layers * 4.0 * model.heads * model.head_dim


def flop_floor_ratio(linear: float, attention: float, threshold: int, output: int, base: int = BASE) -> float:
    """Decode cost ratio (threshold over base) if every FLOP ran at one rate and the cache cost nothing:
    (linear + a (T + o/2)) / (linear + a (c0 + o/2))."""
    return (linear + attention * (threshold + output / 2)) / (linear + attention * (base + output / 2))


def implied_attention_flops(linear: float, ratio: float, threshold: int, output: int, base: int = BASE) -> float:
    """The attention FLOP per context token that makes flop_floor_ratio equal `ratio` (its inverse)."""
    return (ratio - 1) * linear / ((threshold + output / 2) - ratio * (base + output / 2))


def tiers() -> list[dict]:
    """Every published step up: (provider, model, threshold, input and output price ratios to the base tier)."""
    out = []
    for e in PRICES:
        base = e["tiers"][0]
        for t in e["tiers"][1:]:
            out.append({"provider": e["provider"], "model": e["model"], "threshold": t["from"],
                        "input_ratio": t["input"] / base["input"] if t["input"] is not None else math.nan,
                        "output_ratio": t["output"] / base["output"] if t["output"] is not None else math.nan})
    return out


def _price(t: dict) -> str:
    return f"{t['model']} > {t['threshold'] // 1000}K"


def backward_bytes(series_list=tuple(SERIES)) -> list[dict]:
    """Per output-price step and replica: simrack's cost ratio with the real cache, the cache a token the
    roofline says the price implies (and the HBM a user then holds at the threshold), and simrack's ratio
    with a vanishing cache (the part no cache size can remove)."""
    rows = []
    for t in tiers():
        if math.isnan(t["output_ratio"]):
            continue
        for s in series_list:
            scn = Replica(s, BASE).scn
            sim = implied_kv_simrack(s, t["threshold"], t["output_ratio"])
            roof = implied_kv_roofline(s, t["threshold"], t["output_ratio"])
            rows.append({"price": _price(t), "output_ratio": t["output_ratio"], "series": s,
                         "sim_cost_ratio": simrack_ratio(s, t["threshold"], 1.0),
                         "model_kv_KiB": kv_bytes_per_token(scn.model, scn.workload.kv_dtype) / 1024,
                         "implied_kv_KiB_roofline": math.nan if roof is None else roof / 1024,
                         "real_over_implied": (math.nan if roof is None
                                               else kv_bytes_per_token(scn.model, scn.workload.kv_dtype) / roof),
                         "hbm_GB_per_user_at_threshold": math.nan if roof is None else roof * t["threshold"] / 1e9,
                         "implied_kv_KiB_simrack": math.nan if sim["kv_bytes"] is None else sim["kv_bytes"] / 1024,
                         "sim_ratio_without_cache": sim["floor_ratio"]})
    return rows


def backward_flops() -> list[dict]:
    """Per output-price step and model: the attention FLOP per context token the ratio allows if every
    FLOP ran at one rate and the cache were free, against the model's own."""
    models = {}
    for s in SERIES:
        rep = Replica(s, BASE)
        name = s.split(",")[0]
        models.setdefault(name, (rep.linear_flops_per_token(), attention_flops_per_context_token(rep.scn.model),
                                 rep.scn.workload.output_len))
    rows = []
    for t in tiers():
        if math.isnan(t["output_ratio"]):
            continue
        for name, (linear, attn, out) in models.items():
            allowed = implied_attention_flops(linear, t["output_ratio"], t["threshold"], out)
            rows.append({"price": _price(t), "output_ratio": t["output_ratio"], "model": name,
                         "linear_GFLOP_per_token": linear / 1e9, "attention_MFLOP_per_context_token": attn / 1e6,
                         "implied_MFLOP": allowed / 1e6, "model_over_implied": attn / allowed,
                         "flop_floor_ratio": flop_floor_ratio(linear, attn, t["threshold"], out)})
    return rows


def cap_sensitivity(series: str = "Llama 3 70B (GQA), H100", caps=(16, 64, 256)) -> list[dict]:
    """The roofline-implied cache per token for each output-price step, if the short-context tier were
    served at smaller batches (faster tokens, more weight bytes per user): k grows as weights / cap."""
    rows = []
    for t in tiers():
        if math.isnan(t["output_ratio"]):
            continue
        row = {"price": _price(t), "output_ratio": t["output_ratio"]}
        for cap in caps:
            k = implied_kv_roofline(series, t["threshold"], t["output_ratio"], cap=cap)
            row[f"cap {cap}: KiB"] = math.nan if k is None else k / 1024
        rows.append(row)
    return rows


REFERENCE_MODELS = ("llama3-70b", "llama3-405b", "deepseek-v3", "qwen3-235b-a22b")


def reference_caches() -> list[dict]:
    """bf16 KV cache a token and attention arithmetic of a few of simrack's model presets (decode form;
    for MLA also the un-absorbed form DeepSeek prefills with)."""
    rows = []
    for name in REFERENCE_MODELS:
        model = load_scenario(HERE / SERIES["Llama 3 70B (GQA), GB200"], [f"model={name}", "layout.tp=1"]).model
        prefill = attention_flops_per_context_token(model)
        if model.mla:  # prefill runs MLA un-absorbed, as multi-head attention on (nope + RoPE) keys and values
            prefill = model.layers * 2.0 * model.heads * (model.mla.qk_nope_head_dim + model.mla.qk_rope_head_dim
                                                          + model.mla.v_head_dim)
        rows.append({"model": name, "kv_KiB_per_token_bf16": kv_bytes_per_token(model, "bf16") / 1024,
                     "attention_MFLOP_per_context_token": attention_flops_per_context_token(model) / 1e6,
                     "prefill_form_MFLOP": prefill / 1e6})
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per series: output cost at 8K and at the longest context that fits, and their ratio; input cost
    ratio 128K / 8K; and the other model's and the other system's cost relative to this one."""
    at = {(r["series"], r["context"]): r for r in rows}
    out = []
    for s in SERIES:
        fit = [r for r in rows if r["series"] == s and r["batch"]]
        first, last = fit[0], fit[-1]
        model, system = s.split(", ")
        other_model = next(x for x in SERIES if x.endswith(system) and x != s)
        other_system = next(x for x in SERIES if x.startswith(model) and x != s)
        span = [c for c in CONTEXTS if c <= 262144]
        def relative(other):  # the other series' output cost over this one's, at each context to 256K
            return [at[(other, c)]["usd_per_M_output"] / at[(s, c)]["usd_per_M_output"] for c in span]

        out.append({"series": s, "usd_per_M_output_8K": first["usd_per_M_output"], "longest_context": last["context"],
                    "usd_per_M_output_longest": last["usd_per_M_output"],
                    "output_longest_over_8K": last["usd_per_M_output"] / first["usd_per_M_output"],
                    "input_128K_over_8K": at[(s, 131072)]["usd_per_M_input"] / first["usd_per_M_input"],
                    "other_model_over_this_min": min(relative(other_model)),
                    "other_model_over_this_max": max(relative(other_model)),
                    "other_system_over_this_min": min(relative(other_system)),
                    "other_system_over_this_max": max(relative(other_system))})
    return out


def input_ratios(rows: list[dict]) -> list[dict]:
    """Published input-price ratios against simrack's prefill cost ratio at the same threshold."""
    out = []
    for t in tiers():
        entry = {"price": f"{t['model']} > {t['threshold'] // 1000}K", "input_ratio": t["input_ratio"]}
        for s in SERIES:
            base = next(r for r in rows if r["series"] == s and r["context"] == BASE)["usd_per_M_input"]
            entry[s] = Replica(s, t["threshold"]).prefill(t["threshold"]) / base
        out.append(entry)
    return out


# --- output ----------------------------------------------------------------------------------------------


def _fmt(v, spec):
    if isinstance(v, float) and math.isnan(v):
        return "-"
    return spec.format(v) if isinstance(v, (int, float)) else str(v)


def _table(rows, fmt) -> str:
    head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    return head + "".join("| " + " | ".join(_fmt(v, fmt.get(k, "{}")) for k, v in r.items()) + " |\n" for r in rows)


STYLE = {"Llama 3 70B (GQA), H100": ("#4C72B0", "-"), "Llama 3 70B (GQA), GB200": ("#4C72B0", "--"),
         "DeepSeek-V3 (MLA), H100": ("#DD8452", "-"), "DeepSeek-V3 (MLA), GB200": ("#DD8452", "--")}
PRICE_COLOURS = ["#55A868", "#8172B3", "#C44E52", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974"]


def _price_steps(key: str) -> list[tuple[str, list, list]]:
    """(label, x, y) step lines of price / base-tier price; providers with the same steps share a line."""
    lines: dict[tuple, list[str]] = {}
    for e in PRICES:
        if any(t[key] is None for t in e["tiers"]):
            continue
        steps = tuple((t["from"], t[key] / e["tiers"][0][key]) for t in e["tiers"][1:])
        lines.setdefault(steps, []).append(e["model"])
    out = []
    for steps, names in lines.items():
        xs, ys = [CONTEXTS[0]], [1.0]
        for start, ratio in steps:
            xs += [start, start]
            ys += [ys[-1], ratio]
        out.append(("price: " + ", ".join(names), xs + [CONTEXTS[-1]], ys + [ys[-1]]))
    return out


def plot(rows: list[dict], path: Path, implied: dict) -> None:
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.4))
    for s, (colour, ls) in STYLE.items():
        pts = [r for r in rows if r["series"] == s]
        fit = [r for r in pts if r["batch"]]
        x = [r["context"] for r in fit]
        axes[0].plot(x, [r["usd_per_M_output"] for r in fit], marker="o", color=colour, ls=ls)
        axes[0].plot([r["context"] for r in pts], [r["usd_per_M_input"] for r in pts], marker="^", ms=5, color=colour,
                     ls=ls, alpha=0.45)
        base = pts[0]
        axes[1].plot(x, [r["usd_per_M_output"] / base["usd_per_M_output"] for r in fit], marker="o", ms=4, color=colour,
                     ls=ls, label=f"simrack: {s}")
        axes[2].plot([r["context"] for r in pts], [r["usd_per_M_input"] / base["usd_per_M_input"] for r in pts],
                     marker="o", ms=4, color=colour, ls=ls, label=f"simrack: {s}")
    for ax, key in ((axes[1], "output"), (axes[2], "input")):
        for (label, xs, ys), colour in zip(_price_steps(key), PRICE_COLOURS):
            ax.plot(xs, ys, color=colour, lw=2.4, alpha=0.85, label=label)
    p = roofline_inputs(implied["series"])
    xs = np.geomspace(CONTEXTS[0], CONTEXTS[-1], 60)
    for k, text, colour, ls in ((implied["real"], "real cache", "grey", ":"),
                                (implied["kv"], "the cache 1.5x at 200K implies", "black", "-.")):
        ratio = [roofline_cost(k, int(c), p) / roofline_cost(k, BASE, p) for c in xs]
        axes[1].plot(xs, ratio, color=colour, ls=ls, lw=1.3,
                     label=f"HBM roofline, {implied['series'].split(',')[0]}, {k / 1024:.1f} KiB a token ({text})")
    handles = [Line2D([], [], color=c, ls=ls, label=s) for s, (c, ls) in STYLE.items()]
    handles += [Line2D([], [], color="grey", marker="o", ls="", label="output (decode)"),
                Line2D([], [], color="grey", marker="^", ls="", alpha=0.45, label="input (prefill)")]
    axes[0].legend(handles=handles, fontsize=7.5)
    axes[0].set(ylabel=r"simulated \$ per million tokens", title="simulated cost per token")
    axes[1].set(ylabel="cost or price / its value at 8K", title="output (decode): cost vs published price tiers")
    axes[2].set(ylabel="cost or price / its value at 8K", title="input (prefill): cost vs published price tiers")
    for ax in axes:
        ax.set(xscale="log", yscale="log", xlabel="context (prompt tokens)")
        ax.set_xticks(CONTEXTS, [f"{c // 1024}K" if c < 2**20 else "1M" for c in CONTEXTS])
        ax.minorticks_off()
        ax.title.set_fontsize(10)
    axes[1].legend(fontsize=6.5, loc="upper left")
    axes[2].legend(fontsize=6.5, loc="upper left")
    fig.suptitle(r"Long context: what a token costs (H100 at \$2, GB200 at \$3 per GPU-hour) "
                 "against what providers charge",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> int:
    rows = [point(s, c) for s in SERIES for c in CONTEXTS]
    with (HERE / "results.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    back, flops, caps, refs = backward_bytes(), backward_flops(), cap_sensitivity(), reference_caches()
    inputs = input_ratios(rows)
    gemini = next(r for r in back
                  if r["price"].startswith("Gemini 2.5 Pro") and r["series"] == "Llama 3 70B (GQA), H100")
    plot(rows, HERE / "prices.png", {"series": gemini["series"], "real": gemini["model_kv_KiB"] * 1024,
                                     "kv": gemini["implied_kv_KiB_roofline"] * 1024})
    fwd = {"kv_KiB_per_token": "{:.1f}", "kv_GB_per_sequence_per_gpu": "{:.2f}", "step_ms": "{:.1f}",
           "usd_per_M_output": "{:.3f}", "x_hbm_roofline": "{:.2f}", "usd_per_M_input": "{:.3f}"}
    bwd = {"output_ratio": "{:.2f}", "sim_cost_ratio": "{:.1f}", "model_kv_KiB": "{:.1f}",
           "implied_kv_KiB_roofline": "{:.2f}", "hbm_GB_per_user_at_threshold": "{:.3f}",
           "implied_kv_KiB_simrack": "{:.2f}", "sim_ratio_without_cache": "{:.1f}", "real_over_implied": "{:.0f}"}
    flp = {"output_ratio": "{:.2f}", "linear_GFLOP_per_token": "{:.1f}", "attention_MFLOP_per_context_token": "{:.2f}",
           "implied_MFLOP": "{:.3f}", "flop_floor_ratio": "{:.1f}", "model_over_implied": "{:.1f}"}
    summ = summary(rows)
    text = ("## Forward: simulated cost against context\n\n" + _table(rows, fwd)
            + "\n## Summary (output-cost ratios between series over 8K to 256K)\n\n"
            + _table(summ, {k: "{:.3g}" for k in summ[0] if k not in ("series", "longest_context")})
            + "\n## Backward, bytes: the KV cache an output-price ratio implies "
              "(cost at the threshold = ratio x cost at 8K)\n\n"
            + _table(back, bwd)
            + "\n## Backward, FLOPs: the attention arithmetic an output-price ratio allows "
              "(cache free, one FLOP rate)\n\n"
            + _table(flops, flp)
            + "\n## Roofline-implied KV cache (KiB a token) if the base tier ran smaller batches "
              "(Llama 3 70B, H100)\n\n"
            + _table(caps, {k: "{:.2f}" for k in caps[0] if k != "price"})
            + "\n## Reference: KV cache and attention arithmetic of simrack's presets\n\n"
            + _table(refs, {"kv_KiB_per_token_bf16": "{:.1f}", "attention_MFLOP_per_context_token": "{:.2f}",
                            "prefill_form_MFLOP": "{:.2f}"})
            + "\n## Input prices: published ratio against simrack's prefill cost ratio (threshold / 8K)\n\n"
            + _table(inputs, {k: "{:.2f}" for k in ["input_ratio", *SERIES]}))
    (HERE / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
