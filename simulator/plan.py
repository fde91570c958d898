"""Schedule + placement + costs -> Plan: every task's duration and every transfer's cost, as arrays.

Durations are per (device, chunk) of the simulated pipeline (one replica; TP ranks and DP replicas
are symmetric) and computed before the engine runs. A task's time is its operators' roofline times
plus the tensor-parallel and context-parallel communication left exposed (DESIGN.md section 4):
forward TP collectives sit on the critical path; in the backward pass the collectives of the
column-parallel input gradients overlap the weight-gradient GEMMs (Megatron's async all-reduce),
unless the schedule moves those GEMMs to a separate W task.

Mixture-of-experts models (and MLA ones) cost the attention half of a layer as above and add the FFN
half layer by layer (simulator.moe: the slowest EP rank's experts, the all-to-all dispatch and
combine). The all-to-all is exposed in plain tasks; an overlapped F&B pair (DualPipe) hides it behind
the other half's compute: the pair lasts max(both computes, both all-to-alls).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import calibration, roofline
from .fabric import Fabric
from .layouts import RECOMPUTE_NAMES
from . import moe_plan
from .memory import Memory, activation_bytes_per_layer, head_activation_bytes, state_bytes_per_param
from .model import (ACT_BYTES, BLOCK_EMBED, BLOCK_HEAD, BLOCK_LAYER, OpTable, build_op_table, layer_shape,
                    model_flops_per_token, parameter_counts)
from .moe import MoECosts
from .placement import Placement, split_layers
from .schedules import SCHEDULES, in_flight

ADAM_BYTES_PER_PARAM = 30.0  # fp32 master, momentum, variance read+written, fp32 grad read, bf16 write
GRAD_COMM_BYTES, PARAM_COMM_BYTES = 4.0, 2.0  # fp32 gradient reduction (Megatron), bf16 gather


@dataclass(frozen=True, kw_only=True)
class PassTimes:
    """Seconds per layer (or per edge block) of one micro-batch, with the exposed comm inside."""

    f: float
    b: float
    w: float
    f_tp: float  # exposed TP seconds inside f
    b_tp: float
    f_cp: float  # exposed CP seconds inside f
    b_cp: float


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What the engine runs: a schedule and every cost it needs (seconds, bytes)."""

    table: object  # ScheduleTable
    devices: np.ndarray  # device index of each pipeline stage
    f: np.ndarray  # (p, v) seconds of one micro-batch's forward on each device and chunk
    b: np.ndarray  # (p, v) input-gradient (or full backward) seconds
    w: np.ndarray  # (p, v) weight-gradient seconds (0 when the schedule does not split)
    fb: np.ndarray  # (p, v, v) overlapped F(chunk i) & B(chunk j) pair seconds (DualPipe)
    exposed_tp: np.ndarray  # (p, v, 3) exposed TP seconds inside F, B, W
    exposed_cp: np.ndarray  # (p, v, 3)
    send: np.ndarray  # (p, v, 2) seconds to pass activations forward / gradients backward
    send_tier: np.ndarray  # (p, v, 2) 0 none, 1 nvlink, 2 scaleout
    send_bytes: float  # bytes per stage boundary per micro-batch per rank
    dp: np.ndarray  # (p,) seconds of the gradient reduction (overlaps the last backward)
    dp_tier: np.ndarray  # (p,) 1 nvlink, 2 scaleout
    param_gather: np.ndarray  # (p,) exposed seconds of the parameter all-gather after the step
    optimizer: np.ndarray  # (p,) seconds of the optimizer step
    memory: Memory
    traffic: dict  # bytes per step per tier, all GPUs
    model_flops: float  # FLOP per step, MFU's count
    hardware_flops: float  # FLOP per step including recompute
    exposed_ep: np.ndarray | None = None  # (p, v, 3) all-to-all seconds inside F, B, W (MoE)
    exposed_ep_pair: np.ndarray | None = None  # (p, v, v) all-to-all seconds an F&B pair leaves exposed
    ep_scaleout: np.ndarray | None = None  # (p, v, 2) share of exposed_ep's F, B bound by the scale-out tier
    moe: MoECosts | None = None
    task_scale: np.ndarray | None = None  # (tasks,) duration multiplier per task in schedule order (faults)


