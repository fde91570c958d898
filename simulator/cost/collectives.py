"""Alpha-beta collective costs (seconds), vectorized over arrays of sizes (bytes).

Flat forms (DESIGN.md section 4; bus-bandwidth factors as nccl-tests doc/PERFORMANCE.md):
ring all-reduce 2(n-1)/n * S/bw + 2(n-1) lat; all-gather and reduce-scatter (n-1)/n * S/bw + (n-1) lat
(S the gathered size); all-to-all (n-1)/n * S/bw + lat (a rank's sends to its peers are in flight at
once: one latency, as GPU-initiated RDMA all-to-alls measure: DeepEP's dispatch of 128 tokens takes
173 us at EP 64 and 194 us at EP 256, bandwidth-bound); p2p S/bw + lat.
A group spanning NVLink domains runs hierarchically: inside each domain on NVLink, across domains on
the NICs with 1/k of the data per GPU (k group members per domain), as NCCL's rings do across rails.
"""

from __future__ import annotations

import numpy as np

BUS_FACTOR = {
    "all_reduce": lambda n: 2.0 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
}
LATENCIES = {  # latency steps of each algorithm: ring (NCCL), or one switch hop a phase
    "ring": {"all_reduce": lambda n: 2.0 * (n - 1), "all_gather": lambda n: n - 1,
             "reduce_scatter": lambda n: n - 1, "all_to_all": lambda n: np.ones_like(n)},
    "switch": {"all_reduce": lambda n: np.full_like(n, 2.0), "all_gather": lambda n: np.ones_like(n),
               "reduce_scatter": lambda n: np.ones_like(n), "all_to_all": lambda n: np.ones_like(n)},
}
"""ring: NCCL's rings, n - 1 steps a phase. switch: every rank reads its peers' shards through the
NVSwitch in one step a phase (two-shot all-reduce = reduce-scatter + all-gather: vLLM's and
TensorRT-LLM's custom all-reduce for small messages inside one NVLink domain). A serving engine's TP all-reduce
picks among its algorithms by size: serving_all_reduce."""


RAMPED = ("all_reduce", "all_gather", "reduce_scatter")
"""The ring collectives whose mid-size messages run under the large-message bus bandwidth (ramp_factor)."""


def ramp_factor(shard, ramp_bytes: float, power: float) -> np.ndarray:
    """How many times longer than at its large-message bus bandwidth a ring collective takes to move `shard`
    bytes a rank (the message over the ranks): 1 + (ramp_bytes / shard)^power. NCCL reaches its asymptotic busbw
    only past ~1 GiB: mid-size messages (1-128 MiB) run on other protocols, fewer channels and a pipeline still
    filling (calibration.yaml ring_intra, fitted to all-reduce sweeps by size)."""
    shard = np.maximum(np.asarray(shard, float), 1.0)
    return 1.0 + (ramp_bytes / shard) ** power


def flat(kind: str, size, n, bw, lat, algorithm: str = "ring"):
    """One-tier collective of `size` bytes over n ranks at bw (bytes/s) and per-step latency lat (s);
    nothing to move (size 0, or one rank) costs nothing."""
    size, n = np.asarray(size, float), np.asarray(n, float)
    t = BUS_FACTOR[kind](n) * size / bw + LATENCIES[algorithm][kind](n) * lat
    return np.where((n > 1) & (size > 0), t, 0.0)


def serving_all_reduce(size, n, link_bw, hop_lat, cal, large_bw, multimem) -> np.ndarray:
    """Seconds of the all-reduce a serving engine picks inside one NVLink domain for `size` bytes over n ranks: the
    fastest of one-shot (every rank reads its n - 1 peers' buffers: alpha + (n - 1) S / bw), two-shot and, where
    `multimem` (the domain has NVLS), NVLS multimem (alpha + 2 (n - 1) / n S / bw), and NCCL (its alpha inside a
    CUDA graph, then `large_bw`, its large-message bus bandwidth). Each alpha is at least two hops of `hop_lat`;
    bandwidths are fractions of `link_bw` (calibration: ar_*)."""
    size, n = np.asarray(size, float), np.asarray(n, float)
    bus = 2.0 * (n - 1) / n * size
    floor = 2.0 * hop_lat
    t = np.minimum(max(cal.ar_one_shot_alpha, floor) + (n - 1) * size / (cal.ar_one_shot * link_bw),
                   max(cal.ar_two_shot_alpha, floor) + bus / (cal.ar_two_shot * link_bw))
    t = np.minimum(t, max(cal.ar_nccl_alpha, floor) + bus / large_bw)
    t = np.where(multimem, np.minimum(t, max(cal.ar_multimem_alpha, floor) + bus / (cal.ar_multimem * link_bw)), t)
    return np.where((n > 1) & (size > 0), t, 0.0)


def p2p(size, bw, lat):
    """Point-to-point send of `size` bytes: S / bw + lat (seconds)."""
    size = np.asarray(size, float)
    return np.where(size > 0, size / bw + lat, 0.0)


def hierarchical(kind: str, size, k, d, intra_bw, intra_lat, inter_bw, inter_lat):
    """Collective over d domains of k members each: intra-domain phase(s) on NVLink, inter on NICs.

    all_reduce: reduce-scatter in the domain, all-reduce of S/k across domains, all-gather back.
    all_gather / reduce_scatter: the inter-domain phase moves S/k per GPU, the intra phase S.
    all_to_all: of each rank's S, (k-1)/n stays in the domain and (n-k)/n leaves; both tiers run at once.
    """
    size = np.asarray(size, float)
    if kind == "all_to_all":
        n = np.asarray(k, float) * d
        inside = (np.asarray(k) - 1) / n * size / intra_bw + np.where(np.asarray(k) > 1, intra_lat, 0.0)
        outside = (n - k) / n * size / inter_bw + inter_lat
        return np.maximum(inside, outside)
    if kind == "all_reduce":
        intra = 2 * flat("reduce_scatter", size, k, intra_bw, intra_lat)
    else:
        intra = flat(kind, size, k, intra_bw, intra_lat)
    inter = flat(kind, size / np.asarray(k, float), d, inter_bw, inter_lat)
    return intra + inter
