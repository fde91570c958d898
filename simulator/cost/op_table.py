"""Scenario -> OpTable: the operators of one layer, the embedding and the LM head (simulator.cost.ops) at a training
scenario's micro-batch, as its workload and layout run them (casts, selective recompute, passes over routed tokens,
RoPE, activations and their clamps as the framework runs them)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from . import calibration
from .ops import (
    ACT_BYTES,
    BLOCK_EMBED,
    BLOCK_EXPERT,
    BLOCK_HEAD,
    BLOCK_LAYER,
    CAST_BYTES,
    FLASH_BACKWARD_FLOP,
    FUSED_ACTIVATION,
    FUSED_ATTENTION,
    OpRows,
    OpTable,
    attention_core,
    clamped_glu,
    layer_rows,
    layer_shape,
)


def current_scaling(workload) -> bool:
    """Whether a training workload's per-tensor FP8 casts read their input once more for its amax."""
    return workload.kind == "train" and workload.fp8_scaling == "current"


RECOMPUTE_ROWS = {
    "core_attn": (*FUSED_ATTENTION, "scores", "softmax", "attn-dropout", "values"),
    "layernorm": ("norm1", "norm2"),
    "mla_up_proj": ("q-norm", "q-up", "kv-norm", "kv-up"),
    "mlp": ("fc1", "activation", "fc2"),
    "moe_act": ("expert-activation",),
    "shared_experts": ("shared-fc1", "shared-activation", "shared-fc2"),
}
"""The op-table rows each of Megatron-Core's recompute_modules runs again (a GEMM's input cast with it)."""


def recomputed(names, modules) -> np.ndarray:
    """bool per row name: run again in the backward pass under selective recompute of `modules`."""
    rows = {r for m in modules for r in RECOMPUTE_ROWS[m]}
    return np.array([n in rows or (n.endswith("-cast") and n[:-5] in rows) for n in names], dtype=bool)


def copy_passes(scenario) -> tuple[str, ...]:
    """The passes over the routed token copies a GPU holds that a training step runs besides the permutation before
    the dispatch and the unpermutation after the combine (ffn_half's rows; each reads and writes the copies once
    unless ops.COPY_PASS_ELEMENTS says otherwise):
    - sort, unsort: Megatron-Core's all-to-all dispatcher (ep_backend nccl, ep_dispatch flat) sorts the copies a
      GPU receives by local expert and back where it holds several experts (its permutation 2, sort_chunks_by_idxs);
      DeepEP-style dispatch permutes them once.
    - pad, unpad: Transformer Engine's grouped MLP (expert_gemm multi_stream) under a low-precision dtype copies
      its input and output padded to the GEMMs' alignment (Fp8Padding, Fp8Unpadding) unless every expert's count is
      aligned already: padded by the router (routing.pad_for_quantization), set by a capacity, or padded by HybridEP's
      dispatch, which Megatron-Core (from core_r0.16.0) hands the alignment.
    - expert-bias: the same grouped MLP adds biased experts' second-GEMM bias per expert in PyTorch
      (model.moe.expert_bias), weighted by the router in FP32 where DeepEP or HybridEP dispatched the weights."""
    model, lay, w = scenario.model, scenario.layout, scenario.workload
    if model.moe is None or w.kind != "train":
        return ()
    routing = w.routing
    aligned = routing is not None and (routing.capacity_factor is not None or routing.pad_for_quantization)
    backend = scenario.ep_backend
    sort = backend == "nccl" and lay.ep_dispatch == "flat" and model.moe.experts > lay.ep
    pad = w.dtype in CAST_BYTES and w.expert_gemm == "multi_stream" and backend != "hybridep" and not aligned
    bias = model.moe.expert_bias and w.expert_gemm == "multi_stream"
    bias_pass = "expert-bias-fp32" if backend in ("deepep", "hybridep") else "expert-bias"
    return ("sort", "unsort") * sort + ("pad", "unpad") * pad + (bias_pass,) * bias