PASS_FIELDS = ("f", "b", "w", "f_tp", "b_tp", "f_cp", "b_cp")
BLOCKS = (BLOCK_EMBED, BLOCK_LAYER, BLOCK_HEAD)


def layer_pass_times(scn, ops: OpTable, fabric: Fabric, tp_group, cp_group, cal,
                     split: bool) -> dict[int, PassTimes]:
    """PassTimes of the embedding, one transformer layer and the head."""
    dev = scn.topology.device
    sums = block_seconds([ops], dev.peak_flops[scn.workload.dtype], dev.hbm_bandwidth, cal)
    sh = layer_shape(scn)
    size = sh.tokens * sh.hidden * ACT_BYTES
    comm = [fabric.collective(kind, size, tp_group[None], cal) for kind in ("all_reduce", "all_gather",
                                                                            "reduce_scatter")]
    lay = scn.layout
    kv_bytes = 2 * sh.tokens * sh.kv_heads * sh.head_dim * ACT_BYTES
    cp_ring = cp_ring_seconds(fabric, cal, np.array([lay.cp]), kv_bytes, cp_group[0], cp_group[1 % lay.cp])
    rec = np.array([RECOMPUTE_NAMES.index(scn.workload.recompute)])
    table = pass_table(sums, comm, cp_ring, rec, np.array([lay.sequence_parallel]), np.array([split]))[0]
    return {blk: PassTimes(**{k: float(x) for k, x in zip(PASS_FIELDS, row)}) for blk, row in zip(BLOCKS, table)}


def block_seconds(tables: list[OpTable], peak: float, hbm: float, cal) -> np.ndarray:
    """(tables, 3 blocks, 5) roofline seconds of the embedding, one layer and the head: F, B, W, and
    F, B of the selective-recompute ops; tables of one model (the same operators, other sizes)."""
    first = tables[0]
    fused = np.array([n == "attention" for n in first.name])
    stack = lambda k: np.stack([getattr(t, k) for t in tables])  # noqa: E731
    gemm = stack("gemm")
    times = [roofline.op_times(stack("flops_" + x), stack("bytes_" + x), gemm, peak, hbm, cal, fused)
             for x in "fbw"]
    out = np.zeros((len(tables), 3, 5))
    for i, block in enumerate(BLOCKS):
        ops = np.nonzero(first.block == block)[0]
        sel = np.nonzero((first.block == block) & first.selective)[0]
        # np.take keeps each table's ops contiguous: every sum is that table's 1-D sum, bit for bit
        out[:, i] = np.stack([np.take(t, ops, axis=1).sum(axis=1) for t in times]
                             + [np.take(t, sel, axis=1).sum(axis=1) for t in times[:2]], axis=1)
    return out


def pass_table(sums: np.ndarray, comm, cp_ring, recompute, sp, split) -> np.ndarray:
    """(K, 3 blocks, 7 PASS_FIELDS) seconds per layer or edge block, exposed TP and CP inside; sums:
    (K, 3, 5) block_seconds; comm: (all-reduce, all-gather, reduce-scatter) seconds of one
    activation over the TP group, (K,) each; cp_ring: (forward, backward) K/V ring seconds (K,);
    recompute: (K,) index of none / selective / full; sp, split: (K,) bool."""
    ar, ag, rs = comm
    f, b, w, attn_f, attn_b = (sums[:, 1, j] for j in range(5))
    comm_f = np.where(sp, 2 * (ag + rs), 2 * ar)  # per layer forward, exposed
    comm_b_exposed = np.where(sp, 2 * ag, 0.0)
    comm_b_overlap = np.where(sp, 2 * (rs + ag), 2 * ar)
    ecp_f, ecp_b = np.maximum(0.0, cp_ring[0] - attn_f), np.maximum(0.0, cp_ring[1] - attn_b)
    redo = np.where(recompute == 2, f + ecp_f, np.where(recompute == 1, attn_f, 0.0))
    redo_tp = np.where(recompute == 2, comm_f, 0.0)
    hidden_b = np.where(split, 0.0, np.minimum(comm_b_overlap, w))
    b_tp = comm_b_exposed + comm_b_overlap - hidden_b + redo_tp
    layer = [f + comm_f + ecp_f, b + redo + b_tp + ecp_b, w, comm_f, b_tp, ecp_f, ecp_b]
    out = np.zeros((len(f), 3, 7))
    out[:, 1] = np.stack(layer, axis=1)
    for i, edge in ((0, np.where(sp, rs, ar)), (2, np.where(sp, ag, 0.0))):
        out[:, i, :5] = np.stack([sums[:, i, 0] + edge, sums[:, i, 1] + edge, sums[:, i, 2], edge, edge], axis=1)
    return out


