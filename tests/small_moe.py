"""The small MoE model and 16-GPU H800 topology the MoE tests simulate (simulator.scenario sections as mappings)."""

SMALL_MOE = {"layers": 4, "hidden": 1024, "heads": 8, "ffn": 4096, "ffn_kind": "swiglu", "vocab": 32000,
             "moe": {"experts": 64, "top_k": 8, "shared_experts": 1, "expert_ffn": 512, "dense_layers": 1}}
"""4 layers (the first dense), 64 experts of width 512, top-8, one shared expert."""
H800 = {"preset": "hgx-h800", "domains": 2}
"""16 GPUs: two 8-GPU nodes, NVLink 200 GB/s, NIC 50 GB/s a GPU."""


def ep8_step(make_scenario, model=SMALL_MOE, layout=None, **workload):
    """A training step of `model` on H800 as EP8 x DP2 without pipelining (plain 1F1B: gradient accumulation), 4,096
    tokens a sequence, 32 sequences a step (2 micro-batches a rank); `layout` (a mapping) and `workload` override."""
    return make_scenario(model=model, topology=H800, layout={"ep": 8, "schedule": "1f1b", **(layout or {})},
                         workload={"seq_len": 4096, "global_batch": 32, "micro_batch": 1, **workload})
