"""What a training scenario's `auto` settings resolve to: the framework setting most published training on the
device's generation ran (the development set's runs counted in docs/calibration.md)."""

from __future__ import annotations

TRAINING_ATTENTION = {"ampere": "unfused", "hopper": "flash2"}
"""The attention kernel a training scenario's workload.attention auto runs, by generation (else flash, the newest
measured): the kernel most published training on the generation ran (docs/calibration.md, "The default attention
kernel"). Ampere: unfused, as Megatron-LM until 2022 ran it (its Tables of 2021 and Korthikanti et al. 2022: all 26
A100 runs of the development set; MT-NLG's Megatron-DeepSpeed too); Hopper: FlashAttention-2's rates, the fused
kernels of 2023-2024 (MLPerf Training v3.1, NeMo's 2024 recipes and long-sequence runs, Llama 3, DeepSeek-V3: 30 of
the set's 53 Hopper runs; FlashAttention-3's and cuDNN's newer Hopper kernels reached the frameworks from late 2024:
flash)."""

TP_OVERLAP = ("hopper", "blackwell")
"""The generations on which a training scenario's layout.tp_overlap auto overlaps the tensor-parallel collectives
with the GEMMs (where sequence parallelism runs them; Scenario.tp_overlap): Transformer Engine's userbuffers, which
NVIDIA's Megatron-Core recipes (NeMo, Megatron-Bridge, MLPerf Training from v3.1) turn on for TP with sequence
parallelism: 45 of the development set's 53 Hopper and Blackwell runs at TP > 1 (docs/calibration.md, "The default
TP communication overlap"). Ampere's published runs (2021-2022) predate it."""
