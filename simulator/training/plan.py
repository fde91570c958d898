"""Schedule + placement + costs -> Plan: every task's duration and every transfer's cost, as arrays.

Durations are per (device, chunk) of the simulated pipeline (one replica; TP ranks and DP replicas
are symmetric) and computed before the engine runs. A task's time is its operators' roofline times
plus the tensor-parallel and context-parallel communication left exposed (DESIGN.md section 4):
forward TP collectives sit on the critical path; in the backward pass the collectives of the
column-parallel input gradients overlap the weight-gradient GEMMs (Megatron's async all-reduce),
unless the schedule moves those GEMMs to a separate W task.

Mixture-of-experts models (and MLA ones) cost the attention half of a layer as above and add the FFN
half layer by layer (simulator.moe.costs: the slowest EP rank's experts, the all-to-all dispatch and
combine). The all-to-all is exposed in plain tasks; an overlapped F&B pair (DualPipe) hides it behind
the other half's compute: the pair lasts max(both computes, both all-to-alls). layout.ep_overlap runs the
schedule's steady state as Megatron-Core's combined 1F1B pairs: four steps, each one half's attention or MLP beside
the other half's dispatch or combine (cost.pipeline.combined_pairs); TP and CP communication count as compute there,
where DualPipe's pairs hide them too, pooled.

The cost functions live in simulator.cost.pipeline and take a leading candidate axis: make_plan is their
one-candidate case; the layout search calls the same functions with K candidate layouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cost import calibration, mtp, offload
from ..cost.fabric import Fabric
from ..cost.memory import Memory, grad_bytes, optimizer_bytes, param_bytes, scenario_state_bytes
from ..cost.ops import ACT_BYTES, BLOCK_EMBED, BLOCK_HEAD, BLOCK_LAYER, OpTable, layer_shape
from ..cost.params import model_flops_per_token
from ..cost.pipeline import (
    PASS_FIELDS, adam_bytes, backward_tasks, bucket_params, data_parallel, device_memory, device_params,
    exposed_param_gather, fb_pairs, layer_costs, pair_times, pass_grid, scenario_layer_keys, sends, stage_grid,
    zero3_passes
)
from ..cost.placement import Placement, shard_counts, shard_split, split_layers
from ..moe.costs import MoECosts
from ..schedules import SPECS, combined, in_flight
from . import halves as moe_plan


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
    pairs_hide_tp: bool = True  # an F&B pair hides its halves' TP and CP communication (DualPipe; not ep_overlap)
    ep_scaleout: np.ndarray | None = None  # (p, v, 2) share of exposed_ep's F, B bound by the scale-out tier
    moe: MoECosts | None = None
    task_scale: np.ndarray | None = None  # (tasks,) duration multiplier per task in schedule order (faults)
    offload: dict | None = None  # layout.offload's figures (offload_figures)
    comm_sms: float = 0.0  # SM share a collective holds beside compute: the gradient reduction slows the last backward
    grad_reduce_after: bool = False  # the gradient reduction starts when the stage's last task ends (not overlapped)


def mesh_ranks(scn) -> int:
    """GPUs the mesh uses: tp*pp*dp*cp (scn.gpus for a loaded scenario; fewer after a relayout)."""
    lay = scn.layout
    return lay.tp * lay.pp * lay.dp * lay.cp


def make_plan(scn, ops: OpTable, placement: Placement, fabric: Fabric, anchor: int = 0) -> Plan:
    """The Plan of a training step: schedule, task durations, sends, DP and optimizer costs (the
    step_costs functions with one candidate).

    `anchor`: a device of the replica simulated (its pipeline and TP group); replicas are symmetric,
    so any one serves, and a fault names the one that holds the faulty GPU."""
    cal = calibration.for_training(scn)
    lay, model = scn.layout, scn.model
    table = SPECS[lay.schedule].table(lay.pp, scn.micro_batches, lay.chunks)
    if lay.ep_overlap:
        table = combined(table)
    devices = placement.pipeline(anchor)
    t = _task_times(scn, ops, placement, fabric, cal, table, anchor)
    f, b, off = t.f, t.b, lay.offload
    copies, copy_exposed = None, 0.0
    if off is not None and off.activations_layers:  # copies beside each task's compute (cost.offload)
        f, b, copies, copy_exposed = _offload_activations(scn, t, table, f, b)
    send, send_tier = (x[0] for x in sends(table.routes, devices[None], t.lc.send_bytes, t.lc.send_gather, fabric, cal))
    params, dp_parts, split_params = _replica_parts(scn, t, table, placement, devices)
    dp_time, dp_tier, gather_time, adam = replica_costs(scn, dp_parts, fabric, cal)
    opt = adam if off is None else _offloaded_optimizer(scn, adam, cal)
    if lay.zero >= 3:  # parameters re-gathered over the shard group for every pass, prefetched beside compute
        ag = fabric.collective("all_gather", params * param_bytes(scn), dp_parts[0][1], cal)
        f, b = zero3_passes(f, ag, cal), zero3_passes(b, ag, cal)
    fb, moe_fields = _pair_costs(scn, t, f, b, cal)
    act_bytes, zeros = float(t.lc.send_bytes[0]), np.zeros_like(f)
    split, costs = t.half is not None, t.costs
    return Plan(
        table=table, devices=devices, f=f, b=b, w=t.w, fb=fb, pairs_hide_tp=not lay.ep_overlap,
        exposed_tp=np.stack([t.f_tp, t.b_tp, zeros], axis=-1),
        exposed_cp=np.stack([t.f_cp, t.b_cp, zeros], axis=-1), send=send, send_tier=send_tier,
        send_bytes=act_bytes, dp=dp_time, dp_tier=dp_tier,
        param_gather=exposed_param_gather(gather_time, f[:, 0], table.v, lay.overlap_param_gather, cal),
        optimizer=opt, comm_sms=cal.comm_sms, grad_reduce_after=not scn.overlap_grad_reduce,
        memory=(moe_plan.split_memory(scn, table, *split_params, t.passes, placement, costs, t.stage_layers)
                if split else _memory(scn, table, params, t.passes, placement, t.lc.activations)),
        traffic=step_traffic(scn, table, act_bytes, send_tier, dp_parts, placement, fabric, t.grid,
                             moe_plan.ep_traffic(scn, table, costs, t.stage_layers) if costs else None),
        model_flops=scn.workload.global_batch * scn.workload.seq_len
        * model_flops_per_token(model, scn.workload.seq_len),
        hardware_flops=(moe_plan.hardware_flops(scn, ops, costs) if split
                        else hardware_flops(scn, table, ops, t.passes, t.module_grid if t.depth else None)),
        offload=None if off is None else offload_figures(off, copies, copy_exposed, adam, opt),
        **moe_fields,
    )


@dataclass(frozen=True, kw_only=True)
class _Tasks:
    """One pipeline's task seconds (p, v) before offload, ZeRO-3 and F&B pairing, with the grids they came from."""

    stage_layers: list  # layers of each stage (an MTP module's layer counted as one of its stage)
    grid: tuple  # stage_grid: layer, embedding and head passes (p, v) each
    passes: tuple  # grid with the MTP modules' embedding and head passes again
    module_grid: np.ndarray  # (p, v) MTP modules
    depth: int  # MTP depth (0: none)
    lc: object  # layer_costs of the layer keys
    f: np.ndarray
    b: np.ndarray
    w: np.ndarray
    f_tp: np.ndarray  # exposed TP seconds inside f, b; CP's
    b_tp: np.ndarray
    f_cp: np.ndarray
    b_cp: np.ndarray
    costs: MoECosts | None = None  # MoE: the FFN half's costs
    half: np.ndarray | None = None  # (p, v, 7) MoE or MLA: the FFN half's F, B, W, all-to-all F, B, scale-out F, B


