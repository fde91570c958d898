"""Partially used domains: an NVL72 rack with 64 of its 72 GPUs in use. Ranks fill the used GPUs rack by rack,
collectives inside a rack run over the used GPUs at each GPU's own NVLink rate, each used GPU keeps its NIC, and
the spares are billed or not (topology.spares_billed). Closed forms, the shipped scenario, bad input."""

from pathlib import Path

import numpy as np
import pytest
from refusals import assert_refused

import topologies
from simulator import load_scenario, simulate
from simulator.cost import collectives
from simulator.cost.calibration import IDEAL
from simulator.cost.fabric import fabric_for

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "llama3-405b-nvl72-64of72.yaml"
# the same job with the rack modelled as a 64-GPU domain (64 NICs), as the validation case states it
AS_64 = ROOT / "simulator" / "data" / "validation" / "mlperf-t51-llama31-405b-2560.yaml"


def _topology(used):
    over = [] if used is None else [f"topology.domain.used={used}"]
    return load_scenario(ROOT / "scenarios" / "gpt3-175b-selene.yaml",
                         ["topology={preset: gb200-nvl72, domains: 2}", "layout.tp=8", "layout.pp=1",
                          "layout.schedule=1f1b", "layout.chunks=1", "workload.global_batch=144", *over]).topology


def test_graph_marks_the_spares():
    spec = {"domain": {"kind": "nvl72", "gpus": 72, "bandwidth": 900e9, "latency": 2e-6, "used": 64},
            "scaleout": {"kind": "fat_tree", "nic_bandwidth": 50e9, "nics_per_domain": 72, "latency": 5e-6},
            "domains": 2}
    g = topologies.build(spec)
    used = [d["used"] for _, d in g.nodes(data=True) if d["kind"] == "gpu"]
    assert len(used) == 144 and sum(used) == 128 and g.graph["gpus_used_per_domain"] == 64
    assert not g.nodes[("gpu", 64)]["used"] and g.nodes[("gpu", 72)]["used"]
    with pytest.raises(ValueError, match="domain used: 73 GPUs of a domain of 72"):
        topologies.build({**spec, "domain": {**spec["domain"], "used": 73}})


def test_ranks_fill_the_used_gpus_and_keep_their_links():
    full, part = fabric_for(_topology(None)), fabric_for(_topology(64))
    assert (full.gpus, full.gpus_per_domain, part.gpus, part.gpus_per_domain) == (144, 72, 128, 64)
    assert part.nvlink_bw == full.nvlink_bw == 900e9  # a GPU's own NVLink port to the switch trays
    assert part.nic_bw == full.nic_bw == 50e9  # its own ConnectX-7; a spare's NIC serves no other GPU
    assert part.domain_of(np.array([0, 63, 64, 127])).tolist() == [0, 0, 1, 1]


def test_collectives_inside_a_rack_run_over_the_used_gpus():
    """Ideal links: a 64-rank all-reduce stays in one rack, 2 (n-1)/n S / B + 2 (n-1) hop latencies; 72 ranks
    span two racks of 64 used GPUs (a hierarchical all-reduce over 64 + 8), one rack when all 72 are used."""
    part, full = fabric_for(_topology(64)), fabric_for(_topology(None))
    size = 1e9
    t64 = part.collective("all_reduce", size, np.arange(64)[None], IDEAL)
    expected = collectives.flat("all_reduce", size, 64, 900e9, 2e-6)
    assert float(t64[0]) == pytest.approx(float(expected), rel=1e-12)
    assert float(expected) == pytest.approx(2 * 63 / 64 * size / 900e9 + 2 * 63 * 2e-6, rel=1e-12)
    assert part.profile(np.arange(72)[None])[1][0] == 2 and full.profile(np.arange(72)[None])[1][0] == 1
    assert part.collective("all_reduce", size, np.arange(72)[None], IDEAL)[0] > \
        full.collective("all_reduce", size, np.arange(72)[None], IDEAL)[0]


def test_shipped_scenario_prices_the_spares():
    """MLPerf v5.1's 2,560 GB200 on 40 racks of 64 used GPUs: the same step as 40 domains of 64 GPUs, bit for bit;
    the cost 72/64 of it with the spares billed, equal without."""
    part, as64 = simulate(SCENARIO), simulate(AS_64)
    free = simulate(load_scenario(SCENARIO, ["topology.spares_billed=false"]))
    assert part.gpus == 2560 and part.step_time_s == as64.step_time_s
    assert part.memory_bytes == as64.memory_bytes and part.traffic_bytes == as64.traffic_bytes
    assert part.cost_per_million_tokens == pytest.approx(as64.cost_per_million_tokens * 72 / 64, rel=1e-12)
    assert free.cost_per_million_tokens == pytest.approx(as64.cost_per_million_tokens, rel=1e-12)


def test_a_job_on_half_an_hgx_node():
    """4 of a DGX A100's 8 GPUs: TP4 inside the node, 4 nodes make a 16-GPU job."""
    scn = load_scenario(ROOT / "scenarios" / "gpt3-175b-selene.yaml",
                        ["topology.domains=4", "topology.domain.used=4", "layout.tp=4", "layout.pp=4",
                         "layout.schedule=1f1b", "layout.chunks=1", "workload.global_batch=16"])
    assert scn.gpus == 16 and scn.layout.dp == 1
    report = simulate(scn)
    assert report.gpus == 16 and report.busiest_link["tier"] in ("nvlink", "scaleout")


@pytest.mark.parametrize("override, says", [
    ("topology.domain.used=73", "topology.domain.used: 73 GPUs used of a domain of 72"),
    ("topology.domain.used=0", "topology.domain.used"),
    ("topology.spares_billed=maybe", "topology.spares_billed"),
])
def test_bad_partial_rack_input_is_one_line_exit_2(tmp_path, override, says):
    assert_refused(SCENARIO, [override], says, tmp_path)
