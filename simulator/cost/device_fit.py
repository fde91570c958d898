"""Per-generation device calibration fitted to the kernel measurements in simulator/data/kernels.yaml.

Pure functions: `calibrate(doc)` returns the whole calibration as plain data and `write_calibration` stores it as
simulator/data/calibration.yaml. SI units inside: seconds, FLOP/s, bytes, bytes/s; efficiencies and fractions are
relative to the data-sheet figures of kernels.yaml (`data_sheet`). Fits are deterministic least squares on log ratios
(relative errors) from fixed starting points; residuals are |predicted / measured - 1| of time (or throughput).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from . import measured
from .device_tables import clock_params, deepep_table, launch_params, sheet_differences
from .kernel_data import (
    GENERATION, GENERATIONS, GIGA, MICRO, TERA, by_id, data_sheet, geometric_fraction, least_squares_fit, load_kernels,
    single_point, stats, values
)
from .link_fit import NIC_RATE, collective_params, hybridep_params
from .ops import ACT_BYTES, DTYPE_BYTES, FLASH_BACKWARD_FLOP
from .serving_fit import scheduler_params, serving_params

IN_BYTES = {"bf16": 2.0, "fp8": 1.0, "fp8_block": 1.0, "fp4": 0.5}  # GEMM input bytes per element
OUT_BYTES = 2.0  # every GEMM here writes BF16/FP16 (DeepGEMM and XLA FP8 state it; assumed for cuBLASLt FP8)
HARNESS = ("xla_table", "azure", "deepgemm")  # timing harnesses whose fixed per-call cost (s) is fitted
B200_DRIVER_HBM = 7680 / 8 * 3996e6 * 2  # bytes/s the B200 driver reports (data-sheet note): CCCL's % base
STREAM = ("copy", "mul", "add", "triad")
HBM_STREAMING = {  # read+write streaming kernels: (entry id, quantities); BabelStream dot is read-only
    "ampere": [("azure_a100_babelstream", STREAM)],
    "hopper": [("azure_h100_babelstream", STREAM), ("azure_h200_babelstream", STREAM),
               ("quack_h100_torch_clone", ("bf16 clone", "fp32 clone")),
               ("quack_h100_softmax_dram_throughput", ("DRAM throughput",)),
               ("quack_h100_rmsnorm_softmax_ce_model_throughput", ("model memory throughput, reduction dim > 4k",))],
    "blackwell": [("cccl_b200_devicetransform_bwutil", None)]}
MXFP8_CAST = {"blackwell": ("rocmte598_b200_mxfp8_cast", 8192 * 8192)}
"""Transformer Engine's MXFP8 quantize kernel timed per generation: (entry id, elements cast)."""
ATTENTION = {  # (generation, pass): entry-id prefixes of the sequence-length curves fitted
    ("ampere", "fwd_bwd"): "fa2_a100_fwdbwd", ("hopper", "fwd"): "fa3_h100_fwd", ("hopper", "bwd"): "fa3paper_h100_bwd",
    ("hopper", "fa2_fwd_bwd"): "fa2_h100_fwdbwd", ("blackwell", "fwd"): "cudnn_gb200_sdpa_fwd",
    ("blackwell", "cudnn_bwd"): "cudnn_gb200_sdpa_bwd"}


# ---------------------------------------------------------------- GEMM
def gemm_dtype(config: dict) -> str:
    """'fp8_block' (DeepGEMM 1x128/128x128 scaling), 'fp8' (per-tensor), 'fp4' or 'bf16' (BF16/FP16)."""
    text = config["dtype"].lower()
    if "fine-grained" in text:
        return "fp8_block"
    return next((k for k in ("fp4", "fp8") if k in text), "bf16")


