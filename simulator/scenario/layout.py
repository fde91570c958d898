"""The layout part of a scenario: mesh degrees, pipeline schedule, sharding, expert placement; and
the run options."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PlainValidator, StrictBool, model_validator

from ..schedules import SPECS
from .base import (AXES, Axis, ExpertPlacement, NonNegInt, PosInt, Real, Schedule, _auto_bool, _dp_value, _Frozen,
                   _rule)
from .offload import Offload


class Layout(_Frozen):
    """Parallel layout: mesh degrees, pipeline schedule, sharding."""

    tp: PosInt = 1
    """Tensor-parallel degree."""
    pp: PosInt = 1
    """Pipeline-parallel degree (stages)."""
    dp: Annotated[int | Literal["auto"], PlainValidator(_dp_value)] = "auto"
    """Data-parallel degree; "auto" = gpus / (tp*pp*cp), resolved (to an int) when in a Scenario."""
    ep: PosInt = 1
    """Expert-parallel degree, carved out of dp (MoE models only)."""
    cp: PosInt = 1
    """Context-parallel degree (sequence split across ranks)."""
    sequence_parallel: Annotated[bool | Literal["auto"], PlainValidator(_auto_bool)] = "auto"
    """Megatron sequence parallelism: reduce-scatter + all-gather instead of TP all-reduce. auto (the default): on in
    Hopper and Blackwell training at tp > 1, as every such run of the development set (scenario.defaults
    .SEQUENCE_PARALLEL), off on Ampere and in serving; resolved when the Scenario is built."""
    schedule: Schedule = "1f1b"
    """Pipeline schedule: gpipe, 1f1b, interleaved, zb-h1, zb-h2, zb-v, dualpipe, dualpipe-v."""
    chunks: PosInt = 1
    """Model chunks per device (virtual stages): >= 2 for interleaved, 2 for zb-v and dualpipe-v."""
    zero: Annotated[int, Field(strict=True, ge=0, le=3)] = 0
    """ZeRO stage 0..3: shard optimizer state (1), + gradients (2), + parameters (3) over dp."""
    distributed_optimizer: StrictBool = False
    """Megatron distributed optimizer (optimizer state sharded over dp)."""
    grad_reduce_fp32: StrictBool = False
    """Keep and reduce gradients in fp32 (Megatron's accumulate/grad_reduce_in_fp32: 4 bytes a gradient
    in memory and on the wire); false: in the 16-bit parameter dtype, Megatron-Core's and NeMo's default."""
    fp8_params: StrictBool = False
    """Keep the model's working copy of the weights in the GEMMs' low-precision format (Transformer Engine's FP8
    primary weights, Megatron's --fp8-param-gather; NeMo's FP8 recipes turn it on): a transformer layer's parameter
    takes the operand's bytes (1 with FP8, block scales included) in memory and in the parameter all-gathers; the
    embedding and the output layer stay 16-bit and the FP32 master copy stays in the sharded optimizer state.
    Needs a low-precision workload.dtype and sharded optimizer state (distributed_optimizer or zero >= 1)."""
    optimizer_moments: Literal["fp32", "bf16"] = "fp32"
    """Adam's first and second moments: fp32 (Megatron-Core's default), or bf16 (its precision-aware optimizer with
    exp_avg_dtype and exp_avg_sq_dtype bfloat16, as DeepSeek-V3 trained, report section 3.3.3, and Megatron-Bridge's
    DeepSeek-V3 recipes set): 8 bytes of optimizer state a parameter instead of 12 (the FP32 master copy stays), and
    the optimizer step moves 8 bytes fewer a parameter."""
    bucket_params: PosInt | None = None
    """Parameters in one gradient bucket: the gradient reduction and the distributed optimizer's parameter
    all-gather run one collective a bucket, each paying its own latency (Megatron-Core's bucket_size). null:
    Megatron-Core's default, max(40M, 1M x dp x cp) parameters."""
    overlap_grad_reduce: Annotated[bool | Literal["auto"], PlainValidator(_auto_bool)] = "auto"
    """Reduce the gradients bucket by bucket beside the stage's last backward (Megatron-Core's overlap_grad_reduce,
    which NeMo and Megatron-Bridge set; Megatron-LM's flag defaults off); false: after the stage's last task, whole and
    exposed, as Megatron-LM's data parallelism did before Megatron-Core's (megatron/model/distributed.py
    allreduce_gradients, called after the micro-batches: Narayanan et al. 2021's and Korthikanti et al. 2022's runs).
    auto (the default): false in training on Ampere (Megatron-LM of 2021-2022), true elsewhere
    (scenario.defaults.MEGATRON_2021, Scenario.overlap_grad_reduce)."""
    overlap_param_gather: StrictBool = True
    """With the distributed optimizer or ZeRO, gather the updated parameters chunk by chunk behind the
    next step's forward (Megatron overlap_param_gather, NeMo overlap_param_sync); false: all before it."""
    tp_overlap: Annotated[bool | Literal["auto"], PlainValidator(_auto_bool)] = "auto"
    """Overlap tensor-parallel all-gathers and reduce-scatters with the GEMMs that consume or produce
    them (Transformer Engine userbuffers, Megatron/NeMo tp_comm_overlap); true needs sequence_parallel. auto (the
    default): as most published training on the device's generation ran it (scenario.defaults.TP_OVERLAP, resolved
    by Scenario.tp_overlap): on Hopper and Blackwell where sequence parallelism runs, off on Ampere."""
    tp_async_allreduce: StrictBool = True
    """Backward: the tensor-parallel all-reduce (reduce-scatter with sequence parallelism) of each column-parallel
    GEMM's input gradient runs beside its weight-gradient GEMM (Megatron-LM's asynchronous all-reduce, merged in
    September 2021, and every Megatron-Core); false: after it, exposed, as Megatron-LM ran before (the autograd
    node's all-reduce on the compute stream; Narayanan et al. 2021's runs)."""
    kv_sharding: Literal["heads", "batch"] = "heads"
    """Serving: how a TP group holds the KV cache. heads: each rank its KV heads, copies of a head on the ranks past
    kv_heads (vLLM, TensorRT-LLM; an MLA latent whole on every rank). batch: the ranks that would hold copies of a
    head take the sequences apart instead, so the cache is split over all tp ranks ("How to Scale Your Model",
    inference chapter: KV[2, B_Z, S, K_Y, H]), at the price of two all-to-alls a layer among them, moving the
    queries to and the outputs from the batch shards; the projections stay split over tp. (SGLang's and DeepSeek's
    data-parallel attention split the cache alike but copy the attention weights to every rank.) Needs
    tp > kv_heads (any tp > 1 with MLA)."""
    order: tuple[Axis, ...] = AXES
    """Mesh axes, innermost (fastest varying rank) first."""
    stage_layers: tuple[NonNegInt, ...] | None = None
    """Layers per virtual stage (pp*chunks entries, pp for dualpipe; sum = layers; 0 for a stage that holds only the
    embedding or the head); None splits evenly. Derived from pipeline_layout when that is given."""
    pipeline_layout: str | tuple[str, ...] | None = None
    """What each virtual stage holds, as Megatron-Core's pipeline_model_parallel_layout writes it ("Et*3|(tt|)*29m|L":
    E embedding, t layer, m MTP module, L loss, | boundary, (...)*n repetition) or a list of one string a stage;
    simulator.scenario.pipeline_layout. Training only."""
    expert_placement: ExpertPlacement = "contiguous"
    """Expert -> EP rank: contiguous, round_robin, domain_local (ep axis next to tp, so an EP group
    spans the fewest NVLink domains), load_balanced (greedy by expected load), graph (co-chosen
    experts share a domain: a partition of the co-activation graph)."""
    redundant_experts: NonNegInt = 0
    """Extra copies of the hottest experts per MoE layer (DeepSeek's EPLB); they split their tokens."""
    ep_dispatch: Literal["flat", "dedup"] = "flat"
    """Expert all-to-all: flat (each token copy to each expert's rank) or dedup (one scale-out copy
    per token and remote domain, forwarded on NVLink there, as DeepSeek-V3's DeepEP)."""
    ep_backend: Literal["auto", "nccl", "deepep", "hybridep"] = "auto"
    """MoE training: the kernels of the expert all-to-all. nccl: Megatron-Core's all-to-all token dispatcher, NCCL
    moving the copies permuted per expert, at NCCL's link rates; deepep, hybridep: its flex dispatcher's DeepEP or
    HybridEP kernels, which send a token once to each rank it needs (the rank permutes it to its experts) and once
    to each remote domain (ep_dispatch dedup), at their measured rates (docs/calibration.md). auto: what published
    Hopper and Blackwell MoE training ran where the EP group lies (scenario.defaults.ep_backend): DeepEP across
    NVLink domains, HybridEP inside NVL72 racks, NCCL inside 8-GPU nodes and on Ampere. Training only: serving
    prices DeepEP's kernels (ep_dispatch chooses the de-duplication)."""
    fp8_dispatch: StrictBool | None = None
    """Send tokens to the experts in the GEMMs' low-precision format (combine stays 16-bit): DeepSeek-V3
    quantizes before its dispatch, serving engines run DeepEP's FP8 kernels. null: true for serving under a
    low-precision dtype, false for training (Megatron-Core quantizes inside the expert GEMMs, after a 16-bit
    dispatch: its MXFP8 guide lists EP dispatch among the communications MXFP8 does not yet cover)."""
    ep_overlap: StrictBool = False
    """MoE training: each steady-state forward runs paired with another micro-batch's backward, one's expert
    all-to-alls behind the other's compute (Megatron-Core's overlap_moe_expert_parallel_comm, its combined 1F1B,
    after one more warm-up forward: simulator.schedules.combined). Needs schedule interleaved, or 1f1b with pp 1;
    TP and CP communication stay inside each half."""
    expert_tp: PosInt | None = None
    """MoE parallel folding (Megatron-Core's expert_tensor_parallel_size): the expert layers get their own
    grid over each pipeline stage's tp*cp*dp GPUs, expert_tp x ep x expert-dp (consecutive GPUs innermost),
    so ep no longer divides dp: ep*expert_tp divides tp*cp*dp. null: no folding (ep carved out of dp,
    experts split over the attention TP group). Training only."""
    shard_group: PosInt | None = None
    """Hybrid sharded data parallelism (HSDP: FSDP's hybrid shard; Megatron's distributed optimizer with
    dp*cp/shard_group instances): ZeRO or the distributed optimizer shards over groups of this many
    data-parallel ranks (nearest GPUs together) and replicates across groups, which all-reduce their
    gradient shards each step. null: shard over all dp*cp data-parallel ranks."""
    offload: Offload | None = None
    """Activations of some layers and the optimizer state in host memory (training; simulator.cost.offload)."""

    @property
    def folded(self) -> bool:
        """MoE parallel folding: the experts have their own grid (expert_tp given)."""
        return self.expert_tp is not None

    @property
    def etp(self) -> int:
        """Expert tensor-parallel degree: expert_tp under folding, else the attention's tp."""
        return self.tp if self.expert_tp is None else self.expert_tp

    @property
    def expert_dp(self) -> int:
        """GPUs holding the same experts: tp*cp*dp / (ep*expert_tp) under folding, else dp/ep*cp (dp resolved)."""
        if self.folded:
            return self.tp * self.cp * self.dp // (self.ep * self.etp)
        return self.dp // self.ep * self.cp

    def expert_grid_problem(self, moe: bool) -> tuple[str, str] | None:
        """(field, what is wrong) when the expert grid does not cut the mesh evenly (dp resolved), else None:
        ep*expert_tp must divide a stage's tp*cp*dp under folding, ep must divide dp otherwise (`moe`: the
        model has experts, for the hint)."""
        if self.folded:
            stage = self.tp * self.cp * self.dp
            if stage % (self.ep * self.etp):
                return "layout.expert_tp", (f"ep*expert_tp ({self.ep}*{self.etp} = {self.ep * self.etp}) must divide "
                                            f"the GPUs of a pipeline stage, tp*cp*dp ({self.tp}*{self.cp}*{self.dp} "
                                            f"= {stage})")
        elif self.dp % self.ep:
            hint = ", or set layout.expert_tp to fold the experts over tp*cp*dp" if moe else ""
            return "layout.ep", f"ep ({self.ep}) must divide dp ({self.dp}){hint}"
        return None

    def shard_problem(self, moe: bool) -> tuple[str, str] | None:
        """(field, what is wrong) when shard groups do not cut the data-parallel ranks evenly (dp resolved),
        or, for an MoE model (`moe`), each expert's replicas into as many groups; None otherwise."""
        group = self.shard_group
        if group is None:
            return None
        replicas = self.dp * self.cp
        if replicas % group:
            return "layout.shard_group", (f"shard_group ({group}) must divide the data-parallel ranks, dp*cp "
                                          f"({self.dp}*{self.cp} = {replicas})")
        if moe and self.expert_dp % (replicas // group):
            return "layout.shard_group", (f"{replicas // group} shard groups (dp*cp/shard_group = {replicas}/{group}) "
                                          f"must divide each expert's {self.expert_dp} replicas")
        return None

    def degrees(self) -> dict[str, int]:
        """Degree per mesh axis, keyed in `order` (innermost first)."""
        return {axis: getattr(self, axis) for axis in self.order}

    @model_validator(mode="after")
    def _check(self) -> Layout:
        if sorted(self.order) != sorted(AXES):
            _rule("order", f"[{', '.join(self.order)}] must list each of {', '.join(AXES)} once")
        problem = SPECS[self.schedule].chunk_problem(self.chunks)
        if problem:
            _rule("chunks", problem)
        if self.tp_overlap is True and not self.tp_async_allreduce:
            _rule("tp_async_allreduce", "tp_overlap runs the backward's collectives beside the GEMMs itself; "
                  "false only without tp_overlap")
        return self


class Options(_Frozen):
    """Run options."""

    seed: NonNegInt = 0
    """Seed for every random draw (routing, arrivals, stragglers)."""
    gpu_hour_price: Annotated[Real, Field(ge=0)] = 2.0
    """Price of one GPU-hour in dollars, for cost per million tokens."""
