"""Fabric: tier figures read from topology graphs, and p2p / collective costs by tier (hand-computed).

Each expected figure is worked out from the spec in the test: NVLink bandwidth per GPU is the
domain's `bandwidth`; a GPU's NIC share is nics_per_domain x nic_bandwidth / gpus; a scale-out unit
is `domains_per_leaf` domains; traffic between units gets 1 / oversubscription of the NIC share.
"""

from __future__ import annotations

import numpy as np
import pytest

import topologies
from simulator.cost.calibration import DEFAULT, Calibration
from simulator.cost.fabric import Fabric, fabric_for, from_graph


def _spec(domain_kind="hgx", gpus=8, nvlink=300e9, nvlink_latency=2e-6, scaleout_kind="fat_tree",
          nic=25e9, nics=8, oversubscription=1.0, scaleout_latency=5e-6, per_leaf=4, domains=2):
    """A topologies.build() spec in SI units (bytes/s per direction, seconds)."""
    return {
        "domain": {"kind": domain_kind, "gpus": gpus, "bandwidth": nvlink, "latency": nvlink_latency},
        "scaleout": {"kind": scaleout_kind, "nic_bandwidth": nic, "nics_per_domain": nics,
                     "oversubscription": oversubscription, "latency": scaleout_latency,
                     "domains_per_leaf": per_leaf},
        "domains": domains,
    }


def _fabric(**kw) -> Fabric:
    spec = _spec(**kw)
    return from_graph(topologies.build(spec), gpus=spec["domains"] * spec["domain"]["gpus"])


