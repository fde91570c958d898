"""Model -> OpTable: the operators of one transformer layer, the embedding and the LM head as arrays.

Every figure is per micro-batch and per tensor-parallel rank (the ranks of one TP group are symmetric):
FLOP, bytes moved through HBM, and GEMM shapes for the forward pass, the input-gradient pass (B) and the
weight-gradient pass (W). Shapes follow Megatron-LM's tensor-parallel split (Shoeybi et al. 2019):
QKV and FC1 are column-parallel, the attention projection and FC2 row-parallel.

A dense model's layer is one block (BLOCK_LAYER). A mixture-of-experts model splits it: BLOCK_LAYER
holds the attention half (norms, attention, residuals), BLOCK_DENSE_FFN the FFN of the dense first
layers, BLOCK_MOE the fixed part of an MoE FFN (router, token permutation, shared experts) and
BLOCK_EXPERT one routed expert's GEMMs per token routed to it (`bytes_fixed` holds its weights, read
once per micro-batch); simulator.moe scales those rows by the tokens each expert receives.
Multi-head latent attention (DeepSeek-V2/V3) replaces QKV by low-rank down- and up-projections.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK_EMBED, BLOCK_LAYER, BLOCK_HEAD = 0, 1, 2
BLOCK_DENSE_FFN, BLOCK_MOE, BLOCK_EXPERT = 3, 4, 5
ACT_BYTES = 2  # 16-bit activations


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
    model_flops_f: np.ndarray  # FLOP counted by MFU (causal attention in full), forward
    bytes_fixed: np.ndarray | None = None  # BLOCK_EXPERT rows: weight bytes read per pass, any token count

    def total(self, field: str, block: int) -> float:
        """Sum of one array over the rows of one block."""
        return float(getattr(self, field)[self.block == block].sum())


def _gemm(name, block, m, n, k):
    """A GEMM y[m,n] = x[m,k] w[k,n]: forward, dgrad and wgrad, 16-bit operands."""
    flops = 2.0 * m * n * k
    io = ACT_BYTES * (m * k + k * n + m * n)
    return dict(name=name, block=block, gemm=(m, n, k), flops_f=flops, bytes_f=io, flops_b=flops,
                bytes_b=io, flops_w=flops, bytes_w=io, selective=False, model_flops_f=flops)


def _elementwise(name, block, elements, reads, writes, bwd_factor=2.0):
    """A memory-bound op touching `elements` values: bytes = elements * (reads + writes) * 2."""
    io = ACT_BYTES * elements * (reads + writes)
    return dict(name=name, block=block, gemm=(0, 0, 0), flops_f=0.0, bytes_f=io, flops_b=0.0,
                bytes_b=bwd_factor * io, flops_w=0.0, bytes_w=0.0, selective=False, model_flops_f=0.0)


def _attention_core(sh: LayerShape):
    """Scores and value products: 4 * tokens * seq * head_dim FLOP per head, causal skip when flash."""
    full = 4.0 * sh.tokens * sh.seq * sh.head_dim * sh.heads
    if sh.flash:
        io = ACT_BYTES * sh.tokens * sh.head_dim * (2 * sh.heads + 2 * sh.kv_heads)
        row = dict(name="attention", block=BLOCK_LAYER, gemm=(sh.seq, sh.seq, sh.head_dim),
                   flops_f=full / 2, bytes_f=io, flops_b=2.5 * full / 2, bytes_b=2 * io,
                   flops_w=0.0, bytes_w=0.0, selective=True, model_flops_f=full)
        return [row]
    batch = sh.heads * sh.sequences  # one score matrix a head and sequence
    queries = sh.tokens // sh.sequences
    scores = batch * queries * sh.seq
    qk = _gemm("scores", BLOCK_LAYER, queries, sh.seq, sh.head_dim)
    av = _gemm("values", BLOCK_LAYER, queries, sh.head_dim, sh.seq)
    rows = []
    for r in (qk, av):
        r = {key: (val * batch if key.startswith(("flops", "bytes", "model")) else val)
             for key, val in r.items()}
        r.update(flops_b=2 * r["flops_f"], bytes_b=2 * r["bytes_f"], flops_w=0.0, bytes_w=0.0,
                 selective=True)
        rows.append(r)
    softmax = _elementwise("softmax", BLOCK_LAYER, scores, reads=1, writes=1)
    dropout = _elementwise("attn-dropout", BLOCK_LAYER, scores, reads=1, writes=1.5)
    for r in (softmax, dropout):
        r["selective"] = True
    return [rows[0], softmax, dropout, rows[1]]


def layer_ops(sh: LayerShape) -> list[dict]:
    """The operators of one transformer layer (pre-norm, as GPT-3 and Llama)."""
    h, t, nt = sh.hidden, sh.tokens, sh.norm_tokens
    qkv_n = (sh.heads + 2 * sh.kv_heads) * sh.head_dim
    fc1_n = sh.ffn * (2 if sh.gated else 1)
    return [
        _elementwise("norm1", BLOCK_LAYER, nt * h, reads=1, writes=1),
        _gemm("qkv", BLOCK_LAYER, t, qkv_n, h),
        *_attention_core(sh),
        _gemm("proj", BLOCK_LAYER, t, h, sh.heads * sh.head_dim),
        _elementwise("residual1", BLOCK_LAYER, nt * h, reads=2, writes=1),
        _elementwise("norm2", BLOCK_LAYER, nt * h, reads=1, writes=1),
        _gemm("fc1", BLOCK_LAYER, t, fc1_n, h),
        _elementwise("activation", BLOCK_LAYER, t * sh.ffn, reads=2 if sh.gated else 1, writes=1),
        _gemm("fc2", BLOCK_LAYER, t, h, sh.ffn),
        _elementwise("residual2", BLOCK_LAYER, nt * h, reads=2, writes=1),
    ]


def mla_dims(model) -> tuple[int, int, int]:
    """(query/key width, value width, rope width) per head of multi-head latent attention."""
    mla = model.mla
    nope = mla.qk_nope_head_dim or model.head_dim
    return nope + mla.qk_rope_head_dim, mla.v_head_dim or model.head_dim, mla.qk_rope_head_dim


def _mla_attention(sh: LayerShape, qk: int, v: int) -> dict:
    """Fused attention core with query/key width qk and value width v per head (causal skip)."""
    full = 2.0 * sh.tokens * sh.seq * sh.heads * (qk + v)
    io = ACT_BYTES * sh.tokens * sh.heads * (2 * qk + 2 * v)
    return dict(name="attention", block=BLOCK_LAYER, gemm=(sh.seq, sh.seq, qk), flops_f=full / 2,
                bytes_f=io, flops_b=2.5 * full / 2, bytes_b=2 * io, flops_w=0.0, bytes_w=0.0,
                selective=True, model_flops_f=full)


def attention_ops(sh: LayerShape, model) -> list[dict]:
    """The attention half of a layer (norms and residuals included), for MoE and MLA models.

    MLA (DeepSeek-V3 section 2.1.1): queries through a rank-q_lora down-projection, a norm and an
    up-projection to heads x (nope + rope); keys and values from one down-projection to kv_lora + rope,
    a norm and an up-projection to heads x (nope + v). Down-projections are replicated over TP ranks.
    Selective recompute of an MLA layer is DeepSeek-V3's (section 3.2.3): the norms and the
    up-projections run again in the backward pass, the attention core does not.
    """
    h, t, nt = sh.hidden, sh.tokens, sh.norm_tokens
    if model.mla is None:
        qkv_n = (sh.heads + 2 * sh.kv_heads) * sh.head_dim
        attn = [_gemm("qkv", BLOCK_LAYER, t, qkv_n, h), *_attention_core(sh)]
        v = sh.head_dim
    else:
        qk, v, rope = mla_dims(model)
        mla = model.mla
        if mla.q_lora_rank:
            q = [_gemm("q-down", BLOCK_LAYER, t, mla.q_lora_rank, h),
                 _elementwise("q-norm", BLOCK_LAYER, t * mla.q_lora_rank, reads=1, writes=1),
                 _gemm("q-up", BLOCK_LAYER, t, sh.heads * qk, mla.q_lora_rank)]
        else:
            q = [_gemm("q", BLOCK_LAYER, t, sh.heads * qk, h)]
        kv = [_gemm("kv-down", BLOCK_LAYER, t, mla.kv_lora_rank + rope, h),
              _elementwise("kv-norm", BLOCK_LAYER, t * mla.kv_lora_rank, reads=1, writes=1),
              _gemm("kv-up", BLOCK_LAYER, t, sh.heads * (qk - rope + v), mla.kv_lora_rank)]
        attn = [*q, *kv, _mla_attention(sh, qk, v)]
    rows = [
        _elementwise("norm1", BLOCK_LAYER, nt * h, reads=1, writes=1),
        *attn,
        _gemm("proj", BLOCK_LAYER, t, h, sh.heads * v),
        _elementwise("residual1", BLOCK_LAYER, nt * h, reads=2, writes=1),
        _elementwise("norm2", BLOCK_LAYER, nt * h, reads=1, writes=1),
        _elementwise("residual2", BLOCK_LAYER, nt * h, reads=2, writes=1),
    ]
    if model.mla is not None:
        for r in rows:
            r["selective"] = r["name"] in ("norm1", "norm2", "q-norm", "kv-norm", "q-up", "kv-up")
    return rows


def _ffn(prefix: str, block: int, tokens: int, width: int, hidden: int, gated: bool) -> list[dict]:
    """FC1 (doubled when gated), activation and FC2 of an FFN of `width` on `tokens` tokens."""
    return [_gemm(f"{prefix}fc1", block, tokens, width * (2 if gated else 1), hidden),
            _elementwise(f"{prefix}activation", block, tokens * width, reads=2 if gated else 1, writes=1),
            _gemm(f"{prefix}fc2", block, tokens, hidden, width)]


def moe_ops(sh: LayerShape, model, tp: int) -> list[dict]:
    """Dense-layer FFN, the fixed MoE rows and one routed expert's rows per routed token.

    Router: a GEMM of tokens x experts x hidden (replicated over TP ranks). Each TP rank dispatches
    tokens/tp of the micro-batch's tokens * top_k copies: permutation and un-permutation move them
    through HBM. Experts (shared and routed) are split over TP ranks by width (expert_ffn / tp).
    """
    moe, h, t, gated = model.moe, sh.hidden, sh.tokens, sh.gated
    width = moe.expert_ffn // tp
    copies = t * moe.top_k // tp
    rows = _ffn("", BLOCK_DENSE_FFN, t, sh.ffn, h, gated)
    rows += [_gemm("router", BLOCK_MOE, t, moe.experts, h),
             _elementwise("permute", BLOCK_MOE, copies * h, reads=1, writes=1),
             _elementwise("unpermute", BLOCK_MOE, copies * h, reads=1, writes=1)]
    if moe.shared_experts:
        rows += _ffn("shared-", BLOCK_MOE, t, moe.shared_experts * width, h, gated)
    expert = _ffn("expert-", BLOCK_EXPERT, 1, width, h, gated)
    for r in expert:
        m, n, k = r["gemm"]
        fixed = ACT_BYTES * k * n if m else 0.0  # the expert's weights
        r["bytes_fixed"] = fixed
        for key in ("bytes_f", "bytes_b", "bytes_w"):
            r[key] = max(r[key] - fixed, 0.0) if r[key] else 0.0  # per-token activations only
    return rows + expert


def edge_ops(sh: LayerShape) -> list[dict]:
    """Embedding lookup on the first stage; final norm, LM head and cross-entropy on the last."""
    logits = sh.tokens * sh.vocab
    loss = _elementwise("cross-entropy", BLOCK_HEAD, logits, reads=2, writes=2)  # fp32 logits
    embed = _elementwise("embedding", BLOCK_EMBED, sh.norm_tokens * sh.hidden, reads=1, writes=1)
    return [embed, _elementwise("final-norm", BLOCK_HEAD, sh.norm_tokens * sh.hidden, 1, 1),
            _gemm("lm-head", BLOCK_HEAD, sh.tokens, sh.vocab, sh.hidden), loss]


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
        flash=getattr(w, "attention", "flash") == "flash" or m.mla is not None, mla=m.mla,
    )


def build_op_table(scenario) -> OpTable:
    """The OpTable of one layer plus the embedding and head, per micro-batch and TP rank."""
    sh = layer_shape(scenario)
    model = scenario.model
    if model.moe is None and model.mla is None:
        rows = layer_ops(sh) + edge_ops(sh)
    else:
        rows = attention_ops(sh, model) + edge_ops(sh)
        if model.moe is None:
            rows += _ffn("", BLOCK_DENSE_FFN, sh.tokens, sh.ffn, sh.hidden, sh.gated)
        else:
            rows += moe_ops(sh, model, scenario.layout.tp)
    col = lambda key, dtype=float: np.array([r.get(key, 0.0) for r in rows], dtype=dtype)  # noqa: E731
    fixed = col("bytes_fixed") if model.moe is not None else None
    return OpTable(
        name=tuple(r["name"] for r in rows), block=col("block", np.int8),
        gemm=np.array([r["gemm"] for r in rows], dtype=float),
        flops_f=col("flops_f"), bytes_f=col("bytes_f"), flops_b=col("flops_b"), bytes_b=col("bytes_b"),
        flops_w=col("flops_w"), bytes_w=col("bytes_w"), selective=col("selective", bool),
        model_flops_f=col("model_flops_f"), bytes_fixed=fixed,
    )


def _attention_params(model) -> int:
    """Parameters of one layer's attention: QKV and output projections, or MLA's projections and norms."""
    h, d = model.hidden, model.head_dim
    if model.mla is None:
        return h * (model.heads + 2 * model.kv_heads) * d + model.heads * d * h
    mla, a = model.mla, model.heads
    qk, v, rope = mla_dims(model)
    q = (h * mla.q_lora_rank + mla.q_lora_rank + mla.q_lora_rank * a * qk) if mla.q_lora_rank else h * a * qk
    kv = h * (mla.kv_lora_rank + rope) + mla.kv_lora_rank + mla.kv_lora_rank * a * (qk - rope + v)
    return q + kv + a * v * h


def parameter_counts(model) -> dict[str, float]:
    """Parameters of one layer, the embedding and the untied output layer (count, not bytes).

    "layer" is a dense layer (attention, FFN of width `ffn`, norms). MoE models add "attention" (with
    the norms), "router", "expert" (one routed expert), "shared" (all shared experts), "moe_layer"
    (every expert) and "moe_layer_active" (the top_k routed experts a token visits, shared and router).
    """
    h = model.hidden
    attn = _attention_params(model)
    per_matrix = 3 if model.ffn_kind == "swiglu" else 2
    mlp = h * model.ffn * per_matrix
    norms = 2 * h
    embed = model.vocab * h
    out = {"layer": float(attn + mlp + norms), "embedding": float(embed),
           "head": 0.0 if model.tied_embeddings else float(embed), "final_norm": float(h)}
    moe = model.moe
    if moe is not None:
        expert = h * moe.expert_ffn * per_matrix
        base = attn + norms + moe.experts * h + moe.shared_experts * expert
        out.update(attention=float(attn + norms), router=float(moe.experts * h), expert=float(expert),
                   shared=float(moe.shared_experts * expert), moe_layer=float(base + moe.experts * expert),
                   moe_layer_active=float(base + moe.top_k * expert))
    return out


def _parameters(model, moe_key: str) -> float:
    c = parameter_counts(model)
    edges = c["embedding"] + c["head"] + c["final_norm"]
    if model.moe is None:
        return model.layers * c["layer"] + edges
    dense = model.moe.dense_layers
    return dense * c["layer"] + (model.layers - dense) * c[moe_key] + edges


def total_parameters(model) -> float:
    """All parameters of the model (count): every expert of every MoE layer."""
    return _parameters(model, "moe_layer")


def active_parameters(model) -> float:
    """Parameters one token uses (count): the top_k routed experts, shared experts and router of each
    MoE layer; equal to total_parameters for a dense model."""
    return _parameters(model, "moe_layer_active")


def model_flops_per_token(model, seq_len: int) -> float:
    """MFU's FLOP per trained token: 6 N + 12 L h s (N active parameters; causal attention in full).

    The definition of DESIGN.md section 8 and PaLM's appendix B; for GPT models it equals
    Korthikanti et al.'s 72 B s l h^2 (1 + s/6h + V/16lh) to within 0.5% (their head term is 4.5 V h).
    N counts the parameters a token uses (active: top_k routed experts of each MoE layer). With MLA the
    attention term is 6 L s a (d_qk + d_v), which is 12 L h s when a * d_qk = a * d_v = h.
    """
    if model.mla is None:
        attention = 12.0 * model.layers * model.hidden * seq_len
    else:
        qk, v, _ = mla_dims(model)
        attention = 6.0 * model.layers * seq_len * model.heads * (qk + v)
    return 6.0 * active_parameters(model) + attention
