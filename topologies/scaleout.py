"""Scale-out fabrics joining NVLink domains: a two-level fat-tree and a rail-optimized Clos.

Each domain gets `nics_per_domain` NIC nodes ("nic", domain, k). With nics <= gpus, GPU i of a
domain links to NIC i * nics // gpus (GPUs share a NIC); with more NICs than GPUs, NIC k links to
GPU k * gpus // nics. NICs link to leaf switches ("leaf", i); leaves link to every spine
("spine", j).

Bandwidth (bytes/s per direction): GPU-NIC and NIC-leaf edges carry `nic_bandwidth`; a leaf's uplink
total is its downlink total (NICs under it x nic_bandwidth) / `oversubscription`, split evenly over
its spine edges. Spines: min(ceil(NICs per full leaf / 2), MAX_SPINES); a fabric with one leaf (one
scalable unit for rail) has none.

Latency (seconds): the one-way scale-out `latency` is split in halves on the two NIC-leaf hops of a
cross-domain path; GPU-NIC and leaf-spine edges carry 0, so any path GPU -> NIC -> leaf (-> spine ->
leaf) -> NIC -> GPU sums to exactly `latency`, whether or not it climbs to a spine.
"""

from __future__ import annotations

import math

import networkx as nx

from topologies.domains import check_positive

__all__ = ["MAX_SPINES", "DOMAINS_PER_LEAF", "gpu_nic_pairs", "fat_tree", "rail"]

MAX_SPINES = 32
"""Most spine nodes a fabric gets; more add graph size, not fidelity (uplinks split evenly)."""
DOMAINS_PER_LEAF = 16
"""Default domains under one leaf (fat-tree) or in one scalable unit (rail); as ScaleoutSpec."""


