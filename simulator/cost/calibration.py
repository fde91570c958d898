"""The device model: achieved fractions of data-sheet peaks and fixed overheads, one set per device
generation (ampere, hopper, blackwell) and compute dtype, built from kernel measurements.

The figures are read from simulator/data/calibration.yaml, which `python -m simulator.cost.device_fit`
fits to the kernel measurements transcribed in simulator/data/kernels.yaml (GEMMs by shape and dtype,
FlashAttention forward and backward, streaming HBM, NCCL collectives, launch costs); no end-to-end
result tunes them. docs/calibration.md gives each parameter, its measurements and residuals. A device
preset may override any field under `efficiency:` (what-ifs, tests); nothing else tunes a constant.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import lru_cache

import numpy as np
import yaml

from ..data import path as data_path
from .ops import FLASH_BACKWARD_FLOP

GENERATIONS = ("ampere", "hopper", "blackwell")
GEMM_KEY = {"bf16": "bf16", "fp16": "bf16", "fp8": "fp8", "fp8-block": "fp8_block", "mxfp8": "fp8",
            "nvfp4": "fp4", "mxfp4": "fp4"}
"""Which fitted GEMM curve a compute dtype runs: per-tensor FP8 is cuBLASLt's, block-scaled FP8
(DeepSeek's 1x128 / 128x128) DeepGEMM's on Hopper; Blackwell scales blocks in hardware (MXFP8, NVFP4)."""


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """One generation's device model for one compute dtype: fractions (dimensionless), sizes in
    elements or tokens, times in seconds."""

    generation: str = "hopper"
    gemm: float = 0.88
    """Fraction of the dtype's dense peak a large GEMM reaches before the tile factors (eff_max)."""
    gemm_half_dim: float = 107.0
    """GEMM dimension (elements) at which that dimension alone halves efficiency: d / (d + this)."""
    gemm_ceiling: float = 0.80
    """The best fraction of peak any measured GEMM of this dtype reached: efficiency never exceeds it."""
    attention: float = 0.70
    """FlashAttention forward at head width 128 and long sequences, fraction of the BF16 dense peak."""
    attention_bwd: float = 0.59
    """FlashAttention backward, likewise (lower than forward: more, smaller GEMMs and atomics)."""
    attention_half_seq: float = 350.0
    """Keys a query attends to (causal: half the sequence) at which attention reaches half its peak fraction."""
    attention_head_scale: tuple[tuple[int, float], ...] = ((64, 0.73), (128, 1.0), (256, 1.07))
    """Attention forward efficiency at each head width relative to width 128 (interpolated in log2 width)."""
    attention_bwd_head_scale: tuple[tuple[int, float], ...] = ((64, 0.85), (128, 1.0))
    """Attention backward efficiency at each head width relative to width 128, likewise."""
    hbm: float = 0.874
    """Fraction of the data-sheet HBM bandwidth streaming (memory-bound) kernels reach."""
    nvlink: float = 0.81
    """Ring collective bus bandwidth over the NVLink per-direction bandwidth (NCCL busbw, large messages)."""
    nvls: float = 0.0
    """NVLink SHARP all-reduce bus bandwidth over the NVLink bandwidth (0: no NVLS on this generation)."""
    scaleout: float = 0.94
    """Fraction of a NIC's line rate a collective or send across domains reaches."""
    ring_latency: float = 2.2e-6
    """Seconds one ring step of an NVLink collective costs beyond its bytes (NCCL's small-message alpha)."""
    scaleout_ring_latency: float = 9.7e-6
    """Seconds one ring step of a collective across domains costs beyond its bytes, at least (the link latency of
    the topology where larger): NCCL's small-message alpha between two InfiniBand nodes over its 2 ring steps."""
    ring_ramp_bytes: float = 0.28e6
    """Bytes a rank at which a ring collective inside a domain moves them at half its large-message bus bandwidth
    (collectives.ramp_factor); 0: no ramp."""
    ring_ramp_power: float = 0.45
    """Exponent of that ramp: how slowly mid-size messages approach the large-message bus bandwidth."""
    clock: float = 0.874
    """Sustained tensor clock of a GPU under a job's full load over the clock of the data-sheet peak: it
    scales every compute-bound rate (GEMMs, attention), not HBM. Measured: A100 1305 of 1410 MHz (the
    clock NVIDIA rates HPL at), H800 1600 of 1830 MHz (FlashMLA's tensor-heavy kernels); Blackwell has
    no measurement and takes Hopper's. 1 where the fitted kernels were themselves timed at the
    sustained clock (DeepGEMM's block-scaled FP8, measured beside FlashMLA)."""
    comm_sms: float = 20 / 132
    """Fraction of a GPU's SMs a communication kernel occupies while it runs beside compute (DeepSeek-V3
    gives 20 of H800's 132 SMs to its all-to-all; NCCL runs 16-32 channels of one block each): compute
    overlapped with communication runs that much slower."""
    kernel_overhead: float = 2.5e-6
    """Device time per kernel beyond its roofline (launch ramp and tail), kernels queued back to back."""
    graph_overhead: float = 0.5e-6
    """The same inside a CUDA graph (decode steps of serving engines)."""
    expert_gemm_host: float = 33.4e-6
    """Host seconds to issue one routed expert's GEMM where a grouped GEMM runs as one cuBLASLt call an expert
    (Transformer Engine's multi-stream grouped GEMM, workload.expert_gemm multi_stream) outside a CUDA graph: a rank's
    experts take at least this per expert holding tokens and GEMM (TE PR #3134, B200)."""
    eager_moe_host: float = 2.07e-3
    """Host seconds an MoE layer and micro-batch (forward pass; forward and backward measured together) adds where
    Megatron-Core's dispatcher syncs with the host and the layer's attention, router and dispatch preprocessing run
    eagerly: one layout's step before and after CUDA graphs captured those parts (NVIDIA's DeepSeek-V3 GB200 guide,
    Grace hosts; every generation takes it, a host cost)."""
    hybridep_nvlink: float = 0.51
    """HybridEP's dispatch and combine (layout.ep_backend hybridep): rate of a rank's rows, one per token and rank,
    over the NVLink rate (B200 and GB200, 8-36 ranks; Hopper has no NVLink figure and takes Blackwell's)."""
    hybridep_rdma: float = 0.95
    """HybridEP across domains: rate of a rank's rows, one per token and remote domain, over the NIC's line rate
    (H100, 16-64 ranks; Blackwell has no figure and takes Hopper's)."""
    # --- serving (docs/calibration.md, "Serving"): decode kernels, small all-reduces, DeepEP, the scheduler ---
    hbm_decode: float = 0.896
    """Fraction of the data-sheet HBM bandwidth a decode attention kernel streams the KV cache at (FlashMLA)."""
    decode_attention: float = 0.667
    """Fraction of the 16-bit peak a decode attention kernel reaches where it is FLOP-bound (FlashMLA)."""
    decode_attention_fp8kv: float = 0.465
    """The same with an FP8 KV cache dequantized to 16-bit math (FlashMLA's FP8-cache kernel: the conversion runs on
    CUDA cores)."""
    ar_one_shot_alpha: float = 5.4e-6
    """Seconds of a one-shot all-reduce inside a domain beyond its bytes (custom all-reduce, CUDA graph)."""
    ar_one_shot: float = 0.77
    """One-shot all-reduce: fraction of the NVLink rate at which a rank reads its n - 1 peers' buffers."""
    ar_two_shot_alpha: float = 12.3e-6
    """Two-shot all-reduce (reduce-scatter + all-gather through peer memory): fixed seconds."""
    ar_two_shot: float = 0.55
    """Two-shot all-reduce: bus bandwidth over the NVLink rate."""
    ar_multimem_alpha: float = 12.2e-6
    """NVLS multimem all-reduce (symmetric memory, NVLink SHARP): fixed seconds; only where `nvls` > 0."""
    ar_multimem: float = 0.76
    """NVLS multimem all-reduce: bus bandwidth over the NVLink rate."""
    ar_nccl_alpha: float = 15.1e-6
    """NCCL all-reduce inside a CUDA graph: fixed seconds (its large-message bus bandwidth is `nvlink` / `nvls`)."""
    ep_nvlink: float = 0.78
    """DeepEP normal kernels (prefill): dispatch/combine bandwidth over the NVLink rate."""
    ep_rdma: float = 0.95
    """DeepEP normal kernels: over the NIC line rate."""
    ep_ll_nvlink: float = 0.56
    """DeepEP low-latency kernels (decode): over the NVLink rate."""
    ep_ll_rdma: float = 0.82
    """DeepEP low-latency kernels: over the NIC line rate (bandwidth-bound from EP 64 up)."""
    ep_sm_share: float = 0.152
    """Fraction of the SMs DeepEP's normal kernels hold while they run (DeepSeek's 20 of 132): compute overlapping
    them runs on the rest. The low-latency kernels hold none."""
    scheduler_step: float = 2.75e-3
    """CPU seconds a serving scheduler spends per step, overlapped with the GPU's step (SGLang, TensorRT-LLM and
    vLLM's overlap / async schedulers): a step lasts max(GPU time, this)."""


KEYS = tuple(f.name for f in fields(Calibration))
DEFAULT = Calibration()


@lru_cache(maxsize=1)
def _fitted() -> dict:
    """simulator/data/calibration.yaml, parsed once."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built in: a tenth of the start-up
    return yaml.load(data_path("calibration.yaml").read_text(encoding="utf-8"), Loader=loader)  # noqa: S506


def attention_curves(generation: str, kernel: str = "flash") -> dict | None:
    """calibration.yaml's attention block of a generation for a workload.attention kernel: the generation's
    newest measured kernel for flash (and unfused, which does not read it), FlashAttention-2's for flash2;
    None where the generation has no FlashAttention-2 measurements."""
    attn = _fitted()["generations"][generation]["attention"]
    if kernel != "flash2" or attn.get("kernel") == "FlashAttention-2":
        return attn
    return attn.get("fa2")


@lru_cache(maxsize=64)
def fitted(generation: str, dtype: str, attention: str = "flash") -> Calibration:
    """The fitted Calibration of a generation running GEMMs in `dtype` (a workload dtype) and attention with
    the kernel `attention` (a workload.attention: flash2 takes the FlashAttention-2 curves)."""
    gen = _fitted()["generations"][generation]
    curves = gen["gemm"]
    key = GEMM_KEY.get(dtype, "bf16")
    if key not in curves:  # e.g. block-scaled FP8 on Blackwell runs the fp8 curve (MXFP8 in hardware)
        key = "fp8" if key.startswith("fp8") and "fp8" in curves else "bf16"
    g = curves[key]
    half = g["half_dim"] if g["half_dim"] > 1e-6 else curves["bf16"]["half_dim"]
    attn = attention_curves(generation, attention)
    fwd, bwd = _attention(attn, "fwd"), _attention(attn, "bwd")
    col, launch = gen["collectives"], _fitted()["launch"]
    clock = 1.0 if key == "fp8_block" else sustained_clock(generation)
    return replace(Calibration(
        generation=generation, gemm=g["eff_max"], gemm_half_dim=half, gemm_ceiling=g["ceiling"]["value"],
        attention=fwd[128], attention_bwd=bwd[128],
        attention_half_seq=attn["fwd"].get("s_half", DEFAULT.attention_half_seq),
        attention_head_scale=width_scales(fwd, EXP_BALANCE_WIDTH[generation]),
        attention_bwd_head_scale=width_scales(bwd, EXP_BALANCE_WIDTH[generation] / FLASH_BACKWARD_FLOP),
        hbm=gen["hbm"]["streaming"]["value"], nvlink=col["ring_busbw_fraction"]["value"],
        nvls=col.get("nvls_busbw_fraction", {}).get("value", 0.0),
        scaleout=col.get("nic_fraction_ib", col.get("nic_fraction_efa", {"value": DEFAULT.scaleout}))["value"],
        ring_latency=col["ring_intra"]["per_step_alpha"],
        ring_ramp_bytes=col["ring_intra"]["ramp_bytes"], ring_ramp_power=col["ring_intra"]["ramp_power"],
        scaleout_ring_latency=infiniband_step_latency(),
        clock=clock, kernel_overhead=launch["gemm_harness_fixed_time"]["deepgemm"],
        graph_overhead=launch["graph_residue_per_kernel"], expert_gemm_host=launch["expert_gemm_host"],
        eager_moe_host=launch["eager_moe_layer_host"],
        **hybridep_fields(generation)), **serving_fields(generation))


def hybridep_fields(generation: str) -> dict:
    """HybridEP's link fractions of a generation: NVLink measured on Blackwell, InfiniBand on Hopper; a generation
    without its own figure takes the measured one."""
    gens = _fitted()["generations"]
    own = gens[generation]["hybridep"]
    nvlink = own.get("nvlink", gens["blackwell"]["hybridep"]["nvlink"])
    rdma = own.get("rdma", gens["hopper"]["hybridep"]["rdma"])
    return {"hybridep_nvlink": nvlink["value"], "hybridep_rdma": rdma["value"]}


def serving_fields(generation: str) -> dict:
    """The serving fields of a generation's calibration: decode attention (FlashMLA where measured, else the streaming
    HBM fraction and the forward attention fraction), small all-reduces and DeepEP (a generation without its own
    figure takes Hopper's), the scheduler's CPU time."""
    data = _fitted()
    gen, hopper = data["generations"][generation], data["generations"]["hopper"]["serving"]
    attn = gen["attention"]
    decode = attn["mla_decode_compute"]["value"] if "mla_decode_compute" in attn else _attention(attn, "fwd")[128]
    ar = gen["serving"]["allreduce"]
    ar = hopper["allreduce"] if "from" in ar else ar
    ep = {**hopper["deepep"], **{k: v for k, v in gen["serving"]["deepep"].items() if isinstance(v, dict)}}
    out = {"hbm_decode": gen["hbm"].get("decode_flashmla", gen["hbm"]["streaming"])["value"],
           "decode_attention": decode,
           "decode_attention_fp8kv": decode * gen["serving"]["fp8_kv_decode_over_bf16"]["value"],
           "ar_nccl_alpha": ar["nccl"]["alpha"], "ep_nvlink": ep["normal_nvlink"]["value"],
           "ep_rdma": ep["normal_rdma"]["value"], "ep_ll_nvlink": ep["ll_nvlink"]["value"],
           "ep_ll_rdma": ep["ll_rdma"]["value"], "ep_sm_share": gen["serving"]["ep_sm_share"]["value"],
           "scheduler_step": data["launch"]["scheduler_step"]}
    for name in ("one_shot", "two_shot", "multimem"):
        out[f"ar_{name}_alpha"], out[f"ar_{name}"] = ar[name]["alpha"], ar[name]["link_fraction"]
    return out


def infiniband_step_latency() -> float:
    """Seconds a ring step across InfiniBand costs beyond its bytes: the one inter-node small-message measurement
    (two A100 nodes on HDR, nccl-tests), for every generation: the latency is the NIC fabric's and NCCL's network
    transport's, not the GPU's. (The EFA sweep of kernels.yaml, 409 us through torch's harness, models no preset.)"""
    return float(_fitted()["generations"]["ampere"]["collectives"]["allreduce_alpha_inter"]["per_step_alpha"])


SUSTAINED_CLOCK = {"ampere": "hpl", "hopper": "flashmla_h800", "blackwell": "flashinfer_b200"}
"""Which clock-under-load measurement of calibration.yaml gives each generation's sustained compute rate."""


def sustained_clock(generation: str) -> float:
    """Sustained compute rate over the rate kernel benchmarks time in short bursts: ampere the HPL clock, hopper
    the H800's FlashMLA clock over its data-sheet clock, blackwell B200's FlashAttention-4 throughput after 70
    back-to-back iterations over its first ones."""
    return float(_fitted()["generations"][generation]["clocks"][SUSTAINED_CLOCK[generation]]["value"])


EXP_BALANCE_WIDTH = {"ampere": 32, "hopper": 64, "blackwell": 128}
"""Head width at which a flash-attention forward spends as long on each score's exponential as on its tensor-core
work (4 x width FLOP a score against one exp2 on the special-function unit, 16 a clock and SM on all three
generations): the dense 16-bit MMA FLOP a clock and SM (A100 2,048, H100 4,096, B200 8,192: data-sheet peak over
SMs x boost clock) over 4 x 16. Narrower heads are bound by the exponentials (FlashAttention-4's analysis of B200);
a backward, FLASH_BACKWARD_FLOP x the forward's FLOP for the same exponential, balances at this / that."""


def width_scales(effs: dict[int, float], balance: float) -> tuple[tuple[int, float], ...]:
    """(head width, efficiency relative to width 128) of one attention pass: the measured widths (`effs`:
    {width: efficiency}), and widths 32 and 64 below the narrowest measured one scaled from it by the
    exponential bound (a fraction of peak proportional to width below the `balance` width)."""
    scale = {d: e / effs[128] for d, e in effs.items()}
    narrowest = min(scale)
    for width in (32, 64):
        if width < narrowest:
            scale[width] = scale[narrowest] * min(1.0, width / balance) / min(1.0, narrowest / balance)
    return tuple(sorted(scale.items()))


def _attention(attn: dict, kind: str) -> dict[int, float]:
    """{head width: efficiency at long sequences} of one pass; a single figure is taken at width 128."""
    block = attn[kind]
    if "eff_max" in block:
        return {int(d): float(e) for d, e in block["eff_max"].items()}
    return {128: float(block["value"])}


def for_device(device, dtype: str = "bf16", attention: str = "flash") -> Calibration:
    """The calibration of a device running `dtype`: its generation's fit, with the preset's
    `efficiency` overrides, throttled to a power limit or an explicit clock (clock_scale)."""
    overrides = getattr(device, "efficiency", None) or {}
    if overrides == "ideal":
        return throttled(IDEAL, clock_scale(device, 1.0))
    gen = device.arch  # the preset's generation, else read from the device's name (scenario.hardware)
    cal = replace(fitted(gen, dtype, attention), **overrides)
    scale = clock_scale(device, sustained_clock(gen))
    return throttled(cal, scale if getattr(device, "clock", None) is not None else scale * board_scale(device, gen))


def for_training(scn) -> Calibration:
    """The calibration of a training scenario: for_device with its attention kernel (Scenario.attention_kernel),
    charging host time only to Megatron-Core's eager path (workload.expert_gemm multi_stream: Transformer Engine's
    grouped GEMM, one GEMM an expert from the host; not workload.cuda_graphs): the routed experts' launches
    (`expert_gemm_host`) unless workload.cuda_graph_scope holds moe, and the eager attention, router and dispatch
    preprocessing of an MoE layer (`eager_moe_host`) unless it captures all three. Attention in FP8 where
    workload.fp8_attention says so (with_fp8_attention)."""
    w = scn.workload
    cal = for_device(scn.topology.device, w.dtype, scn.attention_kernel)
    if w.fp8_attention:
        cal = with_fp8_attention(cal, scn.topology.device.arch, w.dtype)
    if w.expert_gemm != "multi_stream" or w.cuda_graphs:
        return replace(cal, expert_gemm_host=0.0, eager_moe_host=0.0)
    scope = set(w.cuda_graph_scope) | ({"moe_router", "moe_preprocess"} if "moe" in w.cuda_graph_scope else set())
    return replace(cal, expert_gemm_host=0.0 if "moe" in scope else cal.expert_gemm_host,
                   eager_moe_host=0.0 if set(PRE_DISPATCH) <= scope else cal.eager_moe_host)


def fp8_attention(generation: str) -> dict | None:
    """calibration.yaml's attention in FP8 on a generation (None where unmeasured): per dtype and pass the speed over
    the same kernel in BF16, and window_backward ("causal" where the FP8 windowed backward does the causal triangle)."""
    return _fitted()["generations"][generation]["attention"].get("fp8")


def mxfp8_cast_slowdown(generation: str) -> float:
    """Time of a training MXFP8 cast (the row-wise and column-wise copies from one read) over a streaming kernel's
    moving the same bytes: the generation's streaming HBM fraction over its measured MXFP8 quantize fraction
    (calibration.yaml hbm.mxfp8_cast); 1 where unmeasured."""
    hbm = _fitted()["generations"][generation]["hbm"]
    return hbm["streaming"]["value"] / hbm["mxfp8_cast"]["both"] if "mxfp8_cast" in hbm else 1.0


def with_fp8_attention(cal: Calibration, generation: str, dtype: str) -> Calibration:
    """`cal` with attention in FP8 (workload.fp8_attention): each pass's efficiency times its measured speed-up."""
    speed = fp8_attention(generation)[dtype]
    return replace(cal, attention=cal.attention * speed["fwd"]["value"],
                   attention_bwd=cal.attention_bwd * speed["bwd"]["value"])


PRE_DISPATCH = ("attn", "moe_router", "moe_preprocess")
"""An MoE layer's parts before its dispatch, which Megatron-Core's partial CUDA graphs capture (--cuda-graph-scope;
its moe scope holds the router and preprocessing too)."""


def power_clock(power_limit: float, tdp: float) -> float:
    """Sustained clock at a board power cap over the sustained clock at the tdp: (power_limit / tdp)^(1/3).

    Dynamic power ~ SMs * f * V^2 with the voltage roughly proportional to the clock over the DVFS range, so a
    board held at its power limit runs at f ~ (P / SMs)^(1/3); static power is neglected (it makes the cap
    bite harder). Anchored at the generation's sustained clock at the tdp (`Calibration.clock`), applied down
    to half the tdp (hardware.LOWEST_POWER_SHARE). Checked against the one capped board of kernels.yaml: the
    H100 PCIe (114 SMs, 350 W) predicted at 1,333 MHz from the H800's 1,600 MHz at 700 W on 132 SMs, measured
    1,395 MHz (-4.4%; measured under memory microbenchmarks, which draw less power a clock than tensor work)."""
    return (power_limit / tdp) ** (1.0 / 3.0)


def board_scale(device, generation: str) -> float:
    """Factor on the compute-bound rates of a board of `generation` drawing another board power than the one its
    sustained clock was measured on (GB200's Blackwell GPUs at 1,200 W against B200's 1,000 W, the same die): the
    measured board's sustained clock carried over by power_clock(tdp, its tdp), times its dense BF16 peak over this
    board's (a data sheet folds a board's clock into its peak: GB200's 2.5 against B200's 2.25 PFLOP/s). GB200:
    1.063 x 0.9 = 0.956. 1 at the measured board's power, or where the device states no tdp or BF16 peak."""
    board = _fitted()["generations"][generation]["clocks"][SUSTAINED_CLOCK[generation]]["board"]
    tdp, peak = getattr(device, "tdp", None), getattr(device, "peak_flops", {}).get("bf16")
    if not tdp or not peak or abs(tdp / board["tdp"] - 1.0) < 1e-9:
        return 1.0
    return power_clock(tdp, board["tdp"]) * board["peak_bf16"] / peak


def clock_scale(device, sustained: float) -> float:
    """Factor on the compute-bound rates of a device's calibration: power_clock of its power_limit, or its
    explicit clock over boost_clock relative to the `sustained` clock fraction the calibration assumes; 1."""
    limit, tdp = getattr(device, "power_limit", None), getattr(device, "tdp", None)
    if limit is not None and tdp:
        return power_clock(limit, tdp)
    clock, boost = getattr(device, "clock", None), getattr(device, "boost_clock", None)
    if clock is not None and boost:
        return clock / boost / sustained
    return 1.0


def throttled(cal: Calibration, scale: float) -> Calibration:
    """`cal` with every compute-bound rate (GEMMs and attention through `clock`, decode attention's FLOP-bound
    fractions) scaled by `scale`; HBM, link and fixed costs as they are (they do not follow the SM clock)."""
    if scale == 1.0:
        return cal
    return replace(cal, clock=cal.clock * scale, decode_attention=cal.decode_attention * scale,
                   decode_attention_fp8kv=cal.decode_attention_fp8kv * scale)


def head_scale(width, cal: Calibration, backward: bool = False) -> np.ndarray:
    """Attention efficiency of the forward (or backward) pass at head width `width` relative to width 128 (log2
    interpolation, held flat outside the tabulated widths)."""
    dims, scale = zip(*(cal.attention_bwd_head_scale if backward else cal.attention_head_scale))
    return np.interp(np.log2(np.maximum(np.asarray(width, float), 1.0)), np.log2(dims), scale)


IDEAL_OVERRIDES = {"gemm": 1.0, "gemm_half_dim": 1e-9, "gemm_ceiling": 1.0, "attention": 1.0, "attention_bwd": 1.0,
                   "attention_half_seq": 1e-9, "hbm": 1.0, "nvlink": 1.0, "scaleout": 1.0, "ring_latency": 1e-12,
                   "ring_ramp_bytes": 0.0, "scaleout_ring_latency": 1e-12,
                   "kernel_overhead": 1e-12, "clock": 1.0, "comm_sms": 1e-12, "graph_overhead": 1e-12,
                   "expert_gemm_host": 1e-12, "eager_moe_host": 1e-12,
                   "hbm_decode": 1.0, "decode_attention": 1.0, "decode_attention_fp8kv": 1.0,
                   **{f"ar_{a}{x}": v for a in ("one_shot", "two_shot", "multimem")
                      for x, v in (("_alpha", 1e-12), ("", 1.0))},
                   "ar_nccl_alpha": 1e-12, "ep_nvlink": 1.0, "ep_rdma": 1.0, "ep_ll_nvlink": 1.0, "ep_ll_rdma": 1.0,
                   "ep_sm_share": 1e-12,
                   "scheduler_step": 1e-12}
"""A device's `efficiency:` overrides for the pure roofline (every fraction 1, no overheads, NVLS off):
what closed-form references such as "How to Scale Your Model" assume."""
IDEAL = replace(DEFAULT, attention_head_scale=((128, 1.0),), attention_bwd_head_scale=((128, 1.0),), **IDEAL_OVERRIDES)
"""The pure-roofline Calibration."""
