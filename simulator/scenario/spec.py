"""The whole scenario, cross-checked: every layout degree fits the model and the rack.

Model, workload, topology, layout, options and faults are frozen, validated models (their own
modules); each field has a docstring; cross-field rules here raise at a dotted field path and quote
the numbers. Human units ("900 GB/s") are parsed by `simulator.scenario.units`; the models hold SI
floats. `simulator.scenario.loader.load_scenario` reads YAML files, presets and `--set` overrides.
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import model_validator

from ..schedules import SPECS
from .base import _derived, _fill, _Frozen, _rule
from . import defaults
from .faults import Faults
from .files import clip
from .hardware import PEAK_FAMILY
from .layout import Layout, Options
from .limits import excess
from .model import ModelSpec
from . import pipeline_layout
from .offload import offload_problem
from .topology import TopologySpec
from .workload import Workload


def _resolved(resolve, setting: str) -> property:
    """A Scenario property: `setting` (section.field) with auto resolved by `resolve`, one of scenario.defaults'
    functions: what the cost model reads."""
    return property(resolve, doc=f"{setting}, auto resolved (defaults.{resolve.__name__}).")


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
        """GPUs the job runs on: topology.domains * topology.ranks_per_domain (domain.used, else domain.gpus)."""
        return self.topology.gpus

    @property
    def micro_batches(self) -> int:
        """Micro-batches per pipeline per step: global_batch // (micro_batch * dp); training only."""
        w = self.workload
        if w.global_batch is None:
            raise ValueError(f"scenario {self.name}: micro_batches needs workload.global_batch")
        return w.global_batch // (w.micro_batch * self.layout.dp)

    attention_kernel = _resolved(defaults.attention_kernel, "workload.attention")
    tp_overlap = _resolved(defaults.tp_overlap, "layout.tp_overlap")
    ep_backend = _resolved(defaults.ep_backend, "layout.ep_backend")
    cross_entropy = _resolved(defaults.cross_entropy, "workload.cross_entropy")
    grad_accumulation_fusion = _resolved(defaults.grad_accumulation_fusion, "workload.grad_accumulation_fusion")
    overlap_grad_reduce = _resolved(defaults.overlap_grad_reduce, "layout.overlap_grad_reduce")

    @model_validator(mode="after")
    def _cross_check(self) -> Scenario:
        _fill(self, layout=defaults.resolved_sequence_parallel(self))
        _check_limits(self)
        _check_model_split(self)
        _check_stages(self)
        _check_experts(self)
        _fill(self, layout=defaults.resolved_dp(self))
        _check_mesh(self)
        _check_batch(self)
        _check_dtype(self)
        _check_serve(self)
        _check_faults(self)
        _check_offload(self)
        return self



# --- cross-field rules (each names its field path and quotes the numbers) ---------------------


def _check_limits(s: Scenario) -> None:
    """Every size within what one machine simulates (simulator.scenario.limits), before any other rule."""
    problem = excess(s)
    if problem:
        _rule(*problem)


def _check_model_split(s: Scenario) -> None:
    """Attention heads split evenly over tp; kv heads split or replicate (GQA)."""
    m, tp = s.model, s.layout.tp
    if m.heads % tp:
        _rule("layout.tp", f"heads ({m.heads}) not divisible by tp ({tp})")
    if m.kv_heads % tp and tp % m.kv_heads:
        _rule("layout.tp", f"kv_heads ({m.kv_heads}) and tp ({tp}) must divide one another")


def _check_stages(s: Scenario) -> None:
    """Layers split over pp*chunks virtual stages (pp for dualpipe, whose two pipeline copies each
    hold the whole model: the schedule's ScheduleSpec.virtual_stages), evenly or as stage_layers says,
    or as pipeline_layout says (stage_layers then derived from it)."""
    m, lay = s.model, s.layout
    stages = SPECS[lay.schedule].virtual_stages(lay.pp, lay.chunks)
    if lay.pipeline_layout is not None:
        _check_pipeline_layout(s, stages)
        return
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


def _check_pipeline_layout(s: Scenario, stages: int) -> None:
    """A pipeline layout parses, fits the schedule's virtual stages, the model's layers and MTP modules, and sets
    stage_layers (training only; a stage_layers given beside it must say the same)."""
    lay = s.layout
    if s.workload.kind != "train":
        _rule("layout.pipeline_layout", f"simulated for training only, got workload.kind {s.workload.kind}")
    try:
        parsed = pipeline_layout.check(lay.pipeline_layout, stages, s.model.layers,
                                       s.model.mtp.depth if s.model.mtp else 0)
    except ValueError as err:
        _rule("layout.pipeline_layout", str(err))
    split = tuple(st.layers for st in parsed)
    if lay.stage_layers is not None and tuple(lay.stage_layers) != split:
        _rule("layout.stage_layers", f"[{', '.join(map(str, lay.stage_layers[:8]))}"
              f"{', ...' if len(lay.stage_layers) > 8 else ''}] disagrees with pipeline_layout; give one of them")
    _fill(s, layout=_derived(lay, stage_layers=split))