ROPE_UNFUSED = (12.0, 10.0)
"""(forward, backward) 16-bit elements Megatron-Core's PyTorch RoPE (rope_utils._apply_rotary_pos_emb_bshd) moves
a query or key element: t x cos (1 read, 1 written), the half rotation (the negated half and the concatenation:
1.5 read, 1.5 written), x sin (1, 1), the sum (2, 1) and the concatenation with the empty unrotated part (1, 1);
backward, the two products' gradients (1, 1 each), the negation's (0.5, 0.5), the halves gathered (1, 1) and the
two gradients summed (2, 1). The fused kernel: one read and one write, the backward twice (ops._rope)."""


def rope_as_run(rows: OpRows, model) -> OpRows:
    """Training's RoPE row as Megatron-Core runs it: the fused kernel, or, where YaRN's attention factor
    (model.rope_mscale) is not 1, which that kernel does not take, its PyTorch ops (ROPE_UNFUSED)."""
    if model.rope_mscale == 1.0:
        return rows
    rope, (fwd, bwd) = np.array([n == "rope" for n in rows.name]), ROPE_UNFUSED
    return replace(rows, io=np.where(rope, rows.io * fwd / 2, rows.io), bwd=np.where(rope, bwd / fwd, rows.bwd))


CLAMP_ELEMENTS = (4.0, 5.0)
"""(forward, backward) 16-bit elements Megatron-Core's clamp of a gated activation's inputs moves per element of the
first GEMM's output (fused_bias_geglu.weighted_bias_quick_geglu_impl, the dense MLP's and the experts'): the two
halves clamped (1 read, 1 written) and concatenated (1, 1); backward, each half's gradient masked by its saved input
(2 read, 1 written) and the halves gathered (1, 1)."""

UNFUSED_ACTIVATION = {"squared_relu": (4.0, 10.0), "swiglu": (5.0, 13.0)}
"""(forward, backward) 16-bit elements an activation moves per element of its output as PyTorch ops run it one
kernel each (workload.activation unfused), where that differs from FUSED_ACTIVATION (F.gelu is one kernel either
way). squared_relu, torch.pow(relu(x), 2) as NeMo defines it (nemo/collections/llm/fn/activation.py, not compiled):
relu (1 read, 1 written), pow (1, 1); backward, pow's gradient grad * 2 * y as three kernels (y ** 1 copied: 1, 1;
doubled: 1, 1; times the gradient: 2, 1) and relu's threshold_backward (2, 1). swiglu, silu(a) * b of the two halves:
silu (1, 1), the product (2, 1); backward, the product's two gradients (2, 1 each), silu's (2, 1) and the halves'
gradients concatenated (2, 2)."""


def activation_as_run(rows: OpRows, scenario) -> OpRows:
    """Training's activation rows as the framework runs them: one fused kernel (ops.FUSED_ACTIVATION), or PyTorch's
    ops one kernel each (workload.activation unfused: UNFUSED_ACTIVATION), and with model.glu_clamp Megatron-Core's
    PyTorch clamp of the first GEMM's output (2 w of a gated row's 3 w elements: CLAMP_ELEMENTS) before it.
    Neither in the routed experts where a fused grouped MLP (expert_gemm single_kernel) runs the activation inside
    its kernel."""
    model = scenario.model
    unfused, clamp = scenario.workload.activation == "unfused", clamped_glu(model)
    if not (unfused or clamp):
        return rows
    fused = () if scenario.workload.expert_gemm == "multi_stream" else ("expert-activation",)
    act = np.array([n.endswith("activation") and n not in fused for n in rows.name])
    gated = model.ffn_kind == "swiglu"
    base_f, base_b = FUSED_ACTIVATION[gated]
    run_f, run_b = UNFUSED_ACTIVATION.get(model.ffn_kind, (base_f, base_b)) if unfused else (base_f, base_b)
    width = np.where(act, rows.io / base_f, 0.0)
    clamp_f, clamp_b = CLAMP_ELEMENTS if clamp else (0.0, 0.0)
    fwd, bwd = width * (run_f + 2 * clamp_f), width * (run_b + 2 * clamp_b)
    io = np.where(act, fwd, rows.io)
    return replace(rows, io=io, bwd=np.divide(bwd, io, out=rows.bwd.copy(), where=act))


