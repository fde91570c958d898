"""Serving figures of the device calibration, fitted or read from simulator/data/kernels.yaml (called by
device_fit.calibrate): the small-message all-reduce algorithms of serving engines inside one NVLink domain, DeepEP's
dispatch and combine as fractions of the links, and a serving scheduler's CPU time per step.

All-reduce (CUDA graphs, vLLM's communicator benchmark on H100), each algorithm `time(S) = alpha + f(n) S / (fraction
x NVLink per direction)` with f the bytes each rank moves per byte reduced: one-shot n - 1 (every rank reads all
peers), two-shot, NVLS multimem and NCCL 2 (n - 1) / n. One alpha and one fraction per algorithm, least squares on
log time over every point of the H100 tables (TP 4 and 6). Other generations have no measurement and take Hopper's
(docs/calibration.md).
"""

from __future__ import annotations

import numpy as np

MICRO, MILLI = 1e-6, 1e-3
AR_ALGORITHMS = {  # simrack name: (quantity in the vLLM tables, bytes a rank moves per byte of the message)
    "one_shot": ("ca_1stage", lambda n: n - 1.0),
    "two_shot": ("ca_2stage", lambda n: 2.0 * (n - 1) / n),
    "multimem": ("symm_mem_multimem", lambda n: 2.0 * (n - 1) / n),
    "nccl": ("pynccl", lambda n: 2.0 * (n - 1) / n),
}
AR_ENTRIES = ("vllm24111_h100_tp4_allreduce_cudagraph", "vllm24111_h100_tp6_allreduce_cudagraph")
SCHEDULER_ENTRY = "sglangjax1484_scheduler_host_time"
SM_ENTRY = "deepseekv3_report_communication_sms"
SMS = {"ampere": "A100-SXM4-80GB", "hopper": "H800", "blackwell": "B200"}  # whose SM count a generation takes
DECODE_ENTRIES = {"bf16": ("flashmla_h800_dense_decode_compute_bound", "throughput (2025-04-22"),
                  "fp8_kv": ("flashmla_h800_sparse_decode_fp8kv", "throughput, topk=32768")}
"""FlashMLA decode, compute-bound, with a BF16 cache and with an FP8 cache dequantized to BF16 math (the longest
top-k, the nearest to dense attention over a long context)."""


def fit_allreduce(entries: list[dict], nvlink: float, fit, stats) -> dict:
    """{algorithm: {alpha (s), link_fraction, fitted_from, residuals}} over the entries' points (all one device)."""
    out = {}
    for name, (quantity, factor) in AR_ALGORITHMS.items():
        pts = [(e["config"]["gpus"], m["message_bytes"], m["value"] * MICRO)
               for e in entries for m in e["measured"] if m["quantity"] == f"{quantity} time"]
        n, size, meas = (np.array(c, float) for c in zip(*pts))
        wire = factor(n) * size / nvlink  # seconds at the full link rate

        def model(p, wire=wire):
            return p[0] * MICRO + wire / p[1]
        x = fit(lambda p, meas=meas: np.log(model(p) / meas), [np.array([5.0, 0.5])], [0.0, 0.01], [100.0, 2.0],
                [1.0, 0.1])
        out[name] = {"alpha": float(x[0]) * MICRO, "link_fraction": float(x[1]),
                     "fitted_from": [e["id"] for e in entries], "residuals": stats(model(x) / meas)}
    return out


def _geo(values: list[float], ids: list[str], stats) -> dict:
    value = float(np.exp(np.mean(np.log(values))))
    return {"value": value, "fitted_from": sorted(set(ids)), "residuals": stats(np.array(values) / value)}