def _task_times(scn, ops: OpTable, placement: Placement, fabric: Fabric, cal, table, anchor: int) -> _Tasks:
    """The _Tasks of one pipeline: layer costs on the schedule's grid, MTP modules, and for MoE and MLA models the
    FFN half layer by layer (halves.ffn_half), its all-to-all inside F and B."""
    lay, model = scn.layout, scn.model
    keys = scenario_layer_keys(scn, ops, fabric, placement.group_of("tp", anchor), placement.group_of("cp", anchor),
                               table.split_backward)
    lc = layer_costs(scn, keys, fabric, cal)
    stage_layers = split_layers(model.layers, table.routes.shape[1], lay.stage_layers)
    depth, modules = mtp.depth(model), mtp.stage_modules(scn, len(stage_layers))
    stage_layers = stage_layers + modules  # an MTP module's layer counts as one of its stage (cost.mtp)
    grid = stage_grid(table.routes, stage_layers)
    module_grid = stage_grid(table.routes, modules)[0]
    passes = mtp.time_grid(grid, module_grid, depth) if depth else grid  # embedding and head run again
    f, b, w, f_tp, b_tp, f_cp, b_cp = (pass_grid(lc.passes, k, *passes)[0] for k in range(len(PASS_FIELDS)))
    if depth:
        proj = mtp.projection_seconds(scn, cal)
        f, b, w = f + module_grid * proj[0], b + module_grid * proj[1], w + module_grid * proj[2]
    costs = half = None
    if model.moe is not None or model.mla is not None:  # attention and FFN halves costed apart
        costs, per_layer = moe_plan.ffn_half(scn, ops, placement, fabric, cal)
        half = moe_plan.layer_grid(table, stage_layers, per_layer)
        f, b, w = f + half[..., 0] + half[..., 3], b + half[..., 1] + half[..., 4], w + half[..., 2]
    b, w = backward_tasks(b, w, table.split_backward)
    return _Tasks(stage_layers=stage_layers, grid=grid, passes=passes, module_grid=module_grid, depth=depth, lc=lc,
                  f=f, b=b, w=w, f_tp=f_tp, b_tp=b_tp, f_cp=f_cp, b_cp=b_cp, costs=costs, half=half)


