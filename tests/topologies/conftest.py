"""Shared helpers for the topology tests: a spec factory (SI units) and a widest-path bottleneck."""

from __future__ import annotations

import networkx as nx
import pytest


def _spec(domain_kind="hgx", gpus=8, nvlink=300e9, nvlink_latency=2e-6, scaleout_kind="fat_tree",
          nic=25e9, nics=8, oversubscription=1.0, scaleout_latency=5e-6, per_leaf=4, domains=2):
    """A build() spec in SI units (bytes/s per direction, seconds)."""
    return {
        "name": "test", "device": "ignored",
        "domain": {"kind": domain_kind, "gpus": gpus, "bandwidth": nvlink,
                   "latency": nvlink_latency},
        "scaleout": {"kind": scaleout_kind, "nic_bandwidth": nic, "nics_per_domain": nics,
                     "oversubscription": oversubscription, "latency": scaleout_latency,
                     "domains_per_leaf": per_leaf},
        "domains": domains,
    }


def _widest(graph: nx.Graph, u, v) -> float:
    """Bottleneck bandwidth (bytes/s) of the widest path from u to v: the largest b such that u and
    v stay connected using only edges of bandwidth >= b."""
    for b in sorted({bw for _, _, bw in graph.edges(data="bandwidth")}, reverse=True):
        sub = graph.edge_subgraph((x, y) for x, y, bw in graph.edges(data="bandwidth") if bw >= b)
        if u in sub and v in sub and nx.has_path(sub, u, v):
            return b
    return 0.0


@pytest.fixture
def make_spec():
    """Factory of build() specs: make_spec(domains=6, scaleout_kind="rail", ...)."""
    return _spec


@pytest.fixture
def widest():
    """widest(graph, u, v) -> bottleneck bytes/s of the widest u-v path."""
    return _widest
