"""Parameter counts of a model (per layer, embedding, head; total and active) and MFU's FLOP per
trained token."""

from __future__ import annotations

from .ops import mla_dims


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
    moe = sum(model.moe.is_moe(model.layers))
    return (model.layers - moe) * c["layer"] + moe * c[moe_key] + edges


def total_parameters(model) -> float:
    """All parameters of the model (count): every expert of every MoE layer."""
    return _parameters(model, "moe_layer")


def active_parameters(model) -> float:
    """Parameters one token uses (count): the top_k routed experts, shared experts and router of each
    MoE layer; equal to total_parameters for a dense model."""
    return _parameters(model, "moe_layer_active")


def mtp_parameters(model) -> dict[str, float]:
    """Parameters of one multi-token-prediction module (count; zeros without model.mtp): "projection" (the 2h -> h
    projection, the norms of the hidden state and of the embedding, its own final norm: 2 h^2 + 3 h), "layer" (its
    transformer layer, like the model's last: every expert of an MoE one) and "active" (what a token uses:
    projection and norms, the layer's top_k routed experts, shared experts and router)."""
    if model.mtp is None:
        return {"projection": 0.0, "layer": 0.0, "active": 0.0}
    c, h = parameter_counts(model), model.hidden
    moe = model.moe is not None
    projection = float(2 * h * h + 3 * h)
    return {"projection": projection, "layer": c["moe_layer"] if moe else c["layer"],
            "active": projection + (c["moe_layer_active"] if moe else c["layer"])}


def attended_keys(model, seq_len: int) -> float:
    """Keys a query's mask spans, averaged over the layers: the sequence, or the window in windowed layers."""
    sw = model.sliding_window
    if sw is None:
        return float(seq_len)
    share = sw.windowed_share(model.layers)
    return (1 - share) * seq_len + share * min(sw.window, seq_len)


def model_flops_per_token(model, seq_len: int) -> float:
    """MFU's FLOP per trained token: 6 N + 12 L h s (N active parameters; causal attention in full).

    The definition of DESIGN.md section 8 and PaLM's appendix B; for GPT models it equals
    Korthikanti et al.'s 72 B s l h^2 (1 + s/6h + V/16lh) to within 0.5% (their head term is 4.5 V h).
    N counts the parameters a token uses (active: top_k routed experts of each MoE layer). The attention
    term is 6 L s a (d_qk + d_v) over the heads' widths (MLA's, or head_dim), 12 L h s when a * d = h; in a
    sliding-window layer s is the window (where shorter), its mask's extent as s is the causal mask's.

    Multi-token prediction adds, per module, 6 x (its active parameters and the output head it runs again: vocab h)
    and one layer's attention term: the module's layer, projection and loss are trained work like the main model's.
    """
    qk, v = mla_dims(model)[:2] if model.mla is not None else (model.head_dim, model.head_dim)
    attention = 6.0 * model.layers * attended_keys(model, seq_len) * model.heads * (qk + v)
    if model.mtp is None:
        return 6.0 * active_parameters(model) + attention
    module = 6.0 * (mtp_parameters(model)["active"] + model.vocab * model.hidden) + attention / model.layers
    return 6.0 * active_parameters(model) + attention + model.mtp.depth * module