def cp_ring_seconds(fabric: Fabric, cal, cp, kv_bytes, src, dst) -> tuple[np.ndarray, np.ndarray]:
    """(forward, backward) seconds of context parallelism's K/V ring per layer, (K,) each: forward passes
    K and V (cp-1) times, backward passes K, V and their gradients; kv_bytes per hop from src to dst."""
    hop = fabric.p2p(kv_bytes, src, dst, cal)
    return np.where(cp > 1, (cp - 1) * hop, 0.0), np.where(cp > 1, 2 * (cp - 1) * hop, 0.0)


def stage_grid(table, stage_layers: np.ndarray):
    """(p, v) arrays: transformer layers, embedding flag and head flag of each device's chunk."""
    p, v = table.p, table.v
    layers, embed, head = np.zeros((p, v)), np.zeros((p, v)), np.zeros((p, v))
    for route in table.routes:
        dev, chunk = route[:, 0], route[:, 1]
        layers[dev, chunk] = stage_layers
        embed[dev[0], chunk[0]] = 1
        head[dev[-1], chunk[-1]] = 1
    return layers, embed, head


def chunk_micro_batches(table) -> np.ndarray:
    """(p, v) micro-batches that pass through each device's chunk in one step (DualPipe's two
    directions each carry their own half; ZB-V's V passes every micro-batch through both chunks)."""
    counts = np.zeros((table.p, table.v))
    per_direction = np.bincount(table.direction, minlength=table.routes.shape[0])
    for route, n in zip(table.routes, per_direction):
        counts[route[:, 0], route[:, 1]] += n
    return counts


def pass_grid(times: dict[int, PassTimes], field: str, layers, embed, head) -> np.ndarray:
    """One PassTimes field summed over each device's chunk: layers x layer + edge blocks."""
    return (layers * getattr(times[BLOCK_LAYER], field) + embed * getattr(times[BLOCK_EMBED], field)
            + head * getattr(times[BLOCK_HEAD], field))


def sends(table, devices, nbytes: float, fabric: Fabric, cal, gather: float):
    """(p, v, 2) seconds and tiers of the forward (activation) and backward (gradient) sends."""
    send = np.zeros((table.p, table.v, 2))
    tier = np.zeros((table.p, table.v, 2), dtype=np.int8)
    for route in table.routes:
        for direction, (a, b) in enumerate(((route[:-1], route[1:]), (route[1:], route[:-1]))):
            moves = a[:, 0] != b[:, 0]
            src, dst = devices[a[moves, 0]], devices[b[moves, 0]]
            send[a[moves, 0], a[moves, 1], direction] = fabric.p2p(nbytes, src, dst, cal) + gather
            same = fabric.domain_of(src) == fabric.domain_of(dst)
            tier[a[moves, 0], a[moves, 1], direction] = np.where(same, 1, 2)
    return send, tier


def mesh_ranks(scn) -> int:
    """GPUs the mesh uses: tp*pp*dp*cp (scn.gpus for a loaded scenario; fewer after a relayout)."""
    lay = scn.layout
    return lay.tp * lay.pp * lay.dp * lay.cp


