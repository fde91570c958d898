"""Model -> OpRows: the operators of one transformer layer, the embedding and the LM head as arrays.

Every figure is per micro-batch and per tensor-parallel rank (the ranks of one TP group are symmetric):
FLOP, bytes moved through HBM, and GEMM shapes for the forward pass, the input-gradient pass (B) and the
weight-gradient pass (W). Shapes follow Megatron-LM's tensor-parallel split (Shoeybi et al. 2019):
QKV and FC1 are column-parallel, the attention projection and FC2 row-parallel.

A dense model's layer is one block (BLOCK_LAYER). A mixture-of-experts model splits it: BLOCK_LAYER
holds the attention half (norms, attention, residuals), BLOCK_DENSE_FFN the FFN of the dense first
layers, BLOCK_MOE the fixed part of an MoE FFN (router, token permutation, shared experts) and
BLOCK_EXPERT one routed expert's GEMMs per token routed to it (`bytes_fixed` holds its weights, read
once per micro-batch); simulator.moe.costs scales those rows by the tokens each expert receives.
Multi-head latent attention (DeepSeek-V2/V3) replaces QKV by low-rank down- and up-projections.
simulator.cost.op_table evaluates the rows at a training scenario's micro-batch (the OpTable).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK_EMBED, BLOCK_LAYER, BLOCK_HEAD = 0, 1, 2
BLOCK_DENSE_FFN, BLOCK_MOE, BLOCK_EXPERT = 3, 4, 5
ACT_BYTES = 2  # 16-bit activations
DTYPE_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp8-block": 1.0 + 4 / (128 * 128), "mxfp8": 1.0 + 1 / 32,
               "nvfp4": 0.5 + 1 / 16, "int8": 1.0, "mxfp4": 0.5 + 1 / 32, "int4": 0.5}
"""Storage bytes per element of weights and KV cache, block scales included: DeepSeek's FP8 weights an FP32 scale
a 128x128 block, the MX formats a one-byte (E8M0) scale a 32-element block, NVFP4 a one-byte (E4M3) scale a 16-element
block (its per-tensor FP32 scale is negligible)."""

MLA_RECOMPUTE_MODULES = ("layernorm", "mla_up_proj")
"""Selective recompute of an MLA layer when workload.recompute_modules is not given: DeepSeek-V3's (section 3.2.3),
the norms and the up-projections run again in the backward pass (their rows: op_table.RECOMPUTE_ROWS)."""


@dataclass(frozen=True, kw_only=True)
class LayerShape:
    """The sizes one TP rank sees for one micro-batch."""

    sequences: int  # sequences in the micro-batch: b
    tokens: int  # tokens of the micro-batch on this rank: b * s / cp
    seq: int  # keys each query attends to: the full sequence s
    hidden: int
    heads: int  # attention heads on this rank: a / tp
    kv_heads: int  # KV heads on this rank (replicated when tp > kv_heads)
    head_dim: int
    ffn: int  # FFN width on this rank: ffn / tp
    gated: bool  # SwiGLU: FC1 produces gate and up projections
    vocab: int  # vocabulary rows on this rank: vocab / tp
    norm_tokens: int  # tokens the elementwise ops touch: tokens / tp with sequence parallelism
    flash: bool  # fused attention that never writes the score matrix and skips masked blocks
    mla: object = None  # MLASpec of multi-head latent attention, None for standard attention
    window: int = 0  # keys a query of a windowed layer sees at most (sliding-window attention); 0: none
    windowed: float = 0.0  # share of the layers that attend through the window


@dataclass(frozen=True, kw_only=True)
class OpTable:
    """Per-op arrays (one row an operator); all figures per micro-batch and TP rank, SI units."""

    name: tuple[str, ...]
    block: np.ndarray  # BLOCK_EMBED | BLOCK_LAYER | BLOCK_HEAD
    gemm: np.ndarray  # (n, 3) M, N, K of the forward GEMM; zeros for memory-bound ops
    flops_f: np.ndarray  # FLOP, forward
    bytes_f: np.ndarray  # bytes through HBM, forward
    flops_b: np.ndarray  # FLOP, input-gradient pass
    bytes_b: np.ndarray
    flops_w: np.ndarray  # FLOP, weight-gradient pass
    bytes_w: np.ndarray
    selective: np.ndarray  # bool: recomputed under selective recompute (the attention core)
    precise: np.ndarray  # bool: runs at the 16-bit peak under low-precision compute (attention, router, head)
    model_flops_f: np.ndarray  # FLOP counted by MFU (causal attention in full), forward
    bytes_fixed: np.ndarray | None = None  # BLOCK_EXPERT rows: weight bytes read per pass, any token count

    def total(self, field: str, block: int) -> float:
        """Sum of one array over the rows of one block."""
        return float(getattr(self, field)[self.block == block].sum())


@dataclass(frozen=True)
class OpRows:
    """The operators of a layer (or edge block) on one TP rank, as functions of the M tokens they run on.

    A GEMM row is y[M, n] = x[M, k] w[k, n] (weights n * k elements on this rank); a memory-bound row
    (n = k = 0) moves `io` 16-bit elements a token forward and `bwd` times that backward. A `precise`
    GEMM (router, LM head) runs in 16 bits whatever the compute dtype. Training evaluates the rows at a
    micro-batch's tokens, serving at every batch size of a step.
    """

    name: tuple[str, ...]
    block: np.ndarray  # BLOCK_* of each row
    n: np.ndarray
    k: np.ndarray
    io: np.ndarray  # elements read + written per token (memory-bound rows)
    bwd: np.ndarray  # backward traffic over forward (memory-bound rows)
    selective: np.ndarray  # bool: recomputed under selective recompute
    precise: np.ndarray  # bool: a GEMM kept in 16 bits under low-precision compute

    @staticmethod
    def of(rows: list[tuple]) -> OpRows:
        """Rows as (name, block, n, k, io, bwd, selective[, precise]) tuples."""
        rows = [r if len(r) == 8 else (*r, False) for r in rows]
        name, block, n, k, io, bwd, sel, precise = zip(*rows)
        f = lambda a: np.array(a, dtype=float)  # noqa: E731
        return OpRows(tuple(name), np.array(block, dtype=np.int8), f(n), f(k), f(io), f(bwd),
                      np.array(sel, dtype=bool), np.array(precise, dtype=bool))

    def where(self, mask) -> OpRows:
        """The rows selected by a boolean mask."""
        mask = np.asarray(mask, dtype=bool)
        return OpRows(tuple(x for x, keep in zip(self.name, mask) if keep), self.block[mask], self.n[mask],
                      self.k[mask], self.io[mask], self.bwd[mask], self.selective[mask], self.precise[mask])

    @property
    def gemm(self) -> np.ndarray:
        """bool per row: a GEMM (else memory-bound)."""
        return self.n > 0

    @property
    def weights(self) -> np.ndarray:
        """Weight elements of each row on this rank (0 for memory-bound rows)."""
        return self.n * self.k

    def flops(self, m) -> np.ndarray:
        """(len(m), rows) forward FLOP at M = m tokens."""
        m = np.asarray(m, dtype=float)[:, None]
        return 2.0 * m * self.n * self.k

    def nbytes(self, m, weight_bytes: float = ACT_BYTES) -> np.ndarray:
        """(len(m), rows) forward HBM bytes at M = m tokens: a GEMM reads its input and weights and
        writes its output (16-bit activations, weights at `weight_bytes`); a memory-bound row moves io."""
        m = np.asarray(m, dtype=float)[:, None]
        return np.where(self.gemm, ACT_BYTES * m * (self.n + self.k) + weight_bytes * self.weights,
                        ACT_BYTES * m * self.io)

    def shapes(self, m) -> np.ndarray:
        """(len(m), rows, 3) GEMM shapes (M, n, k)."""
        m = np.asarray(m, dtype=float)[:, None]
        return np.stack(np.broadcast_arrays(m, self.n, self.k), axis=-1)

    def linear_flops(self) -> float:
        """FLOP per token of the GEMM rows."""
        return float((2.0 * self.n * self.k).sum())


def _gemm(name: str, block: int, n, k, selective: bool = False, precise: bool = False) -> tuple:
    return (name, block, n, k, 0.0, 0.0, selective, precise)


def _elementwise(name: str, block: int, io, bwd: float = 2.0, selective: bool = False) -> tuple:
    """A memory-bound row moving `io` elements a token (reads + writes)."""
    return (name, block, 0.0, 0.0, io, bwd, selective)


def clamped_glu(model) -> bool:
    """Whether the model's gated FFN clamps its activation's inputs (model.glu_clamp), which Megatron-Core does in
    PyTorch before its fused activation (cost.op_table.activation_as_run, cost.memory.first_gemm_outputs)."""
    return model.glu_clamp is not None and model.ffn_kind == "swiglu"


FUSED_ACTIVATION = {False: (2.0, 4.0), True: (3.0, 6.0)}
"""(forward, backward) 16-bit elements one fused activation kernel moves per element of its output, by gatedness:
the input read and the output written (a gated one reads both halves), the backward twice that."""


def _ffn(prefix: str, block: int, width: int, hidden: int, gated: bool) -> list[tuple]:
    """FC1 (doubled when gated), activation and FC2 of an FFN of `width` on this rank."""
    fwd, bwd = FUSED_ACTIVATION[gated]
    return [_gemm(f"{prefix}fc1", block, width * (2 if gated else 1), hidden),
            _elementwise(f"{prefix}activation", block, width * fwd, bwd / fwd),
            _gemm(f"{prefix}fc2", block, hidden, width)]


def _projections(model, tp: int) -> list[tuple]:
    """QKV projection (then the per-head query and key norms of model.qk_norm), or MLA's down- and up-projections
    with their norms, on one TP rank.

    MLA (DeepSeek-V3 section 2.1.1): queries through a rank-q_lora down-projection, a norm and an
    up-projection to heads x (nope + rope); keys and values from one down-projection to kv_lora + rope,
    a norm and an up-projection to heads x (nope + v). Down-projections are replicated over TP ranks.
    """
    h, heads = model.hidden, model.heads // tp
    if model.mla is None:
        kv = max(model.kv_heads // tp, 1)
        qk_norm = [_elementwise("qk-norm", BLOCK_LAYER, 2 * (heads + kv) * model.head_dim)] if model.qk_norm else []
        return [_gemm("qkv", BLOCK_LAYER, (heads + 2 * kv) * model.head_dim, h), *qk_norm]
    qk, v, rope = mla_dims(model)
    m = model.mla
    q = ([_gemm("q-down", BLOCK_LAYER, m.q_lora_rank, h), _elementwise("q-norm", BLOCK_LAYER, 2 * m.q_lora_rank),
          _gemm("q-up", BLOCK_LAYER, heads * qk, m.q_lora_rank)] if m.q_lora_rank
         else [_gemm("q", BLOCK_LAYER, heads * qk, h)])
    return q + [_gemm("kv-down", BLOCK_LAYER, m.kv_lora_rank + rope, h),
                _elementwise("kv-norm", BLOCK_LAYER, 2 * m.kv_lora_rank),
                _gemm("kv-up", BLOCK_LAYER, heads * (qk - rope + v), m.kv_lora_rank)]


def attention_half(model, tp: int, sp: bool) -> list[tuple]:
    """Norms, projections, output projection and residuals of a layer, attention core excluded.

    Norms and residuals touch the full hidden state on every rank, or 1/tp of the tokens with sequence
    parallelism. Selective recompute of an MLA layer is DeepSeek-V3's (section 3.2.3): the norms and
    the up-projections run again in the backward pass.
    """
    h, hs = model.hidden, model.hidden / (tp if sp else 1)
    v = mla_dims(model)[1] if model.mla is not None else model.head_dim
    residual = 3 * hs + (hs / 2 if model.dropout else 0.0)  # fused bias-dropout-add writes a 1-byte mask
    rows = [_elementwise("norm1", BLOCK_LAYER, 2 * hs), *_projections(model, tp), *_rope(model, tp),
            _gemm("proj", BLOCK_LAYER, h, model.heads // tp * v), _elementwise("residual1", BLOCK_LAYER, residual),
            _elementwise("norm2", BLOCK_LAYER, 2 * hs), _elementwise("residual2", BLOCK_LAYER, residual)]
    if model.mla is not None:
        again = ("norm1", "norm2", "q-norm", "kv-norm", "q-up", "kv-up")
        rows = [r[:6] + (r[0] in again,) + r[7:] for r in rows]
    return rows


def _rope(model, tp: int) -> list[tuple]:
    """Rotary position embedding of queries and keys (read and write each): every head's width, or
    MLA's decoupled rope dimensions; none for learned absolute positions."""
    if not model.rope:
        return []
    heads = model.heads // tp
    if model.mla is not None:
        width = (heads + 1) * model.mla.qk_rope_head_dim
    else:
        width = (heads + max(model.kv_heads // tp, 1)) * model.head_dim
    return [_elementwise("rope", BLOCK_LAYER, 2 * width)]


COPY_PASS_ELEMENTS = {"expert-bias": (6, 6), "expert-bias-fp32": (14, 18)}
"""(forward, backward) 16-bit elements a pass over the routed copies moves per copy element, where not (2, 2): one
read and one write, the backward the inverse permutation. expert-bias, Megatron-Core's TEGroupedMLP._apply_bias per
expert with 16-bit router weights: bias x weight written (1), added to the second GEMM's output (2 read, 1 written)
and concatenated (1 read, 1 written); backward, the bias's and the weights' gradients, each a product (1 read, 1
written) and a sum (1 read). expert-bias-fp32, with FP32 router weights (DeepEP and HybridEP dispatch them so):
the same in FP32 (2 elements each) plus the cast back to 16 bits (2 read, 1 written); backward, the gradient cast up
for it (1 read, 2 written) and down again for the output (2 read, 1 written), the two products and sums in FP32."""


def ffn_half(model, tp: int, etp: int | None = None, passes: tuple[str, ...] = ()) -> list[tuple]:
    """A dense layer's FFN (BLOCK_DENSE_FFN); with experts, the fixed part of an MoE FFN (BLOCK_MOE:
    router replicated over TP ranks, token permutation of the tokens * top_k / tp copies a rank
    dispatches, shared experts) and one routed expert per token routed to it (BLOCK_EXPERT), split by
    width over `etp` ranks (MoE parallel folding's expert TP; default tp). `passes`: names of more rows over those
    copies (the framework's, cost.op_table.copy_passes), each moving COPY_PASS_ELEMENTS of them a pass."""
    h, gated = model.hidden, model.ffn_kind == "swiglu"
    rows = _ffn("", BLOCK_DENSE_FFN, model.ffn // tp, h, gated)
    moe = model.moe
    if moe is None:
        return rows
    width = moe.expert_ffn // tp
    copies = moe.top_k / tp
    rows += [_gemm("router", BLOCK_MOE, moe.experts, h, precise=True),
             _elementwise("permute", BLOCK_MOE, 2 * copies * h), _elementwise("unpermute", BLOCK_MOE, 2 * copies * h)]
    for name in passes:
        fwd, bwd = COPY_PASS_ELEMENTS.get(name, (2, 2))
        rows.append(_elementwise(name, BLOCK_MOE, fwd * copies * h, bwd=bwd / fwd))
    if moe.shared_experts:
        rows += _ffn("shared-", BLOCK_MOE, moe.shared_experts * width, h, gated)
    return rows + _ffn("expert-", BLOCK_EXPERT, moe.expert_ffn // (etp or tp), h, gated)


def dense_layer(model, tp: int, sp: bool) -> list[tuple]:
    """A dense layer in Megatron order (pre-norm, as GPT-3 and Llama), attention core excluded."""
    half = attention_half(model, tp, sp)
    ffn = [(n, BLOCK_LAYER, *rest) for n, _, *rest in _ffn("", BLOCK_LAYER, model.ffn // tp, model.hidden,
                                                             model.ffn_kind == "swiglu")]
    return half[:-2] + [half[-2], *ffn, half[-1]]


CROSS_ENTROPY_BYTES = {"fused": (8.0, 16.0), "unfused": (38.0, 14.0)}
"""Bytes a logit (forward, backward) by workload.cross_entropy. unfused (Megatron's PyTorch ops): cast 6, max 4,
subtract 8, exp 8, sum 4, normalize 8; backward scale 8, cast back 6. fused: one pass (also serving's sampling)."""


def edge_rows(model, tp: int, sp: bool, cross_entropy: str = "fused") -> list[tuple]:
    """Embedding lookup on the first stage; final norm, LM head and logits pass (CROSS_ENTROPY_BYTES) on the last."""
    hs, vocab = model.hidden / (tp if sp else 1), -(-model.vocab // tp)
    forward, backward = CROSS_ENTROPY_BYTES[cross_entropy]
    return [_elementwise("embedding", BLOCK_EMBED, 2 * hs), _elementwise("final-norm", BLOCK_HEAD, 2 * hs),
            _gemm("lm-head", BLOCK_HEAD, vocab, model.hidden, precise=True),
            _elementwise("logits", BLOCK_HEAD, forward / ACT_BYTES * vocab, bwd=backward / forward)]


def layer_rows(model, tp: int, sp: bool, dtype: str = "bf16", training: bool = True,
               etp: int | None = None, current_scaling: bool = False, cross_entropy: str = "fused",
               passes: tuple[str, ...] = (), arch: str | None = None) -> OpRows:
    """Every operator of a layer (attention core excluded), the embedding and the head, one TP rank:
    a dense model's layer is one BLOCK_LAYER; MoE and MLA models split it into the attention half and
    the FFN half (routed experts split over `etp` ranks, default tp). Under a low-precision `dtype` each
    low-precision GEMM's input is cast first (cast_rows; `current_scaling`: FP8 current scaling's amax pass;
    `arch`: the device generation, which training's casts need: cast_copies). `passes`: ffn_half's extra passes
    over the routed copies."""
    if model.moe is None and model.mla is None:
        rows = dense_layer(model, tp, sp) + edge_rows(model, tp, sp, cross_entropy)
    else:
        rows = (attention_half(model, tp, sp) + edge_rows(model, tp, sp, cross_entropy)
                + ffn_half(model, tp, etp, passes))
    return OpRows.of(cast_rows(rows, dtype, training, current_scaling, arch))


CAST_BYTES = {**{k: DTYPE_BYTES[k] for k in ("fp8", "mxfp8", "nvfp4", "mxfp4")}, "fp8-block": 1.0 + 4 / 128}
"""Bytes per element of an activation cast for a low-precision GEMM, its block scales included: the format's
DTYPE_BYTES, but DeepSeek's FP8 an FP32 scale a 1x128 tile (its weights: a 128x128 block)."""


def operand_bytes(dtype: str) -> float:
    """Bytes a GEMM operand takes under compute dtype `dtype` (16-bit unless low precision)."""
    return CAST_BYTES.get(dtype, float(ACT_BYTES))


NON_TN_FP8 = ("blackwell",)
"""Generations whose FP8 GEMMs take either operand layout (Transformer Engine's non_tn_fp8_gemm_supported: compute
capability 10.x and 13+, from TE 2.0): a per-tensor FP8 cast there writes no transposed copy."""


def cast_copies(dtype: str, training: bool, arch: str | None) -> int:
    """Copies a cast for a low-precision GEMM writes: one for the GEMM, and in training a column-wise one for the
    weight gradient, which reads the operand transposed. Per-tensor FP8 on a NON_TN_FP8 generation serves both
    from one copy (Transformer Engine's Float8 quantizers make no transpose there); block-scaled formats (MXFP8,
    NVFP4, DeepSeek's blocks) scale along the reduction dimension, so their column-wise copy is quantized apart.
    Training needs `arch` (none is assumed); serving writes one copy on every generation."""
    if training and arch is None:
        raise ValueError("cast_copies: a training cast's copies depend on the device generation: pass arch")
    return 2 if training and not (dtype == "fp8" and arch in NON_TN_FP8) else 1


def cast_rows(rows: list[tuple], dtype: str, training: bool, current_scaling: bool = False,
              arch: str | None = None) -> list[tuple]:
    """`rows` with a memory-bound cast before every low-precision GEMM (Transformer Engine's cast-transpose;
    per-token quantization in serving engines): it reads the 16-bit input and writes it at the dtype's bytes,
    cast_copies times, amax and scales fused. Backward casts the output gradient likewise. Nothing under 16-bit
    compute. With `current_scaling` (per-tensor FP8 scaled by its own amax) an amax kernel reads the input first."""
    if dtype not in CAST_BYTES:
        return rows
    copies = cast_copies(dtype, training, arch)
    amax_pass = 1.0 if current_scaling and dtype == "fp8" else 0.0
    per_element = 1.0 + amax_pass + copies * CAST_BYTES[dtype] / ACT_BYTES  # in 16-bit elements: reads + writes
    out = []
    for r in rows:
        name, block, n, k, *_ = r
        if n > 0 and not (len(r) > 7 and r[7]):
            out.append((f"{name}-cast", block, 0.0, 0.0, per_element * k, n / k if training else 0.0, r[6]))
        out.append(r)
    return out


def attention_core(sh: LayerShape) -> list[dict]:
    """Training rows of the attention core of one micro-batch: one fused (flash) kernel that skips the
    masked half (and, in windowed layers, the keys out of the window: _flash_rows), or the unfused score and value
    GEMMs with softmax and dropout over the whole score matrix, window or not. MLA attends with query/key width qk
    and value width v per head (always fused)."""
    if sh.mla is not None:
        qk, v = mla_dims_of(sh.mla, sh.head_dim)[:2]
        full = 2.0 * sh.tokens * sh.seq * sh.heads * (qk + v)
        io = ACT_BYTES * sh.tokens * sh.heads * (2 * qk + 2 * v)
        return [_core("attention", (sh.seq, sh.seq, qk), full / 2, io, full, selective=False)]
    full = 4.0 * sh.tokens * sh.seq * sh.head_dim * sh.heads
    if sh.flash:
        io = ACT_BYTES * sh.tokens * sh.head_dim * (2 * sh.heads + 2 * sh.kv_heads)
        return _flash_rows(sh, full, io)
    batch = sh.heads * sh.sequences  # one score matrix a head and sequence
    q = sh.tokens // sh.sequences
    scores = batch * q * sh.seq
    gemms = [_core(name, (q, n, k), 2.0 * q * n * k * batch, ACT_BYTES * (q * k + k * n + q * n) * batch,
                   2.0 * q * n * k * batch, backward=2.0)
             for name, n, k in (("scores", sh.seq, sh.head_dim), ("values", sh.head_dim, sh.seq))]
    softmax, dropout = (_core(name, (0, 0, 0), 0.0, ACT_BYTES * scores * io, 0.0, backward=2.0)
                        for name, io in (("softmax", 2.0), ("attn-dropout", 2.5)))
    return [gemms[0], softmax, dropout, gemms[1]]


def _flash_rows(sh: LayerShape, full: float, io: float) -> list[dict]:
    """The fused kernel of a layer averaged over the model's layers: full causal attention in the share 1 - windowed,
    and in the windowed share a kernel whose queries see window_keys(seq, window) keys on average (FLOP, bytes and
    the keys behind its efficiency; its shape is that of a causal kernel over twice those keys). `full`: FLOP of the
    whole score matrix; `io`: bytes of Q, K, V and O."""
    share = sh.windowed if sh.window else 0.0
    rows = [_core("attention", (sh.seq, sh.seq, sh.head_dim), (1 - share) * full / 2, (1 - share) * io,
                  (1 - share) * full)] if share < 1 else []
    if share > 0:
        keys = window_keys(sh.seq, sh.window)
        per_key = full / sh.seq
        rows.append(_core("attention-window", (sh.seq, 2 * keys, sh.head_dim), share * per_key * keys, share * io,
                          share * per_key * min(sh.window, sh.seq)))
    return rows


def query_key_pairs(new, ctx, window: int | None = None):
    """Query-key pairs of chunks of `new` queries on `ctx` cached keys (arrays or numbers), query j (1-based) seeing
    ctx + j keys, or at most `window` of them: n c + n (n + 1) / 2, or the sum of min(c + j, w) over j."""
    if window is None:
        return new * ctx + new * (new + 1) / 2
    inside = np.clip(window - ctx, 0.0, new)  # queries whose keys all fit the window
    return inside * ctx + inside * (inside + 1) / 2 + (new - inside) * window


def window_keys(seq: int, window: int) -> float:
    """Mean keys a query sees under causal sliding-window attention over a sequence of `seq` tokens: query i
    (1-based) sees min(i, window) keys."""
    return float(query_key_pairs(seq, 0.0, window)) / seq


FUSED_ATTENTION = ("attention", "attention-window", "attention-window-bwd")
"""Names of the fused (flash) attention rows of an OpTable."""


FLASH_BACKWARD_FLOP = 2.5
"""A fused (flash) attention backward's FLOP over its forward's: the score GEMM again and the four gradient GEMMs
against the forward's two (kernels.yaml's convention for attention backward throughput)."""


def _core(name, shape, flops, io, model_flops, backward: float = FLASH_BACKWARD_FLOP, selective: bool = True) -> dict:
    """An attention-core row: backward `backward` x the forward FLOP (a fused kernel recomputes the
    scores: FLASH_BACKWARD_FLOP), twice the forward bytes, no weight gradient."""
    return dict(name=name, gemm=shape, flops_f=flops, bytes_f=io, flops_b=backward * flops, bytes_b=2 * io,
                flops_w=0.0, bytes_w=0.0, model_flops_f=model_flops, selective=selective)


def mla_dims(model) -> tuple[int, int, int]:
    """(query/key width, value width, rope width) per head of multi-head latent attention."""
    return mla_dims_of(model.mla, model.head_dim)


def mla_dims_of(mla, head_dim: int) -> tuple[int, int, int]:
    """mla_dims of an MLASpec, the model's head_dim the default widths."""
    nope = mla.qk_nope_head_dim or head_dim
    return nope + mla.qk_rope_head_dim, mla.v_head_dim or head_dim, mla.qk_rope_head_dim


def layer_shape(scenario) -> LayerShape:
    """The per-rank shapes of a scenario's micro-batch."""
    m, w, lay = scenario.model, scenario.workload, scenario.layout
    tp, cp = lay.tp, lay.cp
    tokens = w.micro_batch * w.seq_len // cp
    return LayerShape(
        sequences=w.micro_batch, tokens=tokens, seq=w.seq_len, hidden=m.hidden, heads=m.heads // tp,
        kv_heads=max(m.kv_heads // tp, 1), head_dim=m.head_dim, ffn=m.ffn // tp,
        gated=m.ffn_kind == "swiglu", vocab=-(-m.vocab // tp),
        norm_tokens=tokens // tp if lay.sequence_parallel else tokens,
        flash=scenario.attention_kernel != "unfused" or m.mla is not None, mla=m.mla,
        **window_fields(m),
    )


def window_fields(model) -> dict:
    """{window, windowed} of a model with a sliding window (keys a windowed query sees at most, share of the layers
    windowed), else {}: keyword arguments of LayerShape and serving's AttentionCosts."""
    sw = model.sliding_window
    return {} if sw is None else {"window": sw.window, "windowed": sw.windowed_share(model.layers)}
