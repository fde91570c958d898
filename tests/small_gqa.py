"""The small dense GQA model the per-operator tests build op tables of (a simulator.scenario model section)."""

SMALL_GQA = {"name": "gqa-2b", "layers": 4, "hidden": 2048, "heads": 16, "kv_heads": 4, "head_dim": 128, "ffn": 5632,
             "ffn_kind": "swiglu", "vocab": 32000}
"""4 layers of hidden 2,048: 16 query and 4 key heads of width 128 (2,560 query and key elements a token), a SwiGLU
FFN of width 5,632."""
