"""Decode with expert parallelism: one MoE layer and one decode step against the batch (vectorized).

A serving replica in DeepSeek-V3's style (its section 3.4): attention data-parallel (every GPU runs its
own b sequences, no TP), the routed experts spread over an EP group of n GPUs, each holding
(experts + redundant) / n of them. One decode step moves B = n b tokens through every MoE layer:

- the attention half (projections, router, shared experts; dense FFN in the dense layers) reads its
  weights once a step and runs b tokens: rooflines at M = b;
- attention reads each sequence's KV cache (MLA: the latent of kv_lora_rank + rope a token a layer);
- a GPU's experts receive b k copies in all (uniform routing), M = b k / slots each; an expert reads
  its weights only if it received a token (probability 1 - exp(-M), tokens arriving as Poisson);
- dispatch and combine of the b k copies (simulator.moe's per-tier volumes and timing).

An expert GEMM (M x N x K) turns compute-bound when 2 M N K / peak >= (weight + activation bytes) /
HBM, i.e. at M = 1 / (HBM / (peak * w) - (1/N + 1/K) * a / w) (w, a bytes of a weight and an
activation): about peak/HBM = 295 on H100 in bf16. With B tokens a step an expert gets B k / E, so the
layer turns compute-bound at B ~ 295 x E / k: sparsity multiplies the batch a replica needs.

The serving simulator (simulator.inference) does not run MoE models yet; `decode_step` is this
module's own step model, with the same roofline and calibration, for studies and tests.
"""

from __future__ import annotations

import numpy as np

from . import calibration, roofline
from .fabric import fabric_for
from .model import ACT_BYTES, parameter_counts
from .moe import dispatch_volumes

DTYPE_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}


def _gemm_times(m, n, k, weight_bytes: float, peak: float, hbm: float, cal, reads=None):
    """(compute, memory) seconds of GEMMs M x N x K over arrays m (broadcast against n, k).

    Weights are read `reads` times (default once when M > 0); activations are 16-bit."""
    m = np.asarray(m, float)
    shapes = np.stack(np.broadcast_arrays(np.maximum(m, 1.0), n, k), axis=-1)
    eff = roofline.gemm_efficiency(shapes, cal)
    compute = 2.0 * m * n * k / (peak * eff)
    reads = (m > 0) if reads is None else reads
    memory = (weight_bytes * n * k * reads + ACT_BYTES * m * (n + k)) / (hbm * cal.hbm)
    return compute, memory


def expert_gemms(model, tp: int = 1) -> list[tuple[int, int]]:
    """(N, K) of one routed expert's GEMMs: FC1 (gate and up when SwiGLU) and FC2."""
    f = model.moe.expert_ffn // tp
    gated = model.ffn_kind == "swiglu"
    return [(f * (2 if gated else 1), model.hidden), (model.hidden, f)]


def expert_layer_times(model, tokens, slots: int, dev, dtype: str, weight_dtype: str, cal=None) -> dict:
    """One GPU's routed-expert seconds for an MoE layer at `tokens` copies received in all (array).

    Returns compute and memory terms and the roofline time (sum over the GPU's `slots` experts of
    max(compute, memory), plus one grouped-GEMM launch per matrix)."""
    cal = cal or calibration.for_device(dev)
    peak, hbm = dev.peak_flops[dtype], dev.hbm_bandwidth
    m = np.asarray(tokens, float) / slots
    reads = 1.0 - np.exp(-m)  # P(an expert received at least one token), Poisson arrivals
    compute = memory = time = 0.0
    for n, k in expert_gemms(model):
        c, w = _gemm_times(m, n, k, DTYPE_BYTES[weight_dtype], peak, hbm, cal, reads)
        compute, memory = compute + slots * c, memory + slots * w
        time = time + slots * np.maximum(c, w) + cal.kernel_overhead
    return {"compute": compute, "memory": memory, "time": time}


def compute_bound_batch(model, dev, dtype: str = "bf16", weight_dtype: str = "bf16", cal=None,
                        upto: int = 1 << 20) -> int:
    """Smallest tokens-per-step B of an EP group at which the routed experts' GEMMs are compute-bound
    (uniform routing: every expert gets B k / E tokens). A dense FFN is the case E = k = 1."""
    moe = model.moe
    grid = np.unique(np.geomspace(1, upto, 4000).astype(int))
    t = expert_layer_times(model, grid * moe.top_k, moe.experts, dev, dtype, weight_dtype, cal)
    bound = np.nonzero(t["compute"] >= t["memory"])[0]
    return int(grid[bound[0]]) if len(bound) else -1


def _dense_half(model) -> list[tuple[int, int]]:
    """(N, K) of the GEMMs a token runs outside the routed experts in an MoE layer, tp = 1."""
    h = model.hidden
    gated = 2 if model.ffn_kind == "swiglu" else 1
    if model.mla is None:
        attn = [((model.heads + 2 * model.kv_heads) * model.head_dim, h), (h, model.heads * model.head_dim)]
    else:
        m = model.mla
        qk = (m.qk_nope_head_dim or model.head_dim) + m.qk_rope_head_dim
        v = m.v_head_dim or model.head_dim
        q = [(m.q_lora_rank, h), (model.heads * qk, m.q_lora_rank)] if m.q_lora_rank else [(model.heads * qk, h)]
        attn = q + [(m.kv_lora_rank + m.qk_rope_head_dim, h),
                    (model.heads * (qk - m.qk_rope_head_dim + v), m.kv_lora_rank), (h, model.heads * v)]
    moe = model.moe
    shared = [(moe.shared_experts * moe.expert_ffn * gated, h), (h, moe.shared_experts * moe.expert_ffn)] \
        if moe.shared_experts else []
    return attn + [(moe.experts, h)] + shared


