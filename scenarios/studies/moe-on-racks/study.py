"""MoE on racks: DeepSeek-V3's expert layers laid over GB200 NVL72 racks and 8-GPU H800 nodes.

Run from the repository root:  python scenarios/studies/moe-on-racks/study.py
Writes results.md, results.csv, nic.csv, moe.png and decode.png beside this file (about 10 s).

Axes: expert-parallel size (GB200: 8, 32, 72 = one rack, 144 = two racks; H800: 64 = eight nodes),
routing (uniform, Zipf skew 0.5), balancing (static: contiguous placement with only the redundant
slots the EP size needs to divide 256 experts, copied blind to load; EPLB: load-balanced placement
with redundant copies of the hottest experts), and the all-to-all (flat, or de-duplicated per domain).
Then: the cross-rack penalty (EP 144 against EP 72) with one 400 Gb/s or one 800 Gb/s NIC a GPU; DeepSeek-V3
on 2048 H800 against DeepSeek's pre-training figure (published.yaml); co-activated experts (a token makes 80%
of its choices inside one of 8 topics) on the H800 cluster, placed contiguously or by the co-activation
graph; decode (serving) of the same model with EP 72 in one rack and EP 144 over two, against the batch
(gb200-serve.yaml, the serving simulator's step costs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from simulator import load_scenario, run  # noqa: E402
from simulator.output.render import markdown_table, rows_to_csv  # noqa: E402
from simulator.serving.memory import serve_memory  # noqa: E402
from simulator.serving.steps import decode_table  # noqa: E402

HERE = Path(__file__).resolve().parent
H800 = HERE.parents[1] / "deepseek-v3-h800.yaml"
PUBLISHED = HERE.parents[2] / "simulator" / "data" / "published.yaml"
NICS = {"400 Gb/s": "50 GB/s", "800 Gb/s": "100 GB/s"}  # one NIC a GPU: ConnectX-7 (the preset), ConnectX-8
# (system, scenario file, EP, redundant slots when static, redundant slots with EPLB)
CASES = [("GB200", HERE / "gb200.yaml", 8, 0, 32), ("GB200", HERE / "gb200.yaml", 32, 0, 32),
         ("GB200", HERE / "gb200.yaml", 72, 32, 32), ("GB200", HERE / "gb200.yaml", 144, 32, 32),
         ("H800", H800, 64, 0, 64)]
ROUTING = {"uniform": ["workload.routing.kind=uniform"],
           "zipf-0.5": ["workload.routing.kind=zipf", "workload.routing.skew=0.5"]}
BALANCE = {"static": "contiguous", "eplb": "load_balanced"}
DISPATCH = ("flat", "dedup")
KERNELS = ["layout.ep_backend=nccl"]  # every layout's all-to-all at one dispatcher's rates: placements compared


def a2a_per_direction(plan) -> float:
    """Seconds of all-to-all (dispatch and combine, forward and backward) one micro-batch spends on one
    stage: the mean over stages and chunks of the F and B all-to-alls. Under DualPipe a device's two
    chunks are the two directions and a micro-batch passes one of them; the report's
    extra.ep.all_to_all_s_per_micro_batch adds both chunks, so it is twice this."""
    return float((plan.exposed_ep[..., 0] + plan.exposed_ep[..., 1]).mean())


def one(system, path, ep, redundant, routing, balance, dispatch, extra=()) -> dict:
    """One simulated step as a table row."""
    scn = load_scenario(path, [f"layout.ep={ep}", f"layout.redundant_experts={redundant}",
                               f"layout.expert_placement={BALANCE[balance]}", f"layout.ep_dispatch={dispatch}",
                               *ROUTING[routing], *KERNELS, *extra])
    res = run(scn)
    r, e = res.report, res.report.extra["ep"]
    return {"system": system, "ep": ep, "domains": e["domains_per_group"], "routing": routing,
            "balance": balance, "redundant": redundant, "dispatch": dispatch,
            "step_s": r.step_time_s, "tokens_per_s_per_gpu": r.tokens_per_s_per_gpu, "mfu": r.mfu,
            "a2a_ms_per_direction": 1e3 * a2a_per_direction(res.plan),
            "a2a_ms_both_directions": 1e3 * e["all_to_all_s_per_micro_batch"], "exposed_ep_s": r.exposed_comm_s["ep"],
            "exposed_ep_scaleout_s": e["exposed_s"]["scaleout"], "exposed_dp_s": r.exposed_comm_s["dp"],
            "imbalance": e["load_imbalance"], "ep_scaleout_TB": e["traffic_bytes"]["scaleout"] / 1e12,
            "memory_GiB": r.memory_bytes["total"] / 2**30, "fits": r.fits_in_memory}


def grid() -> list[dict]:
    rows = []
    for system, path, ep, r_static, r_eplb in CASES:
        for routing in ROUTING:
            for balance, redundant in (("static", r_static), ("eplb", r_eplb)):
                for dispatch in DISPATCH:
                    rows.append(one(system, path, ep, redundant, routing, balance, dispatch))
    return rows


def graph_view() -> list[dict]:
    """H800 EP64 with co-activation: contiguous vs graph placement, flat vs de-duplicated dispatch."""
    rows = []
    for placement in ("contiguous", "graph"):
        for dispatch in DISPATCH:
            scn = load_scenario(H800, [f"layout.expert_placement={placement}", f"layout.ep_dispatch={dispatch}",
                                       "workload.routing.affinity=0.8", "workload.routing.topics=8", *KERNELS])
            res = run(scn)
            r, e = res.report, res.report.extra["ep"]
            rows.append({"placement": placement, "dispatch": dispatch, "step_s": r.step_time_s,
                         "a2a_ms_per_direction": 1e3 * a2a_per_direction(res.plan),
                         "exposed_ep_s": r.exposed_comm_s["ep"],
                         "ep_scaleout_TB": e["traffic_bytes"]["scaleout"] / 1e12,
                         "imbalance": e["load_imbalance"]})
    return rows


def nic_view() -> list[dict]:
    """The cross-rack penalty against the NIC: EP 72 (one rack) and EP 144 (two), flat and de-duplicated,
    uniform routing, static placement, with one 400 Gb/s or one 800 Gb/s NIC a GPU."""
    rows = []
    for nic, bw in NICS.items():
        nic_set = [f"topology.scaleout.nic_bandwidth={bw}"]
        cases = [one("GB200", HERE / "gb200.yaml", ep, 32, "uniform", "static", d, nic_set)
                 for ep, d in ((72, "dedup"), (144, "flat"), (144, "dedup"))]
        base = cases[0]
        for c in cases:
            rows.append({"nic": nic, "ep": c["ep"], "dispatch": c["dispatch"],
                         "a2a_ms_per_direction": c["a2a_ms_per_direction"],
                         "a2a_over_one_rack": c["a2a_ms_per_direction"] / base["a2a_ms_per_direction"],
                         "exposed_ep_s": c["exposed_ep_s"], "step_s": c["step_s"],
                         "step_over_one_rack": c["step_s"] / base["step_s"],
                         "memory_GiB": c["memory_GiB"], "fits": c["fits"]})
    return rows


def deepseek_reference(rows: list[dict]) -> dict:
    """DeepSeek's pre-training figure (180K H800 GPU-hours a trillion tokens, published.yaml) as tokens/s per
    GPU, against simrack's H800 step (uniform routing, static placement, de-duplicated dispatch)."""
    case = next(c for c in yaml.safe_load(PUBLISHED.read_text())["cases"]
                if c["id"] == "deepseek_v3_training_config_and_cost")
    hours = case["reported"]["gpu_hours_per_trillion_tokens"]
    published = 1e12 / (hours * 3600)
    sim = next(r for r in rows if r["system"] == "H800" and r["routing"] == "uniform" and r["balance"] == "static"
               and r["dispatch"] == "dedup")
    return {"gpu_hours_per_trillion": hours, "published_tokens_per_s_per_gpu": published,
            "simrack_tokens_per_s_per_gpu": sim["tokens_per_s_per_gpu"],
            "simrack_over_published": sim["tokens_per_s_per_gpu"] / published, "simrack_step_s": sim["step_s"],
            "simrack_memory_GiB": sim["memory_GiB"]}


