"""Over-training: the cheapest model for a given loss once it must also be served.

Run from the repository root:  python scenarios/studies/overtraining/study.py
Writes results.md, results.csv (the optimum against demand), prices.csv (simrack's $ per token), cost.png and
ratio.png beside this file.

1. simrack prices a training token and a served token of six Llama-3-style dense models (1B to 405B)
   on one GB200 NVL72 rack at $3 per GPU-hour: a training step (train.yaml, the cheapest layout that
   fits) and the decode and prefill steps of serving (serve.yaml, the cheapest TP and batch that fit
   the KV cache and a 50 ms time per output token).
2. Between the simulated sizes, log $ per token is interpolated against log N by a monotone cubic
   (PCHIP: through every point, continuous slope, no overshoot); beyond them the end slopes extend it.
3. Chinchilla's loss fit L(N, D) = E + A / N^alpha + B / D^beta (chinchilla.yml) gives, for each N, the
   training tokens D(N) that reach the loss of Chinchilla itself (70B on 1.4T tokens). For a lifetime
   demand Q of served tokens (RL rollouts count as served), the study minimises
       total(N) = train $/token(N) * D(N) + served $/token(N) * Q
   over N and reports the optimum's tokens per parameter D/N.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from simulator import load_scenario, simulate  # noqa: E402
from simulator.serving.memory import serve_memory  # noqa: E402  (serving step costs: the one internal import)
from simulator.serving.steps import step_costs  # noqa: E402  (serving step costs: the one internal import)

HERE = Path(__file__).resolve().parent
FACTS = yaml.safe_load((HERE / "chinchilla.yml").read_text())
FIT = {k: float(v) for k, v in FACTS["loss_fit"].items()}
CHINCHILLA = {k: float(v) for k, v in FACTS["chinchilla"].items()}
MODELS = yaml.safe_load((HERE / "models.yml").read_text())
_REQUEST = yaml.safe_load((HERE / "serve.yaml").read_text())["workload"]
PROMPT, OUTPUT = _REQUEST["prompt_len"], _REQUEST["output_len"]
TRAIN_TP, TRAIN_PP = (1, 2, 4, 8), (1, 2, 4, 8, 9)
SERVE_TP = (1, 2, 4, 8)
BATCH_CAP = 1024
DEMANDS = [0.0, 1e11, 3e11, 1e12, 3e12, 1e13, 3e13, 1e14]  # lifetime served tokens: 0 and 0.1T .. 100T
OVERTRAINED = 100  # the lecture's "100x over-trained"


# --- simrack: $ per training token and per served token of one model --------------------------------


def _model(name: str) -> str:
    spec = MODELS[name]
    return f"model={json.dumps(spec) if isinstance(spec, dict) else spec}"


def parameters(model) -> float:
    """Parameters of a dense GQA decoder from its shape: attention, SwiGLU/GeLU FFN, embeddings."""
    attention = model.hidden * model.head_dim * (2 * model.heads + 2 * model.kv_heads)
    ffn = (3 if model.ffn_kind == "swiglu" else 2) * model.hidden * model.ffn
    return model.layers * (attention + ffn) + model.vocab * model.hidden * (1 if model.tied_embeddings else 2)


def train_point(name: str) -> dict:
    """The cheapest training layout on the rack that fits in memory, and its $ per training token."""
    best = None
    for tp in TRAIN_TP:
        for pp in TRAIN_PP:
            try:
                scn = load_scenario(HERE / "train.yaml", [_model(name), f"layout.tp={tp}", f"layout.pp={pp}",
                                                          f"layout.sequence_parallel={str(tp > 1).lower()}"])
            except Exception:  # noqa: BLE001 - layouts the model's shape does not divide
                continue
            report = simulate(scn)
            if not report.fits_in_memory:
                continue
            usd = scn.gpus * scn.options.gpu_hour_price / 3600 / report.tokens_per_s
            if best is None or usd < best["train_usd_per_token"]:
                m = scn.model
                kv_kib = 2 * m.layers * m.kv_heads * m.head_dim * 2 / 1024  # bf16 K and V, all layers
                best = {"model": name, "params": parameters(m), "kv_KiB_per_token": kv_kib,
                        "train_layout": f"TP{tp} PP{pp} DP{scn.layout.dp}",
                        "mfu": report.mfu, "train_usd_per_token": usd}
    return best


def serve_point(name: str) -> dict:
    """The cheapest serving replica (TP degree, batch) whose KV cache fits and whose decode step meets
    the SLO; $ per decoded token, per prefilled token, and per served token (the request's mix), and the
    decode step over its HBM roofline (one GPU's weights and the batch's KV cache at data-sheet bandwidth)."""
    best = None
    for tp in SERVE_TP:
        try:
            scn = load_scenario(HERE / "serve.yaml", [_model(name), f"layout.tp={tp}", f"workload.batch={BATCH_CAP}"])
        except Exception:  # noqa: BLE001 - heads not divisible by tp
            continue
        w = scn.workload
        mem = serve_memory(scn)
        fits = min(BATCH_CAP, mem.kv_tokens // (w.prompt_len + w.output_len))
        if not mem.fits_weights or fits < 1:
            continue
        costs = step_costs(scn)
        usd_per_s = tp * scn.options.gpu_hour_price / 3600  # the replica's GPUs
        for b in sorted({2**k for k in range(11) if 2**k <= fits} | {fits}):
            step = costs.decode_step(b, w.prompt_len + w.output_len // 2)
            if step > w.slo.tpot:
                break
            decode = usd_per_s * step / b
            if best is None or decode < best["decode_usd_per_token"]:
                prompts = max(1, w.max_batch_tokens // w.prompt_len)
                prefill = usd_per_s * costs.prefill(w.prompt_len, prompts) / (prompts * w.prompt_len)
                served = (w.prompt_len * prefill + w.output_len * decode) / (w.prompt_len + w.output_len)
                context = w.prompt_len + w.output_len // 2
                roofline = ((float(mem.weights[0]) + b * context * float(mem.kv_per_token[0]))
                            / scn.topology.device.hbm_bandwidth)
                best = {"serve_tp": tp, "batch": b, "tpot_ms": 1e3 * step, "x_hbm_roofline": step / roofline,
                        "decode_usd_per_token": decode,
                        "prefill_usd_per_token": prefill, "served_usd_per_token": served}
    return best


def price_table() -> list[dict]:
    """One row per model: simrack's cheapest training and serving, $ per token each."""
    rows = []
    for name in MODELS:
        row = {**train_point(name), **serve_point(name)}
        row["decode_over_train"] = row["decode_usd_per_token"] / row["train_usd_per_token"]
        rows.append(row)
    return rows


# --- interpolation in N ------------------------------------------------------------------------------


class LogLog:
    """Monotone cubic (Fritsch-Carlson PCHIP) interpolation of log y against log x: it passes through
    every simulated point, has a continuous slope (so the optimum does not stick to a simulated size),
    and never overshoots between points. Beyond the data it extends the end points' slopes linearly."""

    def __init__(self, x, y):
        order = np.argsort(x)
        self.lx, self.ly = np.log(np.asarray(x, float)[order]), np.log(np.asarray(y, float)[order])
        h = np.diff(self.lx)
        delta = np.diff(self.ly) / h
        m = np.empty_like(self.lx)
        m[0], m[-1] = delta[0], delta[-1]
        for i in range(1, len(self.lx) - 1):  # weighted harmonic mean of neighbouring secants, 0 at extrema
            if delta[i - 1] * delta[i] <= 0:
                m[i] = 0.0
            else:
                w1, w2 = 2 * h[i] + h[i - 1], h[i] + 2 * h[i - 1]
                m[i] = (w1 + w2) / (w1 / delta[i - 1] + w2 / delta[i])
        self.h, self.m = h, m

    def _parts(self, x):
        lx = np.log(np.asarray(x, float))
        i = np.clip(np.searchsorted(self.lx, lx) - 1, 0, len(self.lx) - 2)
        t = (lx - self.lx[i]) / self.h[i]
        return lx, i, t

    def _log(self, x):
        lx, i, t = self._parts(x)
        h, y0, y1, m0, m1 = self.h[i], self.ly[i], self.ly[i + 1], self.m[i], self.m[i + 1]
        inner = ((2 * t**3 - 3 * t**2 + 1) * y0 + (t**3 - 2 * t**2 + t) * h * m0
                 + (-2 * t**3 + 3 * t**2) * y1 + (t**3 - t**2) * h * m1)
        below = self.ly[0] + self.m[0] * (lx - self.lx[0])
        above = self.ly[-1] + self.m[-1] * (lx - self.lx[-1])
        return np.where(lx < self.lx[0], below, np.where(lx > self.lx[-1], above, inner))

    def slope(self, x):
        """d log y / d log x at x."""
        lx, i, t = self._parts(x)
        h, y0, y1, m0, m1 = self.h[i], self.ly[i], self.ly[i + 1], self.m[i], self.m[i + 1]
        inner = ((6 * t**2 - 6 * t) * y0 / h + (3 * t**2 - 4 * t + 1) * m0
                 + (-6 * t**2 + 6 * t) * y1 / h + (3 * t**2 - 2 * t) * m1)
        return np.where(lx < self.lx[0], self.m[0], np.where(lx > self.lx[-1], self.m[-1], inner))

    def __call__(self, x):
        return np.exp(self._log(x))


# --- Chinchilla's iso-loss curve and the optimum ------------------------------------------------------


def loss(n, d, fit=FIT):
    return fit["E"] + fit["A"] / np.power(n, fit["alpha"]) + fit["B"] / np.power(d, fit["beta"])


def n_floor(target: float, fit=FIT) -> float:
    """The smallest model that reaches `target` at all (with infinitely many tokens)."""
    return (fit["A"] / (target - fit["E"])) ** (1 / fit["alpha"])


def tokens_for(n, target: float, fit=FIT):
    """Training tokens D with L(n, D) = target (inf at or below the floor)."""
    room = target - fit["E"] - fit["A"] / np.power(n, fit["alpha"])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(room > 0, (fit["B"] / np.maximum(room, 1e-300)) ** (1 / fit["beta"]), np.inf)


def total_cost(n, target, demand, train, serve, fit=FIT):
    """$ to train a model of n parameters to `target` plus $ to serve `demand` tokens with it."""
    return train(n) * tokens_for(n, target, fit) + serve(n) * demand


def optimum(target, demand, train, serve, fit=FIT, n_max=3e12) -> dict:
    """The N minimising total_cost on the iso-loss curve: a log grid, then golden-section refinement."""
    lo = n_floor(target, fit) * (1 + 1e-9)
    grid = np.geomspace(lo, n_max, 4001)
    i = int(np.argmin(total_cost(grid, target, demand, train, serve, fit)))
    a, b = math.log(grid[max(i - 1, 0)]), math.log(grid[min(i + 1, len(grid) - 1)])
    f = lambda x: float(total_cost(math.exp(x), target, demand, train, serve, fit))  # noqa: E731
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    for _ in range(80):
        if f(c) < f(d):
            b, d = d, c
            c = b - g * (b - a)
        else:
            a, c = c, d
            d = a + g * (b - a)
    n = math.exp((a + b) / 2)
    tokens = float(tokens_for(n, target, fit))
    return {"params": n, "tokens": tokens, "tokens_per_param": tokens / n,
            "train_usd": float(train(n)) * tokens, "serve_usd": float(serve(n)) * demand,
            "total_usd": float(total_cost(n, target, demand, train, serve, fit))}


def compute_optimal_params(compute: float, fit=FIT) -> float:
    """Hoffmann et al.'s closed form for C = 6 N D: N_opt = G (C / 6)^(beta / (alpha + beta)),
    G = (alpha A / (beta B))^(1 / (alpha + beta))."""
    a, b = fit["alpha"], fit["beta"]
    return (a * fit["A"] / (b * fit["B"])) ** (1 / (a + b)) * (compute / 6) ** (b / (a + b))


def demand_for(n, target, train, serve, fit=FIT) -> float:
    """The demand Q for which n is the optimum, from d total / dN = 0 with the local log-log slopes
    p of train $/token and q of served $/token:  Q = train(n) D (alpha/beta x/(L - E - x) - p) / (q serve(n)),
    x = A / n^alpha."""
    x = fit["A"] / n ** fit["alpha"]
    room = target - fit["E"] - x
    d = float(tokens_for(n, target, fit))
    return float(train(n)) * d * (fit["alpha"] / fit["beta"] * x / room - float(train.slope(n))) / (
        float(serve.slope(n)) * float(serve(n)))


def demand_at_ratio(ratio, target, train, serve, fit=FIT, lo=1e6, hi=1e20) -> float:
    """Lifetime demand at which the optimum trains `ratio` tokens per parameter (bisection in log Q)."""
    f = lambda q: optimum(target, q, train, serve, fit)["tokens_per_param"] - ratio  # noqa: E731
    if f(lo) > 0 or f(hi) < 0:
        return float("nan")
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return math.sqrt(lo * hi)


# --- the study -------------------------------------------------------------------------------------------


def target_loss(fit=FIT) -> float:
    return float(loss(CHINCHILLA["params"], CHINCHILLA["tokens"], fit))


def interpolants(prices: list[dict]) -> tuple[LogLog, LogLog]:
    n = [p["params"] for p in prices]
    return LogLog(n, [p["train_usd_per_token"] for p in prices]), LogLog(n, [p["served_usd_per_token"] for p in prices])


def optima(prices, demands=DEMANDS) -> list[dict]:
    train, serve = interpolants(prices)
    target = target_loss()
    base = optimum(target, 0.0, train, serve)  # the Chinchilla-optimal model for this loss (training only)
    rows = []
    for q in demands:
        o = optimum(target, q, train, serve)
        chin = float(total_cost(base["params"], target, q, train, serve))
        rows.append({"demand_T": q / 1e12, "params_B": o["params"] / 1e9, "tokens_T": o["tokens"] / 1e12,
                     "tokens_per_param": o["tokens_per_param"],
                     "x_chinchilla_20": o["tokens_per_param"] / CHINCHILLA["tokens_per_param"],
                     "x_zero_demand": o["tokens_per_param"] / base["tokens_per_param"],
                     "train_M_usd": o["train_usd"] / 1e6, "serve_M_usd": o["serve_usd"] / 1e6,
                     "total_M_usd": o["total_usd"] / 1e6, "zero_demand_model_M_usd": chin / 1e6,
                     "saving_x": chin / o["total_usd"]})
    return rows


def sensitivity(prices, demand=DEMANDS[-1]) -> list[dict]:
    """The optimum at the largest demand, and the demand that makes it 100x Chinchilla's 20 tokens per
    parameter, under four prices of a served token: simrack's request mix (the study); simrack's decode
    alone (rollout-like, every served token generated); the mix with decode steps at their HBM roofline
    (weights + KV cache at data-sheet bandwidth, a lower bound on decode); and the textbook FLOP count
    (train 6N, serve 2N FLOP, both at simrack's training $ per FLOP of the 70B)."""
    n = [p["params"] for p in prices]
    train, serve = interpolants(prices)
    ref = next(p for p in prices if p["model"] == "llama3-70b")
    per_flop = ref["train_usd_per_token"] / (6 * ref["params"])
    variants = {"simrack, request mix (the study)": (train, serve),
                "simrack, decode only": (train, LogLog(n, [p["decode_usd_per_token"] for p in prices])),
                "simrack, decode at its HBM roofline": (train, LogLog(n, [
                    (PROMPT * p["prefill_usd_per_token"] + OUTPUT * p["decode_usd_per_token"] / p["x_hbm_roofline"])
                    / (PROMPT + OUTPUT) for p in prices])),
                "FLOP count: 6N to train, 2N to serve": (LogLog(n, [6 * per_flop * x for x in n]),
                                                         LogLog(n, [2 * per_flop * x for x in n]))}
    target = target_loss()
    rows = []
    for name, (t, s) in variants.items():
        o = optimum(target, demand, t, s)
        q = demand_at_ratio(OVERTRAINED * CHINCHILLA["tokens_per_param"], target, t, s)
        rows.append({"served token priced as": name, "params_B": o["params"] / 1e9, "tokens_T": o["tokens"] / 1e12,
                     "tokens_per_param": o["tokens_per_param"], "demand_for_2000_T": q / 1e12})
    return rows


def _fmt(v, spec):
    return spec.format(v) if isinstance(v, (int, float)) else str(v)


def _table(rows, fmt) -> str:
    head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    return head + "".join("| " + " | ".join(_fmt(v, fmt.get(k, "{}")) for k, v in r.items()) + " |\n" for r in rows)


def plot_cost(prices, rows, path: Path) -> None:
    train, serve = interpolants(prices)
    target = target_loss()
    lo = n_floor(target)
    n = np.geomspace(lo * 1.02, 4.5e11, 600)
    fig, ax = plt.subplots(figsize=(8.5, 5.6))
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(rows)))
    for r, c in zip(rows, colours):
        q = r["demand_T"] * 1e12
        ax.plot(n / 1e9, total_cost(n, target, q, train, serve) / 1e6, color=c,
                label="training only" if q == 0 else f"{r['demand_T']:g}T tokens served")
        ax.plot(r["params_B"], r["total_M_usd"], "o", color=c, ms=7, mec="black", zorder=5)
    ax.axvline(lo / 1e9, color="grey", ls=":", lw=1)
    ax.text(lo / 1e9 * 1.05, 0.05, f"no model below {lo / 1e9:.1f}B\nreaches the loss",
            transform=ax.get_xaxis_transform(),
            fontsize=8, color="grey")
    for p in prices:
        ax.axvline(p["params"] / 1e9, ymax=0.025, color="black", lw=1.5)
    chin = float(total_cost(CHINCHILLA["params"], target, 0.0, train, serve)) / 1e6
    ax.plot(CHINCHILLA["params"] / 1e9, chin, "*", color="#C44E52", ms=12, mec="black", zorder=6)
    ax.annotate("Chinchilla: 70B on 1.4T\n(training only)", (CHINCHILLA["params"] / 1e9, chin), xytext=(0, -28),
                textcoords="offset points", ha="center", fontsize=8, color="#C44E52")
    ax.set(xscale="log", yscale="log", xlabel="model size N (billion parameters); ticks at the bottom: simulated sizes",
           ylabel=r"training + serving cost (million \$)",
           title=f"Cheapest model for Chinchilla's loss ({target:.3f}: 70B on 1.4T tokens), "
                 "one GB200 NVL72 at \\$3/GPU-h")
    ax.title.set_fontsize(10)
    ax.legend(fontsize=8, title="lifetime demand (dot: optimum)", title_fontsize=8, loc="upper right")
    totals = [r["total_M_usd"] for r in rows]
    ax.set_ylim(0.5 * min(totals), 12 * max(totals))
    ax.set_xlim(lo / 1e9 * 0.8, 5e2)
    ticks = [3, 5, 10, 20, 30, 50, 100, 200, 400]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    yticks = [y for y in (0.3, 1, 3, 10, 30, 100) if 0.5 * min(totals) <= y <= 12 * max(totals)]
    ax.set_yticks(yticks, [f"{y:g}" for y in yticks])
    ax.minorticks_off()
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_ratio(prices, path: Path) -> dict:
    train, serve = interpolants(prices)
    target = target_loss()
    q = np.geomspace(1e9, 1e16, 57)
    opts = [optimum(target, x, train, serve) for x in q]
    base = optimum(target, 0.0, train, serve)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.8))
    a1.plot(q / 1e12, [o["tokens_per_param"] for o in opts], color="#4C72B0", lw=2, label="cost-optimal model")
    a1.axhline(CHINCHILLA["tokens_per_param"], color="grey", ls="--", lw=1)
    a1.text(1.2e-3, CHINCHILLA["tokens_per_param"] * 1.1, "Chinchilla's 20 tokens/parameter", fontsize=8, color="grey")
    a1.axhline(base["tokens_per_param"], color="#DD8452", ls="--", lw=1)
    a1.text(1.2e-3, base["tokens_per_param"] * 1.1,
            f"training-only optimum of this fit ({base['tokens_per_param']:.0f})",
            fontsize=8, color="#DD8452")
    a1.axhline(OVERTRAINED * CHINCHILLA["tokens_per_param"], color="#C44E52", ls="--", lw=1)
    a1.text(1.2e-3, OVERTRAINED * CHINCHILLA["tokens_per_param"] * 1.1, f"{OVERTRAINED}x Chinchilla's 20", fontsize=8,
            color="#C44E52")
    a1.set(ylabel="training tokens per parameter of the optimum")
    a2.plot(q / 1e12, [o["params"] / 1e9 for o in opts], color="#4C72B0", lw=2, label="parameters N (B)")
    a2.plot(q / 1e12, [o["tokens"] / 1e12 for o in opts], color="#55A868", lw=2, label="training tokens D (T)")
    a2.axhline(n_floor(target) / 1e9, color="grey", ls=":", lw=1, label="smallest N that reaches the loss (B)")
    a2.legend(fontsize=8)
    for ax in (a1, a2):
        ax.axvspan(0.1, 100, color="#eeeeee", zorder=0)
        ax.set(xscale="log", yscale="log", xlabel="lifetime demand (trillion tokens served); shaded: 0.1T to 100T")
    a1.set_title("Over-training of the cheapest model, against demand", fontsize=10)
    a2.set_title("Its size and training set", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return base


def main() -> int:
    prices = price_table()
    train, serve = interpolants(prices)
    target = target_loss()
    rows = optima(prices)
    with (HERE / "prices.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(prices[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(prices)
    with (HERE / "results.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    base = plot_ratio(prices, HERE / "ratio.png")
    plot_cost(prices, rows, HERE / "cost.png")
    chin_n = compute_optimal_params(6 * base["params"] * base["tokens"])
    q100 = demand_at_ratio(OVERTRAINED * CHINCHILLA["tokens_per_param"], target, train, serve)
    q100b = demand_at_ratio(OVERTRAINED * base["tokens_per_param"], target, train, serve)
    sens = sensitivity(prices)
    pfmt = {"params": "{:.3g}", "mfu": "{:.3f}", "train_usd_per_token": "{:.3g}", "tpot_ms": "{:.1f}",
            "x_hbm_roofline": "{:.2f}", "kv_KiB_per_token": "{:.0f}", "decode_over_train": "{:.2f}",
            "decode_usd_per_token": "{:.3g}", "prefill_usd_per_token": "{:.3g}", "served_usd_per_token": "{:.3g}"}
    ofmt = {"demand_T": "{:g}", "params_B": "{:.2f}", "tokens_T": "{:.2f}", "tokens_per_param": "{:.0f}",
            "x_chinchilla_20": "{:.1f}", "x_zero_demand": "{:.2f}", "train_M_usd": "{:.3f}", "serve_M_usd": "{:.3f}",
            "total_M_usd": "{:.3f}", "zero_demand_model_M_usd": "{:.3f}", "saving_x": "{:.2f}"}
    slopes = ", ".join(f"{p['model']} {float(train.slope(p['params'])):.2f} / {float(serve.slope(p['params'])):.2f}"
                       for p in prices)
    text = (
        f"Target loss L(70B, 1.4T) = {target:.4f}; smallest model that can reach it: {n_floor(target) / 1e9:.2f}B.\n\n"
        "## simrack's prices per token (one GB200 NVL72 rack, $3/GPU-hour)\n\n" + _table(prices, pfmt)
        + f"\nSlopes d log($/token) / d log N of the interpolation at each size (train / served): {slopes}.\n\n"
        "## Cheapest (N, D) on the iso-loss curve against lifetime demand\n\n" + _table(rows, ofmt)
        + f"\nTraining-only optimum: {base['params'] / 1e9:.2f}B on {base['tokens'] / 1e12:.2f}T tokens "
          f"({base['tokens_per_param']:.1f} tokens/parameter, ${base['train_usd'] / 1e6:.3f}M); Hoffmann's closed form "
          f"at the same compute (6ND = {6 * base['params'] * base['tokens']:.3g} FLOP, flat $/FLOP): "
          f"{chin_n / 1e9:.2f}B.\n"
          "Chinchilla itself (70B on 1.4T) costs "
          f"${float(train(CHINCHILLA['params'])) * CHINCHILLA['tokens'] / 1e6:.3f}M "
          f"to train here.\n"
          f"Demand at which the optimum trains {OVERTRAINED} x 20 = {OVERTRAINED * CHINCHILLA['tokens_per_param']} "
          f"tokens/parameter: {q100 / 1e12:.3g}T tokens ({q100 / base['tokens']:.1f} x the training-only optimum's "
          f"{base['tokens'] / 1e12:.2f}T training tokens); {OVERTRAINED} x the training-only ratio "
          f"({OVERTRAINED * base['tokens_per_param']:.0f}): {q100b / 1e12:.3g}T tokens.\n\n"
        f"## Sensitivity: what a served token costs (optimum at {DEMANDS[-1] / 1e12:g}T tokens served)\n\n"
        + _table(sens, {"params_B": "{:.2f}", "tokens_T": "{:.2f}", "tokens_per_param": "{:.0f}",
                        "demand_for_2000_T": "{:.3g}"}))
    (HERE / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
