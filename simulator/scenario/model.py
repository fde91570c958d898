"""The model part of a scenario: a decoder-only transformer's shape, its experts (MoE) and latent
attention (MLA)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool, model_validator

from .base import NonNegInt, PosInt, Real, _derived, _fill, _Frozen, _rule


class MoESpec(_Frozen):
    """Mixture-of-experts feed-forward blocks: routed experts, top-k, shared experts, dense first layers."""

    experts: PosInt
    """Routed experts per MoE layer."""
    top_k: PosInt
    """Routed experts each token visits."""
    shared_experts: NonNegInt = 0
    """Always-on experts per MoE layer."""
    expert_ffn: PosInt | None = None
    """Inner width of one expert's FFN; default the model's `ffn`."""
    dense_layers: NonNegInt = 0
    """Leading layers with a dense FFN instead of experts."""
    layer_step: PosInt = 1
    """After the dense layers, one MoE layer in every `layer_step`, the others dense (Megatron-Core's moe_layer_freq;
    Llama 4 Maverick: 2, its odd layers)."""
    expert_bias: StrictBool = False
    """The routed experts' linear layers carry biases (GPT-OSS). Their parameters are not counted (a few per
    thousand); Megatron-Core's eager grouped MLP adds the second GEMM's bias per expert, weighted by the router, in
    PyTorch: a pass over the routed copies in training (cost.op_table.copy_passes)."""

    def is_moe(self, layers: int) -> tuple[bool, ...]:
        """Whether each of `layers` layers holds experts."""
        return tuple(i >= self.dense_layers and (i - self.dense_layers + 1) % self.layer_step == 0
                     for i in range(layers))


class MLASpec(_Frozen):
    """Multi-head latent attention (DeepSeek-V2/V3): the KV cache holds one compressed latent per token
    and layer, shared by all heads, instead of K and V per KV head."""

    kv_lora_rank: PosInt
    """Width of the compressed KV latent c_KV (DeepSeek-V3: 512)."""
    qk_rope_head_dim: PosInt
    """Width of the decoupled RoPE key cached beside the latent (DeepSeek-V3: 64)."""
    q_lora_rank: NonNegInt = 0
    """Rank of the query down-projection (DeepSeek-V3: 1536); 0 projects queries from the hidden state."""
    qk_nope_head_dim: PosInt | None = None
    """Per-head query/key width without rotary embedding (DeepSeek-V3: 128); default model head_dim."""
    v_head_dim: PosInt | None = None
    """Per-head value width (DeepSeek-V3: 128); default model head_dim."""


class SlidingWindowSpec(_Frozen):
    """Local (sliding-window) attention: in a windowed layer a query sees only the `window` most recent keys,
    itself included, and the KV cache keeps only those."""

    window: PosInt
    """Keys a query sees in a windowed layer (GPT-OSS: 128; Mistral 7B: 4096)."""
    full_every: NonNegInt = 0
    """One full-attention layer in every `full_every` layers (GPT-OSS: 2, alternating; Gemma 3: 6); 0: every
    layer windowed."""

    def windowed_share(self, layers: int) -> float:
        """Fraction of `layers` that attend through the window (the full layers: every full_every-th)."""
        full = 0 if self.full_every == 0 else layers // self.full_every
        return (layers - full) / layers


class MTPSpec(_Frozen):
    """Multi-token prediction (DeepSeek-V3 section 2.2): `depth` sequential modules after the last layer, module k
    predicting token i + k + 1 from module k - 1's hidden state and token i + k's embedding. Each holds a projection
    of the two normalized vectors (2h -> h) and one transformer layer like the model's last; it shares the embedding
    and the output head with the main model (training only: serving does not run it)."""

    depth: PosInt = 1
    """Modules (extra tokens predicted); DeepSeek-V3 trains with 1."""


class ModelSpec(_Frozen):
    """Decoder-only transformer shape."""

    name: str = "custom"
    """Model name; a preset's name when loaded from one."""
    layers: PosInt
    """Transformer layers."""
    hidden: PosInt
    """Model width h."""
    heads: PosInt
    """Attention (query) heads a."""
    kv_heads: PosInt | None = None
    """Key/value heads (grouped-query attention); default `heads`."""
    head_dim: PosInt | None = None
    """Width of one head; default hidden // heads."""
    ffn: PosInt | None = None
    """FFN inner width; default 4 * hidden (swiglu presets state it)."""
    ffn_kind: Literal["gelu", "squared_relu", "swiglu"] = "gelu"
    """FFN kind: gelu or squared_relu (Nemotron-4: relu(x)^2), 2 matrices and one elementwise activation, or
    swiglu (3 matrices, gated)."""
    vocab: PosInt = 51200
    """Vocabulary size, padded as the framework pads it."""
    tied_embeddings: StrictBool = False
    """Whether the output layer shares the input embedding's weights."""
    rope: StrictBool = True
    """Rotary position embeddings applied to queries and keys in every layer (Llama, DeepSeek, Qwen);
    false for learned absolute positions added once to the embedding (GPT-2/3, Megatron GPT)."""
    qk_norm: StrictBool = False
    """RMSNorm over each query and key head before RoPE (Qwen3's q_norm and k_norm; Megatron-Core's qk_layernorm): a
    memory-bound pass over Q and K, whose inputs are kept for backward. (MLA's latent norms are MLA's own.)"""
    glu_clamp: Annotated[Real, Field(gt=0)] | None = None
    """Clamp of a gated activation's inputs (GPT-OSS: 7, the gate's from above, the linear part's both ways; None:
    none). Megatron-Core clamps them in PyTorch before its fused activation: training pays a pass over the first GEMM's
    output (cost.op_table.activation_as_run); serving engines fuse it."""
    rope_mscale: Annotated[Real, Field(gt=0)] = 1.0
    """YaRN's attention factor multiplied into RoPE's cosine and sine (GPT-OSS: 0.1 ln 32 + 1 = 1.3466; DeepSeek-V3's
    mscale and mscale_all_dim cancel to 1). Megatron-Core's fused RoPE kernel takes none but 1: training with another
    runs RoPE as PyTorch ops (cost.op_table.rope_as_run)."""
    dropout: Annotated[Real, Field(ge=0, lt=1)] = 0.0
    """Hidden dropout probability (GPT-3 and Megatron GPT: 0.1; Llama: 0): the fused bias-dropout-add
    writes a one-byte mask per element and keeps it for the backward pass."""
    moe: MoESpec | None = None
    """Mixture-of-experts settings; None for a dense model."""
    mla: MLASpec | None = None
    """Multi-head latent attention (compressed KV cache); None for standard (GQA/MHA) attention."""
    mtp: MTPSpec | None = None
    """Multi-token prediction modules trained beside the model (DeepSeek-V3); None for none."""
    sliding_window: SlidingWindowSpec | None = None
    """Local attention in some or all layers (GPT-OSS, Gemma, Mistral); None: every layer attends to the whole
    causal prefix."""

    @property
    def cache_heads(self) -> int:
        """Heads the KV cache has: kv_heads, or 1 for multi-head latent attention (one latent every head reads)."""
        return 1 if self.mla is not None else self.kv_heads

    @model_validator(mode="after")
    def _defaults(self) -> ModelSpec:
        if self.head_dim is None and self.hidden % self.heads:
            _rule("head_dim", f"hidden ({self.hidden}) not divisible by heads ({self.heads}); give head_dim")
        ffn = self.ffn or 4 * self.hidden
        _fill(self, kv_heads=self.kv_heads or self.heads, ffn=ffn,
              head_dim=self.head_dim or self.hidden // self.heads)
        if self.kv_heads > self.heads or self.heads % self.kv_heads:
            _rule("kv_heads", f"heads ({self.heads}) not divisible by kv_heads ({self.kv_heads})")
        if self.moe is not None:
            self._check_moe(ffn)
        if self.sliding_window is not None and self.mla is not None:
            _rule("sliding_window", "sliding-window attention with multi-head latent attention is not modelled")
        return self

    def _check_moe(self, ffn: int) -> None:
        moe = self.moe
        if moe.top_k > moe.experts:
            _rule("moe.top_k", f"top_k ({moe.top_k}) exceeds experts ({moe.experts})")
        if not any(moe.is_moe(self.layers)):
            _rule("moe.dense_layers", f"dense_layers ({moe.dense_layers}) and layer_step ({moe.layer_step}) leave no "
                  f"MoE layer of {self.layers}")
        if moe.expert_ffn is None:
            _fill(self, moe=_derived(moe, expert_ffn=ffn))
