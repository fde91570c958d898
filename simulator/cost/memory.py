"""Bytes per device by category against HBM capacity; out of memory is a result, not a crash.

Weights, gradients and optimizer state follow Megatron-LM's mixed-precision Adam: 2 (bf16 weights)
+ 2 (bf16 gradients; 4 with fp32 gradient reduction) + 12 (fp32 master, momentum, variance; 8 with bf16 moments)
bytes a parameter; the distributed optimizer (ZeRO-1) shards the 12 over data-parallel ranks, ZeRO-2 the
gradients too, ZeRO-3 everything. Activations per layer follow Korthikanti et al. 2022 Table 2,
generalized to GQA, gated MLPs, models without dropout and FP8-cached GEMM inputs (s b h (34 + 5 a s /
h) bytes for GPT), times the micro-batches in flight. On top, the framework's reserve (RESERVE_BYTES:
CUDA context, library workspaces, NCCL buffers) and the caching allocator's fragmentation
(FRAGMENTATION of what is allocated) must fit in HBM too.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ops import MLA_RECOMPUTE_MODULES, clamped_glu, mla_dims, operand_bytes
from .params import parameter_counts, total_parameters

WEIGHT_BYTES, GRAD_BYTES = 2.0, 4.0
MASTER_BYTES = 4.0  # the fp32 master copy of a parameter
MOMENT_BYTES = {"fp32": 4.0, "bf16": 2.0}
"""Bytes of each of Adam's two moments a parameter by layout.optimizer_moments."""
OPTIMIZER_BYTES = MASTER_BYTES + 2.0 * MOMENT_BYTES["fp32"]  # 12: Adam's state a parameter with fp32 moments
RESERVE_BYTES = 1.5 * 2**30
"""Bytes a training process holds besides its tensors: the CUDA context (~0.5 GiB), cuBLAS and cuDNN
workspaces and NCCL's communication buffers (~1 GiB)."""
FRAGMENTATION = 0.05
"""Share of the allocated bytes PyTorch's caching allocator holds on top as fragmented free blocks."""


def reserved_bytes(allocated):
    """Bytes the framework holds besides `allocated` tensor bytes: RESERVE_BYTES + FRAGMENTATION of them."""
    return RESERVE_BYTES + FRAGMENTATION * allocated


@dataclass(frozen=True, kw_only=True)
class Memory:
    """Peak bytes on the most loaded device, by category."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    kv_cache: float
    capacity: float

    @property
    def reserved(self) -> float:
        """The framework's reserve and the allocator's fragmentation (reserved_bytes)."""
        return reserved_bytes(self.weights + self.gradients + self.optimizer + self.activations + self.kv_cache)

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.kv_cache + self.reserved

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity

    def as_dict(self) -> dict[str, float]:
        cats = ("weights", "gradients", "optimizer", "activations", "kv_cache", "reserved")
        return {**{c: getattr(self, c) for c in cats}, "total": self.total, "capacity": self.capacity}


def grad_bytes(layout) -> float:
    """Bytes a gradient takes in its buffer and its reduction: 4 (fp32) with layout.grad_reduce_fp32,
    else the 16-bit parameter dtype's 2 (Megatron-Core's default; NeMo's grad_sync_dtype bf16)."""
    return GRAD_BYTES if layout.grad_reduce_fp32 else WEIGHT_BYTES


def weight_bytes(model, layout, dtype: str) -> float:
    """Bytes a parameter's working copy takes, averaged over the model: 16-bit, or with layout.fp8_params the
    low-precision operand's bytes for the transformer layers' parameters and 16-bit for the embedding and the
    output layer (not Transformer Engine modules). The average is exact for a device holding the whole model and
    within the embedding's share elsewhere (0.5% of Llama 3.1 405B's parameters, 13% of Llama 3 8B's)."""
    if not layout.fp8_params:
        return WEIGHT_BYTES
    c = parameter_counts(model)
    layers_share = 1.0 - (c["embedding"] + c["head"]) / total_parameters(model)
    return WEIGHT_BYTES - (WEIGHT_BYTES - operand_bytes(dtype)) * layers_share


def param_bytes(scn) -> float:
    """A scenario's weight_bytes: bytes a parameter's working copy takes in memory and in the all-gathers."""
    return weight_bytes(scn.model, scn.layout, scn.workload.dtype)


def optimizer_bytes(layout) -> float:
    """Bytes of Adam's state a parameter: the fp32 master copy and two moments at layout.optimizer_moments (12, 8)."""
    return MASTER_BYTES + 2.0 * MOMENT_BYTES[layout.optimizer_moments]


