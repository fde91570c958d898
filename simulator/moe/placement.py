"""Expert -> EP rank placement: which rank of an EP group holds each expert (and each redundant copy).

Each MoE layer has E experts and R redundant slots; every one of the ep ranks holds (E + R) / ep slots.
The load-aware strategies (load_balanced, graph) give redundant slots to the hottest experts by
expected load (DeepSeek's EPLB rule: repeatedly copy the expert whose tokens per copy are highest);
the static ones (contiguous, round_robin, domain_local) copy experts 0..R-1, blind to load. The copies
of an expert split its tokens evenly. Placement uses expected loads (the pmf, as EPLB uses past
statistics), never the drawn ones.

Strategies (`layout.expert_placement`):
- contiguous: slots in expert order, copies beside their expert, (E + R) / ep consecutive slots a rank.
- round_robin: slot j on rank j mod ep.
- domain_local: contiguous here; placement.py moves the ep axis next to tp so the group spans the
  fewest NVLink domains.
- load_balanced: greedy longest-processing-time packing with equal slots per rank (EPLB's balanced
  packing): the hottest slot goes to the least-loaded rank that has room.
- graph: experts partitioned into the group's NVLink domains by a balanced min-cut of the
  co-activation graph (networkx Kernighan-Lin bisection, recursively), so experts chosen together
  share a domain; redundant slots of a domain copy its hottest experts; then load_balanced packing
  inside each domain (EPLB's hierarchical mode, with co-activation in place of expert groups).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
from networkx.algorithms.community import kernighan_lin_bisection

STRATEGIES = ("contiguous", "round_robin", "domain_local", "load_balanced", "graph")


@dataclass(frozen=True, kw_only=True)
class ExpertPlacement:
    """Slots of each EP rank, per MoE layer."""

    slot_expert: np.ndarray  # (L, ep, slots) expert held by each slot
    copies: np.ndarray  # (L, E) copies of each expert (>= 1)

    def slot_share(self) -> np.ndarray:
        """(L, ep, slots) fraction of its expert's tokens each slot receives: 1 / copies."""
        return 1.0 / np.take_along_axis(self.copies[:, None, :], self.slot_expert, axis=2)

    def rank_tokens(self, loads: np.ndarray) -> np.ndarray:
        """(S, L, ep, slots) tokens each slot computes, from (S, L, E) tokens per expert."""
        L, ep, slots = self.slot_expert.shape
        per_expert = np.take_along_axis(loads, self.slot_expert.reshape(1, L, ep * slots), axis=2)
        return per_expert.reshape(loads.shape[0], L, ep, slots) * self.slot_share()[None]


def replicate(expected: np.ndarray, redundant: int) -> np.ndarray:
    """(L, E) copies per expert after giving `redundant` extra slots to the highest load-per-copy experts."""
    copies = np.ones(expected.shape, dtype=int)
    rows = np.arange(expected.shape[0])
    for _ in range(redundant):
        hot = np.argmax(expected / copies, axis=1)
        copies[rows, hot] += 1
    return copies


def _slot_list(copies: np.ndarray) -> np.ndarray:
    """(L, E + R) expert of each slot, in expert order with copies adjacent."""
    L, e = copies.shape
    return np.stack([np.repeat(np.arange(e), copies[layer]) for layer in range(L)])


def pack_balanced(slot_load: np.ndarray, bins: int) -> np.ndarray:
    """(L, n) bin of each slot: greedy LPT with n / bins slots per bin, vectorized over layers."""
    L, n = slot_load.shape
    per_bin = n // bins
    order = np.argsort(-slot_load, axis=1, kind="stable")
    fill, count = np.zeros((L, bins)), np.zeros((L, bins), dtype=int)
    out = np.empty((L, n), dtype=int)
    rows = np.arange(L)
    for j in range(n):
        slot = order[:, j]
        target = np.argmin(np.where(count < per_bin, fill, np.inf), axis=1)
        out[rows, slot] = target
        fill[rows, target] += slot_load[rows, slot]
        count[rows, target] += 1
    return out


