"""Tables of kernel measurements a cost model needs as they are (no fit): DeepEP dispatch/combine, launch costs,
clocks under load, and the data-sheet facts that topologies/presets/devices.yaml lacks. SI units (s, bytes/s).
Used by device_fit.calibrate; entries come from simulator/data/kernels.yaml.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

import numpy as np
import yaml

from ..scenario.units import parse_bandwidth, parse_flops, parse_power
from . import measured

GIGA, TERA, MICRO, MILLI = 1e9, 1e12, 1e-6, 1e-3
DEVICE_PRESET = {"A100-SXM4-80GB": "a100-80gb", "H100-SXM5-80GB": "h100-sxm", "H800": "h800", "H200-SXM": "h200",
                 "B200": "b200", "GB200": "gb200"}  # kernels.yaml device -> topologies/presets/devices.yaml key


def values(entry: dict, quantity: str | None = None) -> list[float]:
    """Measured values whose quantity starts with `quantity` (all if None)."""
    return [m["value"] for m in entry["measured"] if quantity is None or m["quantity"].startswith(quantity)]


def deepep_table(doc: dict, sheet: dict, nic_rate: float) -> list[dict]:
    """DeepEP dispatch/combine per entry: EP size, tokens, bandwidth (bytes/s) with its fraction of the link
    (NVLink per direction or the 400 Gb/s NIC; of V2's NVLink figures only the (ep - 1) / ep that leaves the rank),
    latency (s) and implied bytes per rank where both are given."""
    rows = []
    for e in (x for x in doc["entries"] if x["id"].startswith("deepep")):
        c = e["config"]
        ep = c.get("ep_ranks") or int(np.prod([int(v) for v in re.findall(r"\d+", c["topology"].split("(")[0])]))
        tokens = re.search(r"(\d+)(K?) tokens", c["workload"])
        row = {"id": e["id"], "device": e["device"], "kernel": c["implementation"].split(" (")[0], "ep": int(ep),
               "tokens": int(tokens.group(1)) * (1024 if tokens.group(2) else 1)}
        for phase in ("dispatch", "combine"):
            bw = [m for m in e["measured"] if m["quantity"].startswith(phase) and m["unit"] == "GB/s"][0]
            link = "nvlink" if "NVLink" in bw["quantity"] else "rdma"
            # V2's logical bandwidth counts the rank's own tokens, which cross no NVLink: (ep - 1) / ep of it does
            remote = (ep - 1) / ep if "V2" in row["kernel"] and link == "nvlink" else 1.0
            rate = sheet[e["device"]]["nvlink"] if link == "nvlink" else nic_rate
            row[phase] = {"bandwidth": bw["value"] * GIGA, "link": link,
                          "fraction_of_link": bw["value"] * GIGA * remote / rate}
            lat = values(e, f"{phase} latency")
            if lat:
                row[phase].update(latency=lat[0] * MICRO, bytes_per_rank=lat[0] * MICRO * bw["value"] * GIGA)
        rows.append(row)
    return rows


def launch_params(doc: dict, offsets: dict) -> dict:
    """Per-kernel fixed costs (s): host launch paths (GB200 host), the host's seconds per expert GEMM of Transformer
    Engine's multi-stream grouped GEMM, CUDA-graph residue (blog: a kernel's time in a graph less its run alone), GEMM
    harness offsets. Recorded beside them from simrack's H200: a kernel with nothing to do inside a graph (its run
    included: an upper bound of the residue) and PyTorch's eager launch (host seconds)."""
    e = {x["id"]: x for x in doc["entries"]}
    blog, tb = e["nvblog_cuda_graphs_short_kernel"], e["tritonbench1017_gb200_launch_overhead"]
    te = e["te3134_b200_multistream_grouped_gemm"]
    run = values(blog, "kernel execution time")[0]
    return {"host_launch": {m["quantity"]: m["value"] * MICRO for m in tb["measured"]},
            "host_launch_from": [tb["id"]],
            "expert_gemm_host": values(te, "multi-stream, pure")[0] * MILLI / te["config"]["groups"],
            "expert_gemm_host_from": [te["id"]],
            **eager_moe_host(e["mcore_dsv3_gb200_guide_partial_cuda_graphs"]),
            "graph_residue_per_kernel": (values(blog, "per kernel: CUDA graph")[0] - run) * MICRO,
            "stream_residue_per_kernel": (values(blog, "per kernel: back-to-back")[0] - run) * MICRO,
            "graph_from": [blog["id"]], "graph_verified": blog["verified"],
            "graph_empty_kernel_h200": measured.graph_kernel_time(),
            "eager_launch_torch_h200": measured.eager_launch_time(), "h200_from": [measured.source()],
            "event_record_a100": values(e["simllm_a100_event_record_cost"])[0] * MICRO,
            "gemm_harness_fixed_time": offsets}


