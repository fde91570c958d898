"""Scale-out fabrics: counts by kind and tier (computed by hand), oversubscription, bandwidths."""

from __future__ import annotations

import networkx as nx
import pytest

import topologies
from topologies.scaleout import MAX_SPINES, gpu_nic_pairs


def _counts(gpu, nvswitch, nic, leaf, spine, nvlink, scaleout):
    return {"nodes": {"gpu": gpu, "nvswitch": nvswitch, "nic": nic, "leaf": leaf, "spine": spine},
            "edges": {"nvlink": nvlink, "scaleout": scaleout}}


# scaleout edges = GPU-NIC + NIC-leaf + leaves x spines;
# spines = min(ceil(NICs per full leaf / 2), 32), none with one leaf (rail: one unit)
CASES = [
    # one HGX node, one leaf, no spine: 8 GPU-NIC + 8 NIC-leaf
    (dict(domains=1, per_leaf=4), _counts(8, 1, 8, 1, 0, 8, 16)),
    # 6 nodes, 4 a leaf: 2 leaves (4 + 2 nodes), 32 NICs a full leaf -> 16 spines; 48 + 48 + 2 x 16
    (dict(domains=6, per_leaf=4), _counts(48, 6, 48, 2, 16, 48, 128)),
    # 4 NICs a node, 2 GPUs a NIC: 48 GPU-NIC + 24 NIC-leaf + 2 leaves x 8 spines
    (dict(domains=6, per_leaf=4, nics=4), _counts(48, 6, 24, 2, 8, 48, 88)),
    # 10 leaves of 2 nodes: 16 NICs a leaf -> 8 spines; 160 + 160 + 80
    (dict(domains=20, per_leaf=2), _counts(160, 20, 160, 10, 8, 160, 400)),
    # 80 NICs a leaf -> 40 spines, capped at 32; 160 + 160 + 2 x 32
    (dict(domains=20, per_leaf=10), _counts(160, 20, 160, 2, 32, 160, 384)),
    # more NICs than GPUs: 4 GPUs, 8 NICs a node, each NIC on one GPU; 16 + 16, one leaf
    (dict(domains=2, gpus=4, nics=8, per_leaf=2), _counts(8, 2, 16, 1, 0, 8, 32)),
    # rail, one unit of 4 nodes: 8 rail leaves, no spine; 32 + 32
    (dict(domains=4, per_leaf=4, scaleout_kind="rail"), _counts(32, 4, 32, 8, 0, 32, 64)),
    # rail, 10 nodes in units of 4: 3 units x 8 rails = 24 leaves, 4 NICs a leaf -> 2 spines
    (dict(domains=10, per_leaf=4, scaleout_kind="rail"), _counts(80, 10, 80, 24, 2, 80, 208)),
    # NVL72 on a fat-tree, 8 racks under one leaf: 576 + 576, no spine
    (dict(domain_kind="nvl72", gpus=72, nics=72, domains=8, per_leaf=8),
     _counts(576, 8, 576, 1, 0, 576, 1152)),
    # NVL72, 18 NICs a rack (4 GPUs a NIC), rail in units of 2 racks: 2 units x 18 rails =
    # 36 leaves, 2 NICs a leaf -> 1 spine; 216 GPU-NIC + 54 NIC-leaf + 36 leaf-spine
    (dict(domain_kind="nvl72", gpus=72, nics=18, domains=3, per_leaf=2, scaleout_kind="rail"),
     _counts(216, 3, 54, 36, 1, 216, 306)),
]


@pytest.mark.parametrize("kwargs, expected", CASES)
def test_counts_by_kind_and_tier(make_spec, kwargs, expected):
    graph = topologies.build(make_spec(**kwargs))
    assert topologies.summary(graph) == expected
    assert graph.graph["gpus"] == expected["nodes"]["gpu"]


def test_sixteen_thousand_gpus_on_rails(make_spec):
    spec = make_spec(nvlink=450e9, nic=50e9, scaleout_kind="rail", per_leaf=32, domains=2048)
    graph = topologies.build(spec)
    # 64 units x 8 rails = 512 leaves; 32 NICs a leaf -> 16 spines
    assert topologies.summary(graph) == _counts(16384, 2048, 16384, 512, 16, 16384,
                                                16384 + 16384 + 512 * 16)
    assert graph.nodes[("gpu", 16383)]["domain"] == 2047
    assert graph.nodes[("gpu", 16383)]["rack"] == 511


def test_gpu_nic_pairs_cover_every_gpu_and_nic():
    assert gpu_nic_pairs(8, 8) == [(i, i) for i in range(8)]
    assert gpu_nic_pairs(8, 4) == [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (5, 2), (6, 3), (7, 3)]
    assert gpu_nic_pairs(2, 4) == [(0, 0), (0, 1), (1, 2), (1, 3)]
    for gpus, nics in [(8, 3), (3, 8), (72, 18), (72, 72), (1, 1)]:
        pairs = gpu_nic_pairs(gpus, nics)
        assert {g for g, _ in pairs} == set(range(gpus))
        assert {k for _, k in pairs} == set(range(nics))


