"""The scenario schema: model, workload, topology, layout, options as frozen, validated models.

Every field has a docstring; cross-field rules raise at a dotted field path and quote the numbers.
Human units ("900 GB/s") are parsed by `simulator.units`; the models hold SI floats (seconds, bytes,
bytes/s, FLOP/s). Reading YAML files, presets and `--set` overrides live in `simulator.loader`;
`simulator.loader.load_scenario` reads YAML into these models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, get_args

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictBool, model_validator
from pydantic_core import PydanticCustomError

from simulator.hardware import DeviceSpec
from simulator.schedules import SCHEDULE_NAMES, SPECS
from simulator.units import BytesPerSecond, Seconds


__all__ = [
    "AXES",
    "RECOMPUTE_NAMES",
    "SCHEDULES",
    "DegradedLink",
    "DomainSpec",
    "FailedNode",
    "Faults",
    "Jitter",
    "Straggler",
    "Disaggregation",
    "Layout",
    "MLASpec",
    "MoESpec",
    "ModelSpec",
    "Options",
    "Scenario",
    "ScenarioError",
    "Routing",
    "ScaleoutSpec",
    "TopologySpec",
    "Workload",
]

PosInt = Annotated[int, Field(strict=True, ge=1)]
NonNegInt = Annotated[int, Field(strict=True, ge=0)]
Axis = Literal["tp", "cp", "ep", "dp", "pp"]
StoreDtype = Literal["bf16", "fp16", "fp8", "int8", "int4"]
Schedule = Literal[SCHEDULE_NAMES]  # the registry's names (simulator.schedules)
Recompute = Literal["none", "selective", "full"]
ExpertPlacement = Literal["contiguous", "round_robin", "domain_local", "load_balanced", "graph"]

AXES: tuple[str, ...] = get_args(Axis)
"""Mesh axis names, in the default order (innermost first)."""
SCHEDULES: tuple[str, ...] = get_args(Schedule)
"""Pipeline schedule names a layout may ask for."""
RECOMPUTE_NAMES: tuple[str, ...] = get_args(Recompute)
"""Activation recomputation modes, in the order the search numbers them."""


class ScenarioError(Exception):
    """A scenario that cannot be loaded; `str()` is one line: "<file>: <field.path>: <problem>"."""


def _rule(field: str, detail: str) -> NoReturn:
    """Raise a cross-field violation at `field` (dotted, relative to the validating model)."""
    raise PydanticCustomError("scenario_rule", "{field}: {detail}", {"field": field, "detail": detail})


def _dp_value(value: object) -> int | str:
    """Accept a positive int or "auto" for layout.dp."""
    if value == "auto" or (type(value) is int and value >= 1):
        return value  # type: ignore[return-value]
    raise ValueError(f"expected a positive integer or 'auto', got {value!r}")


class _Frozen(BaseModel):
    """Base: frozen, keyword-only, unknown keys rejected, one docstring a field."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def _fill(model: BaseModel, **values: Any) -> None:
    """Set defaulted fields of a frozen model inside its own after-validator."""
    for name, value in values.items():
        object.__setattr__(model, name, value)


def _derived(model: BaseModel, **values: Any) -> BaseModel:
    """A copy of `model` with derived values that, like _fill's, stay out of model_fields_set (so
    simulator.api.to_raw writes what was given, and an override re-derives them)."""
    out = model.model_copy(update=values)
    out.__pydantic_fields_set__.difference_update(values)
    return out


class MoESpec(_Frozen):
    """Mixture-of-experts feed-forward blocks: routed experts, top-k, shared experts, dense first layers."""

    experts: PosInt
    """Routed experts per MoE layer."""
    top_k: PosInt
    """Routed experts each token visits."""
    shared_experts: NonNegInt = 0
    """Always-on experts per MoE layer."""
    expert_ffn: PosInt | None = None
    """Inner width of one expert's FFN; default the model's `ffn`."""
    dense_layers: NonNegInt = 0
    """Leading layers with a dense FFN instead of experts."""