SIXTEEN_BIT = ("bf16", "fp16")
"""Compute dtypes without a low-precision GEMM operand."""


def _no_low_precision(s: Scenario) -> str:
    """The refusal's reason when a low-precision feature meets a 16-bit workload.dtype."""
    low = ", ".join(d for d in PEAK_FAMILY if d not in SIXTEEN_BIT)
    return f"workload.dtype {s.workload.dtype} has none ({low})"


def _check_experts(s: Scenario) -> None:
    """Expert parallelism needs experts to split over; expert slots split evenly over EP ranks."""
    lay, moe, routing = s.layout, s.model.moe, s.workload.routing
    if moe is not None and s.workload.grad_accumulation_fusion is False:
        _rule("workload.grad_accumulation_fusion", "false is priced for dense models, not an MoE model's experts")
    if moe is None:
        if lay.ep > 1:
            _rule("layout.ep", f"ep ({lay.ep}) > 1 needs an MoE model (model.moe)")
        if lay.redundant_experts:
            _rule("layout.redundant_experts", f"{lay.redundant_experts} needs an MoE model (model.moe)")
        if lay.expert_tp is not None:
            _rule("layout.expert_tp", f"{lay.expert_tp} folds an MoE model's experts (model.moe)")
        if routing is not None:
            _rule("workload.routing", "needs an MoE model (model.moe)")
        if lay.fp8_dispatch:
            _rule("layout.fp8_dispatch", "dispatches tokens to experts: needs an MoE model (model.moe)")
        if lay.ep_overlap:
            _rule("layout.ep_overlap", "overlaps the experts' all-to-alls: needs an MoE model (model.moe)")
        if lay.ep_backend not in ("auto", "nccl"):
            _rule("layout.ep_backend", f"{lay.ep_backend} runs the experts' all-to-alls: needs an MoE model "
                                       "(model.moe)")
        return
    if lay.ep_overlap:
        _check_ep_overlap(s)
    if lay.ep_backend not in ("auto", "nccl"):
        _check_ep_backend(s)
    if lay.fp8_dispatch and s.workload.dtype in SIXTEEN_BIT:
        _rule("layout.fp8_dispatch", f"sends the GEMMs' low-precision operands: {_no_low_precision(s)}")
    slots = moe.experts + lay.redundant_experts
    if slots % lay.ep:
        extra = f" + redundant_experts ({lay.redundant_experts}) = {slots}" if lay.redundant_experts else ""
        _rule("layout.ep", f"experts ({moe.experts}){extra} not divisible by ep ({lay.ep})")
    if routing is not None and routing.kind == "counts":
        _check_counts_file(s, routing.counts_file)


def _check_ep_backend(s: Scenario) -> None:
    """DeepEP and HybridEP are training's flex dispatcher (serving prices DeepEP's kernels already); they
    de-duplicate per remote domain by design, and HybridEP's TMA kernels need Hopper or later."""
    lay = s.layout
    if s.workload.kind != "train":
        _rule("layout.ep_backend", f"{lay.ep_backend} is a training dispatcher: serving prices DeepEP's normal and "
                                   "low-latency kernels (layout.ep_dispatch chooses the de-duplication)")
    if "ep_dispatch" in lay.model_fields_set and lay.ep_dispatch == "flat":
        _rule("layout.ep_dispatch", f"flat contradicts ep_backend {lay.ep_backend}, which sends one copy a token and "
                                    "remote domain (dedup)")
    if lay.ep_backend == "hybridep" and s.topology.device.arch == "ampere":
        _rule("layout.ep_backend", "hybridep runs TMA kernels: needs a Hopper or later device")


def _check_ep_overlap(s: Scenario) -> None:
    """Megatron-Core's combined 1F1B trains with the interleaved schedule or without pipelining."""
    lay = s.layout
    if s.workload.kind != "train":
        _rule("layout.ep_overlap", "pairs training micro-batches' forwards and backwards: needs workload.kind train")
    if not (lay.schedule == "interleaved" or (lay.schedule == "1f1b" and lay.pp == 1)):
        _rule("layout.ep_overlap", f"runs with schedule interleaved or with 1f1b at pp 1 (Megatron-Core's combined "
                                   f"1F1B), got {lay.schedule} at pp {lay.pp}")


