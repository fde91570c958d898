"""Size limits: what simrack refuses because one machine could not simulate it in bounded memory and
a few minutes, each limit with its reason.

Files (read by `simulator.scenario.files`): a scenario or topology YAML, a request trace, a routing
counts file, a baseline. YAML documents: nesting depth and values after alias expansion. A scenario
(`excess(scn)`, the first cross-check of `simulator.scenario.spec.Scenario`): integer fields, the
cluster, the pipeline tasks of a training step, the routing draws of an MoE model, the requests and
decode steps of a serving run. Each problem is (field path, one line quoting the number, the limit
and why); the schema's cross-checks raise it like any other rule. Sweeps bound their points.
"""

from __future__ import annotations

# --- files -------------------------------------------------------------------------------------

MAX_YAML_BYTES = 1 << 20
"""A scenario or topology YAML (real ones are a few KiB; parsing costs ~150 bytes a character)."""
MAX_YAML_DEPTH = 32
"""Nesting of mappings and sequences in a YAML document (a scenario needs 5)."""
MAX_YAML_VALUES = 10_000
"""Values of a YAML document, aliases expanded (a scenario has about 100)."""
MAX_TRACE_BYTES = 64 << 20
"""A request trace CSV (MAX_REQUESTS rows of three numbers fit in 40 MiB)."""
MAX_COUNTS_BYTES = 64 << 20
"""A routing counts file (MAX_LAYERS rows of MAX_EXPERTS counts fit in 64 MiB)."""
MAX_BASELINE_BYTES = 16 << 20
"""A `simrack check` baseline (an entry is about 300 bytes)."""
MAX_QUOTE = 60
"""Characters of a value quoted in a message."""

# --- a scenario ----------------------------------------------------------------------------------

MAX_GPUS = 1 << 20
"""GPUs of a cluster: per-rank arrays and placements hold one entry per GPU."""
MAX_LAYERS = 1 << 12
"""Transformer layers: per-layer tables, stage splits and routing draws hold one entry per layer."""
MAX_EXPERTS = 1 << 12
"""Routed (and redundant) experts per MoE layer: placements build an experts x experts matrix."""
MAX_TEMPLATE_NODES = 1 << 17
"""GPUs and NICs of the template topology graph (at most two scale-out units) a Fabric is read from."""
MAX_PIPELINE_TASKS = 1 << 19
"""Micro-batches x pp x chunks of a training step: the engine holds and schedules each pass
(about 35 s and 700 MiB at twice this)."""
MAX_ROUTING_VALUES = 1 << 24
"""Routing draws (samples x MoE layers x expert slots) and sampled token choices (MoE layers x 1024
tokens x top_k) of an MoE model: arrays of that many numbers."""
MAX_CONTEXT = 1 << 24
"""Tokens of one training sequence (seq_len)."""
MAX_SERVE_CONTEXT = 1 << 21
"""Tokens of one served sequence (prompt + output): serving tabulates step costs by context length,
about 1.2 KiB a token (2.4 GiB at this many)."""
MAX_STEP_TOKENS = 1 << 53
"""Tokens of a training step (global_batch x seq_len): token counts stay exact in floating point."""
MAX_REQUESTS = 1 << 20
"""Requests of a serving run: per-request arrays and events (a million Llama 3 70B requests on 8 H100 hold
about 250 MiB; disaggregated pools with a small batch about ten times that a request)."""
MAX_DECODE_STEPS = 1 << 22
"""Decode steps of a serving run, estimated: the longest output, or the output tokens over the
sequences a step (the batch; fewer where the KV cache holds fewer, or where requests arrive too
slowly to fill it). The engine simulates every step of every replica: a million Llama 3 70B requests
on 8 H100 at 12 a second are 3.4 million decode steps (estimated 3.2 million), 73 s of CPU."""
MAX_SPAN_S = 1e9
"""Seconds of simulated time (arrivals, traces): beyond them float time loses the microseconds."""
MAX_SWEEP_POINTS = 100_000
"""Points of one sweep: each is a simulation and a row of every output."""
MAX_REFINED = 1_000
"""Layouts a search simulates again with the engine (--top)."""
MAX_DRAWN_SLICES = 1 << 14
"""Slices of a `simrack schedule --svg` picture (4 s at 8,192; a minute and 1.5 GiB at 32,768)."""