def casts_as_run(rows: OpRows, scenario) -> OpRows:
    """Training's low-precision casts as their kernels run: MXFP8's quantize moves its bytes slower than a streaming
    kernel where the generation measured it (calibration.mxfp8_cast_slowdown), so its cast rows count their bytes
    times that; the other formats' casts stream, and so does every cast on a device of `efficiency: ideal`."""
    if scenario.workload.dtype != "mxfp8" or getattr(scenario.topology.device, "efficiency", None) == "ideal":
        return rows
    slow = calibration.mxfp8_cast_slowdown(scenario.topology.device.arch)
    return replace(rows, io=np.where([n.endswith("-cast") for n in rows.name], rows.io * slow, rows.io))


def attention_as_run(core: list[dict], scenario) -> list[dict]:
    """The attention core as its kernels run: where FP8 attention's windowed backward does the whole causal
    triangle's work (workload.fp8_attention on a generation whose calibration.fp8_attention says window_backward
    causal: cuDNN 9.22's on GB200 grows as s^2), a windowed row keeps its forward and an attention-window-bwd row
    takes its backward, shaped and counted as the causal kernel over the same queries: FLASH_BACKWARD_FLOP x the
    triangle's FLOP, (windowed FLOP) x seq / (2 x mean keys)."""
    arch = scenario.topology.device.arch
    if not scenario.workload.fp8_attention or calibration.fp8_attention(arch)["window_backward"] != "causal":
        return core
    out = []
    for row in core:
        if row["name"] != "attention-window":
            out.append(row)
            continue
        seq, width = row["gemm"][0], row["gemm"][2]
        triangle = row["flops_f"] * seq / row["gemm"][1]
        out += [{**row, "flops_b": 0.0, "bytes_b": 0.0},
                {**row, "name": "attention-window-bwd", "gemm": (seq, seq, width), "flops_f": 0.0, "bytes_f": 0.0,
                 "flops_b": FLASH_BACKWARD_FLOP * triangle, "model_flops_f": 0.0}]
    return out


def build_op_table(scenario) -> OpTable:
    """The OpTable of one layer plus the embedding and head, per micro-batch and TP rank: the layer's
    rows at the micro-batch's tokens (routed-expert rows per routed token on one expert-TP rank, their
    weights apart in bytes_fixed), with the attention core before the output projection."""
    sh, model, lay = layer_shape(scenario), scenario.model, scenario.layout
    rows = layer_rows(model, lay.tp, lay.sequence_parallel, scenario.workload.dtype,
                      etp=getattr(lay, "expert_tp", None), current_scaling=current_scaling(scenario.workload),
                      cross_entropy=scenario.cross_entropy, passes=copy_passes(scenario),
                      arch=scenario.topology.device.arch)
    rows = casts_as_run(activation_as_run(rope_as_run(rows, model), scenario), scenario)
    expert, gemm = rows.block == BLOCK_EXPERT, rows.gemm
    m = np.where(expert, 1.0, float(sh.tokens))
    flops = 2.0 * m * rows.n * rows.k
    fixed = np.where(expert & gemm, ACT_BYTES * rows.weights, 0.0)
    nbytes = np.where(gemm, ACT_BYTES * (m * (rows.n + rows.k) + rows.weights), ACT_BYTES * m * rows.io) - fixed
    cols = dict(flops_f=flops, bytes_f=nbytes, flops_b=flops, bytes_b=np.where(gemm, nbytes, rows.bwd * nbytes),
                flops_w=np.where(gemm, flops, 0.0), bytes_w=np.where(gemm, nbytes, 0.0), model_flops_f=flops)
    core = attention_as_run(attention_core(sh), scenario)
    at = rows.name.index("proj-cast" if "proj-cast" in rows.name else "proj")
    cat = lambda a, b: np.concatenate([a[:at], b, a[at:]])  # noqa: E731
    names = rows.name[:at] + tuple(c["name"] for c in core) + rows.name[at:]
    selective = cat(rows.selective, np.array([c["selective"] for c in core]))
    modules = getattr(scenario.workload, "recompute_modules", None)
    return with_grad_accumulation(OpTable(
        name=names,
        block=cat(rows.block, np.full(len(core), BLOCK_LAYER, dtype=np.int8)),
        gemm=cat(np.stack([np.where(gemm, m, 0.0), rows.n, rows.k], axis=1),
                 np.array([c["gemm"] for c in core], dtype=float)),
        selective=selective if modules is None else recomputed(names, modules),
        precise=cat(rows.precise, np.ones(len(core), dtype=bool)),
        bytes_fixed=cat(fixed, np.zeros(len(core))) if model.moe is not None else None,
        **{k: cat(v, np.array([c[k] for c in core], dtype=float)) for k, v in cols.items()},
    ), rows, scenario)