def _group_by_bin(slots: np.ndarray, bins_of: np.ndarray, bins: int, key: np.ndarray) -> np.ndarray:
    """(L, bins, n/bins) slots grouped by bin, ordered inside a bin by `key` (stable)."""
    L, n = slots.shape
    order = np.argsort(bins_of * (n + 1) + key, axis=1, kind="stable")
    return np.take_along_axis(slots, order, axis=1).reshape(L, bins, n // bins)


def place_experts(strategy: str, expected: np.ndarray, ep: int, redundant: int, rank_domain: np.ndarray,
                  coact: np.ndarray | None = None, seed: int = 0) -> ExpertPlacement:
    """Expert placement of every MoE layer from expected tokens per expert (L, E).

    `rank_domain` (ep,) is the NVLink domain of each EP rank (for graph); `coact` (E, E) the
    co-activation counts (for graph).
    """
    L, e = expected.shape
    if strategy in ("load_balanced", "graph"):
        copies = replicate(expected, redundant)
    else:  # static placements do not know the loads: copies of the first experts by id
        copies = np.broadcast_to(1 + redundant // e + (np.arange(e) < redundant % e), (L, e)).copy()
    if strategy == "graph":
        return _graph(expected, copies, ep, rank_domain, coact, seed)
    slots = _slot_list(copies)
    n = slots.shape[1]
    if strategy in ("contiguous", "domain_local"):
        grid = slots.reshape(L, ep, n // ep)
    elif strategy == "round_robin":
        grid = slots.reshape(L, n // ep, ep).transpose(0, 2, 1)
    elif strategy == "load_balanced":
        load = np.take_along_axis(expected / copies, slots, axis=1)
        grid = _group_by_bin(slots, pack_balanced(load, ep), ep, np.arange(n)[None].repeat(L, 0))
    else:
        raise ValueError(f"unknown expert placement {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    return ExpertPlacement(slot_expert=np.ascontiguousarray(grid), copies=copies)


def partition_graph(coact: np.ndarray, parts: int, seed: int = 0) -> np.ndarray:
    """(E,) part of each expert: balanced recursive Kernighan-Lin bisection of the co-activation graph.

    `parts` must be a power of two or the bisection stops early and the rest is split by index.
    """
    e = coact.shape[0]
    part = np.zeros(e, dtype=int)
    groups = [np.arange(e)]
    while len(groups) < parts and all(len(g) % 2 == 0 for g in groups) and parts % (2 * len(groups)) == 0:
        nxt = []
        for g in groups:
            graph = nx.from_numpy_array(coact[np.ix_(g, g)])
            a, b = kernighan_lin_bisection(graph, weight="weight", seed=seed)
            nxt += [g[sorted(a)], g[sorted(b)]]
        groups = nxt
    if len(groups) < parts:  # not a power-of-two split: cut each group by index
        groups = [sub for g in groups for sub in np.array_split(g, parts // len(groups))]
    for i, g in enumerate(groups):
        part[g] = i
    return part


def _graph(expected, copies, ep, rank_domain, coact, seed) -> ExpertPlacement:
    """Co-activation partition into domains, redundant copies inside a domain, LPT inside a domain."""
    L, e = expected.shape
    domains, rank_domain = np.unique(rank_domain, return_inverse=True)
    d = len(domains)
    per_domain = np.bincount(rank_domain)
    redundant = int(copies.sum(axis=1)[0] - e)
    if d == 1 or e % d or redundant % d or (per_domain != per_domain[0]).any():
        return place_experts("load_balanced", expected, ep, redundant, rank_domain)
    part = partition_graph(coact if coact is not None else np.ones((e, e)), d, seed)
    ranks_of = [np.nonzero(rank_domain == dom)[0] for dom in range(d)]
    slots_per_rank = (e + redundant) // ep
    grid = np.empty((L, ep, slots_per_rank), dtype=int)
    copies = np.ones((L, e), dtype=int)
    for dom in range(d):
        members = np.nonzero(part == dom)[0]
        sub = place_experts("load_balanced", expected[:, members], len(ranks_of[dom]), redundant // d,
                            rank_domain[ranks_of[dom]])
        grid[:, ranks_of[dom], :] = members[sub.slot_expert]
        copies[:, members] = sub.copies
    return ExpertPlacement(slot_expert=grid, copies=copies)
