"""Alpha-beta collective costs against nccl-tests' bus-bandwidth definitions and a measured H100 figure.

Sources: NVIDIA nccl-tests doc/PERFORMANCE.md (published.yaml nccl_tests_busbw_definitions):
busbw = algbw x factor, factor 2(n-1)/n for all-reduce and (n-1)/n for all-gather, reduce-scatter and
all-to-all, so t = S/B x factor at bus bandwidth B. NCCL maintainer's H100 NVLink figure: ~370 GB/s
all-reduce bus bandwidth for large messages (published.yaml nccl_h100_nvlink_busbw_maintainer). Mid-size messages
against an nccl-tests sweep by size (simulator/data/kernels.yaml).
"""

from __future__ import annotations

import numpy as np
import pytest

from simulator.cost import collectives
from simulator.cost.calibration import DEFAULT, fitted
from simulator.cost.fabric import fabric_for

FACTORS = {  # nccl-tests doc/PERFORMANCE.md, written out here rather than read from the module
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
}


@pytest.mark.parametrize("kind", sorted(FACTORS))
@pytest.mark.parametrize("n", [2, 3, 8, 64, 1000])
def test_flat_time_is_size_over_busbw_times_factor(kind, n):
    """With zero latency t = S / B x factor(n): the bus bandwidth nccl-tests reports is B."""
    size, bw = 3.7e8, 123e9
    t = float(collectives.flat(kind, size, n, bw, 0.0))
    assert t == pytest.approx(size / bw * FACTORS[kind](n), rel=1e-12)
    assert FACTORS[kind](n) * size / t == pytest.approx(bw, rel=1e-12)  # busbw = algbw x factor


def test_nccl_tests_points(reference):
    """published.yaml test points (t in ms, printed to 3 significant figures) within 1%."""
    case = reference("nccl_tests_busbw_definitions")
    kinds = {"allreduce": "all_reduce", "allgather": "all_gather"}
    for point in case["test_points"]:
        t = float(collectives.flat(kinds[point["op"]], point["S_bytes"], point["n"],
                                   point["B_GBps"] * 1e9, 0.0))
        assert t * 1e3 == pytest.approx(point["t_ms"], rel=1e-2), point


@pytest.mark.parametrize("kind, steps", [("all_reduce", 14), ("all_gather", 7),
                                         ("reduce_scatter", 7), ("all_to_all", 1)])
def test_latency_term(kind, steps):
    """Ring at n = 8: 2(n-1) latency steps for all-reduce, (n-1) for all-gather and reduce-scatter; an
    all-to-all's sends to its n-1 peers are in flight at once: one latency."""
    n, lat, size, bw = 8, 3e-6, 1e6, 100e9
    t = float(collectives.flat(kind, size, n, bw, lat))
    assert t == pytest.approx(FACTORS[kind](n) * size / bw + steps * lat, rel=1e-12)
    assert float(collectives.flat(kind, 1.0, n, bw, lat)) == pytest.approx(steps * lat, rel=1e-3)
    assert float(collectives.flat(kind, 0.0, n, bw, lat)) == 0.0  # nothing to move: never launched


def test_switch_algorithm_pays_one_latency_a_phase():
    """Through an NVSwitch every rank reads its peers' shards in one step a phase: a two-shot
    all-reduce (reduce-scatter + all-gather) pays 2 latencies, an all-gather 1, whatever n."""
    n, lat, size, bw = 8, 3e-6, 1e6, 100e9
    for kind, steps in (("all_reduce", 2), ("all_gather", 1), ("reduce_scatter", 1)):
        t = float(collectives.flat(kind, size, n, bw, lat, "switch"))
        assert t == pytest.approx(FACTORS[kind](n) * size / bw + steps * lat, rel=1e-12)


def test_single_rank_costs_nothing():
    for kind in FACTORS:
        assert float(collectives.flat(kind, 1e9, 1, 1e9, 1e-3)) == 0.0


def test_vectorized_over_sizes_and_groups():
    sizes = np.array([1e6, 1e8, 1e9])
    ns = np.array([2, 4, 8])
    t = collectives.flat("all_reduce", sizes, ns, 50e9, 0.0)
    np.testing.assert_allclose(t, 2 * (ns - 1) / ns * sizes / 50e9, rtol=1e-12)


def test_p2p():
    assert float(collectives.p2p(2e9, 100e9, 5e-6)) == pytest.approx(2e9 / 100e9 + 5e-6, rel=1e-12)
    assert float(collectives.p2p(0.0, 100e9, 5e-6)) == 0.0