def eager_moe_host(entry: dict) -> dict:
    """Host seconds an MoE layer and micro-batch (forward and backward) leaves exposed where its attention, router and
    dispatch preprocessing run eagerly: the step-time difference of one layout before and after CUDA graphs captured
    those parts, from model FLOP/s a GPU, over the layers and micro-batches the busiest GPU runs in a step."""
    c = entry["config"]
    flop_per_gpu = c["tokens_per_step"] * float(c["model_flop_per_token"]) / c["gpus"]
    eager, graphs = (values(entry, q)[0] * TERA for q in ("model TFLOP/s a GPU, eager", "model TFLOP/s a GPU, partial"))
    saved = flop_per_gpu / eager - flop_per_gpu / graphs
    return {"eager_moe_layer_host": saved / (c["layers_on_busiest_gpu"] * c["micro_batches"]),
            "eager_moe_layer_host_from": [entry["id"]]}


def clock_params(doc: dict) -> dict:
    """Sustained SM clock / boost clock under load, per generation and source (already inside measured GEMM
    throughputs: not to be applied again)."""
    e, a100, h100 = {x["id"]: x for x in doc["entries"]}, doc["data_sheet"]["A100-SXM4-80GB"]["boost_MHz"], \
        doc["data_sheet"]["H100-SXM5-80GB"]["boost_MHz_for_tensor_peak"]

    def ratio(entry_id, q_load, top):  # top: boost clock (MHz) or the entry's quantity naming it
        top = values(e[entry_id], top)[0] if isinstance(top, str) else top
        device = e[entry_id]["device"]
        return {"value": values(e[entry_id], q_load)[0] / top, "fitted_from": [entry_id],
                "verified": e[entry_id]["verified"], **({"board": board(device)} if device in DEVICE_PRESET else {})}
    return {"ampere": {"hpl": ratio("klockwood_a100_hpl_clock", "sustained", "max boost"),
                       "gemm_bimodal_low": ratio("simllm_a100_clock_bimodal", "SM clock state 1", a100),
                       "memory_microbench": ratio("chipsandcheese_a100_clock", "SM clock", a100),
                       "zeros_over_randn_gemm": values(e["thonking_a100_power_limited_matmul"])[0]},
            "hopper": {"flashmla_h800": ratio("flashmla_h800_clock_throttle", "sustained", h100),
                       "h100_pcie_350w_memory_microbench": ratio("chipsandcheese_h100pcie_clock", "lowest",
                                                                 "max boost")},
            "blackwell": {"flashinfer_b200": ratio("flashinfer2899_b200_sustained_throttle", "TFLOP/s sustained",
                                                   "TFLOP/s at the start"),
                          "b200_clock_drop": ratio("flashinfer2899_b200_sustained_throttle", "SM clock sustained",
                                                   "SM clock at the start")}}


def board(device: str) -> dict:
    """The board a clock was measured on, as devices.yaml states it: preset, data-sheet board power (W) and dense
    BF16 peak (FLOP/s); what simulator.cost.calibration.board_scale carries the clock to other boards with."""
    preset = _device_presets()[DEVICE_PRESET[device]]
    return {"preset": DEVICE_PRESET[device], "tdp": parse_power(preset["tdp"]),
            "peak_bf16": parse_flops(preset["peak_flops"]["bf16"])}


@lru_cache(maxsize=1)
def _device_presets() -> dict:
    """topologies/presets/devices.yaml, read once (callers only read it)."""
    return yaml.safe_load(resources.files("topologies").joinpath("presets", "devices.yaml").read_text())


def sheet_differences(sheet: dict) -> dict:
    """Data-sheet facts of kernels.yaml that topologies/presets/devices.yaml lacks or states >0.1% differently
    (NVLink is not a devices.yaml field: topology presets carry it)."""
    presets = _device_presets()
    out = {}
    for device, facts in sheet.items():
        preset, diff = presets[DEVICE_PRESET[device]], {}
        for dtype, peak in facts["peak"].items():
            theirs = preset["peak_flops"].get(dtype)
            if theirs is None or abs(parse_flops(theirs) / peak - 1) > 1e-3:
                diff[f"peak_{dtype}"] = {"kernels_yaml": peak, "devices_yaml": theirs}
        if abs(parse_bandwidth(preset["hbm_bandwidth"]) / facts["hbm"] - 1) > 1e-3:
            diff["hbm"] = {"kernels_yaml": facts["hbm"], "devices_yaml": preset["hbm_bandwidth"]}
        diff["nvlink_per_direction"] = {"kernels_yaml": facts["nvlink"], "devices_yaml": None}
        out[device] = diff
    return out