# Decode-only steps use DeepEP's low-latency kernels, which send every copy to its rank: layout.ep_dispatch
# (de-duplication) does not change them, so one EP 144 series stands for both.
DECODE = [("EP 72, one rack", 72, "dedup"), ("EP 144, two racks", 144, "dedup")]
BATCHES = (1, 4, 16, 64, 128, 256, 512)
CONTEXT = 4096


def decode_view() -> list[dict]:
    """Decode of DeepSeek-V3 (fp8 weights, bf16 KV cache, 4096 tokens of context): TPOT and cost per
    million output tokens against the sequences each GPU decodes."""
    rows = []
    for label, ep, dispatch in DECODE:
        scn = load_scenario(HERE / "gb200-serve.yaml", [f"layout.ep={ep}", f"layout.ep_dispatch={dispatch}"])
        d = decode_table(scn, np.array(BATCHES), CONTEXT)
        mem = serve_memory(scn)
        fit = int((mem.capacity - mem.weights[0] - mem.activations[0]) // (mem.kv_per_token[0] * CONTEXT))
        price = scn.options.gpu_hour_price
        for i, b in enumerate(BATCHES):
            rows.append({"replica": label, "batch_per_gpu": b, "tpot_ms": 1e3 * d["step"][i],
                         "all_to_all_ms": 1e3 * d["all_to_all"][i], "experts_ms": 1e3 * d["experts"][i],
                         "tokens_per_s_per_gpu": d["tokens_per_s_per_gpu"][i],
                         "usd_per_million_tokens": price / 3600 * 1e6 / d["tokens_per_s_per_gpu"][i],
                         "kv_fits": b <= fit})
    return rows


def plot_decode(rows: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, _, _ in DECODE:
        pts = [r for r in rows if r["replica"] == label]
        x = [r["batch_per_gpu"] for r in pts]
        axes[0].plot(x, [r["tpot_ms"] for r in pts], marker="o", label=label)
        axes[1].plot(x, [r["usd_per_million_tokens"] for r in pts], marker="o", label=label)
    axes[0].set(xscale="log", xlabel="sequences decoded per GPU", ylabel="time per output token (ms)",
                title="DeepSeek-V3 decode on GB200 NVL72")
    axes[1].set(xscale="log", yscale="log", xlabel="sequences decoded per GPU", ylabel="$ per million output tokens",
                title="cost per token ($3 per GPU-hour)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot(rows: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    pick = lambda **kw: [r for r in rows if all(r[k] == v for k, v in kw.items())]  # noqa: E731
    for dispatch, style in (("flat", "--"), ("dedup", "-")):
        pts = pick(system="GB200", routing="uniform", balance="static", dispatch=dispatch)
        axes[0].plot([r["ep"] for r in pts], [r["a2a_ms_per_direction"] for r in pts], style, marker="o",
                     label=f"GB200 NVL72, {dispatch}")
        h = pick(system="H800", routing="uniform", balance="static", dispatch=dispatch)[0]
        axes[0].plot([h["ep"]], [h["a2a_ms_per_direction"]], marker="s", linestyle="none", color="k",
                     fillstyle="none" if dispatch == "flat" else "full", label=f"H800 EP64 (8 nodes), {dispatch}")
    axes[0].axvline(72, color="grey", lw=0.8)
    axes[0].text(74, axes[0].get_ylim()[1] * 0.9, "one rack", color="grey")
    axes[0].set(xscale="log", xlabel="expert-parallel GPUs", ylabel="all-to-all ms per micro-batch, stage, direction",
                title="all-to-all time, uniform routing")
    for routing, balance, color in (("uniform", "static", "C0"), ("zipf-0.5", "static", "C3"),
                                    ("zipf-0.5", "eplb", "C2")):
        pts = pick(system="GB200", routing=routing, balance=balance, dispatch="dedup")
        x, y = [r["ep"] for r in pts], [r["step_s"] for r in pts]
        axes[1].plot(x, y, color=color, label=f"{routing}, {balance}")
        for r in pts:
            axes[1].plot(r["ep"], r["step_s"], "o", color=color, fillstyle="full" if r["fits"] else "none")
    axes[1].axvline(72, color="grey", lw=0.8)
    axes[1].set(xscale="log", xlabel="expert-parallel GPUs", ylabel="step time (s)",
                title="GB200 step (dedup dispatch, DualPipe); hollow: out of memory")
    for ax in axes:
        ax.set_xticks([8, 32, 72, 144], ["8", "32", "72", "144"])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> int:
    rows = grid()
    (HERE / "results.csv").write_text(rows_to_csv(rows))
    fmt = {"step_s": "{:.2f}", "tokens_per_s_per_gpu": "{:.0f}", "mfu": "{:.1%}", "a2a_ms_per_direction": "{:.1f}",
           "a2a_ms_both_directions": "{:.0f}", "a2a_over_one_rack": "{:.2f}x", "step_over_one_rack": "{:.2f}x",
           "published_tokens_per_s_per_gpu": "{:.0f}", "simrack_tokens_per_s_per_gpu": "{:.0f}",
           "simrack_over_published": "{:.2f}x", "simrack_step_s": "{:.2f}", "simrack_memory_GiB": "{:.1f}",
           "exposed_ep_s": "{:.2f}", "exposed_ep_scaleout_s": "{:.2f}", "exposed_dp_s": "{:.2f}",
           "imbalance": "{:.2f}", "ep_scaleout_TB": "{:.0f}", "memory_GiB": "{:.0f}"}
    graph = graph_view()
    nics = nic_view()
    (HERE / "nic.csv").write_text(rows_to_csv(nics))
    ref = deepseek_reference(rows)
    decode = decode_view()
    fmt.update({"tpot_ms": "{:.1f}", "all_to_all_ms": "{:.1f}", "experts_ms": "{:.1f}",
                "usd_per_million_tokens": "{:.2f}"})
    (HERE / "results.md").write_text("# MoE on racks: every simulated step\n\n"
                                     "a2a_ms_per_direction: all-to-all ms (dispatch + combine, forward + backward) one "
                                     "micro-batch spends on one stage; a2a_ms_both_directions: the report's "
                                     "extra.ep.all_to_all_s_per_micro_batch, which adds DualPipe's two chunks.\n\n"
                                     + markdown_table(rows, fmt)
                                     + "\n## The cross-rack penalty against the NIC (uniform routing, static placement)"
                                     "\n\n" + markdown_table(nics, fmt)
                                     + "\n## DeepSeek-V3 on 2048 H800 against DeepSeek's pre-training figure\n\n"
                                     + markdown_table([ref], fmt)
                                     + "\n## Co-activated experts on H800 EP64 (affinity 0.8, 8 topics)\n\n"
                                     + markdown_table(graph, fmt)
                                     + "\n## Decode, 4096 tokens of context, fp8 weights\n\n"
                                     + markdown_table(decode, fmt))
    plot_decode(decode, HERE / "decode.png")
    plot(rows, HERE / "moe.png")
    print((HERE / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