def _offload_activations(scn, t: _Tasks, table, f, b) -> tuple:
    """(f, b, copy seconds, exposed copy seconds) with layout.offload's activation copies beside the tasks."""
    off = scn.layout.offload
    chunk_bytes = (moe_plan.layer_grid(table, t.stage_layers, moe_plan.layer_activations(scn, t.costs))
                   if t.half is not None else t.grid[0] * t.lc.activations[0, 0])
    copies = offload.activation_copies(chunk_bytes, offload.offloaded_share(t.grid[0], off.activations_layers),
                                       scn.topology.device.host_link)
    exposed = offload.exposed_seconds(f, b, copies, chunk_micro_batches(table))
    return offload.hide(f, copies), offload.hide(b, copies), copies, exposed


def _replica_parts(scn, t: _Tasks, table, placement: Placement, devices) -> tuple:
    """(parameters (p,), the data-parallel parts (hybrid_shards), (dense, expert) parameters or ()): an MoE
    model's experts reduced over their own replicas."""
    params = device_params(scn.model, scn.layout.tp, *t.grid)
    if t.depth:
        params = params + mtp.extra_params(scn.model, scn.layout.tp, t.grid, t.module_grid)
    parts, split = [(params, placement.weight_replicas(devices))], ()
    if t.half is not None:
        split = moe_plan.split_params(scn, params, table, t.stage_layers)
        params = split[0] + split[1]
        parts = [(split[0], parts[0][1]), (split[1], placement.expert_replicas(devices))]
    return params, hybrid_shards(scn, parts, devices), split


