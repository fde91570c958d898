"""A serve scenario's reference steps, computed once per run for the report: one prompt's prefill and a decode step of
`batch` sequences at mid-output context, each with its cost broken down by what bounds it.

The breakdown follows StepCosts.stage_times term by term and splits every term by its binding resource (BREAKDOWN):
`weights` and `activations` are the HBM time of memory-bound linear operators (shared by their weight and activation
bytes), `kv` the HBM time of memory-bound attention (the KV cache read), `compute` every FLOP-bound operator,
`tp` the TP all-reduces and the logits gather, `ep` the exposed all-to-alls, `pp` the stage hops, `launch` the
kernels' fixed time (CUDA-graph residue or launch) and `scheduler` the CPU's step time the GPU's does not cover. The
parts add up to the step's time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cost.fabric import Fabric
from .experts import busiest_copies
from .steps import ACT, GRAPH_TOKENS, LINEAR_PARTS, StepCosts, _alternate, linear_parts, replica_devices

BREAKDOWN = ("weights", "kv", "activations", "compute", "tp", "ep", "pp", "launch", "scheduler")
_AT = {name: i for i, name in enumerate(BREAKDOWN)}


@dataclass(frozen=True)
class StepSummary:
    """A serve scenario's reference step figures, computed once from its StepCosts for the report:
    one prompt's prefill, a decode step of `batch` sequences at mid-output context, what bounds it and
    the communication inside it, FLOP and bytes per processed token, and both steps broken down (BREAKDOWN)."""

    prefill_s: float
    decode_step_s: float
    decode_bound: str  # compute | memory
    comm_s: dict  # seconds of TP, PP, DP, EP, CP communication inside the decode step
    flops_per_token: float  # linear FLOP of the replica per processed token (head excluded)
    head_flops_per_token: float  # LM head FLOP per sampled token
    bytes_per_token: dict  # bytes one processed token moves on each tier: TP all-reduces, PP hops, EP all-to-alls
    breakdown: dict  # {"decode": {part: s}, "prefill": {part: s}}: the two steps by what bounds them


def _linear(costs: StepCosts, ops, m: int) -> np.ndarray:
    """BREAKDOWN vector of rows `ops` at m tokens."""
    parts = linear_parts(ops, np.array([float(m)]), costs.w_bytes, costs.peak, costs.hbm_bw, costs.cal, costs.graphs,
                         costs.attn_peak)[0]
    out = np.zeros(len(BREAKDOWN))
    for name, value in zip(LINEAR_PARTS, parts):
        out[_AT[name]] += value
    return out


def _attention(costs: StepCosts, new, ctx, ranks) -> np.ndarray:
    """BREAKDOWN vector of one layer's attention on the busiest attention replica (as StepCosts.attention)."""
    p = costs.attn.parts(new, ctx, costs.kv_rank_layer)
    overhead = costs.cal.graph_overhead if costs.graphs and len(new) <= GRAPH_TOKENS else costs.cal.kernel_overhead
    present = [bool(p["decode"].any()), bool((~p["decode"]).any())]
    if ranks is not None:
        per = sum(np.maximum(np.bincount(ranks[k], p["compute"][k], costs.ranks),
                             np.bincount(ranks[k], p["memory"][k], costs.ranks)) for k in (p["decode"], ~p["decode"]))
        mine = ranks == int(np.argmax(per))
        p = {key: v[mine] for key, v in p.items()}
    out = np.zeros(len(BREAKDOWN))
    for kind, ran in zip((p["decode"], ~p["decode"]), present):
        c, m = float(p["compute"][kind].sum()), float(p["memory"][kind].sum())
        out[_AT["compute"] if c >= m else _AT["kv"]] += max(c, m)
        out[_AT["launch"]] += overhead if ran else 0.0
    return out


def _experts(costs: StepCosts, total: int) -> np.ndarray:
    """BREAKDOWN vector of the busiest EP rank's routed experts of one MoE layer."""
    moe = costs.moe
    t = moe.rank_experts(busiest_copies(np.array([total * moe.top_k]), moe.ranks))
    out = np.zeros(len(BREAKDOWN))
    if total == 0:
        return out
    rows = moe.expert_ops
    launch = costs.cal.kernel_overhead * float(np.sum((rows.n > 0) | (rows.io > 0)))
    busy = float(t["time"][0]) - launch
    out[_AT["compute"] if t["compute"][0] >= t["memory"][0] else _AT["weights"]] += busy
    out[_AT["launch"]] += launch
    return out