def make_plan(scn, ops: OpTable, placement: Placement, fabric: Fabric, anchor: int = 0) -> Plan:
    """The Plan of a training step: schedule, task durations, sends, DP and optimizer costs.

    `anchor`: a device of the replica simulated (its pipeline and TP group); replicas are symmetric,
    so any one serves, and a fault names the one that holds the faulty GPU."""
    cal = calibration.for_device(scn.topology.device)
    lay, model = scn.layout, scn.model
    table = SCHEDULES[lay.schedule](lay.pp, scn.micro_batches, lay.chunks)
    devices = placement.pipeline(anchor)
    tp_group, cp_group = placement.group_of("tp", anchor), placement.group_of("cp", anchor)
    times = layer_pass_times(scn, ops, fabric, tp_group, cp_group, cal, table.split_backward)
    stage_layers = split_layers(model.layers, table.routes.shape[1], lay.stage_layers)
    grid = stage_grid(table, stage_layers)
    f, b, w = (pass_grid(times, k, *grid) for k in ("f", "b", "w"))
    split = model.moe is not None or model.mla is not None  # attention and FFN halves costed apart
    costs = None
    if split:
        costs, per_layer = moe_plan.ffn_half(scn, ops, placement, fabric, cal)
        half = moe_plan.layer_grid(table, stage_layers, per_layer)  # (p, v, 7)
        ep, ep_so = half[..., 3:5], half[..., 5:7]
        f, b, w = f + half[..., 0] + ep[..., 0], b + half[..., 1] + ep[..., 1], w + half[..., 2]
    if not table.split_backward:
        b, w = b + w, np.zeros_like(w)
    exposed_tp = np.stack([pass_grid(times, "f_tp", *grid), pass_grid(times, "b_tp", *grid),
                           np.zeros_like(f)], axis=-1)
    exposed_cp = np.stack([pass_grid(times, "f_cp", *grid), pass_grid(times, "b_cp", *grid),
                           np.zeros_like(f)], axis=-1)
    sh = layer_shape(scn)
    act_bytes = sh.tokens * sh.hidden * ACT_BYTES / lay.tp
    gather = 0.0 if lay.sequence_parallel else float(
        fabric.collective("all_gather", act_bytes * lay.tp, tp_group[None], cal)[0])
    send, send_tier = sends(table, devices, act_bytes, fabric, cal, gather)
    params = device_params(model, lay.tp, *grid)
    dp_parts = [(params, placement.weight_replicas(devices))]
    if split:
        dense, expert = moe_plan.split_params(scn, params, table, stage_layers)
        params = dense + expert
        dp_parts = [(dense, dp_parts[0][1]), (expert, placement.replicas(devices, moe_plan.EXPERT_AXES))]
    dp_time, dp_tier, gather_time, opt = data_parallel(scn, dp_parts, fabric, cal)
    zero3 = lay.zero >= 3
    if zero3:  # parameters re-gathered for every forward and backward, prefetched behind compute
        ag = fabric.collective("all_gather", params * PARAM_COMM_BYTES,
                               placement.weight_replicas(devices), cal)[:, None]
        f, b = np.maximum(f, ag), np.maximum(b, ag)
    comm_f = exposed_tp[..., 0] + exposed_cp[..., 0] + (ep[..., 0] if split else 0.0)
    comm_b = exposed_tp[..., 1] + exposed_cp[..., 1] + (ep[..., 1] if split else 0.0)
    compute, comm = pair_times(f - comm_f, b - comm_b), pair_times(comm_f, comm_b)
    fb = np.maximum(compute, comm)
    moe_fields = {}
    if split:
        exposed = np.minimum(np.maximum(comm - compute, 0.0), pair_times(ep[..., 0], ep[..., 1]))
        moe_fields = dict(exposed_ep=np.stack([ep[..., 0], ep[..., 1], np.zeros_like(f)], axis=-1),
                          exposed_ep_pair=exposed, ep_scaleout=ep_so, moe=costs)
    return Plan(
        table=table, devices=devices, f=f, b=b, w=w, fb=np.maximum(fb, 0.0),
        exposed_tp=exposed_tp, exposed_cp=exposed_cp, send=send, send_tier=send_tier,
        send_bytes=act_bytes, dp=dp_time, dp_tier=dp_tier,
        param_gather=np.maximum(0.0, gather_time - f[:, 0]), optimizer=opt,
        memory=(moe_plan.split_memory(scn, table, dense, expert, grid, placement, costs, stage_layers)
                if split else device_memory(scn, table, params, grid, placement)),
        traffic=step_traffic(scn, table, act_bytes, send_tier, dp_parts, placement, fabric, grid,
                             moe_plan.ep_traffic(scn, table, costs, stage_layers) if costs else None),
        model_flops=scn.workload.global_batch * scn.workload.seq_len
        * model_flops_per_token(model, scn.workload.seq_len),
        hardware_flops=moe_plan.hardware_flops(scn, ops, costs) if split else hardware_flops(scn, table, ops, grid),
        **moe_fields,
    )


