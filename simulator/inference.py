"""Serving step costs: prefill and decode steps of one model replica, the KV cache and memory per device.

A step processes, for each sequence i of the running batch, n_i new tokens on top of c_i cached ones
(a decode token is n_i = 1; a prompt, or a chunk of one, is n_i > 1). Its time per pipeline stage is

    layers_s * (linear(M) + attention(n, c) + 2 * all_reduce(M h)) + embedding (first) + head (last)

with M = sum n_i. Every operator is the roofline of simulator.roofline with the one calibration of
simulator.calibration: `max(FLOP / (peak * eff), bytes / (HBM * hbm_eff)) + kernel overhead`. Weights
(`weight_dtype`) are read once a step whatever M is, so a small-batch decode is bound by HBM and a large
one by FLOP/s. Attention reads each sequence's KV cache (`kv_dtype`) once:
    GQA/MHA: 2 * layers * kv_heads * head_dim * bytes per token (split over TP ranks, replicated when
             tp > kv_heads);
    MLA:     layers * (kv_lora_rank + qk_rope_head_dim) * bytes per token, the latent shared by all heads
             and so held whole by every TP rank (DeepSeek-V2 section 2.1), attended in the absorbed form.
TP collectives: two all-reduces of M * h activations a layer, on the critical path. Inside one NVLink
domain they run as a two-shot all-reduce (reduce-scatter + all-gather through the switch, 2 latencies:
vLLM's and TensorRT-LLM's custom all-reduce for small messages); across domains, the Fabric's
hierarchical collective. PP: each stage boundary is a p2p of M * h / tp per rank plus an all-gather.
Linear-op times are tabulated over M once, so a simulated step costs a table lookup and a few numpy
reductions over the running batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import calibration, roofline
from .fabric import Fabric, fabric_for
from .placement import place, split_layers

ACT = 2.0  # bytes of a 16-bit activation
LOGIT = 4.0  # bytes of an fp32 logit
DTYPE_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
"""Storage bytes per element of weights and KV cache."""


# --- KV cache ---------------------------------------------------------------------------------


def kv_elements_per_token_layer(model) -> int:
    """Cached elements per token and layer: 2 * kv_heads * head_dim, or kv_lora_rank + rope dim (MLA)."""
    if model.mla is not None:
        return model.mla.kv_lora_rank + model.mla.qk_rope_head_dim
    return 2 * model.kv_heads * model.head_dim


def kv_bytes_per_token(model, kv_dtype: str) -> float:
    """KV cache bytes one token adds over all layers: 2 * L * kv_heads * head_dim * bytes (MLA: latent)."""
    return model.layers * kv_elements_per_token_layer(model) * DTYPE_BYTES[kv_dtype]


def kv_bytes_per_token_per_rank(model, kv_dtype: str, tp: int, layers: int) -> float:
    """KV bytes a token adds on one TP rank holding `layers` layers (GQA heads split, MLA latent whole)."""
    if model.mla is not None:
        per_layer = kv_elements_per_token_layer(model)
    else:
        per_layer = 2 * max(model.kv_heads // tp, 1) * model.head_dim
    return layers * per_layer * DTYPE_BYTES[kv_dtype]


# --- the operators of one layer on one TP rank -------------------------------------------------


@dataclass(frozen=True)
class LinearOps:
    """Token-proportional operators of one layer (or edge block) on one TP rank.

    GEMM rows: y[M, n] = x[M, k] w[k, n], `weights` = k * n elements; elementwise rows have n = k = 0
    and move `per_token` bytes a token.
    """

    names: tuple[str, ...]
    n: np.ndarray
    k: np.ndarray
    weights: np.ndarray  # weight elements on this rank
    per_token: np.ndarray  # bytes per token of elementwise rows

    @staticmethod
    def of(rows: list[tuple]) -> LinearOps:
        names, n, k, w, t = zip(*rows)
        return LinearOps(tuple(names), *(np.array(a, dtype=float) for a in (n, k, w, t)))


def _gemm(name: str, n: float, k: float) -> tuple:
    return (name, n, k, n * k, 0.0)


def _elementwise(name: str, per_token_elements: float) -> tuple:
    return (name, 0.0, 0.0, 0.0, ACT * per_token_elements)


def attention_dims(model, tp: int) -> dict:
    """Per-rank attention sizes: query heads, KV heads, head width, cache width and query group."""
    heads = model.heads // tp
    if model.mla is None:
        kv = max(model.kv_heads // tp, 1)
        return {"heads": heads, "kv_heads": kv, "qk": model.head_dim, "v": model.head_dim,
                "group": heads // kv, "mla": False}
    m = model.mla
    qk = (m.qk_nope_head_dim or model.head_dim) + m.qk_rope_head_dim
    return {"heads": heads, "kv_heads": 1, "qk": qk, "v": m.v_head_dim or model.head_dim,
            "group": heads, "mla": True, "latent": m.kv_lora_rank, "rope": m.qk_rope_head_dim}


def attention_rows(model, tp: int, sequence_parallel: bool = False) -> list[tuple]:
    """Rows of a layer's attention half on one TP rank: norm, projections, output projection, residual."""
    h, a = model.hidden, attention_dims(model, tp)
    hs = h / tp if sequence_parallel else h
    if not a["mla"]:
        attn = [_gemm("qkv", (a["heads"] + 2 * a["kv_heads"]) * a["qk"], h)]
    else:
        m = model.mla
        q = ([_gemm("q-down", m.q_lora_rank, h), _elementwise("q-norm", 2 * m.q_lora_rank),
              _gemm("q-up", a["heads"] * a["qk"], m.q_lora_rank)] if m.q_lora_rank
             else [_gemm("q", a["heads"] * a["qk"], h)])
        attn = q + [_gemm("kv-down", a["latent"] + a["rope"], h), _elementwise("kv-norm", 2 * a["latent"]),
                    _gemm("kv-up", a["heads"] * (a["qk"] - a["rope"] + a["v"]), a["latent"])]
    return [_elementwise("norm1", 2 * hs), *attn, _gemm("proj", h, a["heads"] * a["v"]),
            _elementwise("residual1", 3 * hs)]


