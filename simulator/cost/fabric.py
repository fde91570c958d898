"""Graph -> Fabric: the tier parameters of a regular topology, then group costs by arithmetic.

The networkx graph is the source of truth; a Fabric reads it once (bandwidth per GPU on each tier,
path latencies, domains per leaf, leaf uplink ratio) and answers every later question with numpy on
device indices, so its cost does not grow with the cluster. Racks are regular, so a template of the
topology (at most two scale-out units) carries every figure of the whole; `fabric_for` builds that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import networkx as nx
import numpy as np

import topologies

from . import collectives
from .calibration import Calibration

NVLS_MIN_GPUS = 8  # NVLS all-reduce beats the ring from 8 GPUs (calibration.yaml nvls_vs_gpus)
MULTIMEM_MIN_GPUS = 4  # NVLS multimem all-reduce measured from 4 GPUs (kernels.yaml vllm24111_*)


@dataclass(frozen=True, kw_only=True)
class Fabric:
    """Per-tier figures: bandwidths in bytes/s per GPU per direction, latencies in seconds."""

    gpus: int
    gpus_per_domain: int  # ranks a domain holds: the GPUs of it the job uses (topology.domain.used)
    domains_per_unit: int  # domains under one leaf (or one rail-optimized scalable unit)
    nvlink_bw: float
    nvlink_lat: float
    nic_bw: float  # a GPU's share of its domain's NICs when every GPU sends at once
    scaleout_lat: float
    uplink_ratio: float  # leaf uplink / downlink bandwidth: 1 / oversubscription

    def domain_of(self, devices) -> np.ndarray:
        """NVLink domain index of each device."""
        return np.asarray(devices) // self.gpus_per_domain

    def unit_of(self, devices) -> np.ndarray:
        """Scale-out unit (leaf group) index of each device."""
        return self.domain_of(devices) // self.domains_per_unit

    def scaleout_bw(self, crosses_unit) -> np.ndarray:
        """Per-GPU scale-out bandwidth when every GPU of a group sends across leaf units at once (an
        all-to-all): the NIC share, cut by oversubscription above the leaf."""
        return np.where(crosses_unit, self.nic_bw * min(1.0, self.uplink_ratio), self.nic_bw)

    def profile(self, groups: np.ndarray):
        """(k, d, crosses_unit) per group of a (g, n) device array: members per domain, domains."""
        groups = np.atleast_2d(groups)
        dom = self.domain_of(groups)
        d = _distinct_per_row(dom)
        k = groups.shape[1] // d
        units = self.unit_of(groups)
        crosses = units.min(axis=1) != units.max(axis=1)
        return k, d, crosses

    def collective(self, kind: str, size, groups: np.ndarray, cal: Calibration,
                   algorithm: str = "ring") -> np.ndarray:
        """Seconds for `kind` of `size` bytes over each group (rows of a device array)."""
        return self.collective_profiled(kind, size, *self.profile(groups), cal, algorithm)

    def collective_profiled(self, kind: str, size, k, d, crosses, cal: Calibration,
                            algorithm: str = "ring") -> np.ndarray:
        """Seconds for `kind` of `size` bytes over groups given by their profile (see `profile`): k
        members per domain, d domains, crossing a leaf; arrays broadcast together. `algorithm`
        (collectives.LATENCIES) inside one domain, rings across domains; "serving": a serving engine's all-reduce
        inside one domain (collectives.serving_all_reduce: one-shot, two-shot, NVLS multimem or NCCL, the fastest),
        the switch algorithm for the other kinds.

        Inside a domain a ring step costs the link's hop latency or NCCL's measured per-step alpha
        (cal.ring_latency), whichever is larger, and a ring collective's bytes move at its large-message bus
        bandwidth slowed by the size ramp (collectives.ramp_factor of the bytes a rank); a ring all-reduce of 8 or
        more GPUs inside one NVSwitch domain runs NVLink SHARP where the generation has it (cal.nvls), as NCCL picks
        it. Across domains a ring step costs the path latency or NCCL's measured inter-node alpha
        (cal.scaleout_ring_latency), whichever is larger."""
        ramp = 1.0
        if algorithm == "ring" and kind in collectives.RAMPED:
            ramp = collectives.ramp_factor(np.asarray(size, float) / k, cal.ring_ramp_bytes, cal.ring_ramp_power)
        intra_bw = self.nvlink_bw * cal.nvlink / ramp
        lat = max(self.nvlink_lat, cal.ring_latency)
        # rings cross a leaf unit's uplinks with a few flows, far below their capacity: only an
        # all-to-all, where every GPU sends across at once, feels the oversubscription
        inter_bw = (self.scaleout_bw(crosses) if kind == "all_to_all" else self.nic_bw) * cal.scaleout
        flat_bw = intra_bw
        if kind == "all_reduce" and algorithm in ("ring", "serving") and cal.nvls > cal.nvlink:
            flat_bw = np.where(np.asarray(k) >= NVLS_MIN_GPUS, self.nvlink_bw * cal.nvls / ramp, intra_bw)
        if algorithm == "serving" and kind == "all_reduce":
            multimem = (cal.nvls > 0) & (np.asarray(k) >= MULTIMEM_MIN_GPUS)
            flat = collectives.serving_all_reduce(size, k, self.nvlink_bw, self.nvlink_lat, cal, flat_bw, multimem)
        else:
            flat = collectives.flat(kind, size, k, flat_bw, lat, "switch" if algorithm == "serving" else algorithm)
        inter_lat = max(self.scaleout_lat, cal.scaleout_ring_latency)
        hier = collectives.hierarchical(kind, size, k, d, intra_bw, lat, inter_bw, inter_lat)
        return np.where(d > 1, hier, flat)

    def p2p(self, size, src, dst, cal: Calibration) -> np.ndarray:
        """Seconds to send `size` bytes from each src device to each dst device."""
        same = self.domain_of(src) == self.domain_of(dst)
        bw = np.where(same, self.nvlink_bw * cal.nvlink, self.nic_bw * cal.scaleout)  # one flow: no uplink contention
        lat = np.where(same, self.nvlink_lat, self.scaleout_lat)
        return collectives.p2p(size, bw, lat)

    def tier(self, src, dst) -> np.ndarray:
        """'nvlink' where src and dst share a domain, else 'scaleout'."""
        same = self.domain_of(src) == self.domain_of(dst)
        return np.where(same, "nvlink", "scaleout")


def _distinct_per_row(a: np.ndarray) -> np.ndarray:
    """Number of distinct values in each row of a 2-D integer array."""
    s = np.sort(a, axis=1)
    return 1 + (np.diff(s, axis=1) != 0).sum(axis=1)


def from_graph(graph: nx.Graph, gpus: int) -> Fabric:
    """Read the tier figures of a regular topology graph; `gpus` is the ranks of the full cluster.

    Ranks fill the GPUs a domain uses (GPU attribute `used`), domain by domain, so a Fabric's domain holds
    the used GPUs only: gpus_per_domain counts them. Each used GPU keeps its own NVLink port to the switch
    plane (the same bandwidth however many are used) and its share of its domain's NICs (nic_bw: the NIC
    bandwidth over all the domain's GPUs, spares included: a spare's NICs serve no other GPU)."""
    gpu_nodes = {d["device"]: n for n, d in graph.nodes(data=True) if d["kind"] == "gpu"}
    domain = {dev: graph.nodes[n]["domain"] for dev, n in gpu_nodes.items()}
    per_domain = sum(1 for v in domain.values() if v == 0)
    used = sum(1 for dev, v in domain.items() if v == 0 and graph.nodes[gpu_nodes[dev]].get("used", True))
    g0 = gpu_nodes[0]
    nvlink_bw = sum(e["bandwidth"] for _, _, e in graph.edges(g0, data=True) if e["tier"] == "nvlink")
    lat = lambda g, a, b: nx.shortest_path_length(g, a, b, weight="latency")  # noqa: E731
    nvlink = graph.edge_subgraph((a, b) for a, b, t in graph.edges(data="tier") if t == "nvlink")
    nvlink_lat = lat(nvlink, g0, gpu_nodes[1]) if used > 1 else 0.0
    nics = {n for n in nx.node_connected_component(graph, g0) if graph.nodes[n]["kind"] == "nic"
            and any(graph.nodes[m].get("domain") == 0 for m in graph.neighbors(n))}
    nic_up = sum(e["bandwidth"] for nic in nics for _, m, e in graph.edges(nic, data=True)
                 if graph.nodes[m]["kind"] in ("leaf", "spine"))
    n_domains = len(gpu_nodes) // per_domain
    unit = _domains_per_unit(graph, nics, n_domains)
    far = gpu_nodes.get(unit * per_domain, gpu_nodes.get(per_domain, g0))
    return Fabric(
        gpus=gpus, gpus_per_domain=used, domains_per_unit=unit, nvlink_bw=nvlink_bw,
        nvlink_lat=nvlink_lat, nic_bw=nic_up / per_domain,
        scaleout_lat=lat(graph, g0, far) if far != g0 else 0.0, uplink_ratio=_uplink_ratio(graph),
    )


def _domains_per_unit(graph: nx.Graph, domain0_nics: set, n_domains: int) -> int:
    """Domains whose NICs reach domain 0's leaves without a spine."""
    leaves = {m for nic in domain0_nics for m in graph.neighbors(nic) if graph.nodes[m]["kind"] == "leaf"}
    nics = {m for leaf in leaves for m in graph.neighbors(leaf) if graph.nodes[m]["kind"] == "nic"}
    gpus = {g for nic in nics for g in graph.neighbors(nic) if graph.nodes[g]["kind"] == "gpu"}
    doms = {graph.nodes[g]["domain"] for g in gpus}
    return max(1, min(len(doms), n_domains)) if doms else n_domains


def _uplink_ratio(graph: nx.Graph) -> float:
    """Uplink over downlink bandwidth of the first leaf; 1.0 where no spine exists."""
    leaves = sorted((n for n, d in graph.nodes(data=True) if d["kind"] == "leaf"), key=str)
    if not leaves:
        return 1.0
    down = up = 0.0
    for _, m, e in graph.edges(leaves[0], data=True):
        if graph.nodes[m]["kind"] == "spine":
            up += e["bandwidth"]
        else:
            down += e["bandwidth"]
    return up / down if up > 0 else 1.0


def fabric_for(topology) -> Fabric:
    """The Fabric of a TopologySpec, read from a template graph of at most two scale-out units."""
    spec = topology.model_dump(mode="json")
    return _cached(json.dumps(spec, sort_keys=True))


@lru_cache(maxsize=64)
def _cached(spec_json: str) -> Fabric:
    spec = json.loads(spec_json)
    total = spec["domains"] * (spec["domain"].get("used") or spec["domain"]["gpus"])
    template = dict(spec, domains=min(spec["domains"], 2 * max(1, spec["scaleout"]["domains_per_leaf"])))
    return from_graph(topologies.build(template), gpus=total)
