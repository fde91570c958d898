"""KV cache sizes: elements and bytes a token adds per layer, over all layers and on one TP rank
(GQA/MHA heads split over TP ranks and replicated past kv_heads; an MLA latent whole on every rank)."""

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


def kv_bytes_per_token_per_rank(model, kv_dtype: str, tp: int, layers: int) -> float:
    """KV bytes a token adds on one TP rank holding `layers` layers (GQA heads split, MLA latent whole)."""
    if model.mla is not None:
        per_layer = kv_elements_per_token_layer(model)
    else:
        per_layer = 2 * max(model.kv_heads // tp, 1) * model.head_dim
    return layers * per_layer * DTYPE_BYTES[kv_dtype]