def gpu_nic_pairs(gpus: int, nics: int) -> list[tuple[int, int]]:
    """(local GPU, NIC index) links of one domain: each GPU on >= 1 NIC and each NIC on one GPU."""
    if nics <= gpus:
        return [(i, i * nics // gpus) for i in range(gpus)]
    return [(k * gpus // nics, k) for k in range(nics)]


def _check(domains, gpus_per_domain, nic_bandwidth, nics_per_domain, oversubscription, latency,
           domains_per_leaf) -> None:
    """Raise ValueError for any out-of-range scale-out size or link figure."""
    check_positive("domains", domains, integer=True)
    check_positive("gpus per domain", gpus_per_domain, integer=True)
    check_positive("scaleout nic_bandwidth (bytes/s)", nic_bandwidth, minimum=1e-300)
    check_positive("scaleout nics_per_domain", nics_per_domain, integer=True)
    check_positive("scaleout oversubscription", oversubscription, minimum=1)
    check_positive("scaleout latency (s)", latency, minimum=0)
    check_positive("scaleout domains_per_leaf", domains_per_leaf, integer=True)


def _add_nics(graph: nx.Graph, domains: int, gpus: int, nics: int, bandwidth: float) -> None:
    """Add NIC nodes ("nic", d, k) with `rail` = k and their GPU-NIC edges (bytes/s, 0 s)."""
    last = ("gpu", domains * gpus - 1)
    if last not in graph or graph.nodes[last].get("kind") != "gpu":
        raise ValueError(
            f"scale-out needs {domains} domains x {gpus} GPUs in the graph; {last} is missing"
        )
    graph.add_nodes_from(
        (("nic", d, k), {"kind": "nic", "domain": d, "rail": k})
        for d in range(domains) for k in range(nics)
    )
    edge = {"bandwidth": float(bandwidth), "latency": 0.0, "tier": "scaleout"}
    pairs = gpu_nic_pairs(gpus, nics)
    graph.add_edges_from(
        (("gpu", d * gpus + i), ("nic", d, k), edge) for d in range(domains) for i, k in pairs
    )


def _add_spines(
    graph: nx.Graph, downlinks: dict, full_leaf_nics: int, oversubscription: float
) -> int:
    """Link every leaf to every spine; a leaf's uplink = its downlink (bytes/s) / oversubscription.

    downlinks: leaf id -> total downlink bytes/s. Returns the number of spines (0 for one leaf).
    """
    if len(downlinks) < 2:
        return 0
    spines = min(max(1, math.ceil(full_leaf_nics / 2)), MAX_SPINES)
    graph.add_nodes_from((("spine", j), {"kind": "spine"}) for j in range(spines))
    graph.add_edges_from(
        (leaf, ("spine", j),
         {"bandwidth": down / oversubscription / spines, "latency": 0.0, "tier": "scaleout"})
        for leaf, down in downlinks.items() for j in range(spines)
    )
    return spines


def fat_tree(
    graph: nx.Graph, *, domains: int, gpus_per_domain: int, nic_bandwidth: float,
    nics_per_domain: int, oversubscription: float = 1.0, latency: float,
    domains_per_leaf: int = DOMAINS_PER_LEAF,
) -> None:
    """Join domains with a two-level fat-tree: every NIC of domain d on leaf d // domains_per_leaf.

    nic_bandwidth: bytes/s per NIC per direction; latency: one-way seconds domain to domain.
    Leaf i carries `unit` = i and `rail` = None.
    """
    _check(domains, gpus_per_domain, nic_bandwidth, nics_per_domain, oversubscription, latency,
           domains_per_leaf)
    domains, gpus, nics = int(domains), int(gpus_per_domain), int(nics_per_domain)
    per_leaf = int(domains_per_leaf)
    _add_nics(graph, domains, gpus, nics, nic_bandwidth)
    leaves = math.ceil(domains / per_leaf)
    graph.add_nodes_from(
        (("leaf", i), {"kind": "leaf", "unit": i, "rail": None}) for i in range(leaves)
    )
    edge = {"bandwidth": float(nic_bandwidth), "latency": latency / 2, "tier": "scaleout"}
    graph.add_edges_from(
        (("nic", d, k), ("leaf", d // per_leaf), edge) for d in range(domains) for k in range(nics)
    )
    downlinks = {("leaf", i): min(per_leaf, domains - i * per_leaf) * nics * nic_bandwidth
                 for i in range(leaves)}
    _add_spines(graph, downlinks, min(per_leaf, domains) * nics, oversubscription)


def rail(
    graph: nx.Graph, *, domains: int, gpus_per_domain: int, nic_bandwidth: float,
    nics_per_domain: int, oversubscription: float = 1.0, latency: float,
    domains_per_leaf: int = DOMAINS_PER_LEAF,
) -> None:
    """Join domains with a rail-optimized Clos: NIC k of each domain of a unit on its rail leaf k.

    A scalable unit is `domains_per_leaf` consecutive domains; unit u's rail leaf k is
    ("leaf", u * nics_per_domain + k) with `unit` = u and `rail` = k. A single unit has no spine:
    traffic between rails crosses NVLink inside a domain first (as NCCL's PXN does).
    nic_bandwidth: bytes/s per NIC per direction; latency: one-way seconds domain to domain.
    """
    _check(domains, gpus_per_domain, nic_bandwidth, nics_per_domain, oversubscription, latency,
           domains_per_leaf)
    domains, gpus, nics = int(domains), int(gpus_per_domain), int(nics_per_domain)
    per_unit = int(domains_per_leaf)
    _add_nics(graph, domains, gpus, nics, nic_bandwidth)
    units = math.ceil(domains / per_unit)
    graph.add_nodes_from(
        (("leaf", u * nics + k), {"kind": "leaf", "unit": u, "rail": k})
        for u in range(units) for k in range(nics)
    )
    edge = {"bandwidth": float(nic_bandwidth), "latency": latency / 2, "tier": "scaleout"}
    graph.add_edges_from(
        (("nic", d, k), ("leaf", d // per_unit * nics + k), edge)
        for d in range(domains) for k in range(nics)
    )
    downlinks = {("leaf", u * nics + k): min(per_unit, domains - u * per_unit) * nic_bandwidth
                 for u in range(units) for k in range(nics)}
    if units > 1:
        _add_spines(graph, downlinks, min(per_unit, domains), oversubscription)