_EXACT = "FLOP and byte counts stay exact"
_SEED = "a 64-bit seed"
# field path: (largest value, what it costs), for every integer field of the schema (a test checks).
FIELD_MAX: dict[str, tuple[int, str]] = {
    "model.layers": (MAX_LAYERS, "per-layer tables and routing draws"),
    "model.hidden": (1 << 20, _EXACT),
    "model.heads": (1 << 16, _EXACT),
    "model.kv_heads": (1 << 16, _EXACT),
    "model.head_dim": (1 << 16, _EXACT),
    "model.ffn": (1 << 24, _EXACT),
    "model.vocab": (1 << 24, _EXACT),
    "model.moe.experts": (MAX_EXPERTS, "experts x experts placement matrices"),
    "model.moe.top_k": (MAX_EXPERTS, "experts a token visits"),
    "model.moe.dense_layers": (MAX_LAYERS, "per-layer tables"),
    "model.moe.layer_step": (MAX_LAYERS, "layers"),
    "model.moe.shared_experts": (MAX_EXPERTS, "per-expert tables"),
    "model.moe.expert_ffn": (1 << 24, _EXACT),
    "model.mla.kv_lora_rank": (1 << 20, _EXACT),
    "model.mla.q_lora_rank": (1 << 20, _EXACT),
    "model.mla.qk_rope_head_dim": (1 << 16, _EXACT),
    "model.mla.qk_nope_head_dim": (1 << 16, _EXACT),
    "model.mla.v_head_dim": (1 << 16, _EXACT),
    "model.mtp.depth": (MAX_LAYERS, "per-layer tables"),
    "model.sliding_window.window": (MAX_CONTEXT, "tokens of a window"),
    "model.sliding_window.full_every": (MAX_LAYERS, "layers"),
    "workload.seq_len": (MAX_CONTEXT, "tokens of a sequence"),
    "workload.global_batch": (MAX_STEP_TOKENS, "sequences a step, exact in floating point"),
    "workload.micro_batch": (MAX_STEP_TOKENS, "sequences a micro-batch, exact in floating point"),
    "workload.prompt_len": (MAX_SERVE_CONTEXT, "tables by context length"),
    "workload.output_len": (MAX_SERVE_CONTEXT, "tables by context length"),
    "workload.batch": (1 << 16, "tables by batch size"),
    "workload.max_batch_tokens": (MAX_CONTEXT, "tables by tokens a step"),
    "workload.max_num_tokens": (MAX_CONTEXT, "tables by tokens a step"),
    "workload.kv_block": (MAX_SERVE_CONTEXT, "tokens a KV-cache block, at most a whole context"),
    "workload.arrivals.count": (MAX_REQUESTS, "per-request arrays and events"),
    "workload.disaggregated.prefill_replicas": (MAX_GPUS, "one replica a GPU at most"),
    "workload.routing.topics": (MAX_EXPERTS, "per-topic tables"),
    "workload.routing.samples": (1 << 10, "routing draws per layer"),
    "topology.domain.gpus": (1 << 12, "the template topology graph"),
    "topology.domain.used": (1 << 12, "the template topology graph"),
    "topology.scaleout.nics_per_domain": (1 << 12, "the template topology graph"),
    "topology.scaleout.domains_per_leaf": (1 << 12, "the template topology graph"),
    "topology.domains": (MAX_GPUS, "per-rank arrays"),
    "layout.tp": (MAX_GPUS, "one rank a GPU at most"),
    "layout.pp": (MAX_GPUS, "one rank a GPU at most"),
    "layout.dp": (MAX_GPUS, "one rank a GPU at most"),
    "layout.ep": (MAX_GPUS, "one rank a GPU at most"),
    "layout.cp": (MAX_GPUS, "one rank a GPU at most"),
    "layout.chunks": (MAX_LAYERS, "a layer a chunk at least"),
    "layout.zero": (3, "ZeRO stages 0 to 3"),
    "layout.stage_layers": (MAX_LAYERS, "the layers of a stage"),
    "layout.redundant_experts": (MAX_EXPERTS, "experts x experts placement matrices"),
    "layout.expert_tp": (MAX_GPUS, "one rank a GPU at most"),
    "layout.shard_group": (MAX_GPUS, "one rank a GPU at most"),
    "layout.bucket_params": (1 << 50, "parameters a bucket, beyond any model"),
    "layout.offload.activations_layers": (MAX_LAYERS, "the layers of a device"),
    "options.seed": ((1 << 64) - 1, _SEED),
    "workload.arrivals.seed": ((1 << 64) - 1, _SEED),
    "faults.jitter.seed": ((1 << 64) - 1, _SEED),
    "faults.straggler.gpu": (MAX_GPUS, "a GPU index"),
    "faults.degraded_link.gpu": (MAX_GPUS, "a GPU index"),
    "faults.failed_node.domain": (MAX_GPUS, "a domain index"),
}

