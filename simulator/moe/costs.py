"""Mixture-of-experts costs per transformer layer: the slowest EP rank's expert compute and the
all-to-all dispatch and combine on each tier, from drawn routing (routing.py) and placement (experts.py).

An EP group of n ranks runs each MoE layer in lockstep: dispatch (all-to-all), the experts, combine
(all-to-all), so the layer lasts as long as its slowest rank. Every EP rank (a TP group, or under MoE
parallel folding expert_tp GPUs) brings T = b*s/cp tokens per micro-batch (b*s/cp * expert_tp/tp folded);
ranks receive A_r token copies (the tokens of the experts they hold, sum = n*T*k less drops). Time per
rank is a roofline per expert GEMM (shape M_e x N x K, M_e the tokens of the expert), summed over the
rank's experts, one kernel overhead per grouped GEMM; the layer takes the max over ranks, averaged over
the sampled micro-batch steps (DESIGN.md section 5: a synchronous collective ends at the max over its
participants).

All-to-all volumes, in token copies per rank (a copy is h activations, split over expert-TP ranks):
- flat: a rank sends its ΣA/n copies to ranks in proportion to their loads A; bytes to other ranks
  of its NVLink domain ride NVLink, bytes to other domains its NIC. It receives A_r copies, a
  fraction (n_D - 1)/n of them over NVLink and (n - n_D)/n over the NIC (n_D: group ranks in its domain).
- dedup (DeepSeek-V3's DeepEP): a token crosses the scale-out tier once per remote domain it needs
  (P(token touches domain D) from the token sample), arrives at the GPU of its rail and is forwarded
  on NVLink to the target ranks; combine reduces inside the domain before sending back.
- layout.ep_backend deepep or hybridep (Megatron-Core's flex dispatcher) de-duplicates so, and sends a token
  once to each rank it needs, which permutes it to its experts: the NVLink copies shrink by the mean distinct
  ranks among a token's k experts over k (rows_per_copy, from the sample).
Each tier is a per-rank link: a tier's time is max over ranks of max(sent, received) bytes / bandwidth
(NVLink and NICs at the fractions of their line rates the backend's kernels reach: NCCL's calibration.nvlink
and scaleout, DeepEP's ep_nvlink and ep_rdma, HybridEP's hybridep_nvlink and hybridep_rdma; NICs cut by
oversubscription when the group crosses leaf units), plus one latency (a rank's sends to its peers are in flight at
once, as in DeepEP's GPU-initiated RDMA); the tiers run at once, the a2a takes the slower. Dispatch carries
the low-precision GEMM operand with layout.fp8_dispatch (DeepSeek-V3), else 16-bit (dispatch.dispatch_width);
combine and the backward pass carry 16-bit. Forward: dispatch + combine; backward: the same pair.

Host time: a rank's routed experts issued one GEMM an expert (expert_gemm multi_stream) last at least the host's
launches (host_launches); and Megatron-Core's dispatcher copies the token counts to the host and waits for them in
every MoE layer's forward, so the host cannot run ahead of it: where the layer's attention, router and dispatch
preprocessing are launched eagerly, the forward adds the measured exposure cal.eager_moe_host (zero where CUDA graphs
capture them, calibration.for_training).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cost import roofline
from ..cost.ops import BLOCK_DENSE_FFN, BLOCK_EXPERT, BLOCK_MOE, OpTable, layer_shape
from ..cost.roofline import attention_peak
from . import routing
from .dispatch import a2a_costs, chosen_ranks, dispatch_volumes, rows_per_copy, touch_probability
from .placement import ExpertPlacement, place_experts

PASSES = (("flops_f", "bytes_f"), ("flops_b", "bytes_b"), ("flops_w", "bytes_w"))


@dataclass(frozen=True, kw_only=True)
class MoECosts:
    """Per transformer layer (L rows; dense layers have no all-to-all) for one micro-batch; SI units."""

    ffn: np.ndarray  # (L, 3) seconds of the FFN half, F / B / W, slowest EP rank (mean over samples)
    host_wait: np.ndarray  # (L, 3) of `ffn`, seconds the routed experts wait on the host beyond their device time
    eager_host: float  # of each MoE layer's `ffn` forward, the eager pre-dispatch host seconds (cal.eager_moe_host)
    ffn_flops: np.ndarray  # (L,) forward FLOP of the FFN half per TP rank (mean EP rank)
    a2a: np.ndarray  # (L, 2) all-to-all seconds: forward (dispatch + combine), backward
    a2a_scaleout: np.ndarray  # (L, 2) the part of `a2a` whose slower tier is the scale-out one
    sent: np.ndarray  # (L, 2) bytes a rank sends, forward + backward, [nvlink, scaleout], mean rank
    peak: np.ndarray  # (L, 2) bytes through the busiest rank's link in its busier direction
    act_copies: np.ndarray  # (L,) token copies the busiest EP rank keeps for backward (0 for dense)
    domain_out: np.ndarray  # (Lm, d) token copies leaving each domain of the group per dispatch
    rank_tokens: np.ndarray  # (S, Lm, n) token copies each EP rank computes
    imbalance: float  # mean over layers and samples of max / mean tokens per EP rank
    dropped: float  # fraction of token choices dropped by the capacity factor
    tokens: int  # T: tokens an EP rank brings per micro-batch
    ep_devices: np.ndarray  # (n,) devices of the costed EP group (the one spanning most domains)
    rank_domain: np.ndarray  # (n,) NVLink domain of each of its ranks
    experts: ExpertPlacement


def moe_costs(scn, ops: OpTable, placement, fabric, cal) -> MoECosts:
    """The MoECosts of an MoE scenario."""
    model, lay = scn.model, scn.layout
    moe = model.moe
    dev = scn.topology.device
    peak, hbm = dev.peak(scn.workload.dtype), dev.hbm_bandwidth
    is_moe = np.array(moe.is_moe(model.layers))
    n_moe = int(is_moe.sum())
    tokens = rank_tokens(scn)
    ep_devices = slowest_group(placement, fabric)
    rank_domain = fabric.domain_of(ep_devices)
    per_rank = scn.ep_backend != "nccl"  # DeepEP, HybridEP: one row a token and rank, one a token and remote domain
    dedup = (lay.ep_dispatch == "dedup" or per_rank) and len(np.unique(rank_domain)) > 1
    need = dedup or per_rank or lay.expert_placement == "graph"
    drawn = routing.draw(scn, n_moe, lay.ep, tokens, need)
    coact = routing.coactivation(drawn.choices, moe.experts) if lay.expert_placement == "graph" else None
    placed = place_experts(lay.expert_placement, drawn.pmf * drawn.assignments, lay.ep,
                           lay.redundant_experts, rank_domain, coact, scn.options.seed)
    slot_tokens = placed.rank_tokens(drawn.loads)  # (S, Lm, n, slots)
    rank = slot_tokens.sum(axis=-1)
    device, host = expert_times(ops, slot_tokens, peak, hbm, cal)  # (3, S, Lm, n) each
    fixed = block_times(ops, BLOCK_MOE, peak, hbm, cal, attention_peak(dev))
    dense = block_times(ops, BLOCK_DENSE_FFN, peak, hbm, cal, attention_peak(dev))
    slowest = lambda t: t.max(axis=-1).mean(axis=1).T  # noqa: E731  (Lm, 3): slowest rank, mean over samples
    moe_ffn = slowest(np.maximum(device, host)) + fixed
    host_wait = np.maximum(moe_ffn - fixed - slowest(device), 0.0)  # float noise of equal terms: exact zeros
    moe_ffn[:, 0] += cal.eager_moe_host  # the eager pre-dispatch host time the dispatcher's sync exposes
    ranks = chosen_ranks(drawn.choices, placed, scn.options.seed) if dedup or per_rank else None
    p_touch = touch_probability(ranks, rank_domain) if dedup else None
    vol = dispatch_volumes(rank, tokens, rank_domain, p_touch, rows_per_copy(ranks) if per_rank else None)
    comm = a2a_costs(scn, vol, rank, ep_devices, placement, fabric, cal)
    per_token = ops.flops_f[ops.block == BLOCK_EXPERT].sum()
    moe_flops = ops.flops_f[ops.block == BLOCK_MOE].sum() + rank.mean(axis=(0, 2)) * per_token
    pad = lambda x, fill: _spread(x, fill, is_moe)  # noqa: E731
    mean = rank.mean(axis=-1)
    return MoECosts(
        ffn=pad(moe_ffn, dense), host_wait=pad(host_wait, 0.0), eager_host=cal.eager_moe_host,
        ffn_flops=pad(moe_flops, ops.flops_f[ops.block == BLOCK_DENSE_FFN].sum()),
        a2a=pad(comm["a2a"], 0.0), a2a_scaleout=pad(comm["scaleout"], 0.0), sent=pad(comm["sent"], 0.0),
        peak=pad(comm["peak"], 0.0), act_copies=pad(rank.max(axis=-1).mean(axis=0), 0.0),
        domain_out=vol["domain_out"].mean(axis=0), rank_tokens=rank,
        imbalance=float((rank.max(axis=-1) / np.where(mean > 0, mean, 1)).mean()),
        dropped=float(drawn.dropped.sum() / (drawn.assignments * drawn.dropped.size)), tokens=tokens,
        ep_devices=ep_devices, rank_domain=rank_domain, experts=placed,
    )


def _spread(per_moe_layer: np.ndarray, fill, is_moe: np.ndarray) -> np.ndarray:
    """(L, ...) an array of the MoE layers' rows at their layers, `fill` at the dense layers'."""
    out = np.empty((len(is_moe), *per_moe_layer.shape[1:]), dtype=np.result_type(per_moe_layer, np.asarray(fill)))
    out[...] = fill
    out[is_moe] = per_moe_layer
    return out


def rank_tokens(scn) -> int:
    """T, the tokens an EP rank brings per micro-batch: its attention TP group's b*s/cp; under MoE parallel
    folding an EP rank is expert_tp GPUs, each dispatching the b*s/(cp*tp) tokens sequence parallelism
    leaves it: b*s/cp * expert_tp/tp."""
    tokens, lay = layer_shape(scn).tokens, scn.layout
    return tokens * lay.etp // lay.tp if lay.folded else tokens


def slowest_group(placement, fabric) -> np.ndarray:
    """Devices of the EP group that spans the most NVLink domains (the first such): EP groups of the
    data-parallel replicas run the same layers independently and meet at the gradient reduction, so
    the step waits for the slowest one (e.g. EP 32 on 72-GPU racks: some groups straddle two racks)."""
    groups = placement.expert_groups("ep")
    _, d, crosses = fabric.profile(groups)
    return groups[int(np.argmax(d * 2 + crosses))]


def block_times(ops: OpTable, block: int, peak: float, hbm: float, cal, peak16: float | None = None) -> np.ndarray:
    """(3,) seconds of a block's rows for F, B, W: roofline of each op plus its kernel overhead (16-bit
    GEMMs such as the router at `peak16`)."""
    rows = ops.block == block
    return np.array([roofline.op_times(getattr(ops, f)[rows], getattr(ops, b)[rows], ops.gemm[rows], peak,
                                       hbm, cal, backward=i == 1, peak16=peak16, precise=ops.precise[rows]).sum()
                     for i, (f, b) in enumerate(PASSES)])


def expert_times(ops: OpTable, slot_tokens: np.ndarray, peak: float, hbm: float, cal) -> tuple:
    """(3, ...) device seconds per EP rank for F, B, W of its routed experts, from tokens per slot (..., slots):
    expert_seconds of each pass's rows, an expert's weights read only when it received a token; and (3, ...) the
    host's seconds to issue them (host_launches). A pass lasts the longer of the two."""
    rows = ops.block == BLOCK_EXPERT
    n, k, fixed = ops.gemm[rows, 1], ops.gemm[rows, 2], ops.bytes_fixed[rows]
    reads = (slot_tokens > 0).astype(float)
    eff = expert_efficiency(n, k, slot_tokens, cal)  # the same GEMM shapes in every pass
    device = np.stack([expert_seconds(getattr(ops, f)[rows], getattr(ops, b)[rows], fixed, n, k, slot_tokens, reads,
                                      1.0, peak, hbm, cal, eff)["time"] for f, b in PASSES])
    return device, np.stack([host_launches(getattr(ops, f)[rows], n, reads, cal) for f, _ in PASSES])


