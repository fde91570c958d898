"""Mixture-of-experts costs per transformer layer: the slowest EP rank's expert compute and the
all-to-all dispatch and combine on each tier, from drawn routing (routing.py) and placement (experts.py).

An EP group of n ranks runs each MoE layer in lockstep: dispatch (all-to-all), the experts, combine
(all-to-all), so the layer lasts as long as its slowest rank. Every EP rank brings T = b*s/cp tokens
per micro-batch; ranks receive A_r token copies (the tokens of the experts they hold, sum = n*T*k less
drops). Time per rank is a roofline per expert GEMM (shape M_e x N x K, M_e the tokens of the expert),
summed over the rank's experts, one kernel overhead per grouped GEMM; the layer takes the max over
ranks, averaged over the sampled micro-batch steps (DESIGN.md section 5: a synchronous collective ends
at the max over its participants).

All-to-all volumes, in token copies per rank (a copy is h activations, split over TP ranks):
- flat: a rank sends its ΣA/n copies to ranks in proportion to their loads A; bytes to other ranks
  of its NVLink domain ride NVLink, bytes to other domains its NIC. It receives A_r copies, a
  fraction (n_D - 1)/n of them over NVLink and (n - n_D)/n over the NIC (n_D: group ranks in its domain).
- dedup (DeepSeek-V3's DeepEP): a token crosses the scale-out tier once per remote domain it needs
  (P(token touches domain D) from the token sample), arrives at the GPU of its rail and is forwarded
  on NVLink to the target ranks; combine reduces inside the domain before sending back.
Each tier is a per-rank link: a tier's time is max over ranks of max(sent, received) bytes / bandwidth
(NVLink at calibration.nvlink of line rate; NICs at calibration.scaleout, cut by oversubscription when
the group crosses leaf units), plus one latency (a rank's sends to its peers are in flight at once,
as in DeepEP's GPU-initiated RDMA); the tiers run at once, the a2a takes the slower. Dispatch carries fp8 activations when the workload's dtype is fp8 (as DeepSeek-V3), else 16-bit;
combine and the backward pass carry 16-bit. Forward: dispatch + combine; backward: the same pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import roofline, routing
from .experts import ExpertPlacement, place_experts
from .model import ACT_BYTES, BLOCK_DENSE_FFN, BLOCK_EXPERT, BLOCK_MOE, OpTable, layer_shape

PASSES = (("flops_f", "bytes_f"), ("flops_b", "bytes_b"), ("flops_w", "bytes_w"))


@dataclass(frozen=True, kw_only=True)
class MoECosts:
    """Per transformer layer (L rows; dense layers have no all-to-all) for one micro-batch; SI units."""

    ffn: np.ndarray  # (L, 3) seconds of the FFN half, F / B / W, slowest EP rank (mean over samples)
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
    peak, hbm = dev.peak_flops[scn.workload.dtype], dev.hbm_bandwidth
    n_moe = model.layers - moe.dense_layers
    tokens = layer_shape(scn).tokens
    ep_devices = slowest_group(placement, fabric)
    rank_domain = fabric.domain_of(ep_devices)
    dedup = lay.ep_dispatch == "dedup" and len(np.unique(rank_domain)) > 1
    need = dedup or lay.expert_placement == "graph"
    drawn = routing.draw(scn, n_moe, lay.ep, tokens, need)
    coact = routing.coactivation(drawn.choices, moe.experts) if lay.expert_placement == "graph" else None
    placed = place_experts(lay.expert_placement, drawn.pmf * drawn.assignments, lay.ep,
                           lay.redundant_experts, rank_domain, coact, scn.options.seed)
    slot_tokens = placed.rank_tokens(drawn.loads)  # (S, Lm, n, slots)
    rank = slot_tokens.sum(axis=-1)
    expert_t = expert_times(ops, slot_tokens, peak, hbm, cal)  # (3, S, Lm, n)
    fixed = block_times(ops, BLOCK_MOE, peak, hbm, cal)
    dense = block_times(ops, BLOCK_DENSE_FFN, peak, hbm, cal)
    moe_ffn = expert_t.max(axis=-1).mean(axis=1).T + fixed  # (Lm, 3)
    p_touch = touch_probability(drawn.choices, placed, rank_domain, scn.options.seed) if dedup else None
    vol = dispatch_volumes(rank, tokens, rank_domain, p_touch)
    comm = a2a_costs(scn, vol, rank, ep_devices, placement, fabric, cal)
    per_token = ops.flops_f[ops.block == BLOCK_EXPERT].sum()
    moe_flops = ops.flops_f[ops.block == BLOCK_MOE].sum() + rank.mean(axis=(0, 2)) * per_token
    pad = lambda x, fill: np.concatenate([np.broadcast_to(fill, (moe.dense_layers, *x.shape[1:])), x])  # noqa: E731
    mean = rank.mean(axis=-1)
    return MoECosts(
        ffn=pad(moe_ffn, dense), ffn_flops=pad(moe_flops, ops.flops_f[ops.block == BLOCK_DENSE_FFN].sum()),
        a2a=pad(comm["a2a"], 0.0), a2a_scaleout=pad(comm["scaleout"], 0.0), sent=pad(comm["sent"], 0.0),
        peak=pad(comm["peak"], 0.0), act_copies=pad(rank.max(axis=-1).mean(axis=0), 0.0),
        domain_out=vol["domain_out"].mean(axis=0), rank_tokens=rank,
        imbalance=float((rank.max(axis=-1) / np.where(mean > 0, mean, 1)).mean()),
        dropped=float(drawn.dropped.sum() / (drawn.assignments * drawn.dropped.size)), tokens=tokens,
        ep_devices=ep_devices, rank_domain=rank_domain, experts=placed,
    )


def slowest_group(placement, fabric) -> np.ndarray:
    """Devices of the EP group that spans the most NVLink domains (the first such): EP groups of the
    data-parallel replicas run the same layers independently and meet at the gradient reduction, so
    the step waits for the slowest one (e.g. EP 32 on 72-GPU racks: some groups straddle two racks)."""
    groups = placement.groups("ep")
    _, d, crosses = fabric.profile(groups)
    return groups[int(np.argmax(d * 2 + crosses))]


def block_times(ops: OpTable, block: int, peak: float, hbm: float, cal) -> np.ndarray:
    """(3,) seconds of a block's rows for F, B, W: roofline of each op plus its kernel overhead."""
    rows = ops.block == block
    fused = np.zeros(rows.sum(), dtype=bool)
    return np.array([roofline.op_times(getattr(ops, f)[rows], getattr(ops, b)[rows], ops.gemm[rows], peak,
                                       hbm, cal, fused).sum() for f, b in PASSES])