def gemm_case(entry: dict, sheet: dict, hbm_fraction: float) -> dict:
    """One GEMM measurement: FLOP, bytes moved, dims (M over all batches/groups, N, K), peak FLOP/s, achieved HBM
    (bytes/s), measured time (s) and its timing harness. Random-input throughput is used where a source gives both."""
    c, dev = entry["config"], sheet[entry["device"]]
    dtype = gemm_dtype(c)
    m = c.get("M", c.get("M_per_group")) * c.get("batch", 1) * c.get("groups", 1)
    n, k, weights = c["N"], c["K"], c.get("groups", c.get("batch", 1))
    flop = 2.0 * m * n * k
    rate = (values(entry, "benchmark with torch.randn") or [x["value"] for x in entry["measured"]
                                                             if x["unit"] == "TFLOP/s"])[0] * TERA
    return {"id": entry["id"], "gen": GENERATION[entry["device"]], "dtype": dtype, "dims": (m, n, k), "flop": flop,
            "bytes": IN_BYTES[dtype] * (m * k + weights * k * n) + OUT_BYTES * m * n, "time": flop / rate,
            "peak": dev["peak"]["fp8" if dtype == "fp8_block" else dtype], "hbm": dev["hbm"] * hbm_fraction,
            "harness": next((h for h in HARNESS if entry["id"].startswith(h.split("_")[0])), None)}


def gemm_efficiency(dims, eff_max: float, half_dim: float) -> float:
    """Fraction of dense peak: eff_max * prod over (M, N, K) of d / (d + half_dim) (half_dim in elements)."""
    return eff_max * float(np.prod([d / (d + half_dim) for d in dims]))


def gemm_time(case: dict, eff_max: float, half_dim: float, fixed: float = 0.0) -> float:
    """Kernel time (s): max(FLOP / (peak * efficiency), bytes / achieved HBM) + fixed per-call time (s)."""
    compute = case["flop"] / (case["peak"] * gemm_efficiency(case["dims"], eff_max, half_dim))
    return max(compute, case["bytes"] / case["hbm"]) + fixed


def _half_key(group):
    """FP4 shares its generation's FP8 half_dim: two FP4 points cannot fix two parameters."""
    return (group[0], "fp8") if group[1] == "fp4" else group


def fit_gemm(cases: list[dict]) -> tuple[dict, dict]:
    """Fit (eff_max, half_dim) per (generation, dtype) and a fixed time per timing harness (s), jointly over all
    cases; `ceiling` is the best measured fraction of peak (the form may extrapolate above it). Returns
    ({(gen, dtype): {eff_max, half_dim, fitted_from, residuals, ...}}, {harness: seconds})."""
    groups = sorted({(c["gen"], c["dtype"]) for c in cases})
    halves = sorted({_half_key(g) for g in groups})
    ng, nh = len(groups), len(halves)

    def predict(x):
        eff, half, fixed = x[:ng], x[ng:ng + nh], dict(zip(HARNESS, x[ng + nh:]))
        return np.array([gemm_time(c, eff[groups.index((c["gen"], c["dtype"]))],
                                   half[halves.index(_half_key((c["gen"], c["dtype"])))],
                                   fixed.get(c["harness"], 0.0)) for c in cases])

    measured = np.array([c["time"] for c in cases])
    starts = [np.r_[[0.8] * ng, [h] * nh, [3e-6] * len(HARNESS)] for h in (30.0, 100.0, 300.0)]
    lower = [0.05] * ng + [0.0] * nh + [0.0] * len(HARNESS)
    upper = [1.0] * ng + [5000.0] * nh + [20e-6] * len(HARNESS)
    x = least_squares_fit(lambda x: np.log(predict(x) / measured), starts, lower, upper,
                          [0.1] * ng + [100.0] * nh + [1e-6] * len(HARNESS))
    ratio = predict(x) / measured
    params = {}
    for i, g in enumerate(groups):
        mine = [j for j, c in enumerate(cases) if (c["gen"], c["dtype"]) == g]
        best = max(mine, key=lambda j: cases[j]["flop"] / cases[j]["time"] / cases[j]["peak"])
        params[g] = {"eff_max": float(x[i]), "half_dim": float(x[ng + halves.index(_half_key(g))]),
                     "ceiling": {"value": cases[best]["flop"] / cases[best]["time"] / cases[best]["peak"],
                                 "entry": cases[best]["id"]},
                     "fitted_from": [cases[j]["id"] for j in mine], "residuals": stats(ratio[mine]),
                     "residual_by_entry": {cases[j]["id"]: float(ratio[j] - 1) for j in mine}}
    return params, {h: float(v) for h, v in zip(HARNESS, x[ng + nh:])}


