"""Serving memory per device: weights, transient activations and KV bytes a token on each pipeline
stage, and the KV tokens a replica holds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cost.kv_cache import kv_bytes_per_token_per_rank
from ..cost.ops import DTYPE_BYTES, window_fields
from ..cost.placement import split_layers
from .experts import expert_working_set, ffn_weight_elements
from .steps import ACT, LOGIT, ServeRows, layer_weight_elements


@dataclass(frozen=True)
class ServeMemory:
    """Bytes per device of each pipeline stage (arrays of pp), and the replica's KV capacity in tokens.

    An MoE EP unit spans `ranks` attention replicas, each caching its own sequences."""

    weights: np.ndarray
    activations: np.ndarray
    kv_per_token: np.ndarray  # KV bytes a cached token takes on one device of each stage
    capacity: float  # HBM bytes of one device
    ranks: int = 1
    block: int = 1  # tokens per KV cache block: the cache is allocated in whole blocks
    window: int = 0  # keys a windowed layer keeps (sliding-window attention); 0: none
    windowed: float = 0.0  # share of the layers with a window

    def held(self, tokens):
        """KV tokens (of every layer: kv_per_token's unit) the cache of a sequence of `tokens` takes, array or
        number: whole blocks; a windowed layer frees the blocks wholly behind its window (as vLLM's hybrid KV
        cache manager and SGLang's SWA pool do), so it keeps at most ceil(window / block) + 1 blocks."""
        paged = np.ceil(np.divide(tokens, self.block)) * self.block
        if not self.windowed:
            return paged
        kept = np.minimum(paged, (np.ceil(self.window / self.block) + 1) * self.block)
        return np.ceil((1 - self.windowed) * paged + self.windowed * kept)

    def held_total(self, tokens: np.ndarray) -> float:
        """held() summed over sequences holding `tokens` each (the whole blocks counted once without a window)."""
        if not self.windowed:
            return float(np.ceil(tokens / self.block).sum()) * self.block
        return float(self.held(tokens).sum())

    def room(self, tokens: float, free: float) -> float:
        """Tokens a sequence holding `tokens` can add in `free` KV tokens: the rest of its last block, then one
        free token a token, or 1 / (1 - windowed) once its windowed layers keep all they will (any number when
        every layer is windowed)."""
        slack = -tokens % self.block
        kept_all = self.windowed and tokens >= (np.ceil(self.window / self.block) + 1) * self.block
        if not kept_all:
            return slack + free
        return np.inf if self.windowed >= 1 else slack + free / (1 - self.windowed)

    @property
    def kv_tokens(self) -> int:
        """Tokens of KV cache one replica holds: the whole blocks of the tightest stage's free HBM (its free bytes
        over the bytes of a block), times the tokens of a block and the attention replicas."""
        free = self.capacity - self.weights - self.activations
        return self.ranks * self.block * int(max(0.0, float(np.min(np.floor(free / (self.kv_per_token * self.block))))))

    @property
    def fits_weights(self) -> bool:
        return bool(np.all(self.weights + self.activations < self.capacity))

    def by_category(self, kv_tokens_peak: float) -> dict:
        """DESIGN section 8 memory_bytes of the most loaded device at the KV cache's peak (spread evenly
        over the attention replicas)."""
        kv = kv_tokens_peak / self.ranks * self.kv_per_token
        total = self.weights + self.activations + kv
        s = int(np.argmax(total))
        return {"weights": float(self.weights[s]), "gradients": 0.0, "optimizer": 0.0,
                "activations": float(self.activations[s]), "kv_cache": float(kv[s]), "total": float(total[s]),
                "capacity": self.capacity}


def serve_memory(scn) -> ServeMemory:
    """Weights, transient activations and KV bytes per token on one device of each stage.

    Weights: the stage's layers / tp at weight_dtype, plus the embedding table (first stage) and the LM
    head (last stage; the same table when tied); an MoE model's layers hold their dense FFN, or router,
    shared experts and the EP rank's routed experts. Activations: one layer's working set for the
    largest step (max_num_tokens tokens: hidden states, QKV, FFN intermediates; with experts, the
    copies a rank receives) plus the fp32 logits of the batch; they are reused layer after layer.
    """
    m, w, lay = scn.model, scn.workload, scn.layout
    layers = split_layers(m.layers, lay.pp, lay.stage_layers).astype(float)
    wb = DTYPE_BYTES[w.weight_dtype]
    table = -(-m.vocab // lay.tp) * m.hidden * wb
    tokens = max(w.max_num_tokens, w.batch)
    rows = ServeRows.of(m, lay.tp)
    weights = layers * layer_weight_elements(m, lay.tp) * wb
    widest, experts = float(np.max(rows.layer.n)), 0.0
    if m.moe is not None:
        weights = (layers * (rows.layer.weights.sum() + 2 * m.hidden) + ffn_weight_elements(scn)) * wb
        widest = max(widest, float(np.max(rows.dense_ffn.n)), float(np.max(rows.moe.n)))
        experts = expert_working_set(scn, tokens)
    weights[0] += table
    weights[-1] += 0.0 if (m.tied_embeddings and lay.pp == 1) else table
    act = np.full(lay.pp, ACT * tokens * (3 * m.hidden + widest) + experts)
    act[-1] += LOGIT * w.batch * -(-m.vocab // lay.tp)
    kv = layers * kv_bytes_per_token_per_rank(m, w.kv_dtype, lay.tp, 1, lay.kv_sharding)
    return ServeMemory(weights=weights, activations=act, kv_per_token=kv, capacity=scn.topology.device.hbm_bytes,
                       ranks=lay.ep, block=w.kv_block, **window_fields(m))


def max_batch(scn, context: int) -> int:
    """Most sequences of `context` tokens whose KV cache (whole blocks each) fits one replica next to its weights."""
    mem = serve_memory(scn)
    return int(mem.kv_tokens // mem.held(max(context, 1)))