def host_launches(flops, n, reads, cal) -> np.ndarray:
    """Host seconds to issue a pass of a rank's routed experts one GEMM an expert (Transformer Engine's
    multi-stream grouped GEMM): cal.expert_gemm_host for each GEMM row of the pass (FLOP, n > 0) and each
    expert holding tokens (`reads`, (..., slots)). The device cannot run ahead of the host: the token counts
    that size each expert's GEMM reach the host through a device-to-host copy each layer."""
    gemms = int(((np.asarray(n) > 0) & (np.asarray(flops) > 0)).sum())
    return reads.sum(axis=-1) * gemms * cal.expert_gemm_host


def expert_efficiency(n, k, m, cal) -> list:
    """GEMM efficiency of each expert row (None for memory-bound rows) at m tokens an expert."""
    m = np.asarray(m, dtype=float)
    return [roofline.gemm_efficiency(np.stack(np.broadcast_arrays(m, n[i], k[i]), axis=-1), cal) if n[i] > 0 else None
            for i in range(len(n))]


def expert_seconds(flops, nbytes, weight_bytes, n, k, m, reads, count: float, peak: float, hbm: float,
                   cal, eff=None) -> dict:
    """Roofline seconds of routed-expert rows at m tokens an expert (array (..., slots)).

    Per row (arrays): FLOP and activation bytes a token, `weight_bytes` read `reads` times (same shape
    as m: 1 if the expert received a token; serving's mean loads give the probability), GEMM n and k.
    Each row of each expert takes max(FLOP m / (peak eff(m, n, k)), bytes / HBM), `count` experts at
    each load (the slots summed), plus one grouped-GEMM launch per row. A row with neither FLOP nor
    bytes (no weight-gradient of an activation) costs nothing. `eff`: expert_efficiency, when known.
    Returns compute, memory and time (...)."""
    m = np.asarray(m, dtype=float)
    eff = expert_efficiency(n, k, m, cal) if eff is None else eff
    reads = np.asarray(reads, dtype=float)
    hbm_eff = hbm * cal.hbm
    out = {"compute": 0.0, "memory": 0.0, "time": 0.0}
    for i in range(len(n)):
        if flops[i] == 0 and nbytes[i] == 0:
            continue
        memory = (weight_bytes[i] * reads + nbytes[i] * m) / hbm_eff
        compute = np.zeros_like(m)
        if flops[i] > 0:
            compute = flops[i] * m / (peak * eff[i])
        busy = np.where(m > 0, np.maximum(compute, memory), 0.0)
        out["compute"] = out["compute"] + count * compute.sum(axis=-1)
        out["memory"] = out["memory"] + count * memory.sum(axis=-1)
        out["time"] = out["time"] + count * busy.sum(axis=-1) + cal.kernel_overhead
    return out