# ---------------------------------------------------------------- attention
def attention_points(entry: dict, peak: float) -> list[tuple]:
    """(head_dim, causal, seq_len, efficiency) per sweep point; causal is False unless the config says True."""
    c = entry["config"]
    return [(c["head_dim"], c.get("causal") is True, m["seq_len"], m["value"] * TERA / peak)
            for m in entry["measured"] if "seq_len" in m]


def attention_efficiency(head_dim, causal, seq_len, eff_max: dict, s_half: float):
    """eff_max[head_dim] * s / (s + s_half), with s = seq_len / 2 when causal (a causal row sees half the keys)."""
    s = seq_len / 2 if causal else seq_len
    return eff_max[head_dim] * s / (s + s_half)


def fit_attention(points: list[tuple]) -> dict:
    """Fit eff_max per head dim and one s_half (tokens) to (head_dim, causal, seq_len, efficiency) points."""
    dims = sorted({p[0] for p in points})
    meas = np.array([p[3] for p in points])

    def predict(x):
        return np.array([attention_efficiency(h, c, s, dict(zip(dims, x[:-1])), x[-1]) for h, c, s, _ in points])

    x = least_squares_fit(lambda x: np.log(predict(x) / meas), [np.r_[[0.6] * len(dims), s] for s in (100.0, 500.0)],
                          [0.01] * len(dims) + [0.0], [1.0] * len(dims) + [1e5], [0.1] * len(dims) + [100.0])
    return {"eff_max": {int(h): float(v) for h, v in zip(dims, x[:-1])}, "s_half": float(x[-1]),
            "residuals": stats(predict(x) / meas)}


def measured_attention(peak: float) -> dict:
    """cuDNN's fused attention (PyTorch SDPA) on simrack's H200, forward and backward curves fitted as FlashAttention's
    (recorded beside the curves in use, which it checks; not read by the cost model)."""
    points = measured.attention_points(peak)
    return {"kernel": "cuDNN fused attention (PyTorch SDPA)", "fitted_from": [measured.source()],
            **{kind: fit_attention(pts) for kind, pts in points.items()}}


def fa2_bwd_over_fwd(doc: dict, peak: float) -> dict:
    """FlashAttention-2 backward/forward efficiency ratio on H100 from matched fwd and fwd+bwd points:
    t_bwd = t_fwdbwd - t_fwd with fwd+bwd FLOP = 3.5x and bwd FLOP = 2.5x the forward FLOP."""
    e = by_id(doc)
    ratios, ids = [], []
    for causal in ("noncausal", "causal"):
        fwd = {p[2]: p[3] for p in attention_points(e[f"fa2_h100_fwd_fp16_hd128_{causal}"], peak)}
        both = {p[2]: p[3] for p in attention_points(e[f"fa2_h100_fwdbwd_hd128_{causal}"], peak)}
        for s in sorted(fwd.keys() & both.keys()):
            bwd = FLASH_BACKWARD_FLOP / ((1 + FLASH_BACKWARD_FLOP) / both[s] - 1.0 / fwd[s])
            ratios.append(bwd / fwd[s])
        ids += [f"fa2_h100_fwd_fp16_hd128_{causal}", f"fa2_h100_fwdbwd_hd128_{causal}"]
    return {"ratio": float(np.mean(ratios)), "min": float(min(ratios)), "max": float(max(ratios)), "fitted_from": ids}


def _curve_fit(doc: dict, prefix: str, peak: float) -> dict:
    """fit_attention over every entry whose id starts with `prefix`, with the ids."""
    chosen = [e for e in doc["entries"] if e["id"].startswith(prefix)]
    out = fit_attention([p for e in chosen for p in attention_points(e, peak)])
    return {**out, "fitted_from": [e["id"] for e in chosen]}