# field path: (largest value, why); floats with no natural bound where a larger one would overflow
# or swamp the simulated times.
FLOAT_MAX: dict[str, tuple[float, str]] = {
    "workload.arrivals.rate": (1e9, "requests/s"),
    "workload.routing.skew": (1e3, "a Zipf exponent past which one expert takes every token"),
    "workload.routing.capacity_factor": (1e6, "times the mean load"),
    "topology.scaleout.oversubscription": (1e6, "a leaf's down:up bandwidth ratio"),
    "options.gpu_hour_price": (1e6, "dollars a GPU-hour"),
    "faults.straggler.slowdown": (1e6, "times slower"),
}


def number(x: int | float) -> str:
    """1048576 -> '1,048,576' (huge integers as a power of ten)."""
    if isinstance(x, int) and x.bit_length() > 64:
        return f"about 10^{len(str(x)) - 1}" if x.bit_length() < 20_000 else f"about 2^{x.bit_length() - 1}"
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def _get(obj, path: str):
    """The value at a dotted field path of a Scenario, None where a section is absent."""
    for key in path.split("."):
        obj = getattr(obj, key, None)
        if obj is None:
            return None
    return obj


def _over(field: str, value, limit, what: str, why: str) -> tuple[str, str]:
    """(field, "WHAT VALUE over the limit of LIMIT (WHY)")."""
    return field, f"{what + ' ' if what else ''}{number(value)} is over simrack's limit of {number(limit)} ({why})"


def excess(scn) -> tuple[str, str] | None:
    """The first size of `scn` over a limit, as (field path, detail), or None."""
    for path, (limit, why) in FIELD_MAX.items():
        value = _get(scn, path)
        for item in value if isinstance(value, tuple) else (value,):  # stage_layers: each entry, and how many
            if isinstance(item, int) and item > limit:
                return _over(path, item, limit, "", why)
        if isinstance(value, tuple) and len(value) > limit:
            return _over(path, len(value), limit, "entries:", why)
    for path, (limit, why) in FLOAT_MAX.items():
        value = _get(scn, path)
        if isinstance(value, float) and value > limit:
            return _over(path, value, limit, "", why)
    return (_cluster(scn) or _training(scn) or _routing(scn) or _serving(scn))


def _cluster(scn) -> tuple[str, str] | None:
    topo = scn.topology
    gpus = topo.domains * topo.domain.gpus
    if gpus > MAX_GPUS:
        return _over("topology.domains", gpus, MAX_GPUS,
                     f"{number(topo.domains)} domains x {topo.domain.gpus} GPUs =", "GPUs: per-rank arrays")
    units = min(topo.domains, 2 * topo.scaleout.domains_per_leaf)
    nodes = units * (topo.domain.gpus + topo.scaleout.nics_per_domain)
    if nodes > MAX_TEMPLATE_NODES:
        return _over("topology.scaleout.domains_per_leaf", nodes, MAX_TEMPLATE_NODES,
                     f"the template graph of {units} domains x ({topo.domain.gpus} GPUs + "
                     f"{topo.scaleout.nics_per_domain} NICs) has", "nodes of the graph the fabric is read from")
    return None


