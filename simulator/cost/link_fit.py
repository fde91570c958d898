"""Link parameters per generation fitted to the kernel measurements: NVLink ring and NVLS busbw fractions, p2p,
the intra-domain ring's per-step latency and NCCL's message-size ramp, NIC fractions and the inter-node latency,
HybridEP's all-to-all rates.
Fractions are of the data-sheet link rates (kernel_data.data_sheet); seconds and bytes SI.
"""

from __future__ import annotations

import numpy as np

from .collectives import ramp_factor
from .kernel_data import (
    GENERATION, GENERATIONS, GIGA, MICRO, by_id, geometric_fraction, least_squares_fit, single_point, stats, values
)

NIC_RATE = 400e9 / 8  # bytes/s: every inter-node entry runs 400 Gb/s NICs (NDR ConnectX-7 or EFA v4)
LATENCY_REGIME = 256 * 1024  # bytes: all-reduces up to this size cost their latency (sweeps flat below it)
GB200_RING_GPUS = 4  # azure_gb200_allreduce_ring_sweep: one ND GB200 v6 VM is one 4-GPU tray (entry config)
RING_LARGE = {"ampere": [("mleng_a100_8gpu_allreduce_sweep", None), ("azure_a100_8gpu_allreduce_sweep", None)],
              "hopper": [("mleng_h200_8gpu_allreduce_ring_16gib", "busbw"),
                         ("mleng_h200_8gpu_allgather_16gib", "busbw"),
                         ("mleng_h200_8gpu_reducescatter_16gib", "busbw"),
                         ("mleng_h200_allreduce_gpu_count_sweep", "busbw NVLS off"),
                         ("nccltests212_h100_8gpu_maintainer", "effective NVLink busbw")],
              "blackwell": [("mleng_b200_allreduce_gpu_count_sweep", "busbw NVLS off"),
                            ("azure_gb200_allreduce_ring_sweep", None)]}
NVLS_LARGE = {"hopper": [("mleng_h200_8gpu_allreduce_nvls_16gib", "busbw"),
                         ("mleng_h200_8gpu_allreduce_nvls_sweep", None),
                         ("azure_h100_8gpu_allreduce_sweep", None), ("azure_h200_8gpu_allreduce_sweep", None),
                         ("nccltests212_h100_8gpu_maintainer", "NVLS all-reduce peak busbw"),
                         ("nccltests290_ndr400_per_nic", "single-node"),
                         ("mleng_h200_allreduce_gpu_count_sweep", "busbw default")],
              "blackwell": [("mleng_b200_allreduce_gpu_count_sweep", "busbw default"),
                            ("mleng_b200_1node_allreduce_sweep", None)]}
SWEEPS = {"ampere": ["mleng_a100_8gpu_allreduce_sweep", "azure_a100_8gpu_allreduce_sweep"],
          "hopper": ["azure_h100_8gpu_allreduce_sweep", "azure_h200_8gpu_allreduce_sweep",
                     "mleng_h200_8gpu_allreduce_nvls_sweep"],
          "blackwell": ["mleng_b200_1node_allreduce_sweep", "azure_gb200_allreduce_ring_sweep"]}
P2P = {"ampere": [("mleng_a100_p2p_unidir", "typical")], "blackwell": [("mleng_gb200_p2p_unidir", "typical")],
       "hopper": [("mleng_h100_p2p_unidir", "typical"), ("mleng_h200_p2p_nvbandwidth", "unidirectional")]}


def _busbw(entry: dict, quantity: str | None) -> float:
    """Large-message busbw (bytes/s): the named quantity (8 GPUs where swept by count) or a sweep's last point."""
    if quantity is None:
        return entry["measured"][-1]["value"] * GIGA
    found = values(entry, quantity, gpus=8) or values(entry, quantity)
    return found[0] * GIGA


def link_fractions(doc: dict, sheet: dict, table: dict) -> dict:
    """Per generation: busbw / NVLink per direction for the (entry, quantity) pairs of `table` (geometric mean)."""
    e = by_id(doc)
    return {gen: geometric_fraction([_busbw(e[i], q) / sheet[e[i]["device"]]["nvlink"] for i, q in pairs],
                                    [i for i, _ in pairs])
            for gen, pairs in table.items()}


def sweep_gpus(entry: dict) -> int:
    """GPUs of an all-reduce sweep (the GB200 sweep does not state them: one 4-GPU tray)."""
    return entry["config"]["gpus"] if isinstance(entry["config"]["gpus"], int) else GB200_RING_GPUS