def fa2_curves(doc: dict, prefix: str, peak: float, ratio: dict) -> dict:
    """FlashAttention-2 forward and backward from its fwd+bwd sweeps (entry ids starting with `prefix`), split
    with the measured backward/forward ratio: eff_fwdbwd = 3.5 / (1/eff_fwd + 2.5/eff_bwd), eff_bwd = r eff_fwd."""
    both = _curve_fit(doc, prefix, peak)
    fwd_scale = (1 + FLASH_BACKWARD_FLOP / ratio["ratio"]) / (1 + FLASH_BACKWARD_FLOP)
    split = {h: v * fwd_scale for h, v in both["eff_max"].items()}
    return {"kernel": "FlashAttention-2", "fwd_bwd": both,
            "fwd": {"eff_max": split, "s_half": both["s_half"], "derived_with": "fa2_bwd_over_fwd"},
            "bwd": {"eff_max": {h: v * ratio["ratio"] for h, v in split.items()}, "s_half": both["s_half"],
                    "derived_with": "fa2_bwd_over_fwd"}}


def attention_params(doc: dict, sheet: dict) -> dict:
    """Attention efficiencies per generation (fractions of dense BF16/FP16 peak; FP8 of the FP8 peak): each
    generation's newest measured kernel, and on Hopper FlashAttention-2 beside FlashAttention-3 (`fa2`)."""
    h100, b200, gb200 = sheet["H100-SXM5-80GB"]["peak"], sheet["B200"]["peak"], sheet["GB200"]["peak"]
    tf = {k: v / TERA for k, v in h100.items()}, {k: v / TERA for k, v in b200.items()}
    ratio = fa2_bwd_over_fwd(doc, h100["bf16"])
    fwd = _curve_fit(doc, ATTENTION["hopper", "fwd"], h100["bf16"])
    return {
        "ampere": {**fa2_curves(doc, ATTENTION["ampere", "fwd_bwd"], sheet["A100-SXM4-80GB"]["peak"]["bf16"], ratio),
                   "fa2_bwd_over_fwd": ratio},
        "hopper": {"kernel": "FlashAttention-3", "fwd": fwd,
                   "bwd": _curve_fit(doc, ATTENTION["hopper", "bwd"], h100["bf16"]),
                   "fa2_bwd_over_fwd": ratio,
                   "fa2": fa2_curves(doc, ATTENTION["hopper", "fa2_fwd_bwd"], h100["bf16"], ratio),
                   "fp8_fwd_peak": single_point(doc, "fa3_h100_headline_fp8", None, tf[0]["fp8"]),
                   "fp16_fwd_headline": single_point(doc, "fa3_h100_headline_fp16", None, tf[0]["bf16"]),
                   "mla_decode_compute": single_point(doc, "flashmla_h800_dense_decode_compute_bound",
                                                      "throughput (2025", sheet["H800"]["peak"]["bf16"] / TERA),
                   "mla_sparse_prefill_fwd": single_point(doc, "flashmla_h800_sparse_prefill", None, tf[0]["bf16"]),
                   "cudnn_h200": measured_attention(sheet[measured.DEVICE]["peak"]["bf16"])},
        "blackwell": {"kernel": "cuDNN forward (GB200 sweep), CUTLASS MHA backward (B200)",
                      "fwd": _curve_fit(doc, ATTENTION["blackwell", "fwd"], gb200["bf16"]),
                      "bwd": single_point(doc, "flashmla_b200_mha_prefill_bwd", None, tf[1]["bf16"]),
                      "cudnn_2026_bwd": _curve_fit(doc, ATTENTION["blackwell", "cudnn_bwd"], gb200["bf16"]),
                      "fa4_fwd_headline": single_point(doc, "fa4_b200_headline_bf16", "peak throughput (arXiv",
                                                       tf[1]["bf16"]),
                      "mha_prefill_fwd": single_point(doc, "flashmla_b200_mha_prefill_fwd", None, tf[1]["bf16"]),
                      "mla_sparse_prefill_fwd": single_point(doc, "flashmla_b200_sparse_prefill", None, tf[1]["bf16"]),
                      "fp8": fp8_attention_params(doc)}}


