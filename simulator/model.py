"""Model -> OpTable: the operators of one transformer layer, the embedding and the LM head as arrays.

Every figure is per micro-batch and per tensor-parallel rank (the ranks of one TP group are symmetric):
FLOP, bytes moved through HBM, and GEMM shapes for the forward pass, the input-gradient pass (B) and the
weight-gradient pass (W). Shapes follow Megatron-LM's tensor-parallel split (Shoeybi et al. 2019):
QKV and FC1 are column-parallel, the attention projection and FC2 row-parallel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK_EMBED, BLOCK_LAYER, BLOCK_HEAD = 0, 1, 2
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
        flash=getattr(w, "attention", "flash") == "flash",
    )


def build_op_table(scenario) -> OpTable:
    """The OpTable of one layer plus the embedding and head, per micro-batch and TP rank."""
    sh = layer_shape(scenario)
    rows = layer_ops(sh) + edge_ops(sh)
    col = lambda key, dtype=float: np.array([r[key] for r in rows], dtype=dtype)  # noqa: E731
    return OpTable(
        name=tuple(r["name"] for r in rows), block=col("block", np.int8),
        gemm=np.array([r["gemm"] for r in rows], dtype=float),
        flops_f=col("flops_f"), bytes_f=col("bytes_f"), flops_b=col("flops_b"), bytes_b=col("bytes_b"),
        flops_w=col("flops_w"), bytes_w=col("bytes_w"), selective=col("selective", bool),
        model_flops_f=col("model_flops_f"),
    )


def parameter_counts(model) -> dict[str, float]:
    """Parameters of one layer, the embedding and the untied output layer (count, not bytes)."""
    h, d = model.hidden, model.head_dim
    attn = h * (model.heads + 2 * model.kv_heads) * d + model.heads * d * h
    mlp = h * model.ffn * (3 if model.ffn_kind == "swiglu" else 2)
    norms = 2 * h
    embed = model.vocab * h
    return {"layer": float(attn + mlp + norms), "embedding": float(embed),
            "head": 0.0 if model.tied_embeddings else float(embed), "final_norm": float(h)}


def total_parameters(model) -> float:
    """All parameters of the model (count)."""
    c = parameter_counts(model)
    return model.layers * c["layer"] + c["embedding"] + c["head"] + c["final_norm"]


def model_flops_per_token(model, seq_len: int) -> float:
    """MFU's FLOP per trained token: 6 N + 12 L h s (N all parameters; causal attention in full).

    The definition of DESIGN.md section 8 and PaLM's appendix B; for GPT models it equals
    Korthikanti et al.'s 72 B s l h^2 (1 + s/6h + V/16lh) to within 0.5% (their head term is 4.5 V h).
    """
    return 6.0 * total_parameters(model) + 12.0 * model.layers * model.hidden * seq_len