def sweep_points(entry: dict) -> list[tuple[float, float]]:
    """(message bytes, seconds) of an 8-GPU (or stated-size) all-reduce sweep from busbw; a point slower than 1.5x
    some larger message is a warm-up artefact and dropped."""
    n = sweep_gpus(entry)
    factor = 2.0 * (n - 1) / n
    pts = [(m["message_bytes"], m["message_bytes"] * factor / (m["value"] * GIGA)) for m in entry["measured"]]
    return [(s, t) for i, (s, t) in enumerate(pts) if all(t <= 1.5 * u for _, u in pts[i + 1:])]


def fit_alpha(entries: list[dict]) -> dict:
    """One latency alpha (s) for time(S) = alpha + S * factor / busbw_large over the sweeps' points, each sweep's
    busbw_large being its largest-message busbw."""
    _, wire, _, meas, _ = _sweep_table(entries)
    alpha = _latency(wire, meas)
    return {"alpha": alpha, "fitted_from": [e["id"] for e in entries], "residuals": stats((alpha + wire) / meas)}


def _sweep_table(entries: list[dict]) -> tuple[np.ndarray, ...]:
    """(sweep index, wire seconds at the sweep's large-message busbw, bytes a rank holds (S / n), measured seconds,
    message bytes) over the points of all-reduce sweeps."""
    rows = []
    for j, entry in enumerate(entries):
        n = sweep_gpus(entry)
        pts = sweep_points(entry)
        beta = pts[-1][1] / pts[-1][0]  # seconds per byte at the largest message
        rows += [(j, s * beta, s / n, t, s) for s, t in pts]
    j, *rest = np.array(rows).T
    return (j.astype(int), *rest)


def _latency(wire: np.ndarray, meas: np.ndarray) -> float:
    """The alpha (s) of time = alpha + wire that fits measured times best (least squares on log ratios)."""
    fit = least_squares_fit(lambda a: np.log((a[0] + wire) / meas), [np.array([20e-6])], [0.0], [1e-2], [1e-6])
    return float(fit[0])


def fit_ring(entries: list[dict]) -> dict:
    """Intra-domain ring collective: time(S) = alpha_harness + S * factor / busbw_large * ramp_factor(S / n, b, q).

    Each sweep's alpha is fitted first on its latency regime (messages up to LATENCY_REGIME, where bytes cost little):
    the alpha is the timing harness's as much as NCCL's (torch's all_reduce_bench adds 10-40 us a call), as GEMM
    harnesses have their own fixed time. Then one ramp (b bytes a rank, power q) for the generation with the alphas
    held: NCCL moves mid-size messages (1-128 MiB) 20-40% under its large-message busbw (protocol choice, fewer
    channels, pipeline fill), which an alpha cannot express. The model's per-step latency is the nccl-tests sweeps'
    alpha over their 2 (n - 1) ring steps."""
    j, wire, shard, meas, size = _sweep_table(entries)
    small = size <= LATENCY_REGIME
    alphas = np.array([_latency(wire[small & (j == k)], meas[small & (j == k)]) for k in range(len(entries))])
    predict = lambda x: alphas[j] + wire * ramp_factor(shard, x[0], x[1])  # noqa: E731
    starts = [np.array([1e6, 0.5]), np.array([1e5, 0.3]), np.array([1e7, 0.7])]
    x = least_squares_fit(lambda x: np.log(predict(x) / meas), starts, [1e2, 0.01], [1e10, 1.0], [1e6, 0.1])
    nccl_tests = [k for k, e in enumerate(entries) if e["config"]["tool"].startswith("nccl-tests")]
    step = np.mean([alphas[k] / (2 * (sweep_gpus(entries[k]) - 1)) for k in nccl_tests])
    return {"alpha_by_sweep": {e["id"]: float(a) for e, a in zip(entries, alphas)}, "ramp_bytes": float(x[0]),
            "ramp_power": float(x[1]), "per_step_alpha": float(step), "fitted_from": [e["id"] for e in entries],
            "residuals": stats(predict(x) / meas), "residuals_without_ramp": fit_alpha(entries)["residuals"]}