FP8_ATTENTION = ("fp8", "mxfp8")  # the cuDNN sweep's attention formats, named as the workload dtypes
WINDOW_GROWTH_CAUSAL = 1.5
"""Growth exponent of a windowed backward's time with the sequence (d log t / d log s) above which the kernel does
the causal triangle's work: a window's is 1 (s x w scores), the causal triangle's 2."""


def _times(entry: dict) -> dict[int, float]:
    """{sequence length: measured seconds} of an attention sweep."""
    return {m["seq_len"]: m["time_ms"] * 1e-3 for m in entry["measured"]}


def fp8_attention_params(doc: dict) -> dict:
    """Attention in FP8 (Transformer Engine's fp8_dot_product_attention) against the same cuDNN kernel in BF16 on
    GB200: each pass's speed-up, BF16 time over FP8 time, the geometric mean over the causal sweep (width 128) with
    its spread; and the growth exponent of the 128-key windowed backward (width 64), whose FP8 kernels grow as the
    causal triangle (window_backward "causal": priced as the full causal backward, cost.op_table)."""
    e, out, ids = by_id(doc), {}, []
    for fmt in FP8_ATTENTION:
        out[fmt] = {}
        for kind in ("fwd", "bwd"):
            bf16_id = f"cudnn_gb200_sdpa_{kind}_bf16_hd128_causal"
            fp8_id = f"cudnn_gb200_fp8attn_{kind}_{fmt}_hd128_causal"
            bf16, fp8 = _times(e[bf16_id]), _times(e[fp8_id])
            ratios = np.array([bf16[s] / fp8[s] for s in sorted(bf16.keys() & fp8.keys())])
            out[fmt][kind] = geometric_fraction(list(ratios), [bf16_id, fp8_id])
            ids += [bf16_id, fp8_id]
    growth = {}
    for fmt, entry_id in (("bf16", "cudnn_gb200_swa128_bwd_bf16_hd64"),
                          *((f, f"cudnn_gb200_fp8attn_swa128_bwd_{f}_hd64") for f in FP8_ATTENTION)):
        seqs, times = zip(*sorted(_times(e[entry_id]).items()))
        growth[fmt] = float(np.polyfit(np.log(seqs), np.log(times), 1)[0])
        ids.append(entry_id)
    slowest = min(growth[f] for f in FP8_ATTENTION)
    return {"kernel": "cuDNN SDPA 9.22 on GB200, attention in FP8 over the same kernel in BF16", **out,
            "window_backward_growth": growth,
            "window_backward": "causal" if slowest > WINDOW_GROWTH_CAUSAL else "window",
            "fitted_from": sorted(set(ids))}


# ---------------------------------------------------------------- HBM
def hbm_params(doc: dict, sheet: dict) -> dict:
    """Achieved HBM fractions per generation: streaming read+write kernels (fit), read-only BabelStream dot and
    memory-bound decode (FlashMLA) as reported."""
    e, out = by_id(doc), {}
    for gen, sources in HBM_STREAMING.items():
        fr, ids = [], []
        for entry_id, quantities in sources:
            entry = e[entry_id]
            if quantities is None:  # CCCL: % of the driver-reported peak
                fr += [v / 100 * B200_DRIVER_HBM / sheet[entry["device"]]["hbm"] for v in values(entry)]
            else:
                fr += [values(entry, q)[0] * GIGA / sheet[entry["device"]]["hbm"] for q in quantities]
            ids += [entry_id] * (len(fr) - len(ids))
        out[gen] = {"streaming": geometric_fraction(fr, ids)}
    for gen, ids in {"ampere": ["azure_a100_babelstream"],
                     "hopper": ["azure_h100_babelstream", "azure_h200_babelstream"]}.items():
        dot = [values(e[i], "dot")[0] * GIGA / sheet[e[i]["device"]]["hbm"] for i in ids]
        out[gen]["read_only_dot"] = geometric_fraction(dot, ids)
    out["hopper"]["decode_flashmla"] = single_point(doc, "flashmla_h800_dense_decode_memory_bound", None,
                                                    sheet["H800"]["hbm"] / GIGA)
    h200 = measured.hbm_points(sheet[measured.DEVICE]["hbm"])  # checks the streaming fit, not in it
    out["hopper"]["streaming_h200_measured"] = geometric_fraction(h200, [measured.source()])
    for gen, (entry_id, elements) in MXFP8_CAST.items():
        out[gen]["mxfp8_cast"] = mxfp8_cast_fractions(e[entry_id], elements, sheet)
    return out