def _check_counts_file(s: Scenario, name: str | None) -> None:
    """Routing kind counts names a file that exists (relative to the scenario file)."""
    if name is None:
        _rule("workload.routing.counts_file", "required when routing.kind is counts")
    path = Path(name) if Path(name).is_absolute() else Path(s.source).parent / name
    if not path.is_file():
        _rule("workload.routing.counts_file", f"{clip(str(path))!r} not found (or not a regular file)")


def _check_mesh(s: Scenario) -> None:
    """The mesh covers the rack exactly; ep is carved out of dp."""
    lay, topo = s.layout, s.topology
    total = lay.tp * lay.pp * lay.dp * lay.cp
    if total != s.gpus:
        _rule("layout", f"tp*pp*dp*cp = {lay.tp}*{lay.pp}*{lay.dp}*{lay.cp} = {total} != {s.gpus} GPUs "
              f"of topology {topo.name} ({topo.domains} domains x {topo.ranks_per_domain})")
    problem = lay.expert_grid_problem(s.model.moe is not None)
    if problem:
        _rule(*problem)
    if lay.folded:
        _check_folding(s)
    _check_shard_group(s)


def _check_folding(s: Scenario) -> None:
    """MoE parallel folding (its grid cutting the mesh evenly checked before, Layout.expert_grid_problem): with
    tp > 1 each GPU dispatches its own tokens, so sequence parallelism (Megatron-Core's rule); training only."""
    lay = s.layout
    if lay.tp > 1 and not lay.sequence_parallel:
        _rule("layout.expert_tp", f"folding experts with tp ({lay.tp}) > 1 needs sequence_parallel: true "
              "(each GPU dispatches its own tokens)")
    if s.workload.kind != "train":
        _rule("layout.expert_tp", f"MoE parallel folding is simulated for training only, got workload.kind "
              f"{s.workload.kind}")


def _check_shard_group(s: Scenario) -> None:
    """Hybrid sharding: sharded state, and shard groups that cut the data-parallel ranks (and, for an MoE
    model, each expert's replicas into as many groups)."""
    lay, group = s.layout, s.layout.shard_group
    if group is None:
        return
    if s.workload.kind != "train":
        _rule("layout.shard_group", f"shards training state, got workload.kind {s.workload.kind}")
    if lay.zero == 0 and not lay.distributed_optimizer:
        _rule("layout.shard_group", f"{group} shards ZeRO or distributed-optimizer state: set layout.zero >= 1 "
              "(3 for FSDP's hybrid shard) or layout.distributed_optimizer: true")
    problem = lay.shard_problem(s.model.moe is not None)
    if problem:
        _rule(*problem)


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
    _check_recompute_modules(s)
    m = w.global_batch // per_step
    problem = SPECS[lay.schedule].rule(lay.pp, m, f"{w.global_batch}/({w.micro_batch}*{lay.dp}) = {m}")
    if problem:
        _rule("layout.schedule", problem)


def _check_recompute_modules(s: Scenario) -> None:
    """Each of recompute_modules a module the model has (the list applies under selective recompute only, as
    Megatron-Core's; a sweep or a search may switch recompute and keep it)."""
    w, m = s.workload, s.model
    if w.recompute_modules is None:
        return
    absent = {"mla_up_proj": m.mla is None, "moe_act": m.moe is None,
              "shared_experts": m.moe is None or not m.moe.shared_experts,
              "mlp": m.moe is not None and all(m.moe.is_moe(m.layers))}
    for name in w.recompute_modules:
        if absent.get(name):
            _rule("workload.recompute_modules", f"{name}: model {m.name} has no such module")


FA2_MEASURED = ("ampere", "hopper")
"""Generations with FlashAttention-2 measurements (simulator/data/calibration.yaml): workload.attention flash2."""

FP8_ATTENTION_MEASURED = ("blackwell",)
"""Generations whose fused attention is measured in FP8 (calibration.yaml's attention.fp8): workload.fp8_attention."""
FP8_ATTENTION_DTYPES = ("fp8", "mxfp8")
"""The workload dtypes whose attention format those measurements cover (attention.fp8's per-format blocks)."""