def _kv_elements(model) -> int:
    if model.mla is not None:
        return model.mla.kv_lora_rank + model.mla.qk_rope_head_dim
    return 2 * model.kv_heads * model.head_dim


def decode_step(scn, batch, context: int, weight_dtype: str = "fp8", kv_dtype: str = "bf16") -> dict:
    """Seconds of one decode step of a DeepSeek-style EP replica, per GPU batch `batch` (array).

    The replica is the EP group of `scn.layout.ep` consecutive GPUs (tp = pp = 1), with
    `layout.redundant_experts` and `layout.ep_dispatch`; every GPU decodes `batch` sequences of
    `context` cached tokens. Returns arrays: attention, dense, experts, all_to_all, head, step (s),
    tokens_per_s_per_gpu, and the per-GPU weight bytes.
    """
    model, lay, dev = scn.model, scn.layout, scn.topology.device
    dtype, cal = scn.workload.dtype, calibration.for_device(dev)
    peak, hbm = dev.peak_flops[dtype], dev.hbm_bandwidth
    b = np.asarray(batch, float)
    moe, n = model.moe, lay.ep
    slots = (moe.experts + lay.redundant_experts) // n
    wb = DTYPE_BYTES[weight_dtype]
    moe_layers, dense_layers = model.layers - moe.dense_layers, moe.dense_layers

    def gemms(shapes):
        return sum(np.maximum(*_gemm_times(b, nn, kk, wb, peak, hbm, cal)) + cal.kernel_overhead
                   for nn, kk in shapes)

    half = gemms(_dense_half(model))
    gated = 2 if model.ffn_kind == "swiglu" else 1
    dense_ffn = gemms([(model.ffn * gated, model.hidden), (model.hidden, model.ffn)])
    router_shared = gemms(_dense_half(model)[-(1 + 2 * bool(moe.shared_experts)):])
    kv = b * context * _kv_elements(model) * DTYPE_BYTES[kv_dtype]
    attention = kv / (hbm * cal.hbm) + cal.kernel_overhead
    experts = expert_layer_times(model, b * moe.top_k, slots, dev, dtype, weight_dtype, cal)["time"]
    a2a = decode_all_to_all(scn, b, cal)
    head = gemms([(model.vocab, model.hidden)])
    layer_moe = half + attention + experts + a2a
    layer_dense = half - router_shared + dense_ffn + attention
    step = moe_layers * layer_moe + dense_layers * layer_dense + head
    c = parameter_counts(model)
    dense_params = (model.layers * c["attention"] + moe_layers * (c["router"] + c["shared"])
                    + dense_layers * (c["layer"] - c["attention"]) + c["embedding"] + c["head"])
    return {"attention": model.layers * attention, "dense": moe_layers * half + dense_layers * (half - router_shared
            + dense_ffn), "experts": moe_layers * experts, "all_to_all": moe_layers * a2a, "head": head,
            "step": step, "tokens_per_s_per_gpu": b / step,
            "weight_bytes": wb * (dense_params + moe_layers * slots * c["expert"])}


def decode_all_to_all(scn, b, cal) -> np.ndarray:
    """Seconds of one MoE layer's dispatch (weight dtype fp8: 1 byte, else 2) and combine (16-bit) per
    decode step, every GPU sending its b tokens' k copies (uniform routing; dedup: a token needs
    domain D with probability 1 - (1 - share of D's experts)^k)."""
    lay, model = scn.layout, scn.model
    fabric = fabric_for(scn.topology)
    n, k = lay.ep, model.moe.top_k
    devices = np.arange(n)
    dom = fabric.domain_of(devices)
    doms, idx = np.unique(dom, return_inverse=True)
    rank = np.broadcast_to(np.asarray(b, float)[..., None, None] * k, (*np.shape(b), 1, n))
    p_touch = None
    if lay.ep_dispatch == "dedup" and len(doms) > 1:
        share = np.bincount(idx) / n
        p_touch = (1 - (1 - share) ** k)[None]
    out = np.zeros(np.shape(b))
    crosses = bool(fabric.profile(devices[None])[2][0])
    bw = {"nv": fabric.nvlink_bw * cal.nvlink, "so": float(fabric.scaleout_bw(crosses)) * cal.scaleout}
    lat = {"nv": (np.bincount(idx).max() - 1) * fabric.nvlink_lat, "so": (len(doms) - 1) * fabric.scaleout_lat}
    for i, bi in enumerate(np.atleast_1d(b)):
        vol = dispatch_volumes(rank.reshape(-1, 1, n)[i:i + 1], float(bi), dom, p_touch)
        total = 0.0
        for width in (1.0 if scn.workload.dtype == "fp8" else ACT_BYTES, ACT_BYTES):
            t = [np.where(most > 0, most * model.hidden * width / bw[tier] + lat[tier], 0.0) for tier, most in
                 (("nv", np.maximum(vol["send_nv"], vol["recv_nv"]).max()),
                  ("so", np.maximum(vol["send_so"], vol["recv_so"]).max()))]
            total += max(float(t[0]), float(t[1]))
        out.flat[i] = total
    return out
