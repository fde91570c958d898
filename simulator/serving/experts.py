"""Serving with expert parallelism: the MoE layers of the serving simulator's step (vectorized).

A serving replica in DeepSeek-V3's style (its section 3.4) is an EP unit: ep attention replicas (tp x
pp devices each, running their own sequences), the routed experts spread over the unit, each EP rank
holding (experts + redundant) / ep of them. Each MoE layer of a step with b tokens on the busiest
replica and B on the unit runs:

- the router and shared experts at M = b (weights read once a step);
- the busiest EP rank's experts: uniform routing spreads the B k copies over the ep ranks as a multinomial, and the
  layer waits for the rank that drew the most (busiest_copies: the median of the largest of ep draws, B k / ep plus
  z sqrt(B k / ep), z ~ 2.6 at EP 144); its slots at that load each, an expert reading its weights only if it
  received a token (probability 1 - exp(-M), tokens arriving as Poisson), each GEMM at its grouped-GEMM efficiency;
- dispatch and combine of the copies (simulator.moe.dispatch's per-tier volumes, linear in b) at DeepEP's measured
  fractions of the links: the normal kernels (de-duplicated per node, one row a token and rank it needs) for steps
  that prefill, the low-latency kernels (every copy to its rank) for decode-only steps.

An expert GEMM (M x N x K) turns compute-bound when 2 M N K / peak >= (weight + activation bytes) /
HBM, i.e. at M = 1 / (HBM / (peak * w) - (1/N + 1/K) * a / w) (w, a bytes of a weight and an
activation): about peak/HBM = 295 on H100 in bf16. With B tokens a step an expert gets B k / E, so the
layer turns compute-bound at B ~ 295 x E / k: sparsity multiplies the batch a replica needs.

`ServeExperts` holds these FFN halves for simulator.serving.steps.StepCosts (experts split over a rank's TP
ranks by width). The rows are simulator.cost.ops's, the expert roofline simulator.moe.costs.expert_seconds and
the all-to-all simulator.moe.dispatch.a2a_seconds: the same physics as training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from ..cost import calibration
from ..cost.fabric import fabric_for
from ..cost.fusions import serving_rows
from ..cost.ops import ACT_BYTES, BLOCK_DENSE_FFN, BLOCK_EXPERT, BLOCK_MOE, DTYPE_BYTES, OpRows
from ..cost.placement import place, split_layers
from ..moe.costs import expert_seconds
from ..moe.dispatch import a2a_seconds, dispatch_volumes, dispatch_width, tier_links, uniform_rows_per_copy
from .lookup import tabulated


def expert_rows(model, tp: int = 1, dtype: str = "bf16") -> OpRows:
    """One routed expert's rows on one TP rank, as a serving engine runs them: FC1 (gate and up when SwiGLU) after
    its input cast under low-precision compute, the activation (writing FC2's operand), FC2."""
    rows = serving_rows(model, tp, False, dtype)
    return rows.where(rows.block == BLOCK_EXPERT)


def expert_gemms(model, tp: int = 1) -> list[tuple[int, int]]:
    """(N, K) of one routed expert's GEMMs: FC1 (gate and up when SwiGLU) and FC2."""
    rows = expert_rows(model, tp)
    return [(int(n), int(k)) for n, k in zip(rows.n[rows.gemm], rows.k[rows.gemm])]


def expert_layer_times(model, tokens, slots: int, dev, dtype: str, weight_dtype: str, cal=None,
                       tp: int = 1) -> dict:
    """One GPU's routed-expert seconds for an MoE layer at `tokens` copies received in all (array),
    its `slots` experts split over `tp` ranks by width, each at the mean load M = tokens / slots.

    simulator.moe.costs.expert_seconds with an expert's weights read with probability 1 - exp(-M) (tokens
    arriving as Poisson): compute, memory and time (one grouped-GEMM launch per row)."""
    cal = cal or calibration.for_device(dev, dtype)
    rows = expert_rows(model, tp, dtype)
    m = (np.asarray(tokens, float) / slots)[..., None]
    return expert_seconds(rows.flops([1.0])[0], rows.nbytes([1.0], 0.0)[0], DTYPE_BYTES[weight_dtype] * rows.weights,
                          rows.n, rows.k, m, 1.0 - np.exp(-m), float(slots), dev.peak(dtype),
                          dev.hbm_bandwidth, cal)


def compute_bound_batch(model, dev, dtype: str = "bf16", weight_dtype: str = "bf16", cal=None,
                        upto: int = 1 << 20) -> int:
    """Smallest tokens-per-step B of an EP group at which the routed experts' GEMMs are compute-bound
    (uniform routing: every expert gets B k / E tokens). A dense FFN is the case E = k = 1."""
    moe = model.moe
    grid = np.unique(np.geomspace(1, upto, 4000).astype(int))
    t = expert_layer_times(model, grid * moe.top_k, moe.experts, dev, dtype, weight_dtype, cal)
    bound = np.nonzero(t["compute"] >= t["memory"])[0]
    return int(grid[bound[0]]) if len(bound) else -1


def busiest_copies(copies, ranks: int) -> np.ndarray:
    """Token copies the busiest of `ranks` EP ranks receives when `copies` (array) spread uniformly: the median of the
    largest of `ranks` draws, in the normal approximation of the multinomial (mean m = copies / ranks, variance
    m (1 - 1 / ranks)); the mean itself for one rank."""
    m = np.asarray(copies, float) / ranks
    if ranks == 1:
        return m
    return m + _largest_normal(ranks) * np.sqrt(m * (1.0 - 1.0 / ranks))


@lru_cache(maxsize=64)
def _largest_normal(n: int) -> float:
    """Median of the largest of n standard normal draws."""
    return NormalDist().inv_cdf(0.5 ** (1.0 / n))


def _unit_volumes(scn, devices, dedup: bool | None = None, per_rank: bool = True) -> dict:
    """Copies each EP rank sends and receives per tier when every rank brings one token (uniform
    routing; dedup (default: layout.ep_dispatch): a token needs domain D with probability
    1 - (1 - share of D's experts)^k; `per_rank`: on NVLink one row a token and rank it needs, as DeepEP's normal
    kernels send, uniform_rows_per_copy of the copies). The volumes are linear in the tokens a rank brings."""
    n, k = len(devices), scn.model.moe.top_k
    dom = fabric_for(scn.topology).domain_of(devices)
    doms, idx = np.unique(dom, return_inverse=True)
    p_touch = None
    dedup = scn.layout.ep_dispatch == "dedup" if dedup is None else dedup
    if dedup and len(doms) > 1:
        p_touch = (1 - (1 - np.bincount(idx) / n) ** k)[None]
    rows = np.array([uniform_rows_per_copy(scn.model.moe.experts, n, k)]) if per_rank else None
    vol = dispatch_volumes(np.full((1, 1, n), float(k)), 1, dom, p_touch, rows)
    return {key: v.reshape(-1) for key, v in vol.items() if key != "domain_out"}


def all_to_all_seconds(scn, devices, tp_group, cal, tokens, kernel: str = "normal") -> np.ndarray:
    """(..., 2) seconds of one MoE layer's dispatch (dispatch_width: the FP8 operand's byte by default, else 2)
    and combine (16-bit) when every rank of the EP group `devices` brings `tokens` tokens (array):
    simulator.moe.dispatch.a2a_seconds of the busiest rank's copies (linear in the tokens) with DeepEP's `kernel`
    ("normal": de-duplicated as layout.ep_dispatch says; "ll": low-latency, every copy sent to its rank). With tp > 1
    the received copies are all-gathered over `tp_group` before the experts and reduce-scattered after (on NVLink)."""
    fabric, model = fabric_for(scn.topology), scn.model
    b = np.asarray(tokens, float)
    normal = kernel == "normal"
    vol = _unit_volumes(scn, devices, None if normal else False, per_rank=normal)
    bw, lat = tier_links(fabric, cal, bool(fabric.profile(np.asarray(devices)[None])[2][0]), kernel)
    gather = scatter = 0.0
    if scn.layout.tp > 1:
        size = (b * model.moe.top_k * model.hidden * ACT_BYTES).ravel()
        groups = np.repeat(np.asarray(tp_group)[None], size.size, axis=0)
        gather = fabric.collective("all_gather", size, groups, cal).reshape(b.shape)
        scatter = fabric.collective("reduce_scatter", size, groups, cal).reshape(b.shape)
    most = {t: float(np.maximum(vol[f"send_{t}"], vol[f"recv_{t}"]).max()) * b for t in ("nv", "so")}
    copy = model.hidden / scn.layout.tp
    phases = [a2a_seconds(most, copy, (width,), bw, lat, extra)[0]
              for width, extra in ((dispatch_width(scn), gather), (ACT_BYTES, scatter))]
    return np.where((b > 0)[..., None], np.stack(phases, axis=-1), 0.0)


# --- the FFN half of the serving simulator's step ---------------------------------------------------


def stage_layer_kinds(scn) -> tuple[np.ndarray, np.ndarray]:
    """((pp,) dense-FFN layers, (pp,) MoE layers) of each pipeline stage (MoESpec.is_moe: dense_layers, layer_step)."""
    layers = split_layers(scn.model.layers, scn.layout.pp, scn.layout.stage_layers)
    start = np.cumsum(layers) - layers
    moe = np.concatenate([[0.0], np.cumsum(scn.model.moe.is_moe(scn.model.layers))])  # MoE layers before each
    experts = moe[start + layers] - moe[start]
    return layers - experts, experts


def ffn_ops(scn) -> tuple[OpRows, OpRows]:
    """(a dense layer's FFN, an MoE layer's router, token permutation and shared experts) on one TP rank."""
    rows = serving_rows(scn.model, scn.layout.tp, scn.layout.sequence_parallel, scn.workload.dtype)
    return rows.where(rows.block == BLOCK_DENSE_FFN), rows.where(rows.block == BLOCK_MOE)


def slots_per_rank(scn) -> int:
    """Routed experts (redundant copies included) an EP rank holds in each MoE layer."""
    return (scn.model.moe.experts + scn.layout.redundant_experts) // scn.layout.ep


def ffn_weight_elements(scn) -> np.ndarray:
    """(pp,) weight elements of the FFN halves of each stage on one device: dense FFNs, routers, shared
    experts and the rank's routed experts, over TP ranks."""
    dense_ops, moe_ops = ffn_ops(scn)
    dense, moe = stage_layer_kinds(scn)
    expert = expert_rows(scn.model, scn.layout.tp).weights.sum()
    return dense * dense_ops.weights.sum() + moe * (moe_ops.weights.sum() + slots_per_rank(scn) * expert)


def expert_working_set(scn, tokens: int) -> float:
    """Bytes of the copies an EP rank's experts hold at once when each attention replica runs `tokens`
    (uniform routing: tokens * k copies a rank): inputs and the widest intermediate, 16-bit."""
    widest = float(expert_rows(scn.model, scn.layout.tp).n.max())
    return ACT_BYTES * tokens * scn.model.moe.top_k * (scn.model.hidden + widest)


@dataclass
class ServeExperts:
    """The FFN halves of an MoE model's serving step on one EP unit, SI units.

    Per stage: dense layers x dense FFN(busiest replica's tokens) + MoE layers x (router, permutation
    and shared experts(busiest) + routed experts(copies a rank receives) + dispatch and combine(busiest))."""

    stage_dense: np.ndarray  # (pp,) dense-FFN layers of each stage
    stage_moe: np.ndarray  # (pp,) MoE layers of each stage
    dense_ffn: OpRows  # one dense layer's FFN half on one TP rank
    moe_ffn: OpRows  # one MoE layer's router, permutation and shared experts on one TP rank
    ranks: int  # EP ranks = attention replicas of the unit
    overlap: bool  # two micro-batches a step, each all-to-all phase behind a compute phase of the other
    tp: int
    top_k: int
    times: object  # callable(ops, m array) -> seconds (StepCosts.times)
    rank_experts: object  # callable(copies received by a rank, array) -> expert_layer_times' dict
    expert_ops: OpRows  # one routed expert's rows on one TP rank
    a2a: object  # callable(tokens of the busiest replica, array) -> (..., 2) dispatch, combine seconds (normal kernels)
    a2a_ll: object  # the same with DeepEP's low-latency kernels (decode-only steps)
    expert_flops: float  # FLOP per token copy of one routed expert (all TP ranks)
    ep_bytes: dict  # bytes a token sends per MoE layer on each tier (dispatch + combine, all TP ranks)
    _tables: dict = field(default_factory=dict)
    _experts: dict = field(default_factory=dict)

    def experts(self, copies) -> np.ndarray:
        """Seconds of a rank's routed experts at `copies` received (array)."""
        return self.rank_experts(copies)["time"]

    def parts(self, busiest: int, total: int, decode: bool = False) -> tuple[np.ndarray, float, np.ndarray]:
        """((pp,) seconds of each stage's dense FFNs, one MoE layer's compute (router, shared and the busiest EP
        rank's routed experts), (2,) its dispatch and combine (DeepEP's low-latency kernels when `decode`, else the
        normal ones)) when the busiest replica runs `busiest` tokens of the unit's `total`."""
        tab = lambda name, fn, m: tabulated(self._tables, name, fn, m)[m]  # noqa: E731
        dense = tab("dense", lambda x: self.times(self.dense_ffn, x), busiest)
        half = tab("half", lambda x: self.times(self.moe_ffn, x), busiest)
        experts = self._experts.get(total)
        if experts is None:  # the unit's tokens reach millions: memoized, not tabulated
            copies = busiest_copies(np.array([total * self.top_k]), self.ranks)
            experts = self._experts[total] = float(self.experts(copies)[0])
        a2a = tab("a2a_ll", self.a2a_ll, busiest) if decode else tab("a2a", self.a2a, busiest)
        return self.stage_dense * dense, half + experts, a2a

    def stage_times(self, busiest: int, total: int, decode: bool = False) -> np.ndarray:
        """(pp,) seconds of each stage's FFN halves, nothing overlapped."""
        dense, moe, a2a = self.parts(busiest, total, decode)
        return dense + self.stage_moe * (moe + float(np.sum(a2a)))

    def flops_per_token(self) -> float:
        """FLOP a token costs in the FFN halves of all layers (all TP ranks; its top_k routed experts)."""
        dense = self.dense_ffn.linear_flops() * self.tp * self.stage_dense.sum()
        moe = (self.moe_ffn.linear_flops() * self.tp + self.top_k * self.expert_flops) * self.stage_moe.sum()
        return float(dense + moe)

    def bound(self, batch: int) -> str:
        """'compute' when the busiest rank's routed experts are FLOP-bound at the unit's `batch` decode tokens."""
        t = self.rank_experts(busiest_copies(np.array([batch * self.top_k]), self.ranks))
        return "compute" if float(t["compute"][0]) > float(t["memory"][0]) else "memory"


def serve_experts(scn, costs, fabric) -> ServeExperts:
    """The ServeExperts of an MoE serve scenario's EP unit, timed with `costs` (a StepCosts)."""
    model, lay, dev, w = scn.model, scn.layout, scn.topology.device, scn.workload
    placement = place(scn)
    ep_group, tp_group = placement.group_of("ep", 0), placement.group_of("tp", 0)
    slots = slots_per_rank(scn)
    dense, moe = stage_layer_kinds(scn)
    dense_ops, moe_ops = ffn_ops(scn)

    def rank_experts(copies):
        return expert_layer_times(model, copies, slots, dev, w.dtype, w.weight_dtype, costs.cal, lay.tp)

    vol = _unit_volumes(scn, ep_group)
    widths = dispatch_width(scn) + ACT_BYTES
    ep_bytes = {tier: float(vol[f"send_{t}"].mean()) * model.hidden * widths
                for tier, t in (("nvlink", "nv"), ("scaleout", "so"))}
    return ServeExperts(
        stage_dense=dense, stage_moe=moe, dense_ffn=dense_ops, moe_ffn=moe_ops, ranks=lay.ep,
        overlap=w.two_batch_overlap, tp=lay.tp, top_k=model.moe.top_k, times=costs.times,
        rank_experts=rank_experts, expert_ops=expert_rows(model, lay.tp, w.dtype),
        a2a=lambda m: all_to_all_seconds(scn, ep_group, tp_group, costs.cal, m),
        a2a_ll=lambda m: all_to_all_seconds(scn, ep_group, tp_group, costs.cal, m, "ll"),
        expert_flops=expert_rows(model).linear_flops(), ep_bytes=ep_bytes,
    )