def _check_dtype(s: Scenario) -> None:
    """The compute dtype has a peak on the device (block-scaled FP8 the fp8 peak, FP4 formats fp4's); flash2
    attention has measurements on the device's generation."""
    dtype, device = s.workload.dtype, s.topology.device
    family = PEAK_FAMILY[dtype]
    if family not in device.peak_flops:
        need = f"{dtype} runs at the {family} peak, " if family != dtype else ""
        _rule("workload.dtype", f"{need}{family} not in peak_flops of {device.name} ({', '.join(device.peak_flops)})")
    if s.attention_kernel == "flash2" and device.arch not in FA2_MEASURED:
        _rule("workload.attention", f"flash2: no FlashAttention-2 measurement on {device.arch} ({device.name}); "
              f"measured on {' and '.join(FA2_MEASURED)}: use flash")
    if s.workload.fp8_attention:
        _check_fp8_attention(s)
    if s.workload.fp8_scaling == "current" and s.workload.kind != "train":
        _rule("workload.fp8_scaling", "sets training's per-tensor FP8 scales; serving engines quantize per token")
    if s.workload.fp8_scaling == "current" and dtype != "fp8":
        _rule("workload.fp8_scaling", f"current scales per-tensor FP8 (workload.dtype fp8), got {dtype}; block-scaled "
                                      "formats (fp8-block, mxfp8, nvfp4, mxfp4) take their scales from each block")
    lay = s.layout
    if lay.fp8_params:
        if s.workload.kind != "train":
            _rule("layout.fp8_params", f"keeps training's working weights in FP8, got workload.kind {s.workload.kind} "
                                       "(serving stores weights at workload.weight_dtype)")
        if dtype in SIXTEEN_BIT:
            _rule("layout.fp8_params", f"stores weights in the GEMMs' low-precision format: {_no_low_precision(s)}")
        if not (lay.distributed_optimizer or lay.zero >= 1):
            _rule("layout.fp8_params", "the FP32 master weights live in the sharded optimizer state: set "
                                       "layout.distributed_optimizer: true or layout.zero >= 1")


def _check_fp8_attention(s: Scenario) -> None:
    """FP8 attention: training, an FP8 format measured so (fp8, mxfp8), the fused kernel, a generation measured."""
    w, arch = s.workload, s.topology.device.arch
    if w.kind != "train":
        _rule("workload.fp8_attention", "a training setting (serving's attention reads the KV cache at kv_dtype)")
    if w.dtype not in FP8_ATTENTION_DTYPES:
        _rule("workload.fp8_attention", f"runs attention in the GEMMs' FP8 format: needs dtype "
                                        f"{' or '.join(FP8_ATTENTION_DTYPES)}, got {w.dtype}")
    if s.attention_kernel != "flash":
        _rule("workload.fp8_attention", f"runs the fused kernel: needs workload.attention flash, got "
                                        f"{s.attention_kernel}")
    if arch not in FP8_ATTENTION_MEASURED:
        _rule("workload.fp8_attention", f"no FP8 attention measurement on {arch} ({s.topology.device.name}); measured "
                                        f"on {' and '.join(FP8_ATTENTION_MEASURED)}")


def _check_serve(s: Scenario) -> None:
    """Serving runs whole sequences on a replica (no context parallelism); pools split the replicas."""
    w, lay = s.workload, s.layout
    if w.two_batch_overlap and (w.kind != "serve" or s.model.moe is None):
        _rule("workload.two_batch_overlap", "overlaps the all-to-alls of an MoE model's serving steps; "
              f"got workload.kind {w.kind}{'' if s.model.moe else ' and a dense model'}")
    if lay.kv_sharding == "batch" and w.kind != "serve":
        _rule("layout.kv_sharding", f"batch splits a serving KV cache over the sequences, got workload.kind {w.kind}")
    if w.kind != "serve":
        return
    heads = s.model.cache_heads
    if lay.kv_sharding == "batch" and lay.tp <= heads:
        _rule("layout.kv_sharding", f"batch needs tp ({lay.tp}) above the cache's heads ({heads}"
              f"{', an MLA latent' if s.model.mla is not None else ''}): the heads already split it")
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


def _check_offload(s: Scenario) -> None:
    """Offload applies to training, over a host link the device states, and no device offloads more layers
    than it holds."""
    problem = offload_problem(s)
    if problem:
        _rule(*problem)


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
        lay = s.layout
        inner, what = lay.tp * lay.pp * lay.cp * lay.ep, "tp*pp*cp*ep"
        if lay.folded:
            inner, what = lay.pp * math.lcm(lay.tp * lay.cp, lay.ep * lay.etp), "pp*lcm(tp*cp, ep*expert_tp)"
        left = s.gpus - s.topology.ranks_per_domain
        if node.policy == "relayout" and left < inner:
            _rule("faults.failed_node.policy", f"relayout leaves {left} GPUs, fewer than one replica "
                  f"({what} = {inner})")