def _offloaded_optimizer(scn, adam, cal):
    """(p,) optimizer seconds with layout.offload's optimizer state in host memory (`adam`: on HBM)."""
    lay, dev = scn.layout, scn.topology.device
    return offload.optimizer_seconds(lay.offload.optimizer, adam, dev.hbm_bandwidth * cal.hbm, dev.host_link,
                                     dev.host_memory_bandwidth, grad_bytes(lay), optimizer_bytes(lay), adam_bytes(lay))


def _pair_costs(scn, t: _Tasks, f, b, cal) -> tuple:
    """(fb (p, v, v) F&B pair seconds, the Plan's MoE fields): Megatron-Core's combined 1F1B under
    layout.ep_overlap, the all-to-alls step by step beside the other half's blocks; else DualPipe's pairs, their
    communication (TP, CP, EP) behind both computes, pooled."""
    half = t.half
    ep_f, ep_b = (half[..., 3], half[..., 4]) if half is not None else (0.0, 0.0)
    if scn.layout.ep_overlap:
        fb = moe_plan.combined_fb(scn, f, b, half[..., :3], half[..., 3:5], cal)
        surplus = fb - pair_times(f - ep_f, b - ep_b)
    else:
        fb, compute, comm = fb_pairs(f, b, t.f_tp + t.f_cp + ep_f, t.b_tp + t.b_cp + ep_b, cal)
        surplus = comm - compute
    if half is None:
        return fb, {}
    exposed = np.minimum(np.maximum(surplus, 0.0), pair_times(ep_f, ep_b))
    return fb, dict(exposed_ep=np.stack([ep_f, ep_b, np.zeros_like(f)], axis=-1), exposed_ep_pair=exposed,
                    ep_scaleout=half[..., 5:7], moe=t.costs)