def pair_times(f_part: np.ndarray, b_part: np.ndarray) -> np.ndarray:
    """(p, v, v) seconds of a part of F of chunk i and of B of chunk j back to back. DualPipe's F&B
    pair lasts max(the two computes, the two communications: TP, CP and EP), each half's
    communication running behind the other half's compute."""
    return f_part[:, :, None] + b_part[:, None, :]


def device_params(model, tp: int, layers, embed, head) -> np.ndarray:
    """(p,) parameters held on one TP rank of each stage."""
    c = parameter_counts(model)
    tied = model.tied_embeddings
    head_params = c["embedding"] if tied else c["head"]
    per_chunk = layers * c["layer"] + embed * c["embedding"] + head * (head_params + c["final_norm"])
    shared = tied * embed.any(axis=1) * head.any(axis=1) * c["embedding"]  # one copy when co-located
    return (per_chunk.sum(axis=1) - shared) / tp


def data_parallel(scn, parts, fabric: Fabric, cal):
    """(dp seconds, dp tier, parameter-gather seconds, optimizer seconds), each (p,).

    `parts`: (parameters (p,), replica groups (p, n)) pairs, reduced one after the other (dense
    parameters over all data-parallel ranks; an MoE model's experts over their own replicas).
    ZeRO-0 all-reduces fp32 gradients; the distributed optimizer and ZeRO 1-3 reduce-scatter them
    and all-gather the updated bf16 parameters. Adam streams its state through HBM once.
    """
    lay = scn.layout
    sharded = lay.zero >= 1 or lay.distributed_optimizer
    hbm = scn.topology.device.hbm_bandwidth * cal.hbm
    out = []
    for params, groups in parts:
        grads = params * GRAD_COMM_BYTES
        if sharded:
            dp = fabric.collective("reduce_scatter", grads, groups, cal)
            gather = fabric.collective("all_gather", params * PARAM_COMM_BYTES, groups, cal)
        else:
            dp, gather = fabric.collective("all_reduce", grads, groups, cal), np.zeros(len(params))
        tier = np.where(fabric.profile(groups)[1] > 1, 2, 1)
        shard = groups.shape[1] if sharded else 1
        out.append((dp, tier, gather, params / shard * ADAM_BYTES_PER_PARAM / hbm))
    if len(out) == 1:
        return out[0]
    return (sum(o[0] for o in out), np.max([o[1] for o in out], axis=0), sum(o[2] for o in out),
            sum(o[3] for o in out))


def device_memory(scn, table, params, grid, placement: Placement) -> Memory:
    """Memory of the most loaded device of the pipeline."""
    lay, w, model = scn.layout, scn.workload, scn.model
    replicas = placement.sizes["dp"] * placement.sizes["ep"] * lay.cp
    per_param = state_bytes_per_param(replicas, lay.zero, lay.distributed_optimizer)
    layers, embed, head = grid
    sh = layer_shape(scn)
    kw = dict(tokens=sh.tokens, seq=w.seq_len, tp=lay.tp, sequence_parallel=lay.sequence_parallel,
              flash=sh.flash)
    per_layer = activation_bytes_per_layer(model, recompute=w.recompute, **kw)
    working = activation_bytes_per_layer(model, recompute="none", **kw) if w.recompute == "full" else 0.0
    chunk_layers = layers.sum(axis=1) / table.v
    acts = (in_flight(table) * chunk_layers * per_layer + working
            + head.any(axis=1) * head_activation_bytes(model, tokens=sh.tokens, tp=lay.tp))
    totals = params * sum(per_param) + acts
    d = int(np.argmax(totals))
    return Memory(weights=params[d] * per_param[0], gradients=params[d] * per_param[1],
                  optimizer=params[d] * per_param[2], activations=float(acts[d]), kv_cache=0.0,
                  capacity=scn.topology.device.hbm_bytes)


