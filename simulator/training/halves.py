"""The Plan's additions for models whose layers split into an attention half and an FFN half (MoE, MLA).

Layers differ (dense first layers, MoE layers each with its own routing), so the FFN half is costed
layer by layer and summed over the layers each (device, chunk) holds. Parameters split into dense
ones, replicated over every data-parallel rank (dp * cp, ep included), and expert ones, of which an
EP rank holds (experts + redundant) / ep per MoE layer, split over its expert-TP ranks (tp, or
expert_tp under MoE parallel folding), and whose replicas are the expert-dp ranks (dp / ep * cp with
the same EP coordinate; tp*cp*dp / (ep*expert_tp) folded). DualPipe's two pipeline copies hold twice
of both (each device holds two chunks' layers).
"""

from __future__ import annotations

import numpy as np

from ..cost.memory import (
    Memory, attention_activation_bytes, ffn_activation_bytes, head_activation_bytes, scenario_state_bytes
)
from ..cost import mtp, roofline
from ..cost.offload import hbm_state, offloaded_share
from ..cost.ops import (
    ACT_BYTES, BLOCK_DENSE_FFN, BLOCK_EMBED, BLOCK_EXPERT, BLOCK_HEAD, BLOCK_LAYER, BLOCK_MOE, layer_shape,
    operand_bytes,
)
from ..cost.params import parameter_counts
from ..cost.pipeline import combined_pairs
from ..cost.placement import shard_counts
from ..moe.costs import block_times, moe_costs
from ..moe.dispatch import dispatch_width
from ..schedules import combined_in_flight, in_flight


def ffn_half(scn, ops, placement, fabric, cal):
    """(MoECosts or None, (L, 7) per layer): FFN seconds F, B, W; all-to-all seconds F, B; their
    scale-out-bound parts F, B. Full recompute repeats the forward (and its all-to-all) in B."""
    model, dev = scn.model, scn.topology.device
    if model.moe is None:
        dense = block_times(ops, BLOCK_DENSE_FFN, dev.peak(scn.workload.dtype), dev.hbm_bandwidth, cal)
        costs, ffn = None, np.tile(dense, (model.layers, 1))
        a2a = so = np.zeros((model.layers, 2))
    else:
        costs = moe_costs(scn, ops, placement, fabric, cal)
        ffn, a2a, so = costs.ffn.copy(), costs.a2a.copy(), costs.a2a_scaleout.copy()
    if scn.workload.recompute == "full":
        ffn[:, 1] += ffn[:, 0]
        a2a, so = a2a + a2a[:, :1] * [0, 1], so + so[:, :1] * [0, 1]
    elif scn.workload.recompute == "selective":
        ffn[:, 1] += ffn_recompute(scn, ops, costs, cal)
    return costs, np.concatenate([ffn, a2a, so], axis=1)


def ffn_recompute(scn, ops, costs, cal) -> np.ndarray:
    """(L,) seconds each layer's backward pass adds to run its FFN half's recomputed rows forward again
    (recompute_modules: mlp in the dense layers; shared_experts and moe_act in the MoE layers, the routed experts'
    activation over the copies the busiest EP rank keeps)."""
    model, dev = scn.model, scn.topology.device
    redo = ops.selective & np.isin(ops.block, (BLOCK_DENSE_FFN, BLOCK_MOE, BLOCK_EXPERT))
    if not redo.any():
        return np.zeros(model.layers)
    peak, hbm = dev.peak(scn.workload.dtype), dev.hbm_bandwidth

    def forward(mask, scale=np.ones(1)) -> np.ndarray:
        """Forward seconds of the masked rows with their FLOP and bytes times each of `scale`, (len(scale),)."""
        s = np.asarray(scale, float)[:, None]
        return roofline.op_times(ops.flops_f[mask] * s, ops.bytes_f[mask] * s, np.broadcast_to(
            ops.gemm[mask], (len(s), int(mask.sum()), 3)), peak, hbm, cal, precise=ops.precise[mask]).sum(axis=1)

    dense = forward(redo & (ops.block == BLOCK_DENSE_FFN))[0]
    if costs is None:
        return np.full(model.layers, dense)
    expert = redo & (ops.block == BLOCK_EXPERT) & (ops.gemm[:, 1] == 0)  # memory-bound: per token copy
    per_layer = forward(redo & (ops.block == BLOCK_MOE))[0] + forward(expert, costs.act_copies)
    return np.where(moe_layers(model) > 0, per_layer, dense)


