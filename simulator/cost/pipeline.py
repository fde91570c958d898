"""What a training step costs, for K candidate layouts at once: the physics core of plan and search.

Every function takes a leading candidate axis: make_plan (simulator.training.plan) calls them with one
candidate, the layout search (simulator.whatif.candidates, simulator.whatif.analytic) with K, so each formula
exists once. Per layer key (tensor, context and sequence parallelism, micro-batch, recompute, split
backward, the TP group's and CP ring's placement): roofline seconds of the embedding, a layer and the
head with the exposed TP and CP communication inside (DESIGN.md section 4), send bytes, activation
bytes. Per pipeline (K, p, v): pass seconds summed over each device's chunks, sends between stages,
DualPipe's overlapped F&B pairs, ZeRO-3's gathers. Per stage (K, p): parameters, the data-parallel
reduction, parameter gather and Adam, and the memory of the most loaded device. Units: seconds,
bytes, parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..scenario.base import RECOMPUTE_NAMES
from . import roofline
from .fabric import Fabric
from .memory import OPTIMIZER_BYTES, activation_bytes_per_layer, head_activation_bytes, optimizer_bytes, reserved_bytes
from .ops import ACT_BYTES, BLOCK_EMBED, BLOCK_HEAD, BLOCK_LAYER, FUSED_ATTENTION, OpTable, layer_shape, operand_bytes
from .params import parameter_counts

ADAM_BYTES_PER_PARAM = 38.0
"""HBM bytes the optimizer step moves per parameter of a shard: Adam reads and writes fp32 master,
momentum and variance (24), reads the fp32 gradient (4) and writes the bf16 weight (2); gradient
clipping reads the gradient once more for the global norm (4) and the gradient buffer is zeroed for the
next step (4). With bf16 moments (adam_bytes) each moment is read and written at 2 bytes: 30."""
GRAD_COMM_BYTES, PARAM_COMM_BYTES = 4.0, 2.0  # fp32 gradient reduction (Megatron), bf16 gather
BUCKET_PARAMS_MIN, BUCKET_PARAMS_PER_RANK = 40e6, 1e6
"""Megatron-Core's default gradient bucket, max(40M, 1M x data-parallel ranks) parameters
(megatron/core/distributed/distributed_data_parallel_config.py, bucket_size: "larger DP sizes need larger buckets
to ensure collectives do not become latency-bound")."""
PASS_FIELDS = ("f", "b", "w", "f_tp", "b_tp", "f_cp", "b_cp")
BLOCKS = (BLOCK_EMBED, BLOCK_LAYER, BLOCK_HEAD)


@dataclass(frozen=True, kw_only=True)
class LayerKeys:
    """K layer configurations, (K,) arrays: what the seconds and bytes of one layer depend on."""

    ops: list  # distinct OpTables (one model's operators at other sizes), with their LayerShapes:
    shapes: list
    which: np.ndarray  # index of each key's OpTable
    tp: np.ndarray
    cp: np.ndarray
    sp: np.ndarray  # bool: sequence parallelism
    recompute: np.ndarray  # index into RECOMPUTE_NAMES
    split: np.ndarray  # bool: the schedule splits the backward into B and W
    tp_profile: tuple  # (k, d, crosses): Fabric.profile of each key's TP group
    cp_hop: tuple  # (src, dst) devices of one hop of each key's CP ring


@dataclass(frozen=True, kw_only=True)
class LayerCosts:
    """What one micro-batch costs on one layer and on the edge blocks, per layer key."""

    passes: np.ndarray  # (K, 3 blocks: embedding, layer, head, 7 PASS_FIELDS) seconds, exposed comm inside
    send_bytes: np.ndarray  # (K,) activation bytes a stage sends per micro-batch per TP rank
    send_gather: np.ndarray  # (K,) seconds of the TP all-gather before a send (0 with sequence parallelism)
    activations: np.ndarray  # (K, 3) bytes: kept per layer, full recompute's working layer, the head's


def scenario_layer_keys(scn, ops: OpTable, fabric: Fabric, tp_group, cp_group, split: bool) -> LayerKeys:
    """The one LayerKeys of a scenario, with its explicit TP group and CP ring (device arrays)."""
    lay = scn.layout
    one = lambda x: np.array([x])  # noqa: E731
    return LayerKeys(ops=[ops], shapes=[layer_shape(scn)], which=one(0), tp=one(lay.tp), cp=one(lay.cp),
                     sp=one(lay.sequence_parallel), recompute=one(RECOMPUTE_NAMES.index(scn.workload.recompute)),
                     split=one(split), tp_profile=fabric.profile(tp_group[None]),
                     cp_hop=(one(cp_group[0]), one(cp_group[1 % lay.cp])))


def layer_costs(scn, keys: LayerKeys, fabric: Fabric, cal) -> LayerCosts:
    """Seconds and bytes of the embedding, one transformer layer and the head for each layer key."""
    dev = scn.topology.device
    first = [int(np.argmax(keys.which == i)) for i in range(len(keys.ops))]  # a key of each table: its tp and sp
    chunks = [overlap_chunks(t, int(keys.tp[j]), scn.tp_overlap and bool(keys.sp[j]))
              for t, j in zip(keys.ops, first)]
    sums = block_seconds(keys.ops, dev.peak(scn.workload.dtype), dev.hbm_bandwidth, cal,
                         roofline.attention_peak(dev), chunks)[keys.which]
    shape = lambda name: np.array([getattr(sh, name) for sh in keys.shapes])[keys.which]  # noqa: E731
    tokens = shape("tokens")
    size = tokens * shape("hidden") * ACT_BYTES  # one activation, all TP ranks
    act = size / keys.tp
    tp_coll = lambda kind, nbytes: fabric.collective_profiled(kind, nbytes, *keys.tp_profile, cal)  # noqa: E731
    comm = [tp_coll(kind, size) for kind in ("all_reduce", "all_gather", "reduce_scatter")]
    kv = 2 * tokens * (shape("kv_heads") * shape("head_dim")) * ACT_BYTES
    ring = cp_ring_seconds(fabric, cal, keys.cp, kv, *keys.cp_hop, shape("windowed"),
                           np.minimum(shape("window"), tokens) / tokens)
    lay = scn.layout
    return LayerCosts(passes=pass_table(sums, comm, ring, keys.recompute, keys.sp, keys.split, cal, scn.tp_overlap,
                                        keys.tp, lay.tp_async_allreduce),
                      send_bytes=act,
                      send_gather=np.where(keys.sp, 0.0, tp_coll("all_gather", act * keys.tp)),
                      activations=layer_activations(scn, keys))


def layer_activations(scn, keys: LayerKeys) -> np.ndarray:
    """(K, 3) activation bytes of a micro-batch per layer key: kept per layer, full recompute's
    working layer (its activations while it is recomputed), the head's."""
    model, seq = scn.model, scn.workload.seq_len
    out = np.zeros((len(keys.tp), 3))
    rows = zip(keys.which.tolist(), keys.tp.tolist(), keys.sp.tolist(), keys.recompute.tolist())
    for i, (which, tp, sp, rec) in enumerate(rows):
        sh, recompute = keys.shapes[which], RECOMPUTE_NAMES[rec]
        kw = dict(tokens=sh.tokens, seq=seq, tp=tp, sequence_parallel=sp, flash=sh.flash,
                  cached=operand_bytes(scn.workload.dtype), modules=scn.workload.recompute_modules,
                  unfused=scn.workload.activation == "unfused")
        working = activation_bytes_per_layer(model, recompute="none", **kw) if recompute == "full" else 0.0
        out[i] = (activation_bytes_per_layer(model, recompute=recompute, **kw), working,
                  head_activation_bytes(model, tokens=sh.tokens, tp=tp))
    return out


UB_CHUNKS = {"f": {"qkv": None, "fc1": None, "proj": 4, "fc2": 4}, "b": {"proj": None, "fc2": None}}
"""GEMMs Transformer Engine's userbuffers overlap splits, by pass, and into how many chunks along the tokens (None: tp).
Its default methods (transformer_engine/pytorch/module/base.py, initialize_ub; NeMo's Llama configs keep them):
ring-exchange all-gather overlap runs a GEMM as tp chunks of M/tp rows (QKV and FC1 forward, projection and FC2 input
gradients), the pipelined reduce-scatter as num_splits = 4 (projection and FC2 forward); bulk overlaps (QKV and FC1
input gradients, every weight gradient) run the GEMM whole."""


def overlap_chunks(table: OpTable, tp: int, on: bool) -> dict | None:
    """{pass: (ops,) chunks each op runs as} under TP communication overlap (`on`: layout.tp_overlap with sequence
    parallelism and tp > 1), else None."""
    if not on or tp <= 1:
        return None
    out = {}
    for x, split in UB_CHUNKS.items():
        ways = {name: tp if c is None else c for name, c in split.items()}
        out[x] = np.array([float(ways.get(n, 1)) for n in table.name])
    return out


def block_seconds(tables: list[OpTable], peak: float, hbm: float, cal, attn_peak: float | None = None,
                  chunks: list | None = None) -> np.ndarray:
    """(tables, 3 blocks, 8) roofline seconds of the embedding, one layer and the head: F, B, W; F, B of
    the selective-recompute ops; F, B, W of the GEMMs alone (what TP communication can overlap); tables
    of one model (the same operators, other sizes).
    Flash attention runs at `attn_peak` (its dtype's), its backward at the backward efficiency. `chunks`: per table
    overlap_chunks or None; a GEMM run as c chunks takes c kernels of M/c rows, each reading the whole weight."""
    first = tables[0]
    fused = np.array([n in FUSED_ATTENTION for n in first.name])
    precise = np.stack([t.precise for t in tables])
    stack = lambda k: np.stack([getattr(t, k) for t in tables])  # noqa: E731
    gemm = stack("gemm")
    times = []
    for x in "fbw":
        c = np.stack([np.ones(len(first.name)) if ch is None or x not in ch else ch[x]
                      for ch in (chunks or [None] * len(tables))])
        shapes = np.concatenate([gemm[..., :1] / c[..., None], gemm[..., 1:]], axis=-1)
        reread = (c - 1.0) * ACT_BYTES * gemm[..., 1] * gemm[..., 2] * (gemm[..., 0] > 0)
        times.append(roofline.op_times(stack("flops_" + x), stack("bytes_" + x) + reread, shapes, peak, hbm, cal,
                                       fused, backward=x == "b", peak16=attn_peak, precise=precise,
                                       overhead=cal.kernel_overhead * c))
    out = np.zeros((len(tables), 3, 8))
    gemm_rows = (first.gemm[:, 1] > 0) & ~fused
    for i, block in enumerate(BLOCKS):
        ops = np.nonzero(first.block == block)[0]
        sel = np.nonzero((first.block == block) & first.selective)[0]
        gemms = np.nonzero((first.block == block) & gemm_rows)[0]
        # np.take keeps each table's ops contiguous: every sum is that table's 1-D sum, bit for bit
        out[:, i] = np.stack([np.take(t, ops, axis=1).sum(axis=1) for t in times]
                             + [np.take(t, sel, axis=1).sum(axis=1) for t in times[:2]]
                             + [np.take(t, gemms, axis=1).sum(axis=1) for t in times], axis=1)
    return out


def pass_table(sums: np.ndarray, comm, cp_ring, recompute, sp, split, cal, tp_overlap: bool = False,
               tp=1, tp_async: bool = True) -> np.ndarray:
    """(K, 3 blocks, 7 PASS_FIELDS) seconds per layer or edge block, exposed TP and CP inside; sums:
    (K, 3, 8) block_seconds; comm: (all-reduce, all-gather, reduce-scatter) seconds of one
    activation over the TP group, (K,) each; cp_ring: (forward, backward) K/V ring seconds (K,);
    recompute: (K,) index of none / selective / full; sp, split: (K,) bool.

    Megatron's TP communication: forward all-reduces (or, with sequence parallelism, all-gathers and
    reduce-scatters) on the critical path; backward, the input-gradient collectives overlap the
    weight-gradient GEMMs (asynchronous all-reduce) unless a separate W task holds them or `tp_async` is false
    (Megatron-LM before September 2021: each after its GEMMs, exposed). With
    `tp_overlap` (Transformer Engine's userbuffers, Megatron's tp_comm_overlap; sequence parallelism
    only) each GEMM runs in tp chunks, each chunk's collective behind the next chunk's GEMM: the first
    (or last) chunk's share, 1/tp of the collective, or what exceeds the GEMMs stays exposed.
    Compute with communication running beside it is slowed by the SMs the communication holds
    (slowdown)."""
    ar, ag, rs = comm
    f, b, w, attn_f, attn_b, gemm_f, gemm_b, gemm_w = (sums[:, 1, j] for j in range(8))
    comm_f = np.where(sp, 2 * (ag + rs), 2 * ar)  # per layer forward, exposed
    comm_b_exposed = np.where(sp, 2 * ag, 0.0)
    comm_b_overlap = np.where(sp, 2 * (rs + ag), 2 * ar)
    slow_f = slow_b = 0.0
    if tp_overlap:  # each GEMM runs in tp chunks, a chunk's collective behind the next chunk's GEMM
        tp = np.asarray(tp, float)
        exposed_f = np.maximum(comm_f / tp, comm_f - gemm_f)
        slow_f = np.where(sp, slowdown(comm_f - exposed_f, cal.comm_sms), 0.0)
        comm_f = np.where(sp, exposed_f, comm_f)
        behind_b, comm_b = gemm_b + np.where(split, 0.0, gemm_w), 2 * (ag + rs)
        exposed_b = np.maximum(comm_b / tp, comm_b - behind_b)
        slow_b = np.where(sp, slowdown(comm_b - exposed_b, cal.comm_sms), 0.0)
        comm_b_exposed = np.where(sp, exposed_b, comm_b_exposed)
        comm_b_overlap = np.where(sp, 0.0, comm_b_overlap)
    ecp_f, ecp_b = np.maximum(0.0, cp_ring[0] - attn_f), np.maximum(0.0, cp_ring[1] - attn_b)
    redo = np.where(recompute == 2, f + ecp_f, np.where(recompute == 1, attn_f, 0.0))
    redo_tp = np.where(recompute == 2, comm_f, 0.0)
    hidden_b = np.where(split | (not tp_async), 0.0, np.minimum(comm_b_overlap, w))
    slow_b = slow_b + slowdown(hidden_b, cal.comm_sms)
    b_tp = comm_b_exposed + comm_b_overlap - hidden_b + redo_tp
    layer = [f + slow_f + comm_f + ecp_f, b + slow_b + redo + b_tp + ecp_b, w, comm_f, b_tp, ecp_f, ecp_b]
    out = np.zeros((len(f), 3, 7))
    out[:, 1] = np.stack(layer, axis=1)
    for i, edge in ((0, np.where(sp, rs, ar)), (2, np.where(sp, ag, 0.0))):
        out[:, i, :5] = np.stack([sums[:, i, 0] + edge, sums[:, i, 1] + edge, sums[:, i, 2], edge, edge], axis=1)
    return out


def cp_ring_seconds(fabric: Fabric, cal, cp, kv_bytes, src, dst, windowed=0.0,
                    halo=0.0) -> tuple[np.ndarray, np.ndarray]:
    """(forward, backward) seconds of context parallelism's K/V ring per layer, (K,) each: forward passes
    K and V (cp-1) times, backward passes K, V and their gradients; kv_bytes per hop from src to dst. A windowed
    layer (share `windowed` of the layers) needs only its neighbour's last keys, `halo` of a rank's K and V, once."""
    hop = (1 - windowed) * (cp - 1) * fabric.p2p(kv_bytes, src, dst, cal)
    if np.any(windowed):
        hop = hop + np.where(windowed > 0, windowed * fabric.p2p(kv_bytes * halo, src, dst, cal), 0.0)
    return np.where(cp > 1, hop, 0.0), np.where(cp > 1, 2 * hop, 0.0)


def stage_grid(routes: np.ndarray, stage_layers: np.ndarray):
    """(p, v) arrays: transformer layers, embedding flag and head flag of each device's chunk, for a
    schedule's routes (directions, virtual stages, 2) and the layers of each virtual stage."""
    p, v = int(routes[..., 0].max()) + 1, int(routes[..., 1].max()) + 1
    layers, embed, head = np.zeros((p, v)), np.zeros((p, v)), np.zeros((p, v))
    for route in routes:
        dev, chunk = route[:, 0], route[:, 1]
        layers[dev, chunk] = stage_layers
        embed[dev[0], chunk[0]] = 1
        head[dev[-1], chunk[-1]] = 1
    return layers, embed, head


def pass_grid(passes: np.ndarray, field: int, layers, embed, head) -> np.ndarray:
    """(K, p, v) seconds of one PASS_FIELDS column of K layer keys' passes (K, 3 blocks, 7) summed over
    each device's chunk: its layers times the layer's, plus the edge blocks'."""
    col = passes[:, :, field, None, None]
    return layers[None] * col[:, 1] + embed[None] * col[:, 0] + head[None] * col[:, 2]


def backward_tasks(b: np.ndarray, w: np.ndarray, split_backward: bool):
    """(B, W) task seconds: as given where the schedule splits the backward, else B the whole backward
    and no W."""
    return (b, w) if split_backward else (b + w, np.zeros_like(w))


def sends(routes: np.ndarray, devices: np.ndarray, nbytes, gather, fabric: Fabric, cal):
    """(K, p, v, 2) seconds and tiers (0 none, 1 nvlink, 2 scaleout) of the forward (activation) and
    backward (gradient) sends of K pipelines: devices (K, p) of the stages, nbytes (K,) per TP rank,
    gather (K,) seconds of the TP all-gather before each send."""
    K, p = devices.shape
    v = int(routes[..., 1].max()) + 1
    send, tier = np.zeros((K, p, v, 2)), np.zeros((K, p, v, 2), dtype=np.int8)
    nbytes, gather = np.asarray(nbytes)[:, None], np.asarray(gather)[:, None]
    for route in routes:
        for direction, (a, b) in enumerate(((route[:-1], route[1:]), (route[1:], route[:-1]))):
            moves = a[:, 0] != b[:, 0]
            src, dst = devices[:, a[moves, 0]], devices[:, b[moves, 0]]
            send[:, a[moves, 0], a[moves, 1], direction] = fabric.p2p(nbytes, src, dst, cal) + gather
            same = fabric.domain_of(src) == fabric.domain_of(dst)
            tier[:, a[moves, 0], a[moves, 1], direction] = np.where(same, 1, 2)
    return send, tier


def device_params(model, tp, layers, embed, head) -> np.ndarray:
    """(..., p) parameters held on one TP rank of each stage for tp of shape (...) (K candidates, or
    one); layers, embed, head: stage_grid's (p, v)."""
    c = parameter_counts(model)
    tied = model.tied_embeddings
    head_params = c["embedding"] if tied else c["head"]
    per_chunk = layers * c["layer"] + embed * c["embedding"] + head * (head_params + c["final_norm"])
    shared = tied * embed.any(axis=1) * head.any(axis=1) * c["embedding"]  # one copy when co-located
    return (per_chunk.sum(axis=1) - shared) / np.asarray(tp)[..., None]


def bucket_params(layout, dp_ranks) -> np.ndarray:
    """Parameters a gradient bucket holds for (K,) data-parallel rank counts (dp x cp): layout.bucket_params, else
    Megatron-Core's default max(40M, 1M x ranks)."""
    if layout.bucket_params is not None:
        return np.full(np.shape(dp_ranks), float(layout.bucket_params))
    return np.maximum(BUCKET_PARAMS_MIN, BUCKET_PARAMS_PER_RANK * np.asarray(dp_ranks, float))


def adam_bytes(layout) -> float:
    """HBM bytes the optimizer step moves a parameter: ADAM_BYTES_PER_PARAM less twice the state bytes
    layout.optimizer_moments saves (optimizer_bytes; the state is read and written)."""
    return ADAM_BYTES_PER_PARAM - 2.0 * (OPTIMIZER_BYTES - optimizer_bytes(layout))


def data_parallel(params, profile, replicas, sharded, fabric: Fabric, cal, hbm_bandwidth: float,
                  grad_bytes: float = GRAD_COMM_BYTES, cross=None, bucket=None, param_bytes: float = PARAM_COMM_BYTES,
                  adam: float = ADAM_BYTES_PER_PARAM):
    """(K, p) arrays of K pipelines' data-parallel costs: gradient reduction seconds, its tier (1
    nvlink, 2 scaleout), parameter all-gather seconds after the step, optimizer seconds, and the
    all-gather's seconds whether sharded or not (ZeRO-3 repeats it before every pass).

    params (K, p) on a TP rank of each stage; profile: (k, d, crosses) (K, p) each, Fabric.profile of
    each stage's replica group of `replicas` (K,) ranks; sharded (K,) bool. ZeRO-0 all-reduces the
    gradients (`grad_bytes` each); the distributed optimizer and ZeRO 1-3 reduce-scatter them and
    all-gather the updated parameters (`param_bytes` each: memory.weight_bytes). Adam streams its state (a
    1/replicas shard when sharded) through HBM once, `adam` bytes a parameter (adam_bytes). Hybrid sharding (HSDP):
    profile and replicas describe a shard group and `cross` (k, d, crosses) the ranks holding the same shard in the
    other groups; the reduce-scatter inside the group is followed by an all-reduce of the 1/replicas gradient shard
    across them (its tier counts too).
    The reduction and the step's parameter all-gather run one collective per bucket of `bucket` (K,) parameters
    (None: one bucket), each paying its latency; ZeRO-3's per-pass gather is one collective.
    """
    n = np.ones_like(params) if bucket is None else np.maximum(1.0, np.ceil(params / np.asarray(bucket)[:, None]))

    def coll(kind, size, prof=profile):
        return n * fabric.collective_profiled(kind, size / n, *prof, cal)

    sh = np.asarray(sharded)[:, None]
    grads = params * grad_bytes
    dp = np.where(sh, coll("reduce_scatter", grads), coll("all_reduce", grads))
    tier = np.where(profile[1] > 1, 2, 1)
    if cross is not None:
        shard_grads = grads / np.asarray(replicas, float)[:, None]
        dp = dp + np.where(sh, coll("all_reduce", shard_grads, cross), 0.0)
        tier = np.maximum(tier, np.where(sh & (cross[1] > 1), 2, 1))
    gather = fabric.collective_profiled("all_gather", params * param_bytes, *profile, cal)
    shard = np.where(sh, np.asarray(replicas, float)[:, None], 1)
    opt = params / shard * adam / (hbm_bandwidth * cal.hbm)
    return dp, tier, np.where(sh, coll("all_gather", params * param_bytes), 0.0), opt, gather


def device_memory(params, per_param, activations, held, layers, head) -> dict:
    """Memory of the most loaded device of each of K pipelines: weights, gradients, optimizer,
    activations and total, (K,) bytes each.

    params (K, p) on a TP rank of each stage; per_param (K, 3) weight, gradient and optimizer bytes
    a parameter (memory.state_bytes_per_param); activations (K, 3) layer_activations; held
    (K, p) micro-batch-chunks each device holds at its peak; layers, head (p, v) stage_grid's."""
    chunk_layers = layers.sum(axis=1) / layers.shape[1]
    acts = (held * chunk_layers[None] * activations[:, 0, None] + activations[:, 1, None]
            + head.sum(axis=1)[None] * activations[:, 2, None])  # head: the loss's passes (MTP's included)
    d = np.argmax(params * per_param.sum(axis=1)[:, None] + acts, axis=1)
    pick = lambda a: np.take_along_axis(a, d[:, None], axis=1)[:, 0]  # noqa: E731
    prm = pick(params)
    out = {"weights": prm * per_param[:, 0], "gradients": prm * per_param[:, 1],
           "optimizer": prm * per_param[:, 2], "activations": pick(acts)}
    allocated = out["weights"] + out["gradients"] + out["optimizer"] + out["activations"]
    out["reserved"] = reserved_bytes(allocated)
    out["total"] = allocated + out["reserved"]
    return out


def exposed_param_gather(gather, first_forward, chunks: int, overlap: bool, cal):
    """(..., p) seconds the parameter all-gather adds to a step. With `overlap` (Megatron's overlap_param_gather,
    NeMo's overlap_param_sync) each model chunk's share is gathered behind the forward passes of the chunks before
    it, so only the first chunk's share runs beside the first forward: the forward slowed while they overlap, or
    the share's excess over it (beside). Without, the whole gather runs after the optimizer, before any forward."""
    gather, first_forward = np.broadcast_arrays(np.asarray(gather, float), np.asarray(first_forward, float))
    return beside(first_forward, gather / chunks, cal.comm_sms) if overlap else gather.copy()


def pair_times(f_part: np.ndarray, b_part: np.ndarray) -> np.ndarray:
    """(..., p, v, v) seconds of a part of F of chunk i and of B of chunk j back to back."""
    return f_part[..., :, :, None] + b_part[..., :, None, :]


def fb_pairs(f, b, comm_f, comm_b, cal):
    """(pair seconds, compute, communication), (..., p, v, v) each, of DualPipe's overlapped F&B pairs
    from the (..., p, v) passes and the communication inside them (TP, CP and EP): a pair lasts
    max(the two computes, the two communications), each half's communication running behind the
    other half's compute, which the communication slows while they overlap (beside)."""
    compute, comm = pair_times(f - comm_f, b - comm_b), pair_times(comm_f, comm_b)
    return np.maximum(compute + beside(compute, comm, cal.comm_sms), 0.0), compute, comm


def combined_pairs(f_blocks, b_blocks, cal) -> np.ndarray:
    """(..., p, v, v) seconds of Megatron-Core's combined-1F1B pairs (layout.ep_overlap) from each pass's
    (..., p, v) blocks: F as (attention, dispatch, MLP, combine), B as (combine, MLP, dispatch, attention),
    attention and MLP compute (TP and CP inside), dispatch and combine all-to-all. The pair runs four steps, each
    one half's compute beside the other's all-to-all (combined_1f1b.py): B's combine with F's attention, B's MLP
    with F's dispatch, B's dispatch with F's MLP, B's attention with F's combine; a step lasts max(compute slowed
    by the communication beside it, communication)."""
    f_att, f_disp, f_mlp, f_comb = (np.asarray(x)[..., :, :, None] for x in f_blocks)
    b_comb, b_mlp, b_disp, b_att = (np.asarray(x)[..., :, None, :] for x in b_blocks)
    total = 0.0
    for compute, comm in ((f_att, b_comb), (b_mlp, f_disp), (f_mlp, b_disp), (b_att, f_comb)):
        total = total + compute + beside(compute, comm, cal.comm_sms)
    return total


def slowdown(overlapped, comm_sms: float):
    """Seconds compute loses to the communication kernels running beside it for `overlapped` seconds:
    they hold `comm_sms` (cal.comm_sms) of the SMs, so the compute runs at 1 - comm_sms of its speed meanwhile."""
    return np.asarray(overlapped) * comm_sms / (1.0 - comm_sms)


def beside(compute, comm, comm_sms: float):
    """Seconds a stretch of `compute` with `comm` seconds of communication started beside it lasts beyond the
    compute alone: the compute slowed while they overlap (slowdown), or the communication's excess over it."""
    compute, comm = np.asarray(compute), np.asarray(comm)
    return np.maximum(slowdown(np.minimum(compute, comm), comm_sms), comm - compute)


def optimizer_start(order_end, dp_start, dp_end, comm_sms: float):
    """When a stage's optimizer starts: the end of its order, the compute since its last backward began slowed by
    the gradient reduction running beside it (from `dp_start` to `dp_end`), or the reduction's end if later."""
    return order_end + beside(order_end - dp_start, dp_end - dp_start, comm_sms)


def zero3_passes(x: np.ndarray, gather: np.ndarray, cal, on=True) -> np.ndarray:
    """(..., p, v) pass seconds under ZeRO-3, which all-gathers a pass's parameters (the gather's (..., p) seconds)
    behind the compute before it, prefetched: the compute slowed while the gather runs beside it, and at
    least the gather (beside), where `on` (bool, (...)) holds."""
    lifted = x + beside(x, np.asarray(gather)[..., None], cal.comm_sms)
    return np.where(np.asarray(on)[..., None, None], lifted, x)