def expert_times(ops: OpTable, slot_tokens: np.ndarray, peak: float, hbm: float, cal) -> np.ndarray:
    """(3, ...) seconds per EP rank for F, B, W of its routed experts, from tokens per slot (..., slots):
    expert_seconds of each pass's rows, an expert's weights read only when it received a token."""
    rows = ops.block == BLOCK_EXPERT
    n, k, fixed = ops.gemm[rows, 1], ops.gemm[rows, 2], ops.bytes_fixed[rows]
    reads = (slot_tokens > 0).astype(float)
    return np.stack([expert_seconds(getattr(ops, f)[rows], getattr(ops, b)[rows], fixed, n, k, slot_tokens, reads,
                                    1.0, peak, hbm, cal)["time"] for f, b in PASSES])


def expert_seconds(flops, nbytes, weight_bytes, n, k, m, reads, count: float, peak: float, hbm: float,
                   cal) -> dict:
    """Roofline seconds of routed-expert rows at m tokens an expert (array (..., slots)).

    Per row (arrays): FLOP and activation bytes a token, `weight_bytes` read `reads` times (same shape
    as m: 1 if the expert received a token; serving's mean loads give the probability), GEMM n and k.
    Each row of each expert takes max(FLOP m / (peak eff(m, n, k)), bytes / HBM), `count` experts at
    each load (the slots summed), plus one grouped-GEMM launch per row. A row with neither FLOP nor
    bytes (no weight-gradient of an activation) costs nothing. Returns compute, memory and time (...)."""
    m = np.asarray(m, dtype=float)
    reads = np.asarray(reads, dtype=float)
    hbm_eff = hbm * cal.hbm
    out = {"compute": 0.0, "memory": 0.0, "time": 0.0}
    for i in range(len(n)):
        if flops[i] == 0 and nbytes[i] == 0:
            continue
        memory = (weight_bytes[i] * reads + nbytes[i] * m) / hbm_eff
        compute = np.zeros_like(m)
        if flops[i] > 0:
            eff = roofline.gemm_efficiency(np.stack(np.broadcast_arrays(m, n[i], k[i]), axis=-1), cal)
            compute = flops[i] * m / (peak * eff)
        busy = np.where(m > 0, np.maximum(compute, memory), 0.0)
        out["compute"] = out["compute"] + count * compute.sum(axis=-1)
        out["memory"] = out["memory"] + count * memory.sum(axis=-1)
        out["time"] = out["time"] + count * busy.sum(axis=-1) + cal.kernel_overhead
    return out


