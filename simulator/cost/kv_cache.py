"""KV cache sizes: elements and bytes a token adds per layer, over all layers and on one TP rank
(GQA/MHA heads split over TP ranks and replicated past kv_heads, an MLA latent whole on every rank; or, with
layout.kv_sharding batch, the sequences split over the ranks past the heads: the cache over all tp ranks)."""

from __future__ import annotations

from .ops import DTYPE_BYTES


def kv_elements_per_token_layer(model) -> int:
    """Cached elements per token and layer: 2 * kv_heads * head_dim, or kv_lora_rank + rope dim (MLA)."""
    if model.mla is not None:
        return model.mla.kv_lora_rank + model.mla.qk_rope_head_dim
    return 2 * model.kv_heads * model.head_dim


def kv_bytes_per_token(model, kv_dtype: str) -> float:
    """KV cache bytes one token adds over all layers: 2 * L * kv_heads * head_dim * bytes (MLA: latent)."""
    return model.layers * kv_elements_per_token_layer(model) * DTYPE_BYTES[kv_dtype]


def kv_split(model, tp: int, sharding: str = "heads") -> int:
    """Ranks of a TP group the cache is divided over: its heads (ModelSpec.cache_heads) up to tp, or all tp ranks
    when the sequences split past the heads (`sharding` batch)."""
    return tp if sharding == "batch" else min(tp, model.cache_heads)


def kv_bytes_per_token_per_rank(model, kv_dtype: str, tp: int, layers: int, sharding: str = "heads") -> float:
    """KV bytes a token adds, on average, on one TP rank holding `layers` layers: the cache over kv_split ranks
    (with batch sharding a rank holds a 1/tp share of the sequences' caches, not every token's)."""
    return layers * kv_elements_per_token_layer(model) / kv_split(model, tp, sharding) * DTYPE_BYTES[kv_dtype]