def combined_fb(scn, f, b, ffn, ep, cal) -> np.ndarray:
    """(p, v, v) combined-1F1B pair seconds (cost.pipeline.combined_pairs) of tasks f and b (full backward, (p, v))
    whose FFN halves are `ffn` (p, v, 3: F, B, W) and all-to-alls `ep` (p, v, 2: F, B); the rest of each pass is its
    attention block. The forward all-to-all splits into dispatch and combine by their bytes (dispatch_width against
    16-bit), the backward's in halves (gradients both ways)."""
    mlp_f, mlp_b, ep_f, ep_b = ffn[..., 0], ffn[..., 1] + ffn[..., 2], ep[..., 0], ep[..., 1]
    share = dispatch_width(scn) / (dispatch_width(scn) + ACT_BYTES)
    return combined_pairs((f - mlp_f - ep_f, ep_f * share, mlp_f, ep_f * (1 - share)),
                          (ep_b / 2, mlp_b, ep_b / 2, b - mlp_b - ep_b), cal)


def layer_grid(table, stage_layers, per_layer: np.ndarray) -> np.ndarray:
    """(p, v, ...) sums of a per-layer array (L, ...) over the layers of each device's chunk; layers past the L-th
    (multi-token-prediction modules, simulator.cost.mtp) take the last layer's row; a stage may hold none."""
    stage_layers, per_layer = np.asarray(stage_layers), np.asarray(per_layer, float)
    extra = int(stage_layers.sum()) - len(per_layer)
    if extra > 0:
        per_layer = np.concatenate([per_layer, np.repeat(per_layer[-1:], extra, axis=0)])
    starts = np.concatenate([[0], np.cumsum(stage_layers)[:-1]])
    if (stage_layers == 0).any():  # reduceat would give an empty stage its next layer's row
        per_vstage = np.stack([per_layer[s:s + n].sum(axis=0) for s, n in zip(starts, stage_layers)])
    else:
        per_vstage = np.add.reduceat(per_layer, starts, axis=0)
    out = np.zeros((table.p, table.v, *np.shape(per_layer)[1:]))
    for route in table.routes:
        out[route[:, 0], route[:, 1]] = per_vstage
    return out


def chunk_micro_batches(table) -> np.ndarray:
    """(p, v) micro-batches each device's chunk runs forward in one step."""
    out = np.zeros((table.p, table.v))
    for d in range(table.p):
        for a in table.flat(d):
            if a.kind == "F":
                out[d, a.chunk] += 1
    return out


def moe_layers(model) -> np.ndarray:
    """(L,) 1.0 for MoE layers, 0.0 for dense ones."""
    if model.moe is None:
        return np.zeros(model.layers)
    return np.array(model.moe.is_moe(model.layers), dtype=float)


def split_params(scn, params: np.ndarray, table, stage_layers) -> tuple[np.ndarray, np.ndarray]:
    """(dense, expert) parameters on one TP rank of each stage, from `params` counted as if every
    layer were dense (plan.device_params)."""

    model, lay = scn.model, scn.layout
    if model.moe is None:
        return params, np.zeros_like(params)
    c = parameter_counts(model)
    n_moe = layer_grid(table, stage_layers, moe_layers(model)).sum(axis=1)
    non_expert = c["moe_layer"] - model.moe.experts * c["expert"]
    dense = params + n_moe * (non_expert - c["layer"]) / lay.tp
    slots = (model.moe.experts + lay.redundant_experts) // lay.ep
    return dense, n_moe * slots * c["expert"] / lay.etp


def layer_activations(scn, costs) -> np.ndarray:
    """(L,) bytes each layer keeps per micro-batch on the busiest EP rank's TP rank."""
    model, w, lay = scn.model, scn.workload, scn.layout
    sh = layer_shape(scn)
    redo = dict(recompute=w.recompute, modules=w.recompute_modules)
    attn = attention_activation_bytes(model, tokens=sh.tokens, tp=lay.tp, cached=operand_bytes(w.dtype),
                                      sequence_parallel=lay.sequence_parallel, **redo)
    out = np.full(model.layers, attn)
    unfused, eager_experts = w.activation == "unfused", w.expert_gemm == "multi_stream"
    out += ffn_activation_bytes(model, tokens=sh.tokens, tp=lay.tp, unfused=unfused, **redo) * (1 - moe_layers(model))
    if costs is not None:
        cached = operand_bytes(w.dtype)
        per_copy = ffn_activation_bytes(model, tokens=0, tp=lay.etp, copies=1.0, cached=cached, clamped=eager_experts,
                                        unfused=unfused and eager_experts, **redo)
        fixed = ffn_activation_bytes(model, tokens=sh.tokens, tp=lay.tp, copies=0.0, unfused=unfused, **redo)
        out += moe_layers(model) * (fixed + costs.act_copies * per_copy)
    return out