def deepep_fractions(rows: list[dict], sheet: dict, stats) -> dict:
    """DeepEP link fractions from the tabulated entries (deepep_table): normal kernels (prefill) on NVLink and on the
    NIC (capped at 1: V1 reports up to 1.16 of the NIC, counting forwarded traffic), low-latency kernels (decode) on
    the NIC from EP 64 up (bandwidth-bound there) and on NVLink (the EP 8 run, one node)."""
    def pick(test):
        found = [(min(r[p]["fraction_of_link"], 1.0), r["id"]) for r in rows if test(r)
                 for p in ("dispatch", "combine")]
        return _geo(*map(list, zip(*found)), stats) if found else None
    normal = lambda r: "V2" not in r["kernel"] and "low-latency" not in r["kernel"]  # noqa: E731
    ll = lambda r: "low-latency" in r["kernel"]  # noqa: E731
    out = {"normal_nvlink": pick(lambda r: r["dispatch"]["link"] == "nvlink" and (normal(r) or "V2" in r["kernel"])),
           "normal_rdma": pick(lambda r: normal(r) and r["dispatch"]["link"] == "rdma"),
           "ll_rdma": pick(lambda r: ll(r) and r["ep"] >= 64)}
    one_node = [r for r in rows if ll(r) and r["ep"] == 8]
    if one_node:  # EP 8 in one node: the low-latency kernels' bytes ride NVLink (above the NIC's 50 GB/s)
        out["ll_nvlink"] = _geo([r[p]["bandwidth"] / sheet[r["device"]]["nvlink"] for r in one_node
                                 for p in ("dispatch", "combine")], [r["id"] for r in one_node for _ in "dc"], stats)
    return {k: v for k, v in out.items() if v is not None}


def fp8_kv_decode(e: dict, sheet: dict) -> dict:
    """Compute-bound decode attention with an FP8 KV cache over the same with a BF16 cache (FlashMLA on H800: the
    FP8 to BF16 conversion runs on CUDA cores)."""
    rate = {k: next(m["value"] for m in e[i]["measured"] if m["quantity"].startswith(q)) for k, (i, q) in
            DECODE_ENTRIES.items()}
    return {"value": rate["fp8_kv"] / rate["bf16"], "fitted_from": [i for i, _ in DECODE_ENTRIES.values()]}


def serving_params(doc: dict, sheet: dict, deepep: list[dict], generation_of: dict, fit, stats) -> dict:
    """Per generation: `allreduce` (measured on Hopper; the others take Hopper's), `deepep` fractions (a generation
    without a figure takes Hopper's), the FP8-cache decode attention ratio (Hopper's for every generation) and the
    share of SMs DeepEP's normal kernels hold while they run (DeepSeek's 20, over the generation's SMs)."""
    e = {x["id"]: x for x in doc["entries"]}
    fp8_kv = fp8_kv_decode(e, sheet)
    comm_sms = e[SM_ENTRY]["measured"][0]["value"]
    entries = [e[i] for i in AR_ENTRIES]
    hopper_ar = fit_allreduce(entries, sheet[entries[0]["device"]]["nvlink"], fit, stats)
    ep = {g: deepep_fractions([r for r in deepep if generation_of[r["device"]] == g], sheet, stats)
          for g in ("ampere", "hopper", "blackwell")}
    out = {}
    for gen in ("ampere", "hopper", "blackwell"):
        borrowed = {k: v for k, v in ep["hopper"].items() if k not in ep[gen]}
        sms = doc["data_sheet"][SMS[gen]]["sms"]
        out[gen] = {"fp8_kv_decode_over_bf16": fp8_kv,
                    "ep_sm_share": {"value": comm_sms / sms, "sms": sms, "fitted_from": [SM_ENTRY]},
                    "allreduce": hopper_ar if gen == "hopper" else {"from": "hopper"},
                    "deepep": {**ep[gen], **({"from_hopper": sorted(borrowed)} if borrowed and gen != "hopper"
                                             else {})}}
    return out


def scheduler_params(doc: dict) -> dict:
    """A serving scheduler's CPU time per step (s), overlapped with the GPU by current engines."""
    entry = next(x for x in doc["entries"] if x["id"] == SCHEDULER_ENTRY)
    host = next(m for m in entry["measured"] if m["quantity"].startswith("host time per step"))
    return {"scheduler_step": host["value"] * MILLI, "scheduler_from": [SCHEDULER_ENTRY]}
