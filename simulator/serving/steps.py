"""Serving step costs: prefill and decode steps of one model replica, as today's inference engines run them.

A step processes, for each sequence i of the running batch, n_i new tokens on top of c_i cached ones
(a decode token is n_i = 1; a prompt, or a chunk of one, is n_i > 1). Its time per pipeline stage is

    layers_s * (linear(M) + attention(n, c) + 2 * all_reduce(M h)) + embedding (first) + head (last)

with M = sum n_i, and a step lasts at least the scheduler's CPU time (calibration `scheduler_step`), which current
engines overlap with the GPU's previous step. Every operator is the roofline of simulator.cost.roofline with the one
calibration of simulator.cost.calibration: `max(FLOP / (peak * eff), bytes / (HBM * hbm_eff)) + kernel overhead`
(CUDA-graph residue for steps of at most GRAPH_TOKENS). Weights (`weight_dtype`) are read once a step whatever M is,
so a small-batch decode is bound by HBM and a large one by FLOP/s. Attention is simulator.serving.attention's (decode
and prefill kernels apart, each by its own arithmetic intensity; the KV cache read once at `kv_dtype`).
TP collectives: two all-reduces of M * h activations a layer, on the critical path: inside one NVLink domain the
fastest of a serving engine's algorithms for the size (one-shot, two-shot, NVLS multimem, NCCL: Fabric.collective's
"serving" algorithm, from measured latencies); across domains, the Fabric's hierarchical collective. PP: each stage
boundary is a p2p of M * h / tp per rank plus an all-gather. Linear-op times are tabulated over M once, so a
simulated step costs a table lookup and a few numpy reductions over the running batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..cost import calibration, roofline
from ..cost.fabric import Fabric, fabric_for
from ..cost.fusions import serving_rows
from ..cost.kv_cache import kv_bytes_per_token_per_rank, kv_split
from ..cost.ops import (
    ACT_BYTES, BLOCK_DENSE_FFN, BLOCK_EMBED, BLOCK_EXPERT, BLOCK_HEAD, BLOCK_LAYER, BLOCK_MOE, DTYPE_BYTES, OpRows,
    window_fields
)
from ..cost.placement import place, split_layers
from .attention import AttentionCosts, attention_dims
from .experts import busiest_copies, serve_experts
from .lookup import tabulated

ACT = float(ACT_BYTES)  # bytes of a 16-bit activation
LOGIT = 4.0  # bytes of an fp32 logit
GRAPH_TOKENS = 512  # largest step a serving engine replays from a captured CUDA graph (vLLM's default)


# --- the operators of one layer on one TP rank (simulator.cost.ops's rows) ---------------------------


@dataclass(frozen=True)
class ServeRows:
    """A replica's operators on one TP rank, by the part of the step that runs them: every layer's
    (a dense layer whole; else the attention half), a dense-FFN layer's FFN, an MoE layer's fixed part
    (router, permutation, shared experts), one routed expert's, the embedding and the head."""

    layer: OpRows
    dense_ffn: OpRows
    moe: OpRows
    expert: OpRows
    embed: OpRows
    head: OpRows

    @staticmethod
    def of(model, tp: int, sp: bool = False, dtype: str = "bf16") -> ServeRows:
        rows = serving_rows(model, tp, sp, dtype)
        part = lambda block: rows.where(rows.block == block)  # noqa: E731
        if model.moe is None and model.mla is not None:  # every layer runs the dense FFN
            layer = rows.where((rows.block == BLOCK_LAYER) | (rows.block == BLOCK_DENSE_FFN))
        else:
            layer = part(BLOCK_LAYER)
        return ServeRows(layer=layer, dense_ffn=part(BLOCK_DENSE_FFN), moe=part(BLOCK_MOE),
                         expert=part(BLOCK_EXPERT), embed=part(BLOCK_EMBED), head=part(BLOCK_HEAD))


def layer_weight_elements(model, tp: int) -> float:
    """Weight elements of one dense layer on one TP rank: its GEMMs split over TP ranks, its two
    norms whole on every rank."""
    return float(ServeRows.of(model, tp).layer.weights.sum() + 2 * model.hidden)


