"""What a scenario's `auto` settings resolve to: for training, the framework setting most published training on the
device's generation ran (the development set's runs counted in docs/calibration.md, beside each setting), the EP
dispatcher by where the EP group lies as well; layout.dp the data-parallel ranks the rest of the mesh leaves."""

from __future__ import annotations

from ..cost.placement import place
from .base import _derived, _rule

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
with the GEMMs (where sequence parallelism runs them): Transformer Engine's userbuffers, which NVIDIA's Megatron-Core
recipes (NeMo's, Megatron-Bridge's, MLPerf Training's GPT-3 175B) turn on for TP with sequence parallelism: 45 of the
development set's 56 Hopper and Blackwell runs at TP > 1 (docs/calibration.md, "The default TP communication
overlap"). Ampere's published runs (2021-2022) predate it."""

SEQUENCE_PARALLEL = ("hopper", "blackwell")
"""The generations on which a training scenario's layout.sequence_parallel auto is on at tp > 1: every Hopper and
Blackwell run of the development set at TP > 1 ran it (56 of 56; Megatron-Core's recipes set it with TP), where 20
of Ampere's 25 did not (Megatron-LM of 2021 predates it)."""

MEGATRON_2021 = ("ampere",)
"""The generations whose published training ran Megatron-LM as of 2021-2022 (Narayanan et al. 2021, Korthikanti et
al. 2022, Megatron-DeepSpeed's MT-NLG and BLOOM: all 26 A100 runs of the development set): auto gives the loss over
the vocabulary in PyTorch ops (workload.cross_entropy unfused), each micro-batch's gradient added to the main one
by a pass of its own in a dense model (workload.grad_accumulation_fusion false) and the gradient reduction after the
last backward (layout.overlap_grad_reduce false) (docs/calibration.md, "Megatron-LM's 2021 settings"). A run on
another stack states its own (FSDP reduces within the backward: scenarios/llama2-7b-hsdp-a100.yaml)."""

FLEX_DISPATCH = ("hopper", "blackwell")
"""The generations on which an MoE training scenario's layout.ep_backend auto runs Megatron-Core's flex dispatcher
where the EP group leaves an 8-GPU node: the development set's 30 Hopper and Blackwell MoE runs (docs/calibration.md,
"The default EP dispatcher") ran DeepEP or HybridEP in 4 of 7 whose EP group crossed NVLink domains (DeepSeek-V3 on
H800, H100 and B200; the rest NCCL), HybridEP in 11 of 15 inside NVL72 racks (every Megatron-Bridge GB200 recipe
but one; NeMo's 2025 Mixtral and Llama 4 runs NCCL) and NCCL in 7 of 8 inside 8-GPU nodes. DeepEP and HybridEP
need Hopper's TMA; Ampere's MoE training ran NCCL."""


def attention_kernel(scn) -> str:
    """workload.attention, auto resolved: in training TRAINING_ATTENTION's kernel of the device's generation (else
    flash); in serving flash (the newest measured kernel)."""
    kernel = scn.workload.attention
    if kernel != "auto":
        return kernel
    return TRAINING_ATTENTION.get(scn.topology.device.arch, "flash") if scn.workload.kind == "train" else "flash"


def tp_overlap(scn) -> bool:
    """layout.tp_overlap, auto resolved: on in training on a TP_OVERLAP generation (where sequence parallelism runs;
    cost.pipeline) unless tp_async_allreduce is false (Megatron-LM before September 2021)."""
    lay = scn.layout
    if lay.tp_overlap != "auto":
        return lay.tp_overlap
    return scn.workload.kind == "train" and lay.tp_async_allreduce and scn.topology.device.arch in TP_OVERLAP


def ep_backend(scn) -> str:
    """layout.ep_backend, auto resolved: in MoE training at ep > 1 on a FLEX_DISPATCH generation, deepep where an EP
    group spans NVLink domains, hybridep inside an NVL72 rack; else nccl (and where ep_dispatch flat is written)."""
    lay = scn.layout
    if lay.ep_backend != "auto":
        return lay.ep_backend
    flat = "ep_dispatch" in lay.model_fields_set and lay.ep_dispatch == "flat"
    if (scn.model.moe is None or scn.workload.kind != "train" or lay.ep == 1 or flat
            or scn.topology.device.arch not in FLEX_DISPATCH):
        return "nccl"
    if _ep_spans_domains(scn):
        return "deepep"
    return "hybridep" if scn.topology.domain.kind == "nvl72" else "nccl"


def _ep_spans_domains(scn) -> bool:
    """Whether an EP group of the scenario's placement holds devices of two NVLink domains."""
    groups = place(scn).expert_groups("ep") // scn.topology.ranks_per_domain
    return bool((groups != groups[:, :1]).any())


MEGATRON_2021_SETTINGS = {"workload.cross_entropy": "unfused", "workload.grad_accumulation_fusion": False,
                          "layout.overlap_grad_reduce": False}
"""What auto gives these settings in training on a MEGATRON_2021 generation (elsewhere: fused, true, true)."""


def _of_2021(scn) -> bool:
    """Whether auto takes Megatron-LM's 2021 settings: training on a MEGATRON_2021 generation."""
    return scn.workload.kind == "train" and scn.topology.device.arch in MEGATRON_2021


def cross_entropy(scn) -> str:
    """workload.cross_entropy, auto resolved: unfused in training on a MEGATRON_2021 generation, else fused."""
    return _megatron_2021(scn, "workload.cross_entropy", "fused")


def grad_accumulation_fusion(scn) -> bool:
    """workload.grad_accumulation_fusion, auto resolved: false (a pass of its own) for a dense model trained on a
    MEGATRON_2021 generation, else true (the pass is priced for dense models only)."""
    return _megatron_2021(scn, "workload.grad_accumulation_fusion", True, applies=scn.model.moe is None)


def overlap_grad_reduce(scn) -> bool:
    """layout.overlap_grad_reduce, auto resolved: false (after the last backward) in training on a MEGATRON_2021
    generation, else true."""
    return _megatron_2021(scn, "layout.overlap_grad_reduce", True)


def _megatron_2021(scn, setting: str, otherwise, applies: bool = True):
    """`setting` (section.field) as written; auto: its MEGATRON_2021_SETTINGS value where `applies` in training on a
    MEGATRON_2021 generation, else `otherwise`."""
    part, name = setting.split(".")
    value = getattr(getattr(scn, part), name)
    if value != "auto":
        return value
    return MEGATRON_2021_SETTINGS[setting] if applies and _of_2021(scn) else otherwise


def resolved_sequence_parallel(scn):
    """The layout with sequence_parallel auto resolved: on in training at tp > 1 on a SEQUENCE_PARALLEL generation;
    tp_overlap true needs it, written or resolved (userbuffers overlap its collectives): the one check of that."""
    lay = scn.layout
    on = lay.sequence_parallel
    if on == "auto":
        on = scn.workload.kind == "train" and lay.tp > 1 and scn.topology.device.arch in SEQUENCE_PARALLEL
    if lay.tp_overlap is True and not on and lay.tp > 1:
        _rule("layout.tp_overlap", f"true overlaps sequence parallelism's collectives, off here (sequence_parallel "
              f"{lay.sequence_parallel} on {scn.topology.device.arch}); set sequence_parallel: true")
    return _derived(lay, sequence_parallel=on) if on != lay.sequence_parallel else lay


def resolved_dp(scn):
    """The layout with dp auto replaced by gpus / (tp*pp*cp)."""
    lay = scn.layout
    if lay.dp != "auto":
        return lay
    inner = lay.tp * lay.pp * lay.cp
    if scn.gpus % inner:
        _rule("layout.dp", f"auto needs gpus ({scn.gpus}) divisible by tp*pp*cp ({lay.tp}*{lay.pp}*{lay.cp} = {inner})")
    return _derived(lay, dp=scn.gpus // inner)
