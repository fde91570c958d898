"""NVLink domains: 8-GPU HGX nodes and 72-GPU NVL72 racks, added to a networkx graph.

A domain is the set of GPUs that reach each other over NVLink. Its switch plane (6 NVSwitch chips in
an HGX A100 node, 4 in HGX H100, 18 in an NVL72 rack) is modelled as ONE `nvswitch` node, so each
GPU-switch edge carries the GPU's full NVLink bandwidth and the path GPU -> nvswitch -> GPU has the
per-GPU figure as its bottleneck. Each GPU-switch edge carries half the domain latency, so a
GPU-to-GPU path sums to the stated one-way latency.

Node ids: ("gpu", device) with the global, domain-major index device = domain * gpus + local;
("nvswitch", domain). Units: bandwidth in bytes/s per direction, latency in seconds.
"""

from __future__ import annotations

import networkx as nx

__all__ = ["HGX_NODES_PER_RACK", "hgx_node", "nvl72_rack", "add_domain", "check_positive"]

HGX_NODES_PER_RACK = 4
"""HGX/DGX nodes (NVLink domains) per rack: rack = domain // 4 (a common air-cooled DGX rack)."""


def check_positive(name: str, value: float, *, integer: bool = False, minimum: float = 1) -> None:
    """Raise ValueError naming `name` unless value >= minimum (and whole, if `integer`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if integer and value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not value >= minimum:  # also rejects NaN
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _check_link(bandwidth: float, latency: float) -> None:
    """Raise ValueError unless bandwidth > 0 bytes/s and latency >= 0 s."""
    check_positive("domain bandwidth (bytes/s)", bandwidth, minimum=1e-300)
    check_positive("domain latency (s)", latency, minimum=0)


def add_domain(
    graph: nx.Graph, domain_index: int, *, gpus: int, rack: int, bandwidth: float, latency: float
) -> None:
    """Add one NVLink domain: `gpus` GPU nodes star-linked to one nvswitch node.

    bandwidth: NVLink bytes/s per GPU per direction (the GPU-switch edge); latency: one-way seconds
    GPU to GPU (half on each edge).
    """
    check_positive("domain gpus", gpus, integer=True)
    check_positive("domain index", domain_index, integer=True, minimum=0)
    _check_link(bandwidth, latency)
    gpus, domain_index = int(gpus), int(domain_index)
    switch = ("nvswitch", domain_index)
    first = domain_index * gpus
    graph.add_node(switch, kind="nvswitch", domain=domain_index, rack=rack)
    graph.add_nodes_from(
        (("gpu", first + local), {"kind": "gpu", "device": first + local, "local": local,
                                  "domain": domain_index, "rack": rack})
        for local in range(gpus)
    )
    edge = {"bandwidth": float(bandwidth), "latency": latency / 2, "tier": "nvlink"}
    graph.add_edges_from((("gpu", first + local), switch, edge) for local in range(gpus))


def hgx_node(
    graph: nx.Graph, domain_index: int, *, gpus: int = 8, bandwidth: float, latency: float
) -> None:
    """Add one HGX/DGX node: `gpus` (8) GPUs on an NVSwitch plane; rack = domain // 4.

    bandwidth: NVLink bytes/s per GPU per direction (300e9 A100, 450e9 H100, 900e9 B200);
    latency: one-way seconds GPU to GPU through the switch.
    """
    check_positive("domain index", domain_index, integer=True, minimum=0)
    rack = int(domain_index) // HGX_NODES_PER_RACK
    add_domain(graph, domain_index, gpus=gpus, rack=rack, bandwidth=bandwidth, latency=latency)


def nvl72_rack(
    graph: nx.Graph, domain_index: int, *, gpus: int = 72, bandwidth: float, latency: float
) -> None:
    """Add one GB200 NVL72 rack: `gpus` (72) GPUs in one NVLink domain; rack == domain.

    bandwidth: NVLink bytes/s per GPU per direction (900e9 for NVLink 5);
    latency: one-way seconds GPU to GPU through the rack's NVLink switch trays.
    """
    check_positive("domain index", domain_index, integer=True, minimum=0)
    add_domain(graph, domain_index, gpus=gpus, rack=int(domain_index), bandwidth=bandwidth,
               latency=latency)