def split_memory(scn, table, dense, expert, grid, placement, costs, stage_layers) -> Memory:
    """Memory of the most loaded device: dense and expert state sharded over their own replicas."""
    lay, w, model = scn.layout, scn.workload, scn.model
    off = lay.offload
    dense_ranks, expert_ranks = shard_counts(lay)
    per_dense = hbm_state(scenario_state_bytes(scn, dense_ranks), off)
    per_expert = hbm_state(scenario_state_bytes(scn, expert_ranks), off)
    per_layer = layer_activations(scn, costs)
    chunk = layer_grid(table, stage_layers, per_layer).mean(axis=1)
    working = 0.0
    if off is not None and off.activations_layers:  # offloaded share out of HBM, one layer's copy buffer in
        chunk, working = chunk * (1.0 - offloaded_share(grid[0], off.activations_layers)[:, 0]), per_layer.max()
    if w.recompute == "full":
        working += layer_activations(scn.model_copy(update={"workload": w.model_copy(
            update={"recompute": "none"})}), costs).max()
    sh = layer_shape(scn)
    head = grid[2]
    held = combined_in_flight(table, grid[0].mean(axis=1)) if lay.ep_overlap else in_flight(table)
    acts = (held * chunk + working  # head: the loss's passes (MTP modules' included)
            + head.sum(axis=1) * head_activation_bytes(model, tokens=sh.tokens, tp=lay.tp))
    state = [dense * a + expert * b for a, b in zip(per_dense, per_expert)]
    d = int(np.argmax(sum(state) + acts))
    return Memory(weights=float(state[0][d]), gradients=float(state[1][d]), optimizer=float(state[2][d]),
                  activations=float(acts[d]), kv_cache=0.0, capacity=scn.topology.device.hbm_bytes)


def ep_traffic(scn, table, costs, stage_layers) -> tuple[np.ndarray, np.ndarray]:
    """(p, 2) all-to-all bytes one rank of each stage sends per step [nvlink, scaleout] (mean EP
    rank), and (p, 2) the busiest EP rank's bytes in its busier direction."""
    mbs = chunk_micro_batches(table)[..., None]
    sent = (layer_grid(table, stage_layers, costs.sent) * mbs).sum(axis=1)
    peak = (layer_grid(table, stage_layers, costs.peak) * mbs).sum(axis=1)
    return sent, peak


def hardware_flops(scn, ops, costs) -> float:
    """FLOP per step with recompute, counted as MFU counts them (attention in full, backward twice the
    forward), each micro-batch through every layer once; experts at the mean EP rank's tokens."""
    model, w, lay = scn.model, scn.workload, scn.layout
    fwd = ops.model_flops_f
    layer = ops.block == BLOCK_LAYER
    attn = fwd[layer].sum()
    if costs is not None:
        ffn = costs.ffn_flops
    else:
        ffn = np.full(model.layers, fwd[ops.block == BLOCK_DENSE_FFN].sum())
    per_layer = attn + ffn
    n = mtp.depth(model)
    if n:  # MTP modules: a layer like the last, the embedding and head again, the projection
        per_layer = np.append(per_layer, np.repeat(per_layer[-1:], n))
    redo = {"full": per_layer.sum(), "selective": len(per_layer) * fwd[layer & ops.selective].sum(),
            "none": 0.0}[w.recompute]
    edges = fwd[ops.block == BLOCK_EMBED].sum() + fwd[ops.block == BLOCK_HEAD].sum()
    if n:
        edges = (1 + n) * edges + n * mtp.projection_flops(scn)
    per_mb = 3 * (per_layer.sum() + edges) + redo
    return float(per_mb * (w.global_batch // w.micro_batch) * lay.tp * lay.cp)