def touch_probability(choices: np.ndarray, placed: ExpertPlacement, rank_domain: np.ndarray,
                      seed: int) -> np.ndarray:
    """(Lm, d) probability that a token needs domain D: from the token sample, a copy of each chosen
    expert picked uniformly among its copies."""
    L, n, slots = placed.slot_expert.shape
    rank_of_slot = np.broadcast_to(np.arange(n)[:, None], (n, slots)).ravel()
    flat = placed.slot_expert.reshape(L, n * slots)
    order = np.argsort(flat, axis=1, kind="stable")  # slots grouped by expert
    ranks_sorted = rank_of_slot[order]
    start = np.concatenate([np.zeros((L, 1), dtype=int), np.cumsum(placed.copies, axis=1)[:, :-1]], axis=1)
    rng = np.random.default_rng(seed + 1)
    c = np.take_along_axis(placed.copies, choices.reshape(L, -1), axis=1)
    s = np.take_along_axis(start, choices.reshape(L, -1), axis=1)
    pick = s + np.floor(rng.random(c.shape) * c).astype(int)
    doms, dom_idx = np.unique(rank_domain, return_inverse=True)
    dom = dom_idx[np.take_along_axis(ranks_sorted, pick, axis=1)].reshape(choices.shape)
    touched = np.zeros((L, choices.shape[1], len(doms)), dtype=bool)
    np.put_along_axis(touched, dom, True, axis=2)
    return touched.mean(axis=1)


def dispatch_volumes(rank: np.ndarray, tokens: int, rank_domain: np.ndarray, p_touch=None) -> dict:
    """Token copies each EP rank sends and receives per dispatch, per tier; (S, Lm, n) arrays.

    `rank` (S, Lm, n): copies each rank computes (A_r). Keys send_nv, recv_nv, send_so, recv_so and
    domain_out (S, Lm, d): copies leaving each domain.
    """
    n = rank.shape[-1]
    doms, idx = np.unique(rank_domain, return_inverse=True)
    n_d = np.bincount(idx)[idx].astype(float)  # group ranks in each rank's domain
    total = rank.sum(axis=-1, keepdims=True)
    dom_load = np.stack([rank[..., idx == j].sum(axis=-1) for j in range(len(doms))], axis=-1)
    own = dom_load[..., idx]  # copies computed in each rank's domain
    if p_touch is None:
        per_source = total / n
        share = np.divide(own, total, out=np.zeros_like(own), where=total > 0)
        send_so = per_source * np.clip(1.0 - share, 0.0, None)  # exactly 0 inside one domain
        send_nv = np.divide(own - rank, total, out=np.zeros_like(own), where=total > 0) * per_source
        recv_so = rank * (n - n_d) / n
        recv_nv = rank * (n_d - 1) / n
    else:
        p = p_touch[None]  # (1, Lm, d)
        remote = p.sum(axis=-1, keepdims=True) - p[..., idx]  # remote domains per token, by source
        send_so = np.broadcast_to(tokens * remote, rank.shape).copy()
        recv_so = np.broadcast_to((n - n_d) * tokens * p[..., idx] / n_d, rank.shape).copy()
        forwarded = rank * (n - n_d) / n * (n_d - 1) / n_d  # remote copies fanned out inside the domain
        fwd_dom = np.stack([forwarded[..., idx == j].sum(axis=-1) for j in range(len(doms))], axis=-1)
        recv_nv = rank * (n_d - 1) / n + forwarded
        send_nv = (own - rank) / n + fwd_dom[..., idx] / n_d
    domain_out = np.stack([send_so[..., idx == j].sum(axis=-1) for j in range(len(doms))], axis=-1)
    return dict(send_nv=send_nv, recv_nv=recv_nv, send_so=send_so, recv_so=recv_so, domain_out=domain_out)


def dispatch_width(scn) -> float:
    """Bytes a dispatched activation takes: 1 with fp8 GEMMs (as DeepSeek-V3), else 16-bit."""
    return 1.0 if scn.workload.dtype == "fp8" else float(ACT_BYTES)


