"""simrack's own kernel measurements on a lent GPU (the scripts of benchmarks/device/), as the device fit records them
and tests/test_h200_measurements.py checks the model against them: simulator/data/measured/. Kept as the scripts
wrote them (seconds, bytes, FLOP, MHz); the functions here return SI units and fractions of kernels.yaml's data-sheet
figures.
"""

from __future__ import annotations

import gzip
import json
from functools import cache

from ..data import path as data_path
from .ops import FLASH_BACKWARD_FLOP

RUN = "h200-2026-12-04-run2.json.gz"
"""measure_kernels.py on one H200 (torch 2.11.0+cu130, cuDNN 9.19, driver 580.159.04), each row with its SM clock."""
LAYERS = "h200-2026-12-04-layers.json"
"""profile_layer.py on the same machine: four GPT layers kernel by kernel, eager and under sustained load."""
MOE_GEMM = "h200-2026-12-04-moe-gemm.json"
"""measure_moe_gemm.py on the same machine: routed-expert GEMMs, grouped (BF16, FP8) and one call an expert."""
DEVICE = "H200-SXM"  # the device's key in kernels.yaml's data_sheet
STREAM_MIN_BYTES = 2**29
"""Copies moving at least this many bytes (read + write, 512 MiB) stream from HBM: smaller ones sit partly in the
L2 (60 MB as PyTorch reads it) or pay the launch (the sweep from 1 MiB shows both)."""


@cache
def load(name: str = RUN) -> dict:
    """One measurement file of simulator/data/measured (.json or .json.gz)."""
    raw = data_path("measured").joinpath(name).read_bytes()
    return json.loads(gzip.decompress(raw) if name.endswith(".gz") else raw)


def source(name: str = RUN) -> str:
    """The id the fit records for a measurement file: measured/<name>."""
    return f"measured/{name}"


def hbm_points(hbm: float, doc: dict | None = None) -> list[float]:
    """Achieved fractions of the data-sheet HBM bandwidth `hbm` (bytes/s) of the streaming kernels: copies of at
    least STREAM_MIN_BYTES, a bf16 add and a triad of 2 GiB operands (bytes read + written over the time)."""
    doc = doc or load()
    rows = [r for r in doc["hbm"] if r["kernel"] in ("add", "triad")
            or (r["kernel"] == "copy" and r["bytes"] >= STREAM_MIN_BYTES)]
    return [r["bytes"] / r["time"] / hbm for r in rows]


def graph_kernel_time(doc: dict | None = None) -> float:
    """Seconds a tiny kernel takes inside a replayed CUDA graph (2,000 dependent adds of 1,024 floats)."""
    return float((doc or load())["launch"][0]["graph_per_kernel"])


def eager_launch_time(doc: dict | None = None) -> float:
    """Host seconds per eager PyTorch launch of a tiny kernel (Python, dispatcher and cudaLaunchKernel)."""
    return float((doc or load())["launch"][0]["host_per_launch"])


def attention_points(peak: float, backend: str = "cudnn", doc: dict | None = None) -> dict[str, list[tuple]]:
    """{'fwd' and 'bwd': [(head_dim, causal, seq_len, efficiency)]} of one SDPA backend's sweep (query heads as key
    heads), efficiency over `peak` (FLOP/s): forward 4 b s^2 h d (halved causal) over the forward's time, backward
    FLASH_BACKWARD_FLOP times that over the forward + backward's time less the forward's."""
    out = {"fwd": [], "bwd": []}
    for r in (doc or load())["attention"]:
        if r["backend"] != backend or r["KV"] != r["H"] or "fwd" not in r:
            continue
        flop = 4.0 * r["B"] * r["S"] ** 2 * r["H"] * r["D"] * (0.5 if r["causal"] else 1.0)
        out["fwd"].append((r["D"], r["causal"], r["S"], flop / r["fwd"] / peak))
        out["bwd"].append((r["D"], r["causal"], r["S"], FLASH_BACKWARD_FLOP * flop / (r["fwd_bwd"] - r["fwd"]) / peak))
    return out


def gemm_sets(doc: dict | None = None) -> list[dict]:
    """A layer's twelve GEMMs run back to back for 3 s: {layer, dtype ('bf16', 'fp8'), dims [(M, N, K)], seconds
    (the twelve, median of the last 2 s), clock (Hz, sampled)}."""
    return [{"layer": r["layer"], "dtype": "bf16" if r["dtype"] == "bf16" else "fp8",
             "dims": [(s["M"], s["N"], s["K"]) for s in r["shapes"]], "seconds": r["sustained_set_time"],
             "clock": r["sustained_sm_MHz"] * 1e6} for r in (doc or load())["gemm_load"]]


def layers(doc: dict | None = None) -> list[dict]:
    """profile_layer.py's layers: shape, eager seconds and clock (Hz) under the profiler, sustained seconds and
    clock, and {kernel: (launches, seconds)} an iteration."""
    return [{**{k: r[k] for k in ("layer", "hidden", "ffn", "heads", "seq", "micro_batch")},
             "profiled": r["profiled_mean"], "profiled_clock": r["profiled_sm_MHz"] * 1e6,
             "sustained": r["sustained_mean"], "sustained_clock": r["sustained_sm_MHz"] * 1e6,
             "kernels": {k: tuple(v) for k, v in r["kernels"].items()}}
            for r in (doc or load(LAYERS))["layers"]]


def expert_gemms(doc: dict | None = None) -> list[dict]:
    """measure_moe_gemm.py's rows: {model, gemm, experts, tokens (an expert), K, N, seconds of the grouped BF16 and
    FP8 kernels and of the one-call-an-expert loop (device), the loop's host seconds}."""
    return [{"model": r["model"], "gemm": r["gemm"], "experts": r["experts"], "tokens": r["tokens"], "K": r["K"],
             "N": r["N"], "bf16": r["grouped_bf16"], "fp8": r["grouped_fp8"], "loop": r["loop_bf16"],
             "loop_host": r["loop_host"]} for r in (doc or load(MOE_GEMM))["rows"]]