def linear_times(ops: OpRows, m: np.ndarray, w_bytes: float, peak: float, hbm: float, cal,
                 graphs: bool = False, peak16: float | None = None) -> np.ndarray:
    """(len(m),) seconds of all rows of `ops` at M = m tokens each (0 tokens: 0 s); with `graphs`,
    steps of at most GRAPH_TOKENS tokens run from captured CUDA graphs (cal.graph_overhead a kernel)."""
    m = np.asarray(m, dtype=float)
    overhead = np.where(graphs & (m <= GRAPH_TOKENS), cal.graph_overhead, cal.kernel_overhead)[:, None]
    t = roofline.op_times(ops.flops(m), ops.nbytes(m, w_bytes), ops.shapes(m), peak, hbm, cal, peak16=peak16,
                          precise=ops.precise, overhead=overhead)
    return np.where(m[:, None] > 0, t, 0.0).sum(axis=1)


LINEAR_PARTS = ("compute", "weights", "activations", "launch")


def linear_parts(ops: OpRows, m: np.ndarray, w_bytes: float, peak: float, hbm: float, cal,
                 graphs: bool = False, peak16: float | None = None) -> np.ndarray:
    """(len(m), 4) seconds of linear_times split by what bounds each row (LINEAR_PARTS): FLOP-bound rows' compute,
    memory-bound rows' HBM time shared between weight and activation bytes, and the kernels' fixed time."""
    m = np.asarray(m, dtype=float)
    overhead = np.where(graphs & (m <= GRAPH_TOKENS), cal.graph_overhead, cal.kernel_overhead)[:, None]
    nbytes = ops.nbytes(m, w_bytes)
    compute, memory, fixed = roofline.op_parts(ops.flops(m), nbytes, ops.shapes(m), peak, hbm, cal, peak16=peak16,
                                               precise=ops.precise, overhead=overhead)
    weights = np.divide(np.where(ops.gemm, w_bytes * ops.weights, 0.0), nbytes, out=np.zeros_like(nbytes),
                        where=nbytes > 0)
    bound = compute >= memory
    out = np.stack([np.where(bound, compute, 0.0), np.where(bound, 0.0, memory * weights),
                    np.where(bound, 0.0, memory * (1 - weights)), fixed], axis=-1)
    return np.where(m[:, None, None] > 0, out, 0.0).sum(axis=1)


# --- the step cost of one replica --------------------------------------------------------------