def ffn_rows(model, tp: int, sequence_parallel: bool = False, width: int | None = None,
             router: int = 0) -> list[tuple]:
    """Rows of a layer's FFN half on one TP rank: norm, an FFN of `width` (default model.ffn; 0: none),
    a replicated router GEMM of `router` experts (MoE layers), residual."""
    h = model.hidden
    hs = h / tp if sequence_parallel else h
    ffn = (model.ffn if width is None else width) // tp
    gated = model.ffn_kind == "swiglu"
    rows = [_elementwise("norm2", 2 * hs)]
    if router:
        rows.append(_gemm("router", router, h))
    if ffn:
        rows += [_gemm("fc1", ffn * (2 if gated else 1), h), _elementwise("activation", ffn * (3 if gated else 2)),
                 _gemm("fc2", h, ffn)]
    return rows + [_elementwise("residual2", 3 * hs)]


def layer_linear_ops(model, tp: int, sequence_parallel: bool = False) -> LinearOps:
    """Norms, projections, FFN and residuals of one dense layer on one TP rank (Megatron split).

    Norms and residuals touch the full hidden state on every rank, or 1/tp of the tokens with sequence
    parallelism (the all-reduces become reduce-scatter + all-gather: the same bytes and latencies).
    """
    return LinearOps.of(attention_rows(model, tp, sequence_parallel) + ffn_rows(model, tp, sequence_parallel))