@pytest.mark.parametrize("k, d", [(8, 2), (4, 16), (2, 3), (8, 1), (1, 8)])
def test_hierarchical_all_reduce_is_rs_ar_ag(k, d):
    """Hierarchical all-reduce = reduce-scatter inside the domain (k ranks, S), all-reduce across
    domains (d ranks, S/k each), all-gather inside the domain (k ranks, S): hand-computed."""
    size, bi, li, be, le = 4e9, 300e9, 2e-6, 25e9, 5e-6
    rs = (k - 1) / k * size / bi + (k - 1) * li
    ar = 2 * (d - 1) / d * (size / k) / be + 2 * (d - 1) * le
    ag = (k - 1) / k * size / bi + (k - 1) * li
    t = float(collectives.hierarchical("all_reduce", size, k, d, bi, li, be, le))
    assert t == pytest.approx(rs + ar + ag, rel=1e-12)


@pytest.mark.parametrize("kind", ["all_gather", "reduce_scatter"])
def test_hierarchical_gather_and_scatter(kind):
    """All-gather (reduce-scatter) of S over k x d ranks: S/k across domains, S inside."""
    k, d, size, bi, li, be, le = 8, 4, 4e9, 300e9, 2e-6, 25e9, 5e-6
    expected = ((k - 1) / k * size / bi + (k - 1) * li
                + (d - 1) / d * (size / k) / be + (d - 1) * le)
    t = float(collectives.hierarchical(kind, size, k, d, bi, li, be, le))
    assert t == pytest.approx(expected, rel=1e-12)


def test_hierarchical_all_to_all_runs_tiers_at_once():
    """Of each rank's S, (k-1)/n stays in the domain and (n-k)/n leaves; the slower tier decides."""
    k, d, size, bi, be = 8, 4, 1e9, 300e9, 25e9
    n = k * d
    inside, outside = (k - 1) / n * size / bi, (n - k) / n * size / be
    t = float(collectives.hierarchical("all_to_all", size, k, d, bi, 0.0, be, 0.0))
    assert t == pytest.approx(max(inside, outside), rel=1e-12)


def test_h100_nvlink_all_reduce_busbw(make_scenario, reference):
    """8 H100 in one DGX: a 10 GB all-reduce with the default calibration has bus bandwidth
    2(n-1)/n S / t within 15% of the 370 GB/s the NCCL maintainer measured (nccl-tests #212)."""
    measured = reference("nccl_h100_nvlink_busbw_maintainer")["reported"]["effective_nvlink_busbw_GBps"]
    scn = make_scenario(topology="dgx-h100-superpod", workload={"global_batch": 1024},
                        layout={"tp": 8})
    fabric = fabric_for(scn.topology)
    size, n = 10e9, 8
    t = float(fabric.collective("all_reduce", size, np.arange(n)[None], DEFAULT)[0])
    busbw = 2 * (n - 1) / n * size / t
    assert busbw == pytest.approx(measured * 1e9, rel=0.15)
    assert busbw < 450e9  # never above the NVLink 4 line rate per direction


def test_size_ramp_closed_form():
    """ramp_factor = 1 + (b / shard)^q: twice the large-message time at shard = b, tending to 1 for large shards."""
    assert float(collectives.ramp_factor(4e5, 4e5, 0.5)) == pytest.approx(2.0, rel=1e-12)
    assert float(collectives.ramp_factor(4e5 * 100, 4e5, 0.5)) == pytest.approx(1.1, rel=1e-12)
    assert float(collectives.ramp_factor(1e12, 4e5, 0.5)) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("mib, measured_us", [(8, 85.3), (16, 125.2), (32, 198.7), (64, 324.6), (1024, 4029.3)])
def test_h100_mid_size_all_reduce_follows_the_measured_sweep(make_scenario, mib, measured_us):
    """8 H100 in one node, the fitted hopper calibration through the fabric: all-reduce times within 12% of the Azure
    nccl-tests sweep (kernels.yaml azure_h100_8gpu_allreduce_sweep). Without the size ramp the mid sizes came out
    14-23% fast."""
    scn = make_scenario(topology="dgx-h100-superpod", workload={"global_batch": 1024}, layout={"tp": 8})
    t = float(fabric_for(scn.topology).collective("all_reduce", mib * 2**20, np.arange(8)[None],
                                                  fitted("hopper", "bf16"))[0])
    assert t == pytest.approx(measured_us * 1e-6, rel=0.12)


def test_two_node_small_all_reduce_pays_nccls_measured_latency(make_scenario):
    """8 B all-reduced between one A100 in each of two DGX nodes: the fitted per-step inter-node alpha over the ring's
    2 (n - 1) = 2 steps reproduces the nccl-tests measurement (kernels.yaml nccltests150_a100_2node_small_allreduce_
    latency: 18.96-19.9 us) within 5%; the topology's 5 us link latency alone would give 10 us."""
    scn = make_scenario(topology={"preset": "dgx-a100-superpod", "domains": 2}, layout={"tp": 8})
    cal = fitted("ampere", "bf16")
    t = float(fabric_for(scn.topology).collective("all_reduce", 8.0, np.array([[0, 8]]), cal)[0])
    assert t == pytest.approx(19.345e-6, rel=0.05)