def mxfp8_cast_fractions(entry: dict, elements: int, sheet: dict) -> dict:
    """Fraction of the data-sheet HBM bandwidth an MXFP8 quantize kernel moves its bytes at: the 16-bit input read
    once, each copy written with its block scales (DTYPE_BYTES); `both` (the row-wise and column-wise copies of a
    training cast from one read) and `rowwise` (one copy)."""
    hbm = sheet[entry["device"]]["hbm"]
    rate = lambda mode, copies: (elements * (ACT_BYTES + copies * DTYPE_BYTES["mxfp8"])  # noqa: E731
                                 / (values(entry, f"BF16, {mode}")[0] * MICRO) / hbm)
    return {"both": rate("both", 2), "rowwise": rate("rowwise", 1), "fitted_from": [entry["id"]]}


# ---------------------------------------------------------------- assembly
def calibrate(doc: dict | None = None) -> dict:
    """The whole calibration (plain data, SI units) from the transcribed measurements."""
    doc = doc or load_kernels()
    sheet = data_sheet(doc)
    hbm = hbm_params(doc, sheet)
    cases = [gemm_case(e, sheet, hbm[GENERATION[e["device"]]]["streaming"]["value"])
             for e in doc["entries"] if e["kind"] == "gemm" and e["device"] in GENERATION]
    gemm, offsets = fit_gemm(cases)
    attention, links = attention_params(doc, sheet), collective_params(doc, sheet)
    clocks, deepep = clock_params(doc), deepep_table(doc, sheet, NIC_RATE)
    serving = serving_params(doc, sheet, deepep, GENERATION, least_squares_fit, stats)
    hybridep = hybridep_params(doc, sheet)
    gens = {gen: {"devices": [d for d, g in GENERATION.items() if g == gen],
                  "gemm": {dt: p for (g, dt), p in gemm.items() if g == gen},
                  "attention": attention[gen], "hbm": hbm[gen], "collectives": links[gen], "clocks": clocks[gen],
                  "deepep": [r for r in deepep if GENERATION[r["device"]] == gen], "hybridep": hybridep[gen],
                  "serving": serving[gen]}
            for gen in GENERATIONS}
    launch = {**launch_params(doc, offsets), **scheduler_params(doc)}
    return {"schema": "simrack device calibration v1", "generations": gens, "launch": launch,
            "clocks_already_in_gemm_fit": True, "data_sheet_differences": sheet_differences(data_sheet(doc))}


def _rounded(x):
    """Floats to 9 significant digits (stable text), recursively; tuples become lists."""
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_rounded(v) for v in x]
    return float(f"{x:.9g}") if isinstance(x, float) else x


HEADER = """# Per-generation calibration fitted by simulator/cost/device_fit.py from simulator/data/kernels.yaml.
# Regenerate: python -m simulator.cost.device_fit. Units: SI (seconds, FLOP/s, bytes/s); eff_* and *_fraction are
# fractions of the data-sheet figures in kernels.yaml; half_dim in elements, s_half in tokens. residuals: mean and max
# |predicted / measured - 1| over the entries in fitted_from. docs/calibration.md explains every block.
"""


def write_calibration(path: str | Path, doc: dict | None = None) -> dict:
    """Write calibrate(doc) as YAML to `path`; returns the data written."""
    data = _rounded(calibrate(doc))
    Path(path).write_text(HEADER + yaml.safe_dump(data, sort_keys=False, width=120))
    return data


if __name__ == "__main__":
    write_calibration(Path(__file__).resolve().parents[1] / "data" / "calibration.yaml")