def state_bytes_per_param(dp: int, zero: int, distributed_optimizer: bool, grads: float = GRAD_BYTES,
                          weights: float = WEIGHT_BYTES,
                          optimizer: float = OPTIMIZER_BYTES) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes per parameter held on a device; `grads` bytes a gradient, `weights`
    bytes a parameter's working copy (weight_bytes), `optimizer` bytes of Adam's state (optimizer_bytes)."""
    shard_opt = zero >= 1 or distributed_optimizer
    return (weights / (dp if zero >= 3 else 1),
            grads / (dp if zero >= 2 else 1),
            optimizer / (dp if shard_opt else 1))


def scenario_state_bytes(scn, ranks: int, zero: int | None = None) -> tuple[float, float, float]:
    """state_bytes_per_param of a training scenario's layout over `ranks` shard ranks (`zero`: the ZeRO stage, default
    the layout's): its gradient bytes (grad_bytes) and parameter bytes (param_bytes)."""
    lay = scn.layout
    return state_bytes_per_param(ranks, lay.zero if zero is None else zero, lay.distributed_optimizer,
                                 grad_bytes(lay), param_bytes(scn), optimizer_bytes(lay))


def outside_bytes(model, cached: float = 2.0) -> float:
    """Bytes a token keeps outside the TP region of a layer (split only by sequence parallelism): the
    two norms' inputs (2 h each), the QKV and FC1 inputs (`cached` bytes an element: 1 when FP8
    training keeps its GEMM inputs in FP8) and, with dropout, two one-byte masks: Korthikanti et al.'s
    10 h for GPT."""
    return (4.0 + 2.0 * cached + (2.0 if model.dropout else 0.0)) * model.hidden


def _modules(recompute: str, modules) -> tuple:
    """The recompute_modules in force: `modules` under selective recompute, else none."""
    return tuple(modules or ()) if recompute == "selective" else ()


def norm_outputs(model, recompute: str, modules, cached: float) -> float:
    """Bytes a token does not keep outside the TP region when layernorm is recomputed: both norms' outputs (the QKV
    and FC1 inputs, `cached` bytes an element)."""
    return 2.0 * cached * model.hidden if "layernorm" in _modules(recompute, modules) else 0.0


def qk_norm_inputs(model) -> float:
    """Bytes a token keeps (all heads) for the backward of per-head query and key norms (model.qk_norm): their
    16-bit inputs, Q and K before the norm; 0 without them or with MLA (whose latent norms are counted apart)."""
    return 2.0 * (model.heads + model.kv_heads) * model.head_dim if model.qk_norm and model.mla is None else 0.0


def first_gemm_outputs(model, clamped: bool, unfused: bool = False) -> float:
    """Copies of an FFN's first-GEMM output kept for backward: one (the fused activation's input, or squared ReLU's
    output, all its PyTorch ops keep); one and a half for SwiGLU run `unfused` (silu's input, its output and the
    other half); one more where a gated activation's inputs are clamped in PyTorch first (model.glu_clamp: the clamp
    keeps its input; cost.op_table.activation_as_run)."""
    eager_glu = 0.5 if unfused and model.ffn_kind == "swiglu" else 0.0
    return 1.0 + eager_glu + (1.0 if clamped and clamped_glu(model) else 0.0)


def activation_bytes_per_layer(model, *, tokens: int, seq: int, tp: int, sequence_parallel: bool,
                               recompute: str, flash: bool, cached: float = 2.0, modules=None,
                               clamped: bool = True, unfused: bool = False) -> float:
    """Bytes one layer keeps for backward, per micro-batch of `tokens` on one TP rank.

    Outside the TP region: outside_bytes, split by tp only under sequence parallelism. Inside: Q, K, V (and Q and K
    before their per-head norms: qk_norm_inputs), the attention output and the MLP intermediates (the projection's
    and FC2's inputs at `cached` bytes), split by tp; the score matrix's 5 a s per token only when attention is
    unfused and not recomputed.
    Selective recompute of `modules` (workload.recompute_modules; None: the attention core) keeps no norm outputs
    under layernorm, no MLP intermediates under mlp, no score matrix unless core_attn is left out. `clamped`: a
    clamped activation's inputs are clamped in PyTorch; `unfused`: the activation runs as PyTorch ops
    (first_gemm_outputs).
    """
    h, d, a, kv, f = model.hidden, model.head_dim, model.heads, model.kv_heads, model.ffn
    outside = outside_bytes(model, cached) - norm_outputs(model, recompute, modules, cached)
    gated = model.ffn_kind == "swiglu"
    first = 2.0 * f * (2 if gated else 1) * first_gemm_outputs(model, clamped, unfused)
    mlp = 0.0 if "mlp" in _modules(recompute, modules) else first + cached * f
    inside = 2.0 * (a * d + 2 * kv * d) + qk_norm_inputs(model) + cached * a * d + mlp
    attention_kept = recompute != "selective" or (modules is not None and "core_attn" not in modules)
    scores = 0.0 if (flash or not attention_kept) else 5.0 * a * seq
    sp = tp if sequence_parallel else 1
    if recompute == "full":
        return tokens * 2.0 * h / sp
    return tokens * (outside / sp + (inside + scores) / tp)


