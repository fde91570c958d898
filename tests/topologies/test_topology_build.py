"""build(): registry dispatch, spec checks, GPU attributes, summary, and no simulator import."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

import topologies


def test_registries_are_plain_dicts_of_the_four_builders():
    assert isinstance(topologies.BUILDERS, dict)
    assert set(topologies.BUILDERS) == {"hgx", "nvl72", "fat_tree", "rail"}
    assert all(callable(f) for f in topologies.BUILDERS.values())


def test_build_returns_a_graph_with_gpu_attributes(make_spec):
    graph = topologies.build(make_spec(domains=9, per_leaf=4))
    assert isinstance(graph, nx.Graph)
    gpus = {n: d for n, d in graph.nodes(data=True) if d["kind"] == "gpu"}
    assert sorted(d["device"] for d in gpus.values()) == list(range(72))
    for node, d in gpus.items():
        assert node == ("gpu", d["device"])
        assert d["domain"] == d["device"] // 8
        assert d["rack"] == d["domain"] // 4
    assert {k for _, k in graph.nodes(data="kind")} <= set(topologies.NODE_KINDS)
    assert graph.graph["gpus_per_domain"] == 8 and graph.graph["domains"] == 9


def test_nvl72_racks_number_devices_domain_major(make_spec):
    spec = make_spec(domain_kind="nvl72", gpus=72, nics=72, domains=3, per_leaf=8)
    graph = topologies.build(spec)
    d = graph.nodes[("gpu", 150)]
    assert (d["domain"], d["rack"], d["local"]) == (2, 2, 6)


def test_gpus_default_to_the_domain_kind(make_spec):
    spec = make_spec(domain_kind="nvl72", nics=72, domains=1)
    del spec["domain"]["gpus"]
    assert topologies.summary(topologies.build(spec))["nodes"]["gpu"] == 72


def test_summary_counts_every_kind_and_tier(make_spec):
    graph = topologies.build(make_spec(domains=1))
    assert topologies.summary(graph) == {
        "nodes": {"gpu": 8, "nvswitch": 1, "nic": 8, "leaf": 1, "spine": 0},
        "edges": {"nvlink": 8, "scaleout": 16},
    }


def _bad(make_spec, path, value):
    spec = make_spec()
    target = spec
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return spec


@pytest.mark.parametrize("path, value, message", [
    (("domains",), 0, "domains"),
    (("domains",), 1.5, "whole"),
    (("domain", "gpus"), 0, "gpus"),
    (("domain", "kind"), "dgx", "domain.kind"),
    (("scaleout", "kind"), "torus", "scaleout.kind"),
    (("domain", "bandwidth"), KeyError, "missing"),
    (("scaleout", "oversubscriptoin"), 2.0, "unknown"),
    (("scaleout",), None, "mapping"),
])
def test_build_rejects_bad_specs(make_spec, path, value, message):
    with pytest.raises(ValueError, match=message):
        topologies.build(_bad(make_spec, path, value))


def test_presets_dir_and_list():
    assert isinstance(topologies.PRESETS_DIR, Path)
    assert (topologies.PRESETS_DIR / "devices.yaml").is_file()
    assert topologies.list_presets() == [
        "dgx-a100-superpod", "dgx-h100-superpod", "gb200-nvl72", "hgx-b200", "hgx-h200", "hgx-h800",
    ]


def test_topologies_never_imports_simulator():
    package = Path(topologies.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "simulator" for n in names), source