@pytest.mark.parametrize("kind", ["fat_tree", "rail"])
@pytest.mark.parametrize("oversubscription", [1.0, 2.0, 3.5])
def test_leaf_uplink_is_downlink_over_oversubscription(make_spec, kind, oversubscription):
    graph = topologies.build(make_spec(scaleout_kind=kind, domains=7, per_leaf=3,
                                       oversubscription=oversubscription))
    leaves = [n for n, k in graph.nodes(data="kind") if k == "leaf"]
    assert any(graph.nodes[m]["kind"] == "spine" for leaf in leaves for m in graph[leaf])
    for leaf in leaves:  # includes the last, partial leaf (1 domain of 3)
        edges = [(graph.nodes[m]["kind"], bw) for _, m, bw in graph.edges(leaf, data="bandwidth")]
        down = sum(bw for k, bw in edges if k == "nic")
        up = sum(bw for k, bw in edges if k == "spine")
        assert down > 0
        assert up == pytest.approx(down / oversubscription)


def test_rail_leaf_joins_nic_k_of_every_domain_of_its_unit(make_spec):
    graph = topologies.build(make_spec(scaleout_kind="rail", domains=6, per_leaf=3))
    for leaf, d in graph.nodes(data=True):
        if d["kind"] == "leaf":
            nics = {m for m in graph[leaf] if graph.nodes[m]["kind"] == "nic"}
            unit, rail = d["unit"], d["rail"]
            assert leaf == ("leaf", unit * 8 + rail)
            assert nics == {("nic", dom, rail) for dom in range(3 * unit, 3 * unit + 3)}


def test_fat_tree_leaf_holds_every_nic_of_its_domains(make_spec):
    graph = topologies.build(make_spec(domains=5, per_leaf=2, nics=4))
    for i, expected_domains in enumerate([(0, 1), (2, 3), (4,)]):
        nics = {m for m in graph[("leaf", i)] if graph.nodes[m]["kind"] == "nic"}
        assert nics == {("nic", d, k) for d in expected_domains for k in range(4)}


@pytest.mark.parametrize("kind", ["fat_tree", "rail"])
def test_bottleneck_bandwidths(make_spec, widest, kind):
    graph = topologies.build(make_spec(scaleout_kind=kind, nvlink=300e9, nic=25e9, domains=5,
                                       per_leaf=2))
    gpu = lambda device: ("gpu", device)  # noqa: E731
    assert widest(graph, gpu(0), gpu(7)) == 300e9      # one domain: NVLink
    assert widest(graph, gpu(0), gpu(8)) == 25e9       # same leaf or unit: NIC
    assert widest(graph, gpu(3), gpu(14)) == 25e9      # another rail in the unit
    assert widest(graph, gpu(0), gpu(39)) == 25e9      # across a spine, non-blocking


def test_oversubscribed_spine_path_is_narrower_than_a_nic(make_spec, widest):
    # 1 domain a leaf, 8 NICs -> 4 spines; uplink edge = 8 x 25 GB/s / 4 / 4 = 12.5 GB/s
    graph = topologies.build(make_spec(domains=2, per_leaf=1, oversubscription=4.0))
    assert widest(graph, ("gpu", 0), ("gpu", 8)) == pytest.approx(12.5e9)


@pytest.mark.parametrize("kind", ["fat_tree", "rail"])
def test_path_latencies_sum_to_the_stated_one_way_figures(make_spec, kind):
    graph = topologies.build(make_spec(scaleout_kind=kind, domains=4, per_leaf=2))
    def lat(a, b):
        return nx.shortest_path_length(graph, ("gpu", a), ("gpu", b), weight="latency")

    assert lat(0, 5) == pytest.approx(2e-6)
    assert lat(0, 8) == pytest.approx(5e-6)    # same leaf
    assert lat(0, 24) == pytest.approx(5e-6)   # through a spine


def test_every_edge_carries_bandwidth_latency_and_tier(make_spec):
    for kind in ("fat_tree", "rail"):
        graph = topologies.build(make_spec(scaleout_kind=kind, domains=5, per_leaf=2, nics=4))
        for u, v, e in graph.edges(data=True):
            assert set(e) == {"bandwidth", "latency", "tier"}, (u, v)
            assert e["bandwidth"] > 0 and e["latency"] >= 0
            kinds = {graph.nodes[u]["kind"], graph.nodes[v]["kind"]}
            assert e["tier"] == ("nvlink" if kinds == {"gpu", "nvswitch"} else "scaleout")
        assert nx.is_connected(graph)


def test_spines_are_capped(make_spec):
    graph = topologies.build(make_spec(domains=200, per_leaf=100, nics=8))
    assert topologies.summary(graph)["nodes"]["spine"] == MAX_SPINES


@pytest.mark.parametrize("field, value, message", [
    ("nics_per_domain", 0, "nics_per_domain"),
    ("oversubscription", 0.5, "oversubscription"),
    ("domains_per_leaf", 0, "domains_per_leaf"),
    ("nic_bandwidth", -1.0, "nic_bandwidth"),
    ("latency", -1e-6, "latency"),
])
@pytest.mark.parametrize("kind", ["fat_tree", "rail"])
def test_scaleout_rejects_bad_sizes(make_spec, kind, field, value, message):
    spec = make_spec(scaleout_kind=kind)
    spec["scaleout"][field] = value
    with pytest.raises(ValueError, match=message):
        topologies.build(spec)


def test_scaleout_builder_needs_the_domains_in_the_graph():
    with pytest.raises(ValueError, match="missing"):
        topologies.BUILDERS["rail"](nx.Graph(), domains=2, gpus_per_domain=8, nic_bandwidth=1e9,
                                    nics_per_domain=8, latency=0.0)