def _layers(costs: StepCosts, new, ctx, ranks, decode: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """((pp, B) parts of each stage's layers no all-to-all overlaps, (B,) one MoE layer's attention part and (B,) its
    MoE compute, (2,) its dispatch and combine seconds), as StepCosts._layer_parts."""
    b, m = costs.busiest(new, ranks), int(np.sum(new))
    per_layer = _linear(costs, costs.rows.layer, b) + _attention(costs, new, ctx, ranks)
    per_layer[_AT["tp"]] += costs.tp_comm(b)
    if costs.moe is None:
        zero = np.zeros(len(BREAKDOWN))
        return costs.stage_layers[:, None] * per_layer, per_layer, zero, np.zeros(2)
    moe = costs.moe
    dense = moe.stage_dense[:, None] * (per_layer + _linear(costs, moe.dense_ffn, b))
    sparse = _linear(costs, moe.moe_ffn, b) + _experts(costs, m)
    return dense, per_layer, sparse, np.asarray(moe.parts(b, m, decode=decode)[2], dtype=float)


def _beside(compute: np.ndarray, comm: float, share: float) -> np.ndarray:
    """A compute phase with an all-to-all phase beside it that holds `share` of the SMs: the compute's parts and
    what the phase lasts beyond them (max(comm, compute + share comm) - compute, as StepCosts.stage_times)."""
    out = compute.copy()
    x = float(compute.sum())
    out[_AT["ep"]] += max(comm, x + share * comm) - x
    return out


def step_breakdown(costs: StepCosts, new, ctx, sampled: int, ranks=None) -> dict:
    """{part: seconds} of one step (BREAKDOWN), adding up to costs.step_time(new, ctx, sampled, ranks)."""
    new, ctx = np.asarray(new, dtype=float), np.asarray(ctx, dtype=float)
    ranks = costs._ranks(len(new), ranks)
    decode = bool(np.all(new == 1))
    if costs.moe is not None and costs.moe.overlap and len(new) > 1:
        half = _alternate(ranks, len(new))
        (e0, a0, m0, x0), (e1, a1, m1, x1) = (
            _layers(costs, new[half == h], ctx[half == h], None if ranks is None else ranks[half == h], decode)
            for h in (0, 1))
        s = 0.0 if decode else costs.cal.ep_sm_share
        layer = sum(_beside(x, y, s) for x, y in ((a1, x0[0]), (m0, x1[0]), (m1, x0[1]), (a0, x1[1])))
        stages = e0 + e1 + costs.moe.stage_moe[:, None] * layer
    else:
        every, attn, moe, comm = _layers(costs, new, ctx, ranks, decode)
        stages = every
        if costs.moe is not None:
            layer = attn + moe
            layer[_AT["ep"]] += float(comm.sum())
            stages = stages + costs.moe.stage_moe[:, None] * layer
    stages[0] += _linear(costs, costs.rows.embed, costs.busiest(new, ranks))
    s = -(-sampled // costs.ranks)
    stages[-1] += _linear(costs, costs.rows.head, s)
    stages[-1, _AT["tp"]] += float(np.sum(costs.all_gather(np.array([s * costs.vocab * ACT]))))
    stages[-1, _AT["scheduler"]] += max(0.0, costs.cal.scheduler_step - float(stages.sum()))
    total = stages.sum(axis=0)
    total[_AT["pp"]] += (costs.pp - 1) * costs.pp_hop(costs.busiest(new, ranks))
    return {name: float(v) for name, v in zip(BREAKDOWN, total)}


def step_summary(scn, costs: StepCosts, fabric: Fabric) -> StepSummary:
    """The StepSummary of a serve scenario."""
    w, model, lay = scn.workload, scn.model, scn.layout
    batch = w.batch * costs.ranks  # sequences of one replica (an MoE EP unit: every attention replica's)
    busiest = -(-batch // costs.ranks)
    context = int(w.prompt_len + w.output_len / 2)
    moe = costs.moe
    ep = float(moe.stage_moe.sum()) * float(np.sum(moe.a2a_ll(np.array([busiest]))[0])) if moe else 0.0
    comm = {"tp": float(costs.stage_layers.sum()) * costs.tp_comm(busiest),
            "pp": (costs.pp - 1) * costs.pp_hop(busiest), "dp": 0.0, "ep": ep, "cp": 0.0}
    devices = replica_devices(scn)
    tiers = {"nvlink": 0.0, "scaleout": 0.0}
    if lay.tp > 1:  # two all-reduces a layer, each rank sending 2 (tp - 1) / tp of the activations
        d = int(fabric.profile(devices[0, 0][None])[1][0])
        tiers["nvlink" if d == 1 else "scaleout"] += 2 * model.layers * 2 * (lay.tp - 1) * model.hidden * ACT
    for t in fabric.tier(devices[0, :-1, 0], devices[0, 1:, 0]) if lay.pp > 1 else ():
        tiers[str(t)] += model.hidden * ACT
    if moe is not None:
        for tier, per_layer in moe.ep_bytes.items():
            tiers[tier] += per_layer * float(moe.stage_moe.sum())
    decode = (np.ones(batch), np.full(batch, float(context)), batch)
    prefill = (np.array([float(w.prompt_len)]), np.zeros(1), 1)
    return StepSummary(prefill_s=costs.prefill(w.prompt_len), decode_step_s=costs.decode_step(batch, context),
                       decode_bound=costs.decode_bound(batch), comm_s=comm, flops_per_token=costs.flops_per_token(),
                       head_flops_per_token=2.0 * model.vocab * model.hidden, bytes_per_token=tiers,
                       breakdown={"decode": step_breakdown(costs, *decode), "prefill": step_breakdown(costs, *prefill)})