GRAD_BYTES = float(ACT_BYTES)
"""Bytes of a weight's gradient as its weight-gradient GEMM writes it (16-bit, whatever the compute dtype)."""


def reads_one_stage(scenario) -> bool:
    """Whether the OpTable depends on the embedding and the head sharing one stage (pp == 1): a tied table's
    accumulation pass, counted once there (with_grad_accumulation)."""
    return not scenario.grad_accumulation_fusion and scenario.model.tied_embeddings


def with_grad_accumulation(table: OpTable, rows: OpRows, scenario) -> OpTable:
    """`table`, and where the weight-gradient GEMMs do not accumulate into the main gradient themselves
    (workload.grad_accumulation_fusion false) one memory-bound `grad-accumulate` row a block in the weight-gradient
    pass: each micro-batch, every weight of the block on this rank has its GRAD_BYTES gradient read and its main
    gradient (4 bytes with layout.grad_reduce_fp32, else 2) read and written. Weights: the layer's GEMMs (`rows`),
    the LM head's, the embedding table's (vocab / tp x hidden; one table with the head's when tied on one stage)."""
    if scenario.grad_accumulation_fusion:
        return table
    model, lay = scenario.model, scenario.layout
    per_weight = GRAD_BYTES + 2 * (4.0 if lay.grad_reduce_fp32 else float(ACT_BYTES))
    weights = {b: float(rows.weights[rows.block == b].sum()) for b in (BLOCK_LAYER, BLOCK_HEAD)}
    shared = reads_one_stage(scenario) and lay.pp == 1
    weights[BLOCK_EMBED] = 0.0 if shared else -(-model.vocab // lay.tp) * float(model.hidden)
    blocks = np.array(list(weights), dtype=np.int8)
    zero = np.zeros(len(blocks))
    add = lambda a, b: np.concatenate([a, b.astype(a.dtype)])  # noqa: E731
    return replace(
        table, name=table.name + ("grad-accumulate",) * len(blocks), block=add(table.block, blocks),
        gemm=np.concatenate([table.gemm, np.zeros((len(blocks), 3))]),
        selective=add(table.selective, zero), precise=add(table.precise, zero),
        bytes_fixed=None if table.bytes_fixed is None else add(table.bytes_fixed, zero),
        bytes_w=add(table.bytes_w, per_weight * np.array(list(weights.values()))),
        **{k: add(getattr(table, k), zero) for k in ("flops_f", "bytes_f", "flops_b", "bytes_b", "flops_w",
                                                      "model_flops_f")})
