"""Topology graphs of GPU racks: NVLink domains joined by a scale-out fabric (networkx).

`build(spec)` takes a plain mapping in SI units (bytes/s per direction, seconds):

    {"domain": {"kind": "hgx" | "nvl72", "gpus", "bandwidth", "latency", "used" (optional)},
     "scaleout": {"kind": "fat_tree" | "rail", "nic_bandwidth", "nics_per_domain",
                  "oversubscription", "latency", "domains_per_leaf"},
     "domains": int}

Other top-level keys (name, device) are ignored. Graph contract: nodes carry `kind` in NODE_KINDS;
GPU nodes ("gpu", device) carry `device` (global, domain-major), `local`, `domain`, `rack`, `used` (whether the
job runs on it: the first domain["used"] GPUs of each domain, all by default; the others are spares); every
edge carries `bandwidth` (bytes/s per direction), `latency` (s) and `tier` ("nvlink" | "scaleout").
`graph.graph` records the sizes: domains, gpus_per_domain, gpus_used_per_domain, gpus, nics_per_domain,
domains_per_leaf.
This package never imports `simulator`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path

import networkx as nx

from topologies.domains import check_positive, hgx_node, nvl72_rack
from topologies.scaleout import DOMAINS_PER_LEAF, fat_tree, rail

__all__ = [
    "BUILDERS", "DOMAIN_BUILDERS", "SCALEOUT_BUILDERS", "NODE_KINDS", "TIERS", "PRESETS_DIR",
    "build", "summary", "list_presets",
]

DOMAIN_BUILDERS = {"hgx": hgx_node, "nvl72": nvl72_rack}
"""Domain kind -> builder(graph, domain_index, *, gpus, bandwidth, latency)."""
SCALEOUT_BUILDERS = {"fat_tree": fat_tree, "rail": rail}
"""Scale-out kind -> builder(graph, *, domains, gpus_per_domain, nic_bandwidth, nics_per_domain,
oversubscription, latency, domains_per_leaf)."""
BUILDERS = {**DOMAIN_BUILDERS, **SCALEOUT_BUILDERS}

DEFAULT_GPUS = {"hgx": 8, "nvl72": 72}
NODE_KINDS = ("gpu", "nvswitch", "nic", "leaf", "spine")
TIERS = ("nvlink", "scaleout")
_presets = files(__name__).joinpath("presets")
PRESETS_DIR = _presets if isinstance(_presets, Path) else Path(str(_presets))
"""Folder of the preset YAMLs (human units): devices.yaml and one file per system (package data,
found through importlib.resources; simrack installs unzipped)."""

_DOMAIN_KEYS = {"kind", "gpus", "bandwidth", "latency", "used"}
_SCALEOUT_KEYS = {"kind", "nic_bandwidth", "nics_per_domain", "oversubscription", "latency",
                  "domains_per_leaf"}


def _section(spec: Mapping, name: str, allowed: set, required: set, registry: dict) -> dict:
    """spec[name] as a dict, checked: a mapping, a known kind, required keys, no unknown keys."""
    section = spec.get(name)
    if not isinstance(section, Mapping):
        raise ValueError(f"topology {name}: expected a mapping, got {section!r}")
    if section.get("kind") not in registry:
        kind = section.get("kind")
        raise ValueError(f"topology {name}.kind: {kind!r} is not one of {sorted(registry)}")
    missing, unknown = required - set(section), set(section) - allowed
    if missing:
        raise ValueError(f"topology {name}: missing {sorted(missing)}")
    if unknown:
        raise ValueError(
            f"topology {name}: unknown keys {sorted(unknown)}; allowed {sorted(allowed)}"
        )
    return dict(section)


def build(spec: Mapping) -> nx.Graph:
    """Graph of spec["domains"] NVLink domains joined by the scale-out fabric; spec in SI units."""
    domain = _section(spec, "domain", _DOMAIN_KEYS, {"kind", "bandwidth", "latency"},
                      DOMAIN_BUILDERS)
    scaleout = _section(spec, "scaleout", _SCALEOUT_KEYS,
                        {"kind", "nic_bandwidth", "nics_per_domain", "latency"}, SCALEOUT_BUILDERS)
    domains = spec.get("domains")
    check_positive("domains", domains, integer=True)
    domains, domain_kind, scaleout_kind = int(domains), domain.pop("kind"), scaleout.pop("kind")
    gpus = domain.setdefault("gpus", DEFAULT_GPUS[domain_kind])
    check_positive("domain gpus", gpus, integer=True)
    used = domain.pop("used", None)
    used = gpus if used is None else used
    check_positive("domain used", used, integer=True)
    if used > gpus:
        raise ValueError(f"domain used: {used} GPUs of a domain of {gpus}")
    scaleout.setdefault("oversubscription", 1.0)
    scaleout.setdefault("domains_per_leaf", DOMAINS_PER_LEAF)
    graph = nx.Graph(name=spec.get("name"), domain_kind=domain_kind, scaleout_kind=scaleout_kind,
                     domains=domains, gpus_per_domain=int(gpus), gpus_used_per_domain=int(used),
                     gpus=domains * int(gpus),
                     nics_per_domain=scaleout["nics_per_domain"],
                     domains_per_leaf=scaleout["domains_per_leaf"])
    for index in range(domains):
        DOMAIN_BUILDERS[domain_kind](graph, index, **domain)
    SCALEOUT_BUILDERS[scaleout_kind](graph, domains=domains, gpus_per_domain=int(gpus), **scaleout)
    for _, data in graph.nodes(data=True):
        if data["kind"] == "gpu":
            data["used"] = data["local"] < used
    return graph


def summary(graph: nx.Graph) -> dict:
    """Counts: {"nodes": {kind: n for NODE_KINDS}, "edges": {tier: n for TIERS}}."""
    nodes = dict.fromkeys(NODE_KINDS, 0)
    for _, kind in graph.nodes(data="kind"):
        nodes[kind] = nodes.get(kind, 0) + 1
    edges = dict.fromkeys(TIERS, 0)
    for _, _, tier in graph.edges(data="tier"):
        edges[tier] = edges.get(tier, 0) + 1
    return {"nodes": nodes, "edges": edges}


def list_presets() -> list[str]:
    """Names of the system presets in PRESETS_DIR (file stems, without devices.yaml), sorted."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml") if p.stem != "devices")