def _dp(scn) -> int:
    """layout.dp, "auto" resolved as the schema will (gpus / (tp*pp*cp), the used GPUs of partial domains)."""
    lay = scn.layout
    if lay.dp != "auto":
        return lay.dp
    return max(1, scn.topology.gpus // (lay.tp * lay.pp * lay.cp))


def _training(scn) -> tuple[str, str] | None:
    w, lay = scn.workload, scn.layout
    if w.kind != "train" or w.global_batch is None:
        return None
    tokens = w.global_batch * w.seq_len
    if tokens > MAX_STEP_TOKENS:
        return _over("workload.global_batch", tokens, MAX_STEP_TOKENS,
                     f"global_batch x seq_len = {number(w.global_batch)} x {number(w.seq_len)} =",
                     "tokens a step, exact in floating point")
    m = w.global_batch // (w.micro_batch * _dp(scn))
    tasks = m * lay.pp * lay.chunks
    if tasks > MAX_PIPELINE_TASKS:
        return _over("workload.global_batch", tasks, MAX_PIPELINE_TASKS,
                     f"{number(m)} micro-batches x pp {number(lay.pp)} x chunks {number(lay.chunks)} =",
                     "pipeline tasks the engine simulates one by one")
    return None


def _routing(scn) -> tuple[str, str] | None:
    moe = scn.model.moe
    if moe is None:
        return None
    layers = sum(moe.is_moe(scn.model.layers))
    slots = moe.experts + scn.layout.redundant_experts
    if slots > MAX_EXPERTS:
        return _over("layout.redundant_experts", slots, MAX_EXPERTS, "expert slots (experts + redundant)",
                     "experts x experts placement matrices")
    r = scn.workload.routing
    draws = (16 if r is None else r.samples) * layers * slots
    if draws > MAX_ROUTING_VALUES:
        return _over("workload.routing.samples", draws, MAX_ROUTING_VALUES,
                     f"samples x MoE layers x expert slots = {16 if r is None else r.samples} x {layers} x {slots} =",
                     "routing draws held at once")
    choices = layers * 1024 * moe.top_k
    if choices > MAX_ROUTING_VALUES:
        return _over("model.moe.top_k", choices, MAX_ROUTING_VALUES,
                     f"MoE layers x 1024 sampled tokens x top_k = {layers} x 1024 x {moe.top_k} =",
                     "token choices sampled at once")
    return None


def _serving(scn) -> tuple[str, str] | None:
    w, lay = scn.workload, scn.layout
    if w.kind != "serve":
        return None
    if w.prompt_len + w.output_len > MAX_SERVE_CONTEXT:
        return _over("workload.output_len", w.prompt_len + w.output_len, MAX_SERVE_CONTEXT,
                     "prompt_len + output_len =", "tables by context length")
    arr = w.arrivals
    if arr is None:
        requests = (w.batch or 256) * lay.ep
    elif arr.count is not None:
        requests = arr.count
    else:
        return None  # a trace: its reader checks its rows
    if requests > MAX_REQUESTS:
        return _over("workload.batch", requests, MAX_REQUESTS, "requests (batch x ep)", "per-request arrays")
    if arr is not None and arr.rate is not None and arr.trace is None and requests / arr.rate > MAX_SPAN_S:
        return _over("workload.arrivals.rate", requests / arr.rate, MAX_SPAN_S,
                     f"count / rate = {requests} / {arr.rate:g} =", "seconds of arrivals; float time "
                     "loses the microseconds beyond")
    return decode_steps(scn, requests * w.output_len, w.output_len, "workload.output_len")


def decode_steps(scn, output_tokens: int, longest: int, field: str, at_once: float | None = None,
                 why: str = "") -> tuple[str, str] | None:
    """The decode steps of a serving run, over MAX_DECODE_STEPS: (field, detail) or None. Every
    replica's steps are simulated, each emitting a token for at most `at_once` sequences (default
    batch x ep, the most a replica runs); `why` says where a smaller `at_once` comes from."""
    w, lay = scn.workload, scn.layout
    at_once = (w.batch or 256) * lay.ep if at_once is None else max(1.0, at_once)
    steps = max(longest, int(output_tokens / at_once))
    if steps > MAX_DECODE_STEPS:
        return _over(field, steps, MAX_DECODE_STEPS,
                     f"{number(output_tokens)} output tokens, about {at_once:,.0f} sequence"
                     f"{'' if round(at_once) == 1 else 's'} a step{why}: about",
                     "decode steps, each simulated")
    return None