def tier_links(fabric, cal, crosses: bool) -> tuple[dict, dict]:
    """({tier: bytes/s}, {tier: s}) of an EP rank's links: NVLink at calibration.nvlink of line rate,
    its NIC share at calibration.scaleout (cut by oversubscription when the group crosses leaf units);
    one latency each, a rank's sends to its peers being in flight at once."""
    bw = {"nv": fabric.nvlink_bw * cal.nvlink, "so": float(fabric.scaleout_bw(crosses)) * cal.scaleout}
    return bw, {"nv": fabric.nvlink_lat, "so": fabric.scaleout_lat}


def a2a_seconds(most: dict, copy_elements: float, widths, bw: dict, lat: dict, gather=0.0):
    """(seconds, scale-out-bound seconds) of all-to-alls moving token copies of `copy_elements`
    elements at each of `widths` bytes an element (dispatch, then combine): on each tier the busiest
    rank's copies in its busier direction (`most[tier]`, any shape) over the link plus one latency; the
    NVLink tier also all-gathers over the TP group (`gather` s); the tiers run at once."""
    total = scale = 0.0
    for width in widths:
        nv, so = (np.where(most[t] > 0, most[t] * copy_elements * width / bw[t] + lat[t], 0.0) for t in ("nv", "so"))
        nv = nv + gather
        total = total + np.maximum(nv, so)
        scale = scale + np.where(so >= nv, so, 0.0)
    return total, scale


def a2a_costs(scn, vol: dict, rank: np.ndarray, ep_devices, placement, fabric, cal) -> dict:
    """Seconds per layer of the forward and backward all-to-alls, their scale-out-bound part, and the
    bytes per rank (mean and busiest link); arrays (Lm, 2)."""
    lay, h = scn.layout, scn.model.hidden
    bw, lat = tier_links(fabric, cal, bool(fabric.profile(ep_devices[None])[2][0]))
    copy = h / lay.tp  # elements of one token copy per TP rank
    dispatch_bytes = dispatch_width(scn)
    most = {t: np.maximum(vol[f"send_{t}"], vol[f"recv_{t}"]).max(axis=-1) for t in ("nv", "so")}  # (S, Lm)
    gather = _tp_gather(scn, rank, placement, fabric, cal)  # (S, Lm) experts split over TP ranks
    out = {"a2a": [], "scaleout": []}
    for widths in ((dispatch_bytes, ACT_BYTES), (ACT_BYTES, ACT_BYTES)):  # forward, backward
        total, scale = a2a_seconds(most, copy, widths, bw, lat, gather)
        out["a2a"].append(total.mean(axis=0))
        out["scaleout"].append(scale.mean(axis=0))
    sent, peak = [], []
    # A rank's outbound bytes: its dispatch copies forward (dispatch_bytes) and their gradients of the
    # combine backward (16-bit), plus the results of the copies it computed (combine forward, dispatch
    # backward); inbound the mirror image. Mean outbound over ranks = mean send * (dispatch + 3 x 16-bit).
    for t in ("nv", "so"):
        send, recv = vol[f"send_{t}"], vol[f"recv_{t}"]
        sent.append(send.mean(axis=(0, 2)) * copy * (dispatch_bytes + 3 * ACT_BYTES))
        inbound = recv * (dispatch_bytes + ACT_BYTES) + send * 2 * ACT_BYTES
        outbound = send * (dispatch_bytes + ACT_BYTES) + recv * 2 * ACT_BYTES
        peak.append(np.maximum(inbound, outbound).max(axis=-1).mean(axis=0) * copy)
    return {"a2a": np.stack(out["a2a"], axis=-1), "scaleout": np.stack(out["scaleout"], axis=-1),
            "sent": np.stack(sent, axis=-1), "peak": np.stack(peak, axis=-1)}


def _tp_gather(scn, rank, placement, fabric, cal) -> np.ndarray:
    """(S, Lm) seconds to all-gather a rank's received copies over its TP group and reduce-scatter the
    results (experts split over TP ranks by width); 0 without TP."""
    if scn.layout.tp == 1:
        return np.zeros(rank.shape[:2])
    size = rank.max(axis=-1) * scn.model.hidden * ACT_BYTES
    group = placement.group_of("tp", 0)[None]
    ag = fabric.collective("all_gather", size.ravel(), np.repeat(group, size.size, axis=0), cal)
    rs = fabric.collective("reduce_scatter", size.ravel(), np.repeat(group, size.size, axis=0), cal)
    return (ag + rs).reshape(size.shape)