def hybrid_shards(scn, parts, devices) -> list:
    """The data-parallel parts as (parameters (p,), groups (p, n), cross groups (p, m) or None): each part's
    replica groups, or under hybrid sharding (layout.shard_group) each cut into dp*cp/shard_group shard
    groups (cost.placement.shard_split): state sharded inside a group, gradient shards all-reduced across."""
    lay = scn.layout
    groups = 1 if lay.shard_group is None else lay.dp * lay.cp // lay.shard_group
    if groups == 1:
        return [(params, replicas, None) for params, replicas in parts]
    return [(params, *shard_split(replicas, devices, replicas.shape[1] // groups)) for params, replicas in parts]


def offload_figures(off, copies, exposed: float, adam, opt) -> dict:
    """The report's extra.offload: layers offloaded, the longest chunk's copy one way (s), the copies' exposed
    seconds a step (mean over stages), the optimizer's mode and seconds against Adam on HBM (busiest stage)."""
    return {"activations_layers": off.activations_layers,
            "copy_s_per_micro_batch": float(copies.max()) if copies is not None else 0.0,
            "exposed_s": exposed, "optimizer": off.optimizer, "optimizer_s": float(np.max(opt)),
            "optimizer_on_hbm_s": float(np.max(adam))}


def replica_costs(scn, parts, fabric: Fabric, cal):
    """(dp seconds, dp tier, parameter-gather seconds, optimizer seconds), (p,) each, of one pipeline:
    data_parallel of each (parameters (p,), replica or shard groups (p, n), cross groups or None) part
    (hybrid_shards), reduced one after the other (dense parameters over all data-parallel ranks; an MoE
    model's experts over their own replicas)."""
    lay = scn.layout
    sharded = np.array([lay.zero >= 1 or lay.distributed_optimizer])
    profile = lambda groups: tuple(x[None] for x in fabric.profile(groups))  # noqa: E731
    bucket = bucket_params(lay, [lay.dp * lay.cp])
    out = [[x[0] for x in data_parallel(params[None], profile(groups), [groups.shape[1]], sharded, fabric, cal,
                                        scn.topology.device.hbm_bandwidth, grad_bytes(lay),
                                        None if cross is None else profile(cross), bucket, param_bytes(scn),
                                        adam_bytes(lay))]
           for params, groups, cross in parts]
    if len(out) == 1:
        return tuple(out[0][:4])
    return (sum(o[0] for o in out), np.max([o[1] for o in out], axis=0), sum(o[2] for o in out),
            sum(o[3] for o in out))


def _memory(scn, table, params, grid, placement: Placement, activations) -> Memory:
    """device_memory of one pipeline as a Memory: dense parameters, state sharded over dp * cp (or a shard
    group)."""
    lay = scn.layout
    replicas = shard_counts(lay)[0]
    state = offload.hbm_state(scenario_state_bytes(scn, replicas), lay.offload)
    layers, activations = offload.kept_layers(grid[0], activations, lay.offload)
    mem = device_memory(params[None], np.array([state]), activations, in_flight(table)[None], layers, grid[2])
    return Memory(**{k: float(mem[k][0]) for k in ("weights", "gradients", "optimizer", "activations")},
                  kv_cache=0.0, capacity=scn.topology.device.hbm_bytes)


def chunk_micro_batches(table) -> np.ndarray:
    """(p, v) micro-batches that pass through each device's chunk in one step (DualPipe's two
    directions each carry their own half; ZB-V's V passes every micro-batch through both chunks)."""
    counts = np.zeros((table.p, table.v))
    per_direction = np.bincount(table.direction, minlength=table.routes.shape[0])
    for route, n in zip(table.routes, per_direction):
        counts[route[:, 0], route[:, 1]] += n
    return counts


def hardware_flops(scn, table, ops: OpTable, grid, modules=None) -> float:
    """FLOP per step with recompute (for HFU), counted as MFU counts them: attention in full,
    backward twice the forward, plus the forward work that recompute repeats; `modules` (p, v): the
    MTP modules' projections (their layers, embedding and head passes are in `grid`)."""
    counts = chunk_micro_batches(table)
    layers, embed, head = ((g * counts).sum() for g in grid)  # layer- and block-passes per step
    fwd = ops.model_flops_f
    layer = ops.block == BLOCK_LAYER
    redo = {"full": fwd[layer].sum(), "selective": fwd[layer & ops.selective].sum(),
            "none": 0.0}[scn.workload.recompute]
    per_mb = (layers * (3 * fwd[layer].sum() + redo) + embed * 3 * fwd[ops.block == BLOCK_EMBED].sum()
              + head * 3 * fwd[ops.block == BLOCK_HEAD].sum())
    if modules is not None:
        per_mb = per_mb + (modules * counts).sum() * 3 * mtp.projection_flops(scn)
    replicas = mesh_ranks(scn) // (scn.layout.pp * scn.layout.tp)
    return float(per_mb * scn.layout.tp * replicas)


def step_traffic(scn, table, act_bytes, send_tier, dp_parts, placement: Placement, fabric: Fabric,
                 grid, ep=None) -> dict:
    """Bytes sent per step, all GPUs, by tier ("nvlink", "scaleout"), and per stage rank by tier.

    Ring collectives send (n-1)/n of the buffer per phase; a hierarchical one sends (k-1)/k of it on
    NVLink per intra-domain phase and (d-1)/d of S/k on the NICs. Under hybrid sharding the gradient
    shard (1/shard_group of the gradients) is all-reduced across the shard groups besides. `ep`: (mean,
    busiest) all-to-all bytes per stage rank (p, 2) of an MoE model; "ep" then holds its share and
    "per_rank_peak" the busiest EP rank's links.
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
    sharded = lay.zero >= 1 or lay.distributed_optimizer  # RS gradients + AG parameters, else AR (2 phases)
    grads = grad_bytes(lay)
    for params, groups, cross in dp_parts:
        dp_bytes = params * (grads + param_bytes(scn) if sharded else 2 * grads)
        per_rank += _split_by_tier(fabric, groups, dp_bytes)
        if cross is not None:  # hybrid sharding: the gradient shard all-reduced across shard groups
            per_rank += _split_by_tier(fabric, cross, 2 * grads * params / groups.shape[1])
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