CASES = {
    # name: (spec, expected fabric fields)
    "hgx-fat-tree-oversubscribed": (
        dict(nvlink=300e9, nic=25e9, nics=8, per_leaf=4, domains=8, oversubscription=2.0),
        dict(gpus=64, gpus_per_domain=8, domains_per_unit=4, nvlink_bw=300e9, nic_bw=25e9,
             uplink_ratio=0.5, nvlink_lat=2e-6, scaleout_lat=5e-6)),
    "hgx-rail-half-nics": (
        dict(scaleout_kind="rail", nvlink=450e9, nic=50e9, nics=4, per_leaf=4, domains=8,
             oversubscription=3.0, scaleout_latency=7e-6),
        dict(gpus=64, gpus_per_domain=8, domains_per_unit=4, nvlink_bw=450e9, nic_bw=4 * 50e9 / 8,
             uplink_ratio=1 / 3, scaleout_lat=7e-6)),
    "nvl72-fat-tree": (
        dict(domain_kind="nvl72", gpus=72, nvlink=900e9, nic=50e9, nics=72, per_leaf=2, domains=4,
             oversubscription=1.5),
        dict(gpus=288, gpus_per_domain=72, domains_per_unit=2, nvlink_bw=900e9, nic_bw=50e9,
             uplink_ratio=1 / 1.5, nvlink_lat=2e-6, scaleout_lat=5e-6)),
    "rail-single-unit": (
        dict(scaleout_kind="rail", nic=25e9, nics=8, per_leaf=4, domains=3),
        dict(gpus=24, gpus_per_domain=8, domains_per_unit=3, nvlink_bw=300e9, nic_bw=25e9,
             uplink_ratio=1.0, nvlink_lat=2e-6, scaleout_lat=5e-6)),
    "hgx-two-nics-per-gpu": (
        dict(nic=25e9, nics=16, per_leaf=2, domains=4),
        dict(gpus=32, gpus_per_domain=8, domains_per_unit=2, nvlink_bw=300e9, nic_bw=50e9,
             uplink_ratio=1.0, nvlink_lat=2e-6, scaleout_lat=5e-6)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_from_graph_reads_tier_figures(name):
    spec, expected = CASES[name]
    fab = _fabric(**spec)
    for field, value in expected.items():
        assert getattr(fab, field) == pytest.approx(value, rel=1e-12), field


@pytest.mark.parametrize("spec", [
    dict(nics=4, domains=2),
    dict(domain_kind="nvl72", gpus=72, nvlink=900e9, nics=18, nic=100e9, domains=2),
], ids=["hgx-4-nics", "nvl72-18-nics"])
def test_nvlink_latency_with_shared_nics(spec):
    """The NVLink hop latency is the domain's latency (2 us) however many NICs the domain has."""
    assert _fabric(**spec).nvlink_lat == pytest.approx(2e-6, rel=1e-12)


def test_template_fabric_equals_full_graph(make_scenario):
    """fabric_for reads a two-unit template; every figure equals the one of the whole 1024-GPU graph."""
    scn = make_scenario(topology="dgx-h100-superpod", workload={"global_batch": 1024},
                        layout={"tp": 8})
    topo = scn.topology
    assert topo.domains == 128
    full = from_graph(topologies.build(topo.model_dump(mode="json")), gpus=1024)
    assert fabric_for(topo) == full
    # published.yaml hw_nvlink_and_superpod_tables: 450 GB/s NVLink, 8 x 50 GB/s NDR a node, 32 nodes/SU
    assert (full.nvlink_bw, full.nic_bw, full.domains_per_unit) == (450e9, 50e9, 32)


def test_p2p_by_tier():
    """Inside a domain: NVLink; across domains: the NIC share, across units too (one flow is far below
    a leaf's uplink capacity: oversubscription only slows all-to-alls). Each with its tier's latency
    and calibration fraction."""
    fab = _fabric(nvlink=300e9, nic=25e9, nics=8, per_leaf=4, domains=8, oversubscription=2.0)
    cal = Calibration(nvlink=0.8, scaleout=0.9)
    size = 1e9
    t = fab.p2p(size, np.array([0, 0, 0, 9]), np.array([7, 8, 32, 63]), cal)
    np.testing.assert_allclose(t, [
        size / (300e9 * 0.8) + 2e-6,          # devices 0 and 7: domain 0
        size / (25e9 * 0.9) + 5e-6,           # domain 0 -> domain 1, both in unit 0
        size / (25e9 * 0.9) + 5e-6,           # domain 0 -> domain 4: unit 0 -> unit 1
        size / (25e9 * 0.9) + 5e-6,           # domain 1 -> domain 7: unit 0 -> unit 1
    ], rtol=1e-12)
    assert list(fab.tier(np.array([0, 0, 0]), np.array([7, 8, 32]))) == ["nvlink", "scaleout",
                                                                        "scaleout"]


def test_crossing_units_without_oversubscription_is_free():
    fab = _fabric(nic=25e9, nics=8, per_leaf=2, domains=4, oversubscription=1.0)
    same_unit = float(fab.p2p(1e9, 0, 8, DEFAULT))
    other_unit = float(fab.p2p(1e9, 0, 16, DEFAULT))
    assert same_unit == other_unit == pytest.approx(1e9 / (25e9 * DEFAULT.scaleout) + 5e-6)


@pytest.mark.parametrize("group, k, d, crosses", [
    ([0, 1, 2, 3, 4, 5, 6, 7], 8, 1, False),
    ([0, 1, 2, 3], 4, 1, False),
    ([0, 8, 16, 24], 1, 4, False),      # one member in each domain of unit 0
    ([0, 1, 8, 9], 2, 2, False),
    ([0, 32], 1, 2, True),              # domain 0 (unit 0) and domain 4 (unit 1)
    ([9, 10, 41, 42], 2, 2, True),      # domains 1 and 5
    (list(range(64)), 8, 8, True),
])
def test_profile(group, k, d, crosses):
    """Members per domain, domains, and whether a group leaves its scale-out unit (4 domains a unit)."""
    fab = _fabric(per_leaf=4, domains=8)
    pk, pd, pc = fab.profile(np.array([group]))
    assert (int(pk[0]), int(pd[0]), bool(pc[0])) == (k, d, crosses)


def test_profile_many_groups_at_once():
    fab = _fabric(per_leaf=4, domains=8)
    groups = np.arange(64).reshape(8, 8)        # one domain each
    k, d, crosses = fab.profile(groups)
    assert (k == 8).all() and (d == 1).all() and not crosses.any()
    k, d, crosses = fab.profile(groups.T)       # one GPU of every domain each
    assert (k == 1).all() and (d == 8).all() and crosses.all()


def test_collective_inside_domain_is_flat_on_nvlink():
    fab = _fabric(nvlink=300e9, domains=2)
    cal = Calibration(nvlink=0.75)
    size = 2e9
    t = float(fab.collective("all_reduce", size, np.arange(8)[None], cal)[0])
    step = max(2e-6, cal.ring_latency)  # a ring step: the hop, or NCCL's measured per-step alpha
    ramp = 1 + (cal.ring_ramp_bytes / (size / 8)) ** cal.ring_ramp_power  # NCCL's size ramp, S/8 a rank
    assert t == pytest.approx(2 * 7 / 8 * size / (300e9 * 0.75) * ramp + 2 * 7 * step, rel=1e-12)


def test_collective_across_domains_is_hierarchical():
    """16 GPUs in 2 domains of one unit: RS(8, NVLink) + AR(2, NIC, S/8) + AG(8, NVLink)."""
    fab = _fabric(nvlink=300e9, nic=25e9, per_leaf=4, domains=2)
    cal = Calibration(nvlink=0.75, scaleout=0.9)
    size, bi, be = 2e9, 300e9 * 0.75, 25e9 * 0.9
    ramp = 1 + (cal.ring_ramp_bytes / (size / 8)) ** cal.ring_ramp_power  # on NVLink only
    intra = 7 / 8 * size / bi * ramp + 7 * max(2e-6, cal.ring_latency)
    inter = 2 * 1 / 2 * (size / 8) / be + 2 * 1 * max(5e-6, cal.scaleout_ring_latency)  # link or NCCL's alpha
    t = float(fab.collective("all_reduce", size, np.arange(16)[None], cal)[0])
    assert t == pytest.approx(2 * intra + inter, rel=1e-12)