class MLASpec(_Frozen):
    """Multi-head latent attention (DeepSeek-V2/V3): the KV cache holds one compressed latent per token
    and layer, shared by all heads, instead of K and V per KV head."""

    kv_lora_rank: PosInt
    """Width of the compressed KV latent c_KV (DeepSeek-V3: 512)."""
    qk_rope_head_dim: PosInt
    """Width of the decoupled RoPE key cached beside the latent (DeepSeek-V3: 64)."""
    q_lora_rank: NonNegInt = 0
    """Rank of the query down-projection (DeepSeek-V3: 1536); 0 projects queries from the hidden state."""
    qk_nope_head_dim: PosInt | None = None
    """Per-head query/key width without rotary embedding (DeepSeek-V3: 128); default model head_dim."""
    v_head_dim: PosInt | None = None
    """Per-head value width (DeepSeek-V3: 128); default model head_dim."""


class ModelSpec(_Frozen):
    """Decoder-only transformer shape."""

    name: str = "custom"
    """Model name; a preset's name when loaded from one."""
    layers: PosInt
    """Transformer layers."""
    hidden: PosInt
    """Model width h."""
    heads: PosInt
    """Attention (query) heads a."""
    kv_heads: PosInt | None = None
    """Key/value heads (grouped-query attention); default `heads`."""
    head_dim: PosInt | None = None
    """Width of one head; default hidden // heads."""
    ffn: PosInt | None = None
    """FFN inner width; default 4 * hidden (swiglu presets state it)."""
    ffn_kind: Literal["gelu", "swiglu"] = "gelu"
    """FFN kind: gelu (2 matrices) or swiglu (3 matrices)."""
    vocab: PosInt = 51200
    """Vocabulary size, padded as the framework pads it."""
    tied_embeddings: StrictBool = False
    """Whether the output layer shares the input embedding's weights."""
    moe: MoESpec | None = None
    """Mixture-of-experts settings; None for a dense model."""
    mla: MLASpec | None = None
    """Multi-head latent attention (compressed KV cache); None for standard (GQA/MHA) attention."""

    @model_validator(mode="after")
    def _defaults(self) -> ModelSpec:
        if self.head_dim is None and self.hidden % self.heads:
            _rule("head_dim", f"hidden ({self.hidden}) not divisible by heads ({self.heads}); give head_dim")
        ffn = self.ffn or 4 * self.hidden
        _fill(self, kv_heads=self.kv_heads or self.heads, ffn=ffn,
              head_dim=self.head_dim or self.hidden // self.heads)
        if self.kv_heads > self.heads or self.heads % self.kv_heads:
            _rule("kv_heads", f"heads ({self.heads}) not divisible by kv_heads ({self.kv_heads})")
        if self.moe is not None:
            self._check_moe(ffn)
        return self

    def _check_moe(self, ffn: int) -> None:
        moe = self.moe
        if moe.top_k > moe.experts:
            _rule("moe.top_k", f"top_k ({moe.top_k}) exceeds experts ({moe.experts})")
        if moe.dense_layers >= self.layers:
            _rule("moe.dense_layers", f"dense_layers ({moe.dense_layers}) leaves no MoE layer of {self.layers}")
        if moe.expert_ffn is None:
            _fill(self, moe=_derived(moe, expert_ffn=ffn))


class Arrivals(_Frozen):
    """Serve: request arrivals, Poisson at `rate`, or read from a trace file."""

    rate: Annotated[float, Field(gt=0)] | None = None
    """Mean arrival rate, requests/s (Poisson); required unless the trace gives arrival times."""
    count: PosInt | None = None
    """Requests to simulate; required without a trace (default: every row of the trace)."""
    seed: NonNegInt = 0
    """Random seed of the arrival process."""
    trace: str | None = None
    """CSV file (path relative to the scenario file) with columns prompt_len, output_len and
    optionally arrival_s; rows without arrival_s arrive as a Poisson process at `rate`."""

    @model_validator(mode="after")
    def _source(self) -> Arrivals:
        if self.trace is None:
            for name in ("rate", "count"):
                if getattr(self, name) is None:
                    _rule(name, "required without arrivals.trace")
        return self


class Disaggregation(_Frozen):
    """Serve: separate prefill and decode pools (DistServe, Splitwise); KV moves over the fabric."""

    prefill_replicas: PosInt
    """Replicas (of layout.dp) that only prefill; the others only decode."""


class SLO(_Frozen):
    """Serving latency targets (reserved)."""

    ttft: Seconds | None = None
    """Time-to-first-token target, s."""
    tpot: Seconds | None = None
    """Time-per-output-token target, s."""


class Routing(_Frozen):
    """How tokens choose experts (MoE models): a popularity pmf per layer, drawn with options.seed."""

    kind: Literal["uniform", "zipf", "counts"] = "uniform"
    """uniform; zipf (the i-th most popular expert weighs i**-skew, ranks shuffled per layer); counts
    (measured tokens per expert from counts_file)."""
    skew: Annotated[float, Field(ge=0)] = 1.0
    """Zipf exponent s (kind zipf); 0 is uniform."""
    counts_file: str | None = None
    """Kind counts: whitespace-separated tokens per expert, one row for every MoE layer or one row per
    MoE layer; a relative path is read from the scenario file's folder."""
    capacity_factor: Annotated[float, Field(gt=0)] | None = None
    """Expert capacity as a multiple of the mean tokens per expert; tokens over it are dropped. None: no limit."""
    affinity: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Fraction of a token's choices made among the experts of its topic (co-activation); 0: independent."""
    topics: PosInt = 8
    """Topics (groups of experts often chosen together) when affinity > 0; experts join them at random."""
    samples: PosInt = 16
    """Routings drawn per MoE layer (micro-batch steps); the slowest rank's time is averaged over them."""


class Workload(_Frozen):
    """What runs: a training step (or, reserved, a serving run)."""

    kind: Literal["train", "serve"] = "train"
    """train, or serve (schema only for now)."""
    seq_len: PosInt | None = None
    """Tokens per sequence; required for train; serve default prompt_len + output_len."""
    global_batch: PosInt | None = None
    """Sequences per optimizer step; required for train."""
    micro_batch: PosInt = 1
    """Sequences per micro-batch."""
    dtype: Literal["bf16", "fp16", "fp8"] = "bf16"
    """Compute dtype of the matrix multiplies."""
    recompute: Recompute = "selective"
    """Activation recomputation: none, selective (attention core), full (whole layer)."""
    attention: Literal["flash", "unfused"] = "flash"
    """Attention kernel: flash (fused, never writes the s*s score matrix, skips masked blocks) or
    unfused (materializes scores, as Megatron-LM of 2022 did)."""
    prompt_len: PosInt | None = None
    """Serve: prompt tokens per request."""
    output_len: PosInt | None = None
    """Serve: generated tokens per request."""
    batch: PosInt | None = None
    """Serve: most requests running at once on one replica (vLLM max_num_seqs); default 256. With an
    MoE model each of the ep attention replicas of an EP unit runs this many (the unit ep times)."""
    arrivals: Arrivals | None = None
    """Serve: request arrival process; default `batch` requests at time 0 (offline batch)."""
    slo: SLO | None = None
    """Serve: latency targets."""
    weight_dtype: StoreDtype | None = None
    """Serve: storage of the weights (bf16, fp16, fp8, int8, int4); default `dtype`. Weight-only
    quantization reads fewer bytes; the matrix multiplies still run at `dtype`'s peak."""
    kv_dtype: StoreDtype | None = None
    """Serve: storage of the KV cache; default `dtype`."""
    max_batch_tokens: PosInt = 8192
    """Serve: most tokens one step processes (vLLM max_num_batched_tokens), per attention replica as
    `batch`; a longer prompt runs alone."""
    chunked_prefill: StrictBool = False
    """Serve: split prompts into chunks that share steps with decodes, up to max_batch_tokens a step
    (Sarathi-Serve); false runs whole prompts in prefill-only steps first (vLLM's default of 2024)."""
    two_batch_overlap: StrictBool = False
    """Serve, MoE: split each step's sequences into two micro-batches, each one's all-to-alls
    overlapping the other's compute (DeepSeek-V3's decode, SGLang's two-batch overlap)."""
    admission: Literal["reserve", "preempt"] = "reserve"
    """Serve: KV cache policy: reserve prompt + output at admission (no eviction), or admit on the
    prompt alone and preempt the newest request (recomputing it later) when the cache fills (vLLM)."""
    disaggregated: Disaggregation | None = None
    """Serve: prefill and decode on separate replicas; None runs both on every replica."""
    routing: Routing | None = None
    """MoE routing; None means uniform (MoE models only)."""

    @model_validator(mode="after")
    def _required(self) -> Workload:
        needed = ("seq_len", "global_batch") if self.kind == "train" else ("prompt_len", "output_len")
        for name in needed:
            if getattr(self, name) is None:
                _rule(name, f"required when kind is {self.kind}")
        if self.seq_len is None:
            _fill(self, seq_len=self.prompt_len + self.output_len)
        if self.kind == "serve":
            _fill(self, batch=self.batch or 256, weight_dtype=self.weight_dtype or self.dtype,
                  kv_dtype=self.kv_dtype or self.dtype)
        return self


class DomainSpec(_Frozen):
    """A scale-up (NVLink) domain: an HGX node or an NVL72 rack."""

    kind: Literal["hgx", "nvl72"] = "hgx"
    """hgx (8-GPU node) or nvl72 (72-GPU rack)."""
    gpus: PosInt
    """GPUs per domain."""
    bandwidth: BytesPerSecond
    """NVLink bandwidth per GPU per direction, B/s."""
    latency: Seconds = 2e-6
    """NVLink latency per hop, s (default 2 us)."""


class ScaleoutSpec(_Frozen):
    """The scale-out network joining domains (InfiniBand / RoCE)."""

    kind: Literal["fat_tree", "rail"] = "fat_tree"
    """fat_tree or rail (rail-optimized)."""
    nic_bandwidth: BytesPerSecond
    """Bandwidth of one NIC per direction, B/s."""
    nics_per_domain: PosInt
    """NICs per domain (usually one per GPU)."""
    oversubscription: Annotated[float, Field(ge=1)] = 1.0
    """Leaf downlink : uplink bandwidth ratio; 1 is non-blocking."""
    latency: Seconds = 5e-6
    """End-to-end scale-out latency, s (default 5 us)."""
    domains_per_leaf: PosInt = 16
    """Domains under one leaf switch (a DGX SuperPOD scalable unit: 16 to 20 nodes)."""


class TopologySpec(_Frozen):
    """The rack: devices, their scale-up domains and the scale-out fabric."""

    name: str = "custom"
    """System name; a preset's name when loaded from one."""
    device: DeviceSpec
    """Accelerator data sheet."""
    domain: DomainSpec
    """Scale-up domain."""
    scaleout: ScaleoutSpec
    """Scale-out network."""
    domains: PosInt
    """Number of domains."""

    @property
    def gpus(self) -> int:
        """Total GPUs: domains * domain.gpus."""
        return self.domains * self.domain.gpus


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
    sequence_parallel: StrictBool = False
    """Megatron sequence parallelism: reduce-scatter + all-gather instead of TP all-reduce."""
    schedule: Schedule = "1f1b"
    """Pipeline schedule: gpipe, 1f1b, interleaved, zb-h1, zb-h2, zb-v, dualpipe, dualpipe-v."""
    chunks: PosInt = 1
    """Model chunks per device (virtual stages): >= 2 for interleaved, 2 for zb-v and dualpipe-v."""
    zero: Annotated[int, Field(strict=True, ge=0, le=3)] = 0
    """ZeRO stage 0..3: shard optimizer state (1), + gradients (2), + parameters (3) over dp."""
    distributed_optimizer: StrictBool = False
    """Megatron distributed optimizer (optimizer state sharded over dp)."""
    order: tuple[Axis, ...] = AXES
    """Mesh axes, innermost (fastest varying rank) first."""
    stage_layers: tuple[PosInt, ...] | None = None
    """Layers per virtual stage (pp*chunks entries, pp for dualpipe; sum = layers); None splits evenly."""
    expert_placement: ExpertPlacement = "contiguous"
    """Expert -> EP rank: contiguous, round_robin, domain_local (ep axis next to tp, so an EP group
    spans the fewest NVLink domains), load_balanced (greedy by expected load), graph (co-chosen
    experts share a domain: a partition of the co-activation graph)."""
    redundant_experts: NonNegInt = 0
    """Extra copies of the hottest experts per MoE layer (DeepSeek's EPLB); they split their tokens."""
    ep_dispatch: Literal["flat", "dedup"] = "flat"
    """Expert all-to-all: flat (each token copy to each expert's rank) or dedup (one scale-out copy
    per token and remote domain, forwarded on NVLink there, as DeepSeek-V3's DeepEP)."""

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
        return self


class Options(_Frozen):
    """Run options."""

    seed: NonNegInt = 0
    """Seed for every random draw (routing, arrivals, stragglers)."""
    gpu_hour_price: Annotated[float, Field(ge=0)] = 2.0
    """Price of one GPU-hour in dollars, for cost per million tokens."""


class Straggler(_Frozen):
    """Faults: one GPU slower than the rest (thermal throttling, a bad HBM stack)."""

    gpu: NonNegInt
    """Global device index of the slow GPU."""
    slowdown: Annotated[float, Field(ge=1)]
    """Factor (>= 1) by which the GPU's kernels take longer; its TP group and stage wait for it."""


class DegradedLink(_Frozen):
    """Faults: one GPU's link of one tier runs below line rate (a flapping NIC, a degraded NVLink)."""

    gpu: NonNegInt
    """Global device index whose link is degraded."""
    tier: Literal["nvlink", "scaleout"]
    """Which link: the GPU's NVLink port or its NIC share."""
    fraction: Annotated[float, Field(ge=1e-6, le=1)]
    """Bandwidth left, a fraction in [1e-6, 1] of the healthy figure (below that the link is dead:
    a failed node)."""


class FailedNode(_Frozen):
    """Faults: one NVLink domain (node or rack) fails; a spare replaces it or the job re-lays out."""

    domain: NonNegInt
    """Index of the failed NVLink domain."""
    policy: Literal["spare", "relayout"] = "spare"
    """spare: a standby domain swaps in (step unchanged); relayout: continue on the survivors with
    the largest valid dp, global batch kept."""
    restart_s: Seconds = 600.0
    """Seconds to detect the failure and restart from the last checkpoint (default 600 s)."""
    checkpoint_interval_s: Annotated[Seconds, Field(gt=0)]
    """Seconds between checkpoints; on average half an interval of work is lost."""


class Jitter(_Frozen):
    """Faults: every task's duration times a lognormal factor of mean 1."""

    cv: Annotated[float, Field(ge=0, le=10)]
    """Coefficient of variation of the factor (0: no jitter)."""
    seed: NonNegInt = 0
    """Seed of the draw, combined with options.seed."""


class Faults(_Frozen):
    """What goes wrong in a training step (simulator.faults); each entry optional."""

    straggler: Straggler | None = None
    """One slow GPU."""
    degraded_link: DegradedLink | None = None
    """One GPU's link bandwidth cut."""
    failed_node: FailedNode | None = None
    """One failed NVLink domain."""
    jitter: Jitter | None = None
    """Random per-task compute-time noise."""


class Scenario(_Frozen):
    """A whole scenario, cross-checked: every layout degree fits the model and the rack."""

    name: str
    """Scenario name; defaults to the file's stem."""
    source: str = "<memory>"
    """Path of the scenario file, as given to load_scenario."""
    model: ModelSpec
    """The transformer."""
    workload: Workload
    """What runs on it."""
    topology: TopologySpec
    """Where it runs."""
    layout: Layout = Layout()
    """How it is split."""
    options: Options = Options()
    """Run options."""
    faults: Faults | None = None
    """What-ifs: stragglers, degraded links, a failed node, jitter (training only)."""

    @property
    def gpus(self) -> int:
        """Total GPUs: topology.domains * topology.domain.gpus."""
        return self.topology.gpus

    @property
    def micro_batches(self) -> int:
        """Micro-batches per pipeline per step: global_batch // (micro_batch * dp); training only."""
        w = self.workload
        if w.global_batch is None:
            raise ValueError(f"scenario {self.name}: micro_batches needs workload.global_batch")
        return w.global_batch // (w.micro_batch * self.layout.dp)

    @model_validator(mode="after")
    def _cross_check(self) -> Scenario:
        _check_model_split(self)
        _check_stages(self)
        _check_experts(self)
        _fill(self, layout=_resolve_dp(self))
        _check_mesh(self)
        _check_batch(self)
        _check_dtype(self)
        _check_serve(self)
        _check_faults(self)
        return self



# --- cross-field rules (each names its field path and quotes the numbers) ---------------------


def _check_model_split(s: Scenario) -> None:
    """Attention heads split evenly over tp; kv heads split or replicate (GQA)."""
    m, tp = s.model, s.layout.tp
    if m.heads % tp:
        _rule("layout.tp", f"heads ({m.heads}) not divisible by tp ({tp})")
    if m.kv_heads % tp and tp % m.kv_heads:
        _rule("layout.tp", f"kv_heads ({m.kv_heads}) and tp ({tp}) must divide one another")


def _check_stages(s: Scenario) -> None:
    """Layers split over pp*chunks virtual stages (pp for dualpipe, whose two pipeline copies each
    hold the whole model: the schedule's ScheduleSpec.virtual_stages), evenly or as stage_layers says."""
    m, lay = s.model, s.layout
    stages = SPECS[lay.schedule].virtual_stages(lay.pp, lay.chunks)
    if lay.stage_layers is None:
        if m.layers % stages:
            _rule("layout.pp", f"layers ({m.layers}) not divisible by pp*chunks ({lay.pp}*{lay.chunks} = "
                  f"{stages}); give layout.stage_layers for an uneven split")
        return
    if len(lay.stage_layers) != stages:
        copies = SPECS[lay.schedule].copies_hold_model
        need = f"pp = {lay.pp} ({lay.schedule})" if copies else f"pp*chunks = {lay.pp}*{lay.chunks}"
        _rule("layout.stage_layers", f"{len(lay.stage_layers)} entries, need {need} = {stages}")
    if sum(lay.stage_layers) != m.layers:
        _rule("layout.stage_layers", f"sum {sum(lay.stage_layers)} != model.layers ({m.layers})")


def _check_experts(s: Scenario) -> None:
    """Expert parallelism needs experts to split over; expert slots split evenly over EP ranks."""
    lay, moe, routing = s.layout, s.model.moe, s.workload.routing
    if moe is None:
        if lay.ep > 1:
            _rule("layout.ep", f"ep ({lay.ep}) > 1 needs an MoE model (model.moe)")
        if lay.redundant_experts:
            _rule("layout.redundant_experts", f"{lay.redundant_experts} needs an MoE model (model.moe)")
        if routing is not None:
            _rule("workload.routing", "needs an MoE model (model.moe)")
        return
    slots = moe.experts + lay.redundant_experts
    if slots % lay.ep:
        extra = f" + redundant_experts ({lay.redundant_experts}) = {slots}" if lay.redundant_experts else ""
        _rule("layout.ep", f"experts ({moe.experts}){extra} not divisible by ep ({lay.ep})")
    if routing is not None and routing.kind == "counts":
        _check_counts_file(s, routing.counts_file)


def _check_counts_file(s: Scenario, name: str | None) -> None:
    """Routing kind counts names a file that exists (relative to the scenario file)."""
    if name is None:
        _rule("workload.routing.counts_file", "required when routing.kind is counts")
    path = Path(name) if Path(name).is_absolute() else Path(s.source).parent / name
    if not path.is_file():
        _rule("workload.routing.counts_file", f"{str(path)!r} not found")


def _resolve_dp(s: Scenario) -> Layout:
    """The layout with dp "auto" replaced by gpus / (tp*pp*cp)."""
    lay = s.layout
    if lay.dp != "auto":
        return lay
    inner = lay.tp * lay.pp * lay.cp
    if s.gpus % inner:
        _rule("layout.dp", f"auto needs gpus ({s.gpus}) divisible by tp*pp*cp "
              f"({lay.tp}*{lay.pp}*{lay.cp} = {inner})")
    return _derived(lay, dp=s.gpus // inner)


def _check_mesh(s: Scenario) -> None:
    """The mesh covers the rack exactly; ep is carved out of dp."""
    lay, topo = s.layout, s.topology
    total = lay.tp * lay.pp * lay.dp * lay.cp
    if total != s.gpus:
        _rule("layout", f"tp*pp*dp*cp = {lay.tp}*{lay.pp}*{lay.dp}*{lay.cp} = {total} != {s.gpus} GPUs "
              f"of topology {topo.name} ({topo.domains} domains x {topo.domain.gpus})")
    if lay.dp % lay.ep:
        _rule("layout.ep", f"ep ({lay.ep}) must divide dp ({lay.dp})")


def _check_batch(s: Scenario) -> None:
    """Sequences split over cp (and tp with sequence parallelism); the batch over micro-batches."""
    w, lay = s.workload, s.layout
    if w.seq_len % lay.cp:
        _rule("workload.seq_len", f"seq_len ({w.seq_len}) not divisible by cp ({lay.cp})")
    if lay.sequence_parallel and (w.seq_len // lay.cp) % lay.tp:
        _rule("workload.seq_len", f"sequence_parallel needs seq_len/cp ({w.seq_len}/{lay.cp}) "
              f"divisible by tp ({lay.tp})")
    if w.global_batch is None:
        return
    per_step = w.micro_batch * lay.dp
    if w.global_batch % per_step:
        _rule("workload.global_batch", f"global_batch ({w.global_batch}) not divisible by micro_batch*dp "
              f"({w.micro_batch}*{lay.dp} = {per_step})")
    m = w.global_batch // per_step
    problem = SPECS[lay.schedule].rule(lay.pp, m, f"{w.global_batch}/({w.micro_batch}*{lay.dp}) = {m}")
    if problem:
        _rule("layout.schedule", problem)


def _check_dtype(s: Scenario) -> None:
    """The compute dtype has a peak on the device."""
    dtype, device = s.workload.dtype, s.topology.device
    if dtype not in device.peak_flops:
        _rule("workload.dtype", f"{dtype} not in peak_flops of {device.name} ({', '.join(device.peak_flops)})")


def _check_serve(s: Scenario) -> None:
    """Serving runs whole sequences on a replica (no context parallelism); pools split the replicas."""
    w, lay = s.workload, s.layout
    if w.two_batch_overlap and (w.kind != "serve" or s.model.moe is None):
        _rule("workload.two_batch_overlap", "overlaps the all-to-alls of an MoE model's serving steps; "
              f"got workload.kind {w.kind}{'' if s.model.moe else ' and a dense model'}")
    if w.kind != "serve":
        return
    r = w.routing
    if r is not None and (r.kind != "uniform" or r.capacity_factor is not None or r.affinity):
        _rule("workload.routing", "serving assumes uniform expert load (EPLB-balanced ranks); skewed "
              "routing, capacity and affinity are simulated for training only")
    if lay.cp != 1:
        _rule("layout.cp", f"context parallelism is not simulated for serving, got cp {lay.cp}")
    if lay.chunks != 1:
        _rule("layout.chunks", f"serving runs one chunk per stage, got chunks {lay.chunks}")
    replicas = lay.dp // lay.ep  # an MoE model's replica is an EP unit of ep attention replicas
    if w.disaggregated is not None and w.disaggregated.prefill_replicas >= replicas:
        _rule("workload.disaggregated.prefill_replicas", f"prefill_replicas "
              f"({w.disaggregated.prefill_replicas}) must leave decode replicas of dp/ep ({replicas})")


def _check_faults(s: Scenario) -> None:
    """Faults apply to training and name GPUs and domains that exist."""
    f = s.faults
    if f is None:
        return
    if s.workload.kind != "train":
        _rule("faults", f"faults are simulated for training only, got workload.kind {s.workload.kind}")
    for name in ("straggler", "degraded_link"):
        entry = getattr(f, name)
        if entry is not None and entry.gpu >= s.gpus:
            _rule(f"faults.{name}.gpu", f"gpu {entry.gpu} out of range: the scenario has {s.gpus} GPUs")
    node = f.failed_node
    if node is not None:
        if node.domain >= s.topology.domains:
            _rule("faults.failed_node.domain", f"domain {node.domain} out of range: the topology has "
                  f"{s.topology.domains} domains")
        inner = s.layout.tp * s.layout.pp * s.layout.cp * s.layout.ep
        if node.policy == "relayout" and s.gpus - s.topology.domain.gpus < inner:
            _rule("faults.failed_node.policy", f"relayout leaves {s.gpus - s.topology.domain.gpus} GPUs, "
                  f"fewer than one replica (tp*pp*cp*ep = {inner})")