@dataclass
class StepCosts:
    """Everything needed to time a step of one replica (tp x pp devices), SI units.

    `stage_times(new, ctx, sampled)` returns the seconds of each pipeline stage for a step in which
    sequence i processes new[i] tokens on ctx[i] cached ones and `sampled` sequences emit a token.
    An MoE model's replica is an EP unit of `ranks` = ep attention replicas stepping in lockstep
    (`moe`: simulator.serving.experts.ServeExperts); each sequence lives on one of them (`ranks` argument
    of stage_times), and every per-token cost but the experts' is the busiest attention replica's.
    """

    tp: int
    pp: int
    stage_layers: np.ndarray
    peak: float  # FLOP/s of the GEMMs' dtype
    attn_peak: float  # FLOP/s attention runs at (16-bit)
    hbm_bw: float
    cal: calibration.Calibration
    graphs: bool  # steps of at most GRAPH_TOKENS tokens run from CUDA graphs
    rows: ServeRows  # the operators on one TP rank
    w_bytes: float
    kv_rank_layer: float  # KV bytes per token per layer on one rank
    attn: AttentionCosts  # one layer's attention core on one rank
    hidden: int
    vocab: int
    tp_collective: object  # callable(kind, size array) -> seconds over the TP group (switch algorithms)
    hop: object  # callable(size) -> seconds of a stage-boundary p2p
    kv_a2a: object = None  # callable(size array) -> seconds of an all-to-all among a head's batch shards, or None
    ranks: int = 1  # attention replicas a step spans (an MoE EP unit: ep)
    moe: object = None  # simulator.serving.experts.ServeExperts of an MoE model
    _tables: dict = field(default_factory=dict)

    def _table(self, name: str, fn, upto: int) -> np.ndarray:
        return tabulated(self._tables, name, fn, upto)

    def times(self, ops: OpRows, m) -> np.ndarray:
        """Seconds of the rows of `ops` at each token count of m (array)."""
        return linear_times(ops, m, self.w_bytes, self.peak, self.hbm_bw, self.cal, self.graphs, self.attn_peak)

    def linear(self, m: int) -> float:
        """Seconds of the token-proportional operators every layer runs, at M = m tokens."""
        return self._table("layer", lambda x: self.times(self.rows.layer, x), m)[m]

    def embed(self, m: int) -> float:
        """Seconds of the embedding lookup of m tokens (memory-bound)."""
        return self._table("embed", lambda x: self.times(self.rows.embed, x), m)[m]

    def head(self, s: int) -> float:
        """Seconds of the LM head, logits all-gather and sampling for s sequences."""
        def fn(x):
            return self.times(self.rows.head, x) + self.all_gather(x * self.vocab * ACT)
        return self._table("head", fn, s)[s]

    def tp_comm(self, m: int) -> float:
        """Seconds of one layer's TP collectives at m tokens: two all-reduces of m * hidden activations; with the KV
        cache sharded over the batch, two all-to-alls among a head's shards too, the queries in and the outputs back
        (of m * exchanged / 2 elements a rank each)."""
        def fn(x):
            t = 2.0 * self.all_reduce(x * self.hidden * ACT)
            return t if self.kv_a2a is None else t + 2.0 * self.kv_a2a(x * self.attn.exchanged() / 2 * ACT)
        return self._table("tp", fn, m)[m]

    def all_reduce(self, size) -> np.ndarray:
        """All-reduce of `size` bytes over the TP group (a serving engine's fastest algorithm in a domain)."""
        return self.tp_collective("all_reduce", np.asarray(size, dtype=float))

    def all_gather(self, size) -> np.ndarray:
        """All-gather of `size` gathered bytes over the TP group (one switch hop in a domain)."""
        return self.tp_collective("all_gather", np.asarray(size, dtype=float))

    def pp_hop(self, m: int) -> float:
        """Seconds to pass m tokens' activations to the next stage (p2p of M h / tp, then all-gather)."""
        if self.pp == 1 or m == 0:
            return 0.0
        return self._table("hop", lambda x: np.where(
            x > 0, self.hop(x * self.hidden * ACT / self.tp) + self.all_gather(x * self.hidden * ACT), 0.0), m)[m]

    def attention(self, new: np.ndarray, ctx: np.ndarray, ranks=None) -> tuple[float, float]:
        """(seconds, FLOP) of one layer's attention on one rank for sequences with new[i] tokens on ctx[i]
        (the busiest attention replica's seconds when `ranks` gives each sequence's; FLOP of all)."""
        return self.attn.seconds(np.asarray(new, dtype=float), np.asarray(ctx, dtype=float), self.kv_rank_layer, ranks,
                                 self.ranks, self._attention_overhead(len(new)))

    def attention_terms(self, new, ctx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per sequence: (compute seconds, HBM seconds, FLOP) of one layer's attention on one rank."""
        p = self.attn.parts(np.asarray(new, dtype=float), np.asarray(ctx, dtype=float), self.kv_rank_layer)
        return p["compute"], p["memory"], p["flops"]

    def _attention_overhead(self, sequences: int) -> float:
        return self.cal.graph_overhead if self.graphs and sequences <= GRAPH_TOKENS else self.cal.kernel_overhead

    def decode_stage_times(self, n: int, ctx_total: float, sampled: int) -> tuple[np.ndarray, float]:
        """stage_times(np.ones(n), ctx, sampled) of a dense model without sliding windows on one attention
        replica, from n and ctx_total = ctx.sum() alone: with one new token, each of a sequence's attention terms
        is affine in its context (the kernel's efficiency k / (k + half) times its k pairs), so their sums are
        the affine map of ctx_total. The serving engine's decode-only steps take this path
        (tests/test_serving_engine.py checks it against stage_times)."""
        (sc, sm, sf), (bc, bm, bf) = self._decode_affine()
        compute, memory, flops = sc * ctx_total + bc * n, sm * ctx_total + bm * n, sf * ctx_total + bf * n
        lin, overhead, tp, embed, head = self._decode_fixed(n, sampled)
        per_layer = lin + (max(compute, memory) + overhead) + tp  # stage_times' sums, in its order
        if self.pp == 1:
            return np.array([float(self.stage_layers[0]) * per_layer + embed + head]), flops
        t = self.stage_layers * per_layer
        t[0] += embed
        t[-1] += head
        return t, flops

    def _decode_fixed(self, n: int, sampled: int) -> tuple[float, float, float, float, float]:
        """(linear operators, attention kernel overhead, TP all-reduces of a layer; embedding; LM head)
        seconds of a decode step of n sequences emitting `sampled` tokens, memoized."""
        memo = self._tables.setdefault("decode_fixed", {})
        got = memo.get((n, sampled))
        if got is None:
            got = memo[n, sampled] = (float(self.linear(n)), self._attention_overhead(n), float(self.tp_comm(n)),
                                      float(self.embed(n)), float(self.head(-(-sampled // self.ranks))))
        return got

    def _decode_affine(self) -> tuple[list[float], list[float]]:
        """(slopes, intercepts) of one decode token's attention terms (compute s, HBM s, FLOP) in its
        context length."""
        if "decode" not in self._tables:
            far = float(2 ** 20)
            terms = np.array(self.attention_terms(np.ones(2), np.array([0.0, far])))
            self._tables["decode"] = (((terms[:, 1] - terms[:, 0]) / far).tolist(), terms[:, 0].tolist())
        return self._tables["decode"]

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

        `ranks`: the attention replica of each sequence (an MoE EP unit); default round-robin. With two-batch
        overlap the sequences split in two halves (alternately on each replica) and every MoE layer runs as
        SGLang's and DeepSeek's schedule does: each all-to-all phase of one half beside one compute phase of the
        other, B(A1, d0) + B(M0, d1) + B(M1, c0) + B(A0, c1) (A attention part, M MoE compute, d dispatch,
        c combine; A0 the next layer's), B(x, y) = max(y, x + s y): DeepEP's normal kernels (a step that prefills)
        hold a share s of the SMs while they run (calibration ep_sm_share), its low-latency ones none."""
        new, ctx = np.asarray(new, dtype=float), np.asarray(ctx, dtype=float)
        ranks = self._ranks(len(new), ranks)
        decode = bool(np.all(new == 1))
        if self.moe is not None and self.moe.overlap and len(new) > 1:
            half = _alternate(ranks, len(new))
            (e0, a0, m0, x0, f0), (e1, a1, m1, x1, f1) = (
                self._layer_parts(new[half == h], ctx[half == h], None if ranks is None else ranks[half == h], decode)
                for h in (0, 1))
            s = 0.0 if decode else self.cal.ep_sm_share
            layer = sum(max(y, x + s * y) for x, y in ((a1, x0[0]), (m0, x1[0]), (m1, x0[1]), (a0, x1[1])))
            t, flops = e0 + e1 + self.moe.stage_moe * layer, f0 + f1
        else:
            every, attn, moe, comm, flops = self._layer_parts(new, ctx, ranks, decode)
            t = every + (0.0 if self.moe is None else self.moe.stage_moe * (attn + moe + float(np.sum(comm))))
        t[0] += self.embed(self.busiest(new, ranks))
        t[-1] += self.head(-(-sampled // self.ranks))
        t[-1] += max(0.0, self.cal.scheduler_step - float(t.sum()))  # the CPU's step, overlapped with the GPU's
        return t, flops

    def _layer_parts(self, new, ctx, ranks, decode: bool) -> tuple[np.ndarray, float, float, np.ndarray, float]:
        """((pp,) seconds of each stage's layers no all-to-all overlaps (every layer of a dense model, the dense-FFN
        layers of an MoE one), one MoE layer's attention part and its MoE compute, (2,) its dispatch and combine
        (DeepEP's low-latency kernels for a `decode` step), and the attention FLOP of one layer)."""
        m, busiest = int(np.sum(new)), self.busiest(new, ranks)
        attn, flops = self.attention(new, ctx, ranks)
        per_layer = self.linear(busiest) + attn + self.tp_comm(busiest)
        if self.moe is None:
            return self.stage_layers * per_layer, per_layer, 0.0, np.zeros(2), flops
        dense, moe, comm = self.moe.parts(busiest, m, decode=decode)
        return self.moe.stage_dense * per_layer + dense, per_layer, moe, comm, flops

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
        ops = self.rows.layer.where(self.rows.layer.gemm)
        m = np.array([float(batch)])
        eff = roofline.gemm_efficiency(ops.shapes(m), self.cal)
        compute = (ops.flops(m) / (self.peak * eff)).sum()
        memory = (ops.nbytes(m, self.w_bytes) / (self.hbm_bw * self.cal.hbm)).sum()
        return "compute" if compute > memory else "memory"

    def flops_per_token(self) -> float:
        """Linear FLOP per token over the whole replica (all ranks, all layers, head excluded)."""
        every = self.rows.layer.linear_flops() * self.tp * float(self.stage_layers.sum())
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
    cal = calibration.for_device(dev, w.dtype, scn.attention_kernel)
    devices = replica_devices(scn)
    tp_group = devices[0, 0][None]

    def tp_collective(kind: str, size: np.ndarray) -> np.ndarray:
        return fabric.collective(kind, size, tp_group, cal, algorithm="serving")

    hop = (lambda size: fabric.p2p(size, devices[0, 0, 0], devices[0, 1, 0], cal)) if lay.pp > 1 else None
    kv_a2a = None
    if lay.kv_sharding == "batch":  # a head's shards: the consecutive ranks that hold its query heads
        shards = tp_group[:, : lay.tp // kv_split(model, lay.tp)]
        kv_a2a = lambda size: fabric.collective("all_to_all", size, shards, cal, algorithm="serving")  # noqa: E731
    costs = StepCosts(
        tp=lay.tp, pp=lay.pp, stage_layers=split_layers(model.layers, lay.pp, lay.stage_layers).astype(float),
        peak=dev.peak(w.dtype), attn_peak=roofline.attention_peak(dev), hbm_bw=dev.hbm_bandwidth, cal=cal,
        graphs=w.cuda_graphs,
        rows=ServeRows.of(model, lay.tp, lay.sequence_parallel, w.dtype),
        w_bytes=DTYPE_BYTES[w.weight_dtype],
        kv_rank_layer=kv_bytes_per_token_per_rank(model, w.kv_dtype, lay.tp, 1, lay.kv_sharding),
        attn=AttentionCosts(attention_dims(model, lay.tp, lay.kv_sharding), roofline.attention_peak(dev),
                            dev.hbm_bandwidth, cal, DTYPE_BYTES[w.kv_dtype] < ACT, **window_fields(model)),
        hidden=model.hidden, vocab=model.vocab,
        tp_collective=tp_collective, hop=hop, kv_a2a=kv_a2a, ranks=lay.ep,
    )
    if model.moe is not None:
        costs.moe = serve_experts(scn, costs, fabric)
    return costs


def decode_table(scn, batch_per_replica, context: int) -> dict:
    """Decode steps of an MoE serve scenario's EP unit with `batch_per_replica` sequences (array) on
    every attention replica, each with `context` cached tokens (the serving simulator's own step costs).

    Returns arrays: step, experts and all_to_all (seconds a step, over all MoE layers) and
    tokens_per_s_per_gpu."""
    costs = step_costs(scn)
    moe, gpus = costs.moe, scn.layout.ep * scn.layout.tp * scn.layout.pp
    b = np.asarray(batch_per_replica, dtype=int)
    step = np.array([costs.decode_step(int(x) * moe.ranks, context) for x in b])
    layers = float(moe.stage_moe.sum())
    copies = busiest_copies(b * float(moe.top_k * moe.ranks), moe.ranks)
    return {"step": step, "experts": layers * moe.experts(copies), "all_to_all": layers * moe.a2a_ll(b).sum(axis=-1),
            "tokens_per_s_per_gpu": b * moe.ranks / step / gpus}
