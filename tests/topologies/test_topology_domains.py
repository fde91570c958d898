"""NVLink domains: HGX nodes and NVL72 racks, node attributes, numbering, validation."""

from __future__ import annotations

import networkx as nx
import pytest

from topologies.domains import HGX_NODES_PER_RACK, hgx_node, nvl72_rack


def _gpus(graph):
    return {n: d for n, d in graph.nodes(data=True) if d["kind"] == "gpu"}


def test_hgx_node_is_a_star_of_eight_gpus_on_one_switch():
    graph = nx.Graph()
    hgx_node(graph, 0, bandwidth=450e9, latency=2e-6)
    assert len(_gpus(graph)) == 8
    assert graph.number_of_nodes() == 9
    assert graph.number_of_edges() == 8
    assert set(graph.neighbors(("nvswitch", 0))) == {("gpu", i) for i in range(8)}
    for _, _, e in graph.edges(data=True):
        assert e == {"bandwidth": 450e9, "latency": 1e-6, "tier": "nvlink"}


@pytest.mark.parametrize("domain, rack", [(0, 0), (3, 0), (4, 1), (7, 1), (9, 2)])
def test_hgx_rack_is_domain_over_four(domain, rack):
    graph = nx.Graph()
    hgx_node(graph, domain, gpus=4, bandwidth=1e9, latency=0.0)
    assert HGX_NODES_PER_RACK == 4
    assert {d["rack"] for d in _gpus(graph).values()} == {rack}
    assert {d["domain"] for d in _gpus(graph).values()} == {domain}


def test_domain_major_device_numbering():
    graph = nx.Graph()
    for domain in range(3):
        hgx_node(graph, domain, gpus=4, bandwidth=1e9, latency=0.0)
    for node, d in _gpus(graph).items():
        assert node == ("gpu", d["device"])
        assert d["device"] == d["domain"] * 4 + d["local"]
        assert ("nvswitch", d["domain"]) in graph.neighbors(node)
    assert sorted(d["device"] for d in _gpus(graph).values()) == list(range(12))


def test_nvl72_rack_is_one_domain_with_rack_equal_domain():
    graph = nx.Graph()
    nvl72_rack(graph, 5, bandwidth=900e9, latency=2e-6)
    gpus = _gpus(graph)
    assert len(gpus) == 72
    assert {d["rack"] for d in gpus.values()} == {5}
    assert {d["device"] for d in gpus.values()} == set(range(360, 432))
    assert graph.degree(("nvswitch", 5)) == 72


def test_gpu_to_gpu_latency_sums_to_the_domain_latency():
    graph = nx.Graph()
    hgx_node(graph, 0, bandwidth=300e9, latency=2e-6)
    latency = nx.shortest_path_length(graph, ("gpu", 0), ("gpu", 7), weight="latency")
    assert latency == pytest.approx(2e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"gpus": 0}, "gpus"),
    ({"gpus": 2.5}, "whole"),
    ({"bandwidth": 0.0}, "bandwidth"),
    ({"latency": -1e-6}, "latency"),
])
@pytest.mark.parametrize("builder", [hgx_node, nvl72_rack])
def test_domain_builders_reject_bad_sizes(builder, kwargs, message):
    args = {"bandwidth": 1e9, "latency": 1e-6, **kwargs}
    with pytest.raises(ValueError, match=message):
        builder(nx.Graph(), 0, **args)


def test_negative_domain_index_is_rejected():
    with pytest.raises(ValueError, match="domain index"):
        hgx_node(nx.Graph(), -1, bandwidth=1e9, latency=0.0)