def hardware_flops(scn, table, ops: OpTable, grid) -> float:
    """FLOP per step with recompute (for HFU), counted as MFU counts them: attention in full,
    backward twice the forward, plus the forward work that recompute repeats."""
    counts = chunk_micro_batches(table)
    layers, embed, head = ((g * counts).sum() for g in grid)  # layer- and block-passes per step
    fwd = ops.model_flops_f
    layer = ops.block == BLOCK_LAYER
    redo = {"full": fwd[layer].sum(), "selective": fwd[layer & ops.selective].sum(),
            "none": 0.0}[scn.workload.recompute]
    per_mb = (layers * (3 * fwd[layer].sum() + redo) + embed * 3 * fwd[ops.block == BLOCK_EMBED].sum()
              + head * 3 * fwd[ops.block == BLOCK_HEAD].sum())
    replicas = mesh_ranks(scn) // (scn.layout.pp * scn.layout.tp)
    return float(per_mb * scn.layout.tp * replicas)


def step_traffic(scn, table, act_bytes, send_tier, dp_parts, placement: Placement, fabric: Fabric,
                 grid, ep=None) -> dict:
    """Bytes sent per step, all GPUs, by tier ("nvlink", "scaleout"), and per stage rank by tier.

    Ring collectives send (n-1)/n of the buffer per phase; a hierarchical one sends (k-1)/k of it on
    NVLink per intra-domain phase and (d-1)/d of S/k on the NICs. `ep`: (mean, busiest) all-to-all
    bytes per stage rank (p, 2) of an MoE model; "ep" then holds its share and "per_rank_peak" the
    busiest EP rank's links.
    """
    lay, counts = scn.layout, chunk_micro_batches(table)
    p = table.p
    per_rank = np.zeros((p, 2))  # bytes one rank of each stage sends: [nvlink, scaleout]
    for direction in (0, 1):  # pipeline sends, every micro-batch, forward and backward
        for tier in (1, 2):
            per_rank[:, tier - 1] += ((send_tier[..., direction] == tier) * counts).sum(axis=1) * act_bytes
    sh = layer_shape(scn)
    s = sh.tokens * sh.hidden * ACT_BYTES
    units = (4 + (6 if lay.sequence_parallel else 4) + (4 if scn.workload.recompute == "full" else 0))
    tp_bytes = (grid[0] * counts).sum(axis=1) * units * s * (lay.tp - 1) / max(lay.tp, 1)
    per_rank += _split_by_tier(fabric, placement.group_of("tp", 0)[None], tp_bytes)
    sharded = lay.zero >= 1 or lay.distributed_optimizer  # RS fp32 + AG bf16, else AR fp32 (2 phases)
    for params, groups in dp_parts:
        dp_bytes = params * (GRAD_COMM_BYTES + PARAM_COMM_BYTES if sharded else 2 * GRAD_COMM_BYTES)
        per_rank += _split_by_tier(fabric, groups, dp_bytes)
    ranks = mesh_ranks(scn) // p
    out = {}
    if ep is not None:
        out = {"ep": {"nvlink": float(ep[0][:, 0].sum() * ranks), "scaleout": float(ep[0][:, 1].sum() * ranks)},
               "per_rank_peak": per_rank + ep[1], "ep_per_rank": ep[0], "ep_per_rank_peak": ep[1]}
        per_rank = per_rank + ep[0]
    return {"nvlink": float(per_rank[:, 0].sum() * ranks), "scaleout": float(per_rank[:, 1].sum() * ranks),
            "per_rank": per_rank, **out}


def _split_by_tier(fabric: Fabric, groups: np.ndarray, buffer_bytes) -> np.ndarray:
    """(len(groups) or 1, 2) bytes per rank on [nvlink, scaleout] for ring phases moving `buffer_bytes`."""
    k, d, _ = fabric.profile(groups)
    buffer_bytes = np.asarray(buffer_bytes, float)
    intra = buffer_bytes * (k - 1) / np.maximum(k, 1)
    inter = buffer_bytes / np.maximum(k, 1) * (d - 1) / np.maximum(d, 1)
    return np.stack([intra, inter], axis=-1) * np.ones((1, 1))