def collective_params(doc: dict, sheet: dict) -> dict:
    """NVLink, NVLS, p2p fractions, intra-node all-reduce latency, NIC fractions and inter-node latency."""
    e = by_id(doc)
    ring, nvls = link_fractions(doc, sheet, RING_LARGE), link_fractions(doc, sheet, NVLS_LARGE)
    p2p = {g: geometric_fraction([values(e[i], q)[0] * GIGA / sheet[e[i]["device"]]["nvlink"] for i, q in pairs],
                   [i for i, _ in pairs]) for g, pairs in P2P.items()}
    out = {}
    for gen in GENERATIONS:
        intra = fit_ring([e[i] for i in SWEEPS[gen]])
        out[gen] = {"ring_busbw_fraction": ring[gen], "p2p_fraction": p2p[gen], "ring_intra": intra}
        if gen in nvls:
            out[gen]["nvls_busbw_fraction"] = nvls[gen]
    out["hopper"]["nvls_vs_gpus"] = _nvls_by_count(e["mleng_h200_allreduce_gpu_count_sweep"], sheet)
    out["blackwell"]["nvls_vs_gpus"] = _nvls_by_count(e["mleng_b200_allreduce_gpu_count_sweep"], sheet)
    out["hopper"]["nic_fraction_ib"] = single_point(doc, "nccltests290_ndr400_per_nic", "expected", NIC_RATE / GIGA)
    out["hopper"]["nic_fraction_efa"] = _nic(e["mleng_h200_4node_allreduce_efa_4gib"], "busbw, default")
    out["blackwell"]["nic_fraction_efa"] = _nic(e["mleng_b200_4node_allreduce_efa_sweep"], None)
    small = values(e["nccltests150_a100_2node_small_allreduce_latency"])
    out["ampere"]["allreduce_alpha_inter"] = {
        "alpha": float(np.mean(small)) * MICRO, "per_step_alpha": float(np.mean(small)) * MICRO / 2,  # 2(n-1), n = 2
        "fitted_from": ["nccltests150_a100_2node_small_allreduce_latency"],
        "residuals": stats(np.array(small) / np.mean(small))}
    out["blackwell"]["allreduce_alpha_inter"] = fit_alpha([e["mleng_b200_4node_allreduce_efa_sweep"]])
    return out


def _nvls_by_count(entry: dict, sheet: dict) -> dict:
    """Default-algorithm all-reduce busbw / NVLink per direction against GPU count (NVLS where NCCL picks it)."""
    link = sheet[entry["device"]]["nvlink"]
    return {int(m["gpus"]): m["value"] * GIGA / link for m in entry["measured"] if m["quantity"] == "busbw default"}


def _nic(entry: dict, quantity: str | None) -> dict:
    """Per-GPU NIC rate / 400 Gb/s from a k-node, n-GPU all-reduce: busbw * (k - 1) / (n - 1)."""
    k, n = entry["config"]["nodes"], entry["config"]["gpus"]
    return {"value": _busbw(entry, quantity) * (k - 1) / (n - 1) / NIC_RATE, "fitted_from": [entry["id"]]}


HYBRIDEP_SMS = {"NVLink": (16, 32), "InfiniBand": (8,)}
"""SM counts whose HybridEP rows are fitted: HybridEP's own default is 24 SMs inside one NVLink domain, which the
measured 16 and 32 bracket, and 8 across nodes (csrc/hybrid_ep/config.cuh); Megatron-Core keeps that default."""


def hybridep_params(doc: dict, sheet: dict) -> dict:
    """HybridEP's dispatch (16-bit, as Megatron-Core sends) and combine rates as fractions of the link, per
    generation: on NVLink the algorithm bandwidth times (n - 1) / n over the NVLink rate (its bytes count the rank's
    own rows, which cross no link); across nodes over the NIC's line rate, capped at 1 (rates above it count
    traffic forwarded on NVLink, as DeepEP's logical bandwidth does). Torch API rows: what a framework's call takes."""
    rows: dict = {}
    for e in (x for x in doc["entries"] if x["id"].startswith("hybridep_")):
        c = e["config"]
        if c["sms"] not in HYBRIDEP_SMS[c["link"]]:
            continue
        link = "nvlink" if c["link"] == "NVLink" else "rdma"
        for q in ("dispatch BF16, Torch API", "combine, Torch API"):
            rate = values(e, q)[0] * GIGA
            frac = (rate * (c["ep_ranks"] - 1) / c["ep_ranks"] / sheet[e["device"]]["nvlink"] if link == "nvlink"
                    else min(rate / NIC_RATE, 1.0))
            rows.setdefault((GENERATION[e["device"]], link), []).append((frac, e["id"]))
    return {gen: {link: geometric_fraction(*map(list, zip(*found))) for (g, link), found in rows.items() if g == gen}
            for gen in GENERATIONS}