def head_linear_ops(model, tp: int) -> LinearOps:
    """Final norm, LM head (vocab split over TP ranks) and sampling, per sampled sequence."""
    vocab = -(-model.vocab // tp)
    return LinearOps.of([_elementwise("final-norm", 2 * model.hidden), _gemm("lm-head", vocab, model.hidden),
                         ("sampling", 0.0, 0.0, 0.0, 2 * LOGIT * vocab)])


def layer_weight_elements(model, tp: int) -> float:
    """Weight elements of one layer on one TP rank (norms included)."""
    return float(layer_linear_ops(model, tp).weights.sum() + 2 * model.hidden)


def linear_times(ops: LinearOps, m: np.ndarray, w_bytes: float, peak: float, hbm: float, cal) -> np.ndarray:
    """(len(m),) seconds of all rows of `ops` at M = m tokens each (0 tokens: 0 s)."""
    m = np.asarray(m, dtype=float)[:, None]
    gemm = ops.n > 0
    flops = 2.0 * m * ops.n * ops.k
    nbytes = np.where(gemm, ACT * m * (ops.n + ops.k) + w_bytes * ops.weights, m * ops.per_token)
    shapes = np.stack(np.broadcast_arrays(m, ops.n, ops.k), axis=-1)
    t = roofline.op_times(flops, nbytes, shapes, peak, hbm, cal)
    return np.where(m > 0, t, 0.0).sum(axis=1)


def linear_flops(ops: LinearOps) -> float:
    """FLOP per token of the GEMM rows."""
    return float((2.0 * ops.n * ops.k).sum())


def tabulated(tables: dict, name: str, fn, upto: int) -> np.ndarray:
    """The table `name` of fn(np.arange(size)) with size > upto, grown (doubled) on demand."""
    tab = tables.get(name)
    if tab is None or len(tab) <= upto:
        size = max(upto + 1, 2 * (0 if tab is None else len(tab)), 1024)
        tab = fn(np.arange(size))
        tables[name] = tab
    return tab


# --- the step cost of one replica --------------------------------------------------------------


@dataclass
class StepCosts:
    """Everything needed to time a step of one replica (tp x pp devices), SI units.

    `stage_times(new, ctx, sampled)` returns the seconds of each pipeline stage for a step in which
    sequence i processes new[i] tokens on ctx[i] cached ones and `sampled` sequences emit a token.
    An MoE model's replica is an EP unit of `ranks` = ep attention replicas stepping in lockstep
    (`moe`: simulator.moe_serving.ServeExperts); each sequence lives on one of them (`ranks` argument
    of stage_times), and every per-token cost but the experts' is the busiest attention replica's.
    """

    tp: int
    pp: int
    stage_layers: np.ndarray
    peak: float
    hbm_bw: float
    cal: calibration.Calibration
    layer_ops: LinearOps  # what every layer runs (an MoE model: the attention half)
    head_ops: LinearOps
    w_bytes: float
    kv_rank_layer: float  # KV bytes per token per layer on one rank
    attn: dict
    hidden: int
    vocab: int
    ar_bw: float
    ar_lat: float
    ar_hier: object  # callable(kind, size) -> seconds of the Fabric's hierarchical collective when the TP
    # group spans domains, else None
    hop: object  # callable(size) -> seconds of a stage-boundary p2p
    ranks: int = 1  # attention replicas a step spans (an MoE EP unit: ep)
    moe: object = None  # simulator.moe_serving.ServeExperts of an MoE model
    _tables: dict = field(default_factory=dict)

    def _table(self, name: str, fn, upto: int) -> np.ndarray:
        return tabulated(self._tables, name, fn, upto)

    def times(self, ops: LinearOps, m) -> np.ndarray:
        """Seconds of the rows of `ops` at each token count of m (array)."""
        return linear_times(ops, m, self.w_bytes, self.peak, self.hbm_bw, self.cal)

    def linear(self, m: int) -> float:
        """Seconds of the token-proportional operators every layer runs, at M = m tokens."""
        return self._table("layer", lambda x: self.times(self.layer_ops, x), m)[m]

    def embed(self, m: int) -> float:
        """Seconds of the embedding lookup of m tokens (memory-bound)."""
        return self._table("embed", lambda x: np.where(x > 0, x * 2 * ACT * self.hidden / (self.hbm_bw * self.cal.hbm)
                                                       + self.cal.kernel_overhead, 0.0), m)[m]

    def head(self, s: int) -> float:
        """Seconds of the LM head, logits all-gather and sampling for s sequences."""
        def fn(x):
            return self.times(self.head_ops, x) + np.where(x > 0, self.all_gather(x * self.vocab * ACT), 0.0)
        return self._table("head", fn, s)[s]

    def tp_comm(self, m: int) -> float:
        """Seconds of one layer's two TP all-reduces of m * hidden activations."""
        return self._table("tp", lambda x: 2.0 * self.all_reduce(x * self.hidden * ACT), m)[m]

    def all_reduce(self, size) -> np.ndarray:
        """Two-shot all-reduce of `size` bytes over the TP group inside a domain (hierarchical across)."""
        size = np.asarray(size, dtype=float)
        if self.tp == 1:
            return np.zeros_like(size)
        if self.ar_hier is not None:
            return self.ar_hier("all_reduce", size)
        n = self.tp
        return np.where(size > 0, 2.0 * (n - 1) / n * size / self.ar_bw + 2.0 * self.ar_lat, 0.0)

    def all_gather(self, size) -> np.ndarray:
        """All-gather of `size` gathered bytes over the TP group (one switch hop; hierarchical across domains)."""
        size = np.asarray(size, dtype=float)
        if self.tp == 1:
            return np.zeros_like(size)
        if self.ar_hier is not None:
            return self.ar_hier("all_gather", size)
        n = self.tp
        return np.where(size > 0, (n - 1) / n * size / self.ar_bw + self.ar_lat, 0.0)

    def pp_hop(self, m: int) -> float:
        """Seconds to pass m tokens' activations to the next stage (p2p of M h / tp, then all-gather)."""
        if self.pp == 1 or m == 0:
            return 0.0
        return self._table("hop", lambda x: np.where(
            x > 0, self.hop(x * self.hidden * ACT / self.tp) + self.all_gather(x * self.hidden * ACT), 0.0), m)[m]

    def attention(self, new: np.ndarray, ctx: np.ndarray, ranks=None) -> tuple[float, float]:
        """(seconds, FLOP) of one layer's attention on one rank for sequences with new[i] tokens on ctx[i]
        (the busiest attention replica's seconds when `ranks` gives each sequence's; FLOP of all)."""
        a = self.attn
        new = np.asarray(new, dtype=float)
        keys = ctx + new
        pairs = new * ctx + new * (new + 1) / 2  # causal: query j sees ctx + j keys
        if a["mla"]:
            per_pair = 2.0 * a["heads"] * (2 * a["latent"] + a["rope"])  # absorbed: scores on latent+rope, values on latent
            width, io = a["latent"] + a["rope"], new * a["heads"] * (2 * a["latent"] + a["rope"]) * ACT
        else:
            per_pair = 4.0 * a["heads"] * a["qk"]
            width, io = a["qk"], new * a["heads"] * 2 * a["qk"] * ACT
        flops = per_pair * pairs
        eff = (self.cal.gemm * self.cal.attention * float(roofline.tile_factor(width, self.cal))
               * roofline.tile_factor(new * a["group"], self.cal) * roofline.tile_factor(keys, self.cal))
        compute = flops / eff / self.peak
        memory = (keys * self.kv_rank_layer + io) / (self.hbm_bw * self.cal.hbm)
        if ranks is None:
            busiest = max(float(compute.sum()), float(memory.sum()))
        else:
            busiest = float(np.maximum(np.bincount(ranks, compute, self.ranks),
                                       np.bincount(ranks, memory, self.ranks)).max())
        return busiest + self.cal.kernel_overhead, float(flops.sum())

    def _ranks(self, n: int, ranks):
        """Each sequence's attention replica: as given, else dealt round-robin; None for one replica."""
        if self.ranks == 1:
            return None
        return np.arange(n) % self.ranks if ranks is None else np.asarray(ranks)

    def busiest(self, new, ranks=None) -> int:
        """New tokens of the busiest attention replica (all of them for one replica)."""
        ranks = self._ranks(len(new), ranks)
        return int(np.sum(new)) if ranks is None else int(np.bincount(ranks, new, self.ranks).max())

    def stage_times(self, new, ctx, sampled: int, ranks=None) -> tuple[np.ndarray, float]:
        """((pp,) seconds of each stage, attention FLOP of one layer on one rank) for one step (hops excluded).

        `ranks`: the attention replica of each sequence (an MoE EP unit); default round-robin. With
        two-batch overlap the sequences split in two halves (alternately on each replica) and each MoE
        layer takes the longer of both halves' compute and both halves' all-to-alls."""
        new, ctx = np.asarray(new, dtype=float), np.asarray(ctx, dtype=float)
        ranks = self._ranks(len(new), ranks)
        if self.moe is not None and self.moe.overlap and len(new) > 1:
            half = _alternate(ranks, len(new))
            parts = [self._layer_parts(new[half == h], ctx[half == h], None if ranks is None else ranks[half == h])
                     for h in (0, 1)]
            every, compute, comm, flops = (sum(p[i] for p in parts) for i in range(4))
            t = every + np.maximum(compute, comm)
        else:
            every, compute, comm, flops = self._layer_parts(new, ctx, ranks)
            t = every + compute + comm
        t[0] += self.embed(self.busiest(new, ranks))
        t[-1] += self.head(-(-sampled // self.ranks))
        return t, flops

    def _layer_parts(self, new, ctx, ranks) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(pp,) seconds of each stage's layers that no all-to-all overlaps, of its MoE layers' compute
        and of their all-to-alls, and the attention FLOP of one layer."""
        m, busiest = int(np.sum(new)), self.busiest(new, ranks)
        attn, flops = self.attention(new, ctx, ranks)
        per_layer = self.linear(busiest) + attn + self.tp_comm(busiest)
        if self.moe is None:
            zero = np.zeros(self.pp)
            return self.stage_layers * per_layer, zero, zero, flops
        dense, compute, comm = self.moe.parts(busiest, m)
        return self.moe.stage_dense * per_layer + dense, self.moe.stage_moe * per_layer + compute, comm, flops

    def step_time(self, new, ctx, sampled: int, ranks=None) -> float:
        """Seconds from the first stage's start to the last stage's end of one step."""
        ranks = self._ranks(len(new), ranks)
        return float(self.stage_times(new, ctx, sampled, ranks)[0].sum()) + (self.pp - 1) * self.pp_hop(
            self.busiest(new, ranks))

    # one-number views for reports, tests and studies
    def decode_step(self, batch: int, context: int) -> float:
        """Seconds of a decode step of `batch` sequences, each with `context` cached tokens."""
        return self.step_time(np.ones(batch), np.full(batch, float(context)), batch)

    def prefill(self, prompt: int, sequences: int = 1) -> float:
        """Seconds of a prefill step of `sequences` prompts of `prompt` tokens."""
        return self.step_time(np.full(sequences, float(prompt)), np.zeros(sequences), sequences)

    def decode_bound(self, batch: int) -> str:
        """'compute' when one layer's GEMMs at M = batch (an MoE model: its routed experts) are
        FLOP-bound, else 'memory'."""
        if self.moe is not None:
            return self.moe.bound(batch)
        m = np.array([float(batch)])[:, None]
        ops = self.layer_ops
        gemm = ops.n > 0
        eff = roofline.gemm_efficiency(np.stack(np.broadcast_arrays(m, ops.n, ops.k), -1), self.cal)
        compute = (2.0 * m * ops.n * ops.k / (self.peak * eff))[:, gemm].sum()
        memory = ((ACT * m * (ops.n + ops.k) + self.w_bytes * ops.weights) / (self.hbm_bw * self.cal.hbm))[:, gemm].sum()
        return "compute" if compute > memory else "memory"

    def flops_per_token(self) -> float:
        """Linear FLOP per token over the whole replica (all ranks, all layers, head excluded)."""
        every = linear_flops(self.layer_ops) * self.tp * float(self.stage_layers.sum())
        return every + (self.moe.flops_per_token() if self.moe is not None else 0.0)


def _alternate(ranks, n: int) -> np.ndarray:
    """(n,) 0 or 1: every other sequence of each attention replica (of the one replica if ranks is None)."""
    if ranks is None:
        return np.arange(n) % 2
    order = np.argsort(ranks, kind="stable")
    sorted_ranks = ranks[order]
    half = np.empty(n, dtype=int)
    half[order] = (np.arange(n) - np.searchsorted(sorted_ranks, sorted_ranks)) % 2
    return half


def replica_devices(scn) -> np.ndarray:
    """(dp, pp, tp) device index of each replica, stage and TP rank."""
    pl = place(scn)
    axes = [len(pl.order) - 1 - pl.order.index(a) for a in ("dp", "pp", "tp")]
    grid = np.moveaxis(pl.grid, axes, [0, 1, 2])
    return grid.reshape(grid.shape[:3] + (-1,))[..., 0]


def step_costs(scn, fabric: Fabric | None = None) -> StepCosts:
    """The StepCosts of one replica (an MoE model: one EP unit) of a serve scenario."""
    fabric = fabric or fabric_for(scn.topology)
    dev, w, lay, model = scn.topology.device, scn.workload, scn.layout, scn.model
    cal = calibration.for_device(dev)
    devices = replica_devices(scn)
    tp_group = devices[0, 0][None]
    k, d, _ = fabric.profile(tp_group)
    ar_hier = None
    if int(d[0]) > 1:
        def ar_hier(kind, size):  # one group: the result has the shape of `size`; nothing to send costs 0 s
            return np.where(size > 0, fabric.collective(kind, size, tp_group, cal), 0.0)
    hop = (lambda size: fabric.p2p(size, devices[0, 0, 0], devices[0, 1, 0], cal)) if lay.pp > 1 else None
    costs = StepCosts(
        tp=lay.tp, pp=lay.pp, stage_layers=split_layers(model.layers, lay.pp, lay.stage_layers).astype(float),
        peak=dev.peak_flops[w.dtype], hbm_bw=dev.hbm_bandwidth, cal=cal,
        layer_ops=LinearOps.of(attention_rows(model, lay.tp, lay.sequence_parallel) + (
            ffn_rows(model, lay.tp, lay.sequence_parallel) if model.moe is None else [])),
        head_ops=head_linear_ops(model, lay.tp),
        w_bytes=DTYPE_BYTES[w.weight_dtype], kv_rank_layer=kv_bytes_per_token_per_rank(model, w.kv_dtype, lay.tp, 1),
        attn=attention_dims(model, lay.tp), hidden=model.hidden, vocab=model.vocab,
        ar_bw=fabric.nvlink_bw * cal.nvlink, ar_lat=fabric.nvlink_lat, ar_hier=ar_hier, hop=hop, ranks=lay.ep,
    )
    if model.moe is not None:
        from .moe_serving import serve_experts

        costs.moe = serve_experts(scn, costs, fabric)
    return costs


# --- memory --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeMemory:
    """Bytes per device of each pipeline stage (arrays of pp), and the replica's KV capacity in tokens.

    An MoE EP unit spans `ranks` attention replicas, each caching its own sequences."""

    weights: np.ndarray
    activations: np.ndarray
    kv_per_token: np.ndarray  # KV bytes a cached token takes on one device of each stage
    capacity: float  # HBM bytes of one device
    ranks: int = 1

    @property
    def kv_tokens(self) -> int:
        """Tokens of KV cache one replica holds: the tightest stage's free HBM over its bytes a token,
        times the attention replicas."""
        free = self.capacity - self.weights - self.activations
        return self.ranks * int(max(0.0, float(np.min(np.floor(free / self.kv_per_token)))))

    @property
    def fits_weights(self) -> bool:
        return bool(np.all(self.weights + self.activations < self.capacity))

    def by_category(self, kv_tokens_peak: float) -> dict:
        """DESIGN section 8 memory_bytes of the most loaded device at the KV cache's peak (spread evenly
        over the attention replicas)."""
        kv = kv_tokens_peak / self.ranks * self.kv_per_token
        total = self.weights + self.activations + kv
        s = int(np.argmax(total))
        return {"weights": float(self.weights[s]), "gradients": 0.0, "optimizer": 0.0,
                "activations": float(self.activations[s]), "kv_cache": float(kv[s]), "total": float(total[s]),
                "capacity": self.capacity}


def serve_memory(scn) -> ServeMemory:
    """Weights, transient activations and KV bytes per token on one device of each stage.

    Weights: the stage's layers / tp at weight_dtype, plus the embedding table (first stage) and the LM
    head (last stage; the same table when tied); an MoE model's layers hold their dense FFN, or router,
    shared experts and the EP rank's routed experts. Activations: one layer's working set for the
    largest step (max_batch_tokens tokens: hidden states, QKV, FFN intermediates; with experts, the
    copies a rank receives) plus the fp32 logits of the batch; they are reused layer after layer.
    """
    m, w, lay = scn.model, scn.workload, scn.layout
    layers = split_layers(m.layers, lay.pp, lay.stage_layers).astype(float)
    wb = DTYPE_BYTES[w.weight_dtype]
    table = -(-m.vocab // lay.tp) * m.hidden * wb
    tokens = max(w.max_batch_tokens, w.batch)
    if m.moe is None:
        weights = layers * layer_weight_elements(m, lay.tp) * wb
        ops, experts = layer_linear_ops(m, lay.tp), 0.0
    else:
        from . import moe_serving

        attention = LinearOps.of(attention_rows(m, lay.tp)).weights.sum() + 2 * m.hidden
        weights = (layers * attention + moe_serving.ffn_weight_elements(scn)) * wb
        ops = LinearOps.of(attention_rows(m, lay.tp) + ffn_rows(m, lay.tp))
        experts = moe_serving.expert_working_set(scn, tokens)
    weights[0] += table
    weights[-1] += 0.0 if (m.tied_embeddings and lay.pp == 1) else table
    act = np.full(lay.pp, ACT * tokens * (3 * m.hidden + float(np.max(ops.n))) + experts)
    act[-1] += LOGIT * w.batch * -(-m.vocab // lay.tp)
    kv = layers * kv_bytes_per_token_per_rank(m, w.kv_dtype, lay.tp, 1)
    return ServeMemory(weights=weights, activations=act, kv_per_token=kv, capacity=scn.topology.device.hbm_bytes,
                       ranks=lay.ep)


def max_batch(scn, context: int) -> int:
    """Most sequences of `context` tokens whose KV cache fits one replica next to its weights."""
    return serve_memory(scn).kv_tokens // max(context, 1)
