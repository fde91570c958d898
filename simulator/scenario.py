"""The scenario schema: model, workload, topology, layout, options as frozen, validated models.

`load_scenario(path, overrides)` reads a scenario YAML file, expands presets, applies `--set`
overrides and validates; every problem is one `ScenarioError` line,
`"<file>: <field.path>: <what is wrong, quoting the numbers>"`. Human units ("900 GB/s") are parsed
by `simulator.units`; the models hold SI floats (seconds, bytes, bytes/s, FLOP/s).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, NoReturn, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel, ConfigDict, Field, PlainValidator, StrictBool, ValidationError, model_validator,
)
from pydantic_core import PydanticCustomError

from simulator.hardware import DeviceSpec
from simulator.units import BytesPerSecond, Seconds

__all__ = [
    "AXES",
    "SCHEDULES",
    "DomainSpec",
    "Layout",
    "MoESpec",
    "ModelSpec",
    "Options",
    "Scenario",
    "ScenarioError",
    "ScaleoutSpec",
    "TopologySpec",
    "Workload",
    "load_scenario",
]

PosInt = Annotated[int, Field(strict=True, ge=1)]
NonNegInt = Annotated[int, Field(strict=True, ge=0)]
Axis = Literal["tp", "cp", "ep", "dp", "pp"]
Schedule = Literal["gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2", "zb-v", "dualpipe", "dualpipe-v"]

AXES: tuple[str, ...] = get_args(Axis)
"""Mesh axis names, in the default order (innermost first)."""
SCHEDULES: tuple[str, ...] = get_args(Schedule)
"""Pipeline schedule names a layout may ask for."""
_ONE_CHUNK = ("gpipe", "1f1b", "zb-h1", "zb-h2")
_TWO_CHUNKS = ("zb-v", "dualpipe-v")


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


class MoESpec(_Frozen):
    """Mixture-of-experts feed-forward blocks (reserved; simulated in a later issue)."""

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
            _fill(self, moe=moe.model_copy(update={"expert_ffn": ffn}))


class Arrivals(_Frozen):
    """Request arrivals for serving (reserved)."""

    rate: Annotated[float, Field(gt=0)]
    """Mean arrival rate, requests/s (Poisson)."""
    count: PosInt
    """Requests to simulate."""
    seed: NonNegInt = 0
    """Random seed of the arrival process."""


class SLO(_Frozen):
    """Serving latency targets (reserved)."""

    ttft: Seconds | None = None
    """Time-to-first-token target, s."""
    tpot: Seconds | None = None
    """Time-per-output-token target, s."""


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
    recompute: Literal["none", "selective", "full"] = "selective"
    """Activation recomputation: none, selective (attention core), full (whole layer)."""
    attention: Literal["flash", "unfused"] = "flash"
    """Attention kernel: flash (fused, never writes the s*s score matrix, skips masked blocks) or
    unfused (materializes scores, as Megatron-LM of 2022 did)."""
    prompt_len: PosInt | None = None
    """Serve: prompt tokens per request."""
    output_len: PosInt | None = None
    """Serve: generated tokens per request."""
    batch: PosInt | None = None
    """Serve: maximum requests batched together."""
    arrivals: Arrivals | None = None
    """Serve: request arrival process."""
    slo: SLO | None = None
    """Serve: latency targets."""

    @model_validator(mode="after")
    def _required(self) -> Workload:
        needed = ("seq_len", "global_batch") if self.kind == "train" else ("prompt_len", "output_len")
        for name in needed:
            if getattr(self, name) is None:
                _rule(name, f"required when kind is {self.kind}")
        if self.seq_len is None:
            _fill(self, seq_len=self.prompt_len + self.output_len)
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
    """Layers per virtual stage (pp*chunks entries, sum = layers); None splits evenly."""

    def degrees(self) -> dict[str, int]:
        """Degree per mesh axis, keyed in `order` (innermost first)."""
        return {axis: getattr(self, axis) for axis in self.order}

    @model_validator(mode="after")
    def _check(self) -> Layout:
        if sorted(self.order) != sorted(AXES):
            _rule("order", f"[{', '.join(self.order)}] must list each of {', '.join(AXES)} once")
        if self.schedule in _ONE_CHUNK and self.chunks != 1:
            _rule("chunks", f"schedule {self.schedule} runs one chunk per device, got chunks {self.chunks}")
        if self.schedule in _TWO_CHUNKS and self.chunks != 2:
            _rule("chunks", f"schedule {self.schedule} needs chunks 2, got {self.chunks}")
        if self.schedule == "interleaved" and self.chunks < 2:
            _rule("chunks", f"schedule interleaved needs chunks >= 2, got {self.chunks}")
        return self


class Options(_Frozen):
    """Run options."""

    seed: NonNegInt = 0
    """Seed for every random draw (routing, arrivals, stragglers)."""
    gpu_hour_price: Annotated[float, Field(ge=0)] = 2.0
    """Price of one GPU-hour in dollars, for cost per million tokens."""


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
    """Layers split over pp*chunks virtual stages, evenly or as stage_layers says."""
    m, lay = s.model, s.layout
    stages = lay.pp * lay.chunks
    if lay.stage_layers is None:
        if m.layers % stages:
            _rule("layout.pp", f"layers ({m.layers}) not divisible by pp*chunks ({lay.pp}*{lay.chunks} = "
                  f"{stages}); give layout.stage_layers for an uneven split")
        return
    if len(lay.stage_layers) != stages:
        _rule("layout.stage_layers", f"{len(lay.stage_layers)} entries, need pp*chunks = "
              f"{lay.pp}*{lay.chunks} = {stages}")
    if sum(lay.stage_layers) != m.layers:
        _rule("layout.stage_layers", f"sum {sum(lay.stage_layers)} != model.layers ({m.layers})")


def _check_experts(s: Scenario) -> None:
    """Expert parallelism needs experts to split over."""
    ep, moe = s.layout.ep, s.model.moe
    if ep == 1:
        return
    if moe is None:
        _rule("layout.ep", f"ep ({ep}) > 1 needs an MoE model (model.moe)")
    if moe.experts % ep:
        _rule("layout.ep", f"experts ({moe.experts}) not divisible by ep ({ep})")


def _resolve_dp(s: Scenario) -> Layout:
    """The layout with dp "auto" replaced by gpus / (tp*pp*cp)."""
    lay = s.layout
    if lay.dp != "auto":
        return lay
    inner = lay.tp * lay.pp * lay.cp
    if s.gpus % inner:
        _rule("layout.dp", f"auto needs gpus ({s.gpus}) divisible by tp*pp*cp "
              f"({lay.tp}*{lay.pp}*{lay.cp} = {inner})")
    return lay.model_copy(update={"dp": s.gpus // inner})


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
    if lay.schedule == "interleaved" and m % lay.pp:
        _rule("layout.schedule", f"interleaved needs micro-batches per pipeline ({w.global_batch}/"
              f"({w.micro_batch}*{lay.dp}) = {m}) divisible by pp ({lay.pp})")


def _check_dtype(s: Scenario) -> None:
    """The compute dtype has a peak on the device."""
    dtype, device = s.workload.dtype, s.topology.device
    if dtype not in device.peak_flops:
        _rule("workload.dtype", f"{dtype} not in peak_flops of {device.name} ({', '.join(device.peak_flops)})")


# --- loading: YAML, presets, overrides, one-line errors ------------------------------------------

_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = _ROOT / "scenarios" / "models"
"""Model presets: scenarios/models/<name>.yaml."""
PRESETS_DIR = _ROOT / "topologies" / "presets"
"""Topology presets (<name>.yaml) and device data sheets (devices.yaml)."""
_OVERRIDE = re.compile(r"\s*([A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*)\s*=(.*)", re.S)


class _Issue(Exception):
    """A loading problem at a field path (None: the file itself)."""

    def __init__(self, field: str | None, detail: str) -> None:
        super().__init__(f"{field}: {detail}" if field else detail)
        self.field, self.detail = field, detail


def load_scenario(path: str | Path, overrides: Sequence[str] = ()) -> Scenario:
    """Read, expand presets, apply `dotted.path=value` overrides, validate; ScenarioError if bad."""
    display, path = str(path), Path(path)
    try:
        raw = _read_yaml(path)
        if not isinstance(raw, dict):
            raise _Issue(None, f"expected a mapping with model, workload, topology; got {_short(raw)}")
        raw = _expand(raw, path.parent)
        for text in overrides:
            _apply_override(raw, text)
        raw = _expand(raw, path.parent)  # overrides may name presets: --set topology.device=h100-sxm
        if "source" in raw:
            raise _Issue("source", "set by the loader from the file path; remove it")
        raw = {"name": path.stem, **raw, "source": display}
    except _Issue as issue:
        raise ScenarioError(f"{display}: {issue}") from None
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(f"{display}: {_describe(exc.errors()[0])}") from None


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects duplicate keys instead of keeping the last."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    keys: list[Any] = []
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # "<<: *anchor" merge keys may be overridden by explicit keys
        key = loader.construct_object(key_node)
        if key in keys:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        keys.append(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _read_yaml(path: Path) -> Any:
    """Parsed YAML of `path`; _Issue(None, ...) if unreadable or malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _Issue(None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _Issue(None, f"cannot read file: {exc}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise _Issue(None, f"YAML error at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise _Issue(None, f"YAML error: {exc}") from None


def _read_preset(path: Path, field: str, label: str) -> dict:
    """The mapping in preset file `path`, problems reported at `field`."""
    try:
        data = _read_yaml(path)
    except _Issue as issue:
        raise _Issue(field, f"{label} ({path}): {issue.detail}") from None
    if not isinstance(data, dict):
        raise _Issue(field, f"{label} ({path}): expected a mapping, got {_short(data)}")
    return data


def _preset(folder: Path, name: object, field: str) -> dict:
    """Preset `folder/<name>.yaml` as a mapping, its `name` defaulting to the preset's."""
    available = sorted(p.stem for p in folder.glob("*.yaml") if p.stem != "devices")
    if name not in available:
        raise _Issue(field, f"no preset {name!r}; available: {', '.join(available) or 'none'}")
    return {"name": name, **_read_preset(folder / f"{name}.yaml", field, f"preset {name!r}")}


def _merge(base: dict, over: dict) -> dict:
    """`base` updated by `over`, nested mappings merged key by key."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


def _expand(raw: dict, base_dir: Path) -> dict:
    """Scenario mapping with model, topology and device presets replaced by their mappings."""
    out = dict(raw)
    if "model" in out:
        out["model"] = _expand_model(out["model"])
    if "topology" in out:
        out["topology"] = _expand_topology(out["topology"], base_dir, "topology", 0)
    return out


def _expand_model(value: Any) -> Any:
    """`NAME` or `{preset: NAME, ...overrides}` -> mapping; other values unchanged."""
    if isinstance(value, str):
        return _preset(MODELS_DIR, value, "model")
    if isinstance(value, dict) and "preset" in value:
        rest = {k: v for k, v in value.items() if k != "preset"}
        return _merge(_preset(MODELS_DIR, value["preset"], "model.preset"), rest)
    return value


def _expand_topology(value: Any, base_dir: Path, field: str, depth: int) -> Any:
    """Preset name, file path (relative to `base_dir`) or `{preset: ..., ...}` -> mapping."""
    if depth > 8:
        raise _Issue(field, "presets refer to each other more than 8 deep")
    if isinstance(value, str) and (value.endswith((".yaml", ".yml")) or "/" in value):
        path = base_dir / value
        data = {"name": path.stem, **_read_preset(path, field, f"file {value!r}")}
        return _expand_topology(data, path.parent, field, depth + 1)
    if isinstance(value, str):
        return _expand_topology(_preset(PRESETS_DIR, value, field), PRESETS_DIR, field, depth + 1)
    if not isinstance(value, dict):
        return value
    out = dict(value)
    if "preset" in out:
        base = _expand_topology(out.pop("preset"), base_dir, f"{field}.preset", depth + 1)
        if not isinstance(base, dict):
            raise _Issue(f"{field}.preset", f"expected a preset name or a file path, got {_short(base)}")
        out = _merge(base, out)
    if "device" in out:
        out["device"] = _expand_device(out["device"])
    return out


def _expand_device(value: Any) -> Any:
    """Device preset name or `{preset: NAME, ...}` -> mapping from devices.yaml."""
    if isinstance(value, str):
        return _device_preset(value, "topology.device")
    if isinstance(value, dict) and "preset" in value:
        rest = {k: v for k, v in value.items() if k != "preset"}
        return _merge(_device_preset(value["preset"], "topology.device.preset"), rest)
    return value


def _device_preset(name: object, field: str) -> dict:
    """Entry `name` of devices.yaml, its `name` defaulting to the key."""
    path = PRESETS_DIR / "devices.yaml"
    if not path.is_file():
        raise _Issue(field, f"no preset {name!r}: {path} not found")
    devices = _read_preset(path, field, "devices.yaml")
    entry = devices.get(name) if isinstance(name, str) else None
    if not isinstance(entry, dict):
        raise _Issue(field, f"no preset {name!r}; available: {', '.join(map(str, devices)) or 'none'}")
    return {"name": name, **entry}


def _apply_override(raw: dict, text: object) -> None:
    """Set `dotted.path=value` (value parsed as YAML) in `raw`, creating missing sections."""
    match = _OVERRIDE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise _Issue("--set", f"override {text!r}: expected dotted.path=value, e.g. layout.pp=16")
    dotted, value_text = match.groups()
    keys = dotted.split(".")
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError:
        raise _Issue(dotted, f"override {text!r}: value {value_text.strip()!r} is not valid YAML") from None
    _check_override_path(keys, text)
    target = raw
    for i, key in enumerate(keys[:-1]):
        if target.get(key) is None:
            target[key] = {}
        elif not isinstance(target[key], dict):
            raise _Issue(".".join(keys[: i + 1]), f"override {text!r}: not a section, holds {_short(target[key])}")
        target = target[key]
    target[keys[-1]] = value


def _check_override_path(keys: list[str], text: str) -> None:
    """Each key of an override path names a field of the schema."""
    cls: Any = Scenario
    for i, key in enumerate(keys):
        where = ".".join(keys[: i + 1])
        if not _is_section(cls):
            raise _Issue(".".join(keys[:i]), f"override {text!r}: not a section")
        cls = _step(cls, key)
        if cls is None:
            raise _Issue(where, f"override {text!r}: unknown field{_hint(keys[:i])}")


def _is_section(cls: Any) -> bool:
    """Whether a schema type holds named keys (a model or a dict)."""
    return (isinstance(cls, type) and issubclass(cls, BaseModel)) or get_origin(cls) is dict


def _unwrap(tp: Any) -> Any:
    """`tp` without Annotated and without `| None`."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, UnionType) and type(None) in get_args(tp) and len(get_args(tp)) == 2:
            tp = next(a for a in get_args(tp) if a is not type(None))
        else:
            return tp


def _step(cls: Any, key: object) -> Any:
    """The schema type at `key` inside `cls` (a model, dict or tuple type); None if there is none."""
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        field = next((f for n, f in cls.model_fields.items() if key in (n, f.alias)), None)
        return None if field is None else _unwrap(field.annotation)
    if get_origin(cls) in (dict, tuple):
        return _unwrap(get_args(cls)[-1 if get_origin(cls) is dict else 0])
    return None


def _hint(loc: Sequence[object]) -> str:
    """"; expected one of: ..." listing the fields of the model at `loc`, or ""."""
    cls: Any = Scenario
    for key in loc:
        cls = _step(cls, key)
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
        return ""
    names = [f.alias or n for n, f in cls.model_fields.items() if n != "source"]
    return "; expected one of: " + ", ".join(names)


def _short(value: object) -> str:
    """repr(value), at most 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(err: Any) -> str:
    """One pydantic error as "field.path: what is wrong, got VALUE"."""
    loc, kind, ctx = [str(p) for p in err["loc"]], err["type"], err.get("ctx") or {}
    if kind == "scenario_rule":
        loc, msg = loc + ctx["field"].split("."), ctx["detail"]
    elif kind == "extra_forbidden":
        msg = "unknown field" + _hint(err["loc"][:-1])
    elif kind == "missing":
        msg = "required field missing"
    else:
        msg = err["msg"].removeprefix("Value error, ")
        msg = msg.split(", ")[0] if kind.endswith("_parsing") else msg
        msg = msg[:1].lower() + msg[1:]
        got = _short(err.get("input"))
        if f"got {got}" not in msg and not (isinstance(err.get("input"), str) and got in msg):
            msg += f", got {got}"
    return " ".join(f"{'.'.join(loc) or '(top level)'}: {msg}".split())
