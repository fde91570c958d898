"""Expert-parallel all-to-all: the token copies each EP rank sends and receives per tier (flat, or
de-duplicated per remote domain and per rank as DeepEP and HybridEP), and the seconds of dispatch and combine over
NVLink and the NICs at the measured rates of the kernels that move them."""

from __future__ import annotations

import numpy as np

from ..cost.ops import ACT_BYTES, operand_bytes
from .placement import ExpertPlacement


def chosen_ranks(choices: np.ndarray, placed: ExpertPlacement, seed: int) -> np.ndarray:
    """(Lm, tokens, k) EP rank serving each sampled token's chosen experts: a copy of each chosen expert picked
    uniformly among its copies."""
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
    return np.take_along_axis(ranks_sorted, pick, axis=1).reshape(choices.shape)


def touch_probability(ranks: np.ndarray, rank_domain: np.ndarray) -> np.ndarray:
    """(Lm, d) probability that a token needs domain D, from chosen_ranks' (Lm, tokens, k) sample."""
    doms, dom_idx = np.unique(rank_domain, return_inverse=True)
    touched = np.zeros((*ranks.shape[:2], len(doms)), dtype=bool)
    np.put_along_axis(touched, dom_idx[ranks], True, axis=2)
    return touched.mean(axis=1)


def rows_per_copy(ranks: np.ndarray) -> np.ndarray:
    """(Lm,) rows a kernel sending one row a token and destination rank (DeepEP, HybridEP) moves per expert copy:
    the mean distinct ranks among a token's k chosen experts over k, from chosen_ranks' (Lm, tokens, k) sample."""
    ordered = np.sort(ranks, axis=-1)
    distinct = 1 + (np.diff(ordered, axis=-1) != 0).sum(axis=-1)
    return distinct.mean(axis=1) / ranks.shape[-1]


def uniform_rows_per_copy(experts: int, ranks: int, k: int) -> float:
    """rows_per_copy of uniform routing in closed form: a token's k distinct experts, of `experts` spread evenly over
    `ranks`, miss a given rank with probability prod_i (E - E/n - i) / (E - i), so reach n (1 - that) ranks; over k."""
    per_rank = experts / ranks
    miss = np.prod([max(experts - per_rank - i, 0.0) / (experts - i) for i in range(k)])
    return float(ranks * (1.0 - miss) / k)


def dispatch_volumes(rank: np.ndarray, tokens: int, rank_domain: np.ndarray, p_touch=None, per_copy=None) -> dict:
    """Token copies each EP rank sends and receives per dispatch, per tier; (S, Lm, n) arrays.

    `rank` (S, Lm, n): copies each rank computes (A_r); `p_touch` (Lm, d): de-duplicated per remote domain
    (touch_probability); `per_copy` (Lm,): NVLink rows per copy of kernels that send a token once per rank
    (rows_per_copy). Keys send_nv, recv_nv, send_so, recv_so and domain_out (S, Lm, d): copies leaving each domain.
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
    if per_copy is not None:  # one row a token and destination rank: the NVLink copies shrink to rows
        send_nv, recv_nv = send_nv * per_copy[:, None], recv_nv * per_copy[:, None]
    domain_out = np.stack([send_so[..., idx == j].sum(axis=-1) for j in range(len(doms))], axis=-1)
    return dict(send_nv=send_nv, recv_nv=recv_nv, send_so=send_so, recv_so=recv_so, domain_out=domain_out)


def dispatch_width(scn) -> float:
    """Bytes a dispatched activation takes: the low-precision GEMM operand's (1 with FP8, block scales included)
    where layout.fp8_dispatch says so (default: serving yes, training no), else 16-bit."""
    fp8 = scn.layout.fp8_dispatch
    if fp8 is None:
        fp8 = scn.workload.kind == "serve"
    return operand_bytes(scn.workload.dtype) if fp8 else float(ACT_BYTES)


KERNEL_FRACTIONS = {None: ("nvlink", "scaleout"), "normal": ("ep_nvlink", "ep_rdma"),
                    "ll": ("ep_ll_nvlink", "ep_ll_rdma"), "hybridep": ("hybridep_nvlink", "hybridep_rdma")}
"""Calibration fields giving each link's achieved fraction: NCCL's collectives (training's all-to-all dispatcher), or
DeepEP's measured dispatch and combine: normal kernels (training and prefill; de-duplicated per node) and low-latency
kernels (decode; every copy sent to its rank); or HybridEP's (training)."""

BACKEND_KERNEL = {"nccl": None, "deepep": "normal", "hybridep": "hybridep"}
"""The KERNEL_FRACTIONS key of each layout.ep_backend."""


def tier_links(fabric, cal, crosses: bool, kernel: str | None = None) -> tuple[dict, dict]:
    """({tier: bytes/s}, {tier: s}) of an EP rank's links: NVLink and its NIC share (cut by oversubscription when the
    group crosses leaf units) at the fractions `kernel` reaches (KERNEL_FRACTIONS: NCCL's, DeepEP's normal or
    low-latency kernels', HybridEP's); one latency each, a rank's sends to its peers being in flight at once."""
    nv, so = (getattr(cal, name) for name in KERNEL_FRACTIONS[kernel])
    bw = {"nv": fabric.nvlink_bw * nv, "so": float(fabric.scaleout_bw(crosses)) * so}
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
    bw, lat = tier_links(fabric, cal, bool(fabric.profile(ep_devices[None])[2][0]), BACKEND_KERNEL[scn.ep_backend])
    copy = h / lay.etp  # elements of one token copy per expert-TP rank
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
    """(S, Lm) seconds to all-gather a rank's received copies over its expert-TP group (the TP group
    unless folded) and reduce-scatter the results (experts split over those ranks by width); 0 without."""
    if scn.layout.etp == 1:
        return np.zeros(rank.shape[:2])
    size = rank.max(axis=-1) * scn.model.hidden * ACT_BYTES
    group = placement.expert_group_of("etp", 0)[None]
    ag = fabric.collective("all_gather", size.ravel(), np.repeat(group, size.size, axis=0), cal)
    rs = fabric.collective("reduce_scatter", size.ravel(), np.repeat(group, size.size, axis=0), cal)
    return (ag + rs).reshape(size.shape)
