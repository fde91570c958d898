"""The small MoE model and 16-GPU H800 topology the MoE tests simulate (simulator.scenario sections as mappings)."""

SMALL_MOE = {"layers": 4, "hidden": 1024, "heads": 8, "ffn": 4096, "ffn_kind": "swiglu", "vocab": 32000,
             "moe": {"experts": 64, "top_k": 8, "shared_experts": 1, "expert_ffn": 512, "dense_layers": 1}}
"""4 layers (the first dense), 64 experts of width 512, top-8, one shared expert."""
H800 = {"preset": "hgx-h800", "domains": 2}
"""16 GPUs: two 8-GPU nodes, NVLink 200 GB/s, NIC 50 GB/s a GPU."""