def head_activation_bytes(model, *, tokens: int, tp: int) -> float:
    """The last stage's fp32 logits of one micro-batch (cross-entropy input), on one TP rank."""
    return tokens * 4.0 * (-(-model.vocab // tp))


def attention_activation_bytes(model, *, tokens: int, tp: int, sequence_parallel: bool, recompute: str,
                               cached: float = 2.0, modules=None) -> float:
    """Bytes the attention half of a layer keeps for backward (flash attention), per micro-batch and TP
    rank, for models whose op table splits layers (MoE, MLA). The bytes a token keeps outside the TP
    region (outside_bytes) are counted here; inside: Q, K, V and the attention output (and Q and K before their
    per-head norms: qk_norm_inputs), and with MLA the two latents. Under full recompute: the layer's input. `modules`
    (workload.recompute_modules; with MLA None means ops.MLA_RECOMPUTE_MODULES, DeepSeek-V3's): layernorm drops the
    norms' outputs (2 x cached x h bytes a token outside), mla_up_proj MLA's Q, K and V (the latents and the attention
    output stay).
    """
    h = model.hidden
    sp = tp if sequence_parallel else 1
    if recompute == "full":
        return tokens * 2.0 * h / sp
    if model.mla is not None and modules is None:
        modules = MLA_RECOMPUTE_MODULES
    a = model.heads
    outside = outside_bytes(model, cached) - norm_outputs(model, recompute, modules, cached)
    if model.mla is None:
        d, kv = model.head_dim, model.kv_heads
        inside = 2.0 * (a * d + 2 * kv * d + a * d) + qk_norm_inputs(model)
    else:
        qk, v, rope = mla_dims(model)
        mla = model.mla
        latents = 2.0 * (mla.q_lora_rank + mla.kv_lora_rank + rope)
        up_kept = "mla_up_proj" not in _modules(recompute, modules)
        inside = (2.0 * (2 * a * qk + 2 * a * v) if up_kept else 2.0 * a * v) + latents
    return tokens * (outside / sp + inside / tp)


def ffn_activation_bytes(model, *, tokens: int, tp: int, recompute: str, copies: float | None = None,
                         cached: float = 2.0, modules=None, clamped: bool = True, unfused: bool = False) -> float:
    """Bytes the FFN half of a layer keeps: a dense FFN's intermediates (copies None), or an MoE
    layer's: router probabilities (fp32), shared experts' intermediates, and for each of the `copies`
    token copies the rank's experts compute, the dispatched input and the expert intermediates.
    `cached`: bytes per element of the experts' GEMM inputs kept for backward (1 with FP8 training,
    which caches them in FP8, DeepSeek-V3 section 3.3.2; the SwiGLU input stays 16-bit). Recomputed `modules`
    (workload.recompute_modules) keep nothing of a dense FFN (mlp) or the shared experts (shared_experts), and no
    FC2 input of a routed expert (moe_act) nor its clamped copy. `clamped`: clamped activations' inputs are clamped
    in PyTorch; `unfused`: the activation runs as PyTorch ops (first_gemm_outputs; neither in a fused grouped MLP)."""
    if recompute == "full":
        return 0.0
    redo = _modules(recompute, modules)
    gated, kept = 2 if model.ffn_kind == "swiglu" else 1, first_gemm_outputs(model, clamped, unfused)
    if copies is None:
        return 0.0 if "mlp" in redo else tokens * (2.0 * model.ffn * gated * kept + 2.0 * model.ffn) / tp
    moe = model.moe
    width = moe.expert_ffn / tp
    act = 0.0 if "moe_act" in redo else cached * width + 2.0 * width * gated * (kept - 1)
    per_copy = cached * model.hidden + 2.0 * width * gated + act
    shared = 0.0 if "shared_experts" in redo else moe.shared_experts * (2.0 * width * gated * kept + 2.0 * width)
    return tokens * (4.0 * moe.experts + shared) + copies * per_copy
