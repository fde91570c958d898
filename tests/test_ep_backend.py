"""layout.ep_backend: training's expert all-to-all run by NCCL (Megatron-Core's all-to-all dispatcher), DeepEP or
HybridEP (its flex dispatcher), each at its measured link rates; DeepEP and HybridEP send a token once to each rank
it needs (simulator.moe.dispatch.rows_per_copy) and once to each remote domain."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from simulator import run
from simulator.cost import calibration
from simulator.cost.device_fit import load_kernels
from simulator.moe import routing
from simulator.moe.dispatch import rows_per_copy
from simulator.scenario.base import ScenarioError
from small_moe import H800, SMALL_MOE

NVLINK_B200, NIC = 900e9, 50e9  # B/s: NVLink 5 per direction (data sheet), a 400 Gb/s NIC


def uniform_rows_per_copy(experts: int, ranks: int, k: int) -> float:
    """Closed form: a token's k distinct experts, uniform over `experts` split evenly over `ranks`, reach
    ranks * (1 - C(E - E/n, k) / C(E, k)) distinct ranks; over k."""
    return ranks * (1 - comb(experts - experts // ranks, k) / comb(experts, k)) / k


def hybridep_rows(link: str, sms: tuple) -> list:
    return [e for e in load_kernels()["entries"] if e["id"].startswith("hybridep_")
            and e["config"]["link"] == link and e["config"]["sms"] in sms]


def rate(entry: dict, quantity: str) -> float:
    return next(m["value"] for m in entry["measured"] if m["quantity"].startswith(quantity)) * 1e9


# --- the measured rates ------------------------------------------------------------------------------------------

def test_hybridep_nvlink_fraction_is_the_geometric_mean_of_the_measured_rates():
    """Blackwell: each B200 / GB200 row's 16-bit dispatch and combine (Torch API, the 16 and 32 SMs that bracket
    HybridEP's default 24) counts the rank's own rows, which cross no link: rate x (n - 1) / n over 900 GB/s. Hopper
    has no NVLink row and takes Blackwell's."""
    fractions = [rate(e, q) * (e["config"]["ep_ranks"] - 1) / e["config"]["ep_ranks"] / NVLINK_B200
                 for e in hybridep_rows("NVLink", (16, 32)) for q in ("dispatch BF16, Torch API", "combine, Torch")]
    assert len(fractions) == 22
    expected = float(np.exp(np.mean(np.log(fractions))))
    assert calibration.fitted("blackwell", "bf16").hybridep_nvlink == pytest.approx(expected, rel=1e-8)
    assert calibration.fitted("hopper", "fp8").hybridep_nvlink == pytest.approx(expected, rel=1e-8)
    assert 0.45 < expected < 0.56  # the measured rows span 0.45-0.55 of the link


def test_hybridep_rdma_fraction_is_the_geometric_mean_of_the_capped_nic_rates():
    """Hopper: H100's rows across 2-8 nodes at HybridEP's multi-node default of 8 SMs, over the 400 Gb/s NIC, capped
    at 1 (rates above it count traffic forwarded on NVLink). Blackwell has none and takes Hopper's."""
    fractions = [min(rate(e, q) / NIC, 1.0) for e in hybridep_rows("InfiniBand", (8,))
                 for q in ("dispatch BF16, Torch API", "combine, Torch")]
    assert len(fractions) == 6
    expected = float(np.exp(np.mean(np.log(fractions))))
    assert calibration.fitted("hopper", "bf16").hybridep_rdma == pytest.approx(expected, rel=1e-8)
    assert calibration.fitted("blackwell", "mxfp8").hybridep_rdma == pytest.approx(expected, rel=1e-8)


# --- one row a token and destination rank ----------------------------------------------------------------------------

def test_rows_per_copy_counts_distinct_ranks():
    """Exact on constructed choices: k experts on k ranks send k rows (1 a copy); all on one rank, 1 row (1/k)."""
    spread = np.arange(8)[None, None, :].repeat(5, axis=1)
    same = np.zeros((1, 5, 8), dtype=int)
    np.testing.assert_array_equal(rows_per_copy(spread), [1.0])
    np.testing.assert_array_equal(rows_per_copy(same), [1 / 8])


def test_rows_per_copy_of_uniform_routing_equals_the_closed_form():
    """8 distinct experts of 64 drawn uniformly for 20,000 tokens, 8 experts a rank: within 1% of the closed form."""
    rng = np.random.default_rng(0)
    experts = np.argsort(rng.random((20000, 64)), axis=1)[:, :8]
    assert rows_per_copy((experts // 8)[None])[0] == pytest.approx(uniform_rows_per_copy(64, 8, 8), rel=0.01)


def _small(make_scenario, backend, **layout):
    return make_scenario(model=SMALL_MOE, topology=H800,
                         workload={"seq_len": 4096, "global_batch": 32, "routing": {"kind": "uniform"}},
                         layout={"ep": 8, "ep_backend": backend, **layout})


def test_deepep_moves_one_row_a_rank_on_nvlink(make_scenario, monkeypatch):
    """EP 8 in one node, 8 of the 64 experts a rank, uniform routing: DeepEP's NVLink bytes are NCCL's (one copy an
    expert) times the distinct ranks a token reaches over k: within 4% of the closed form for k distinct experts (a
    16,384-token sample, whose choices are drawn with replacement: 5.25 ranks a token in place of 5.43, -3.4%)."""
    monkeypatch.setattr(routing, "TOKEN_SAMPLE", 16384)
    nvlink = {b: run(_small(make_scenario, b)).report.extra["ep"]["traffic_bytes"]["nvlink"]
              for b in ("nccl", "deepep")}
    assert nvlink["deepep"] / nvlink["nccl"] == pytest.approx(uniform_rows_per_copy(64, 8, 8), rel=0.04)


# --- the benchmark the rates come from -------------------------------------------------------------------------------

def bench_model(ranks: int) -> dict:
    """HybridEP's benchmark model: hidden 7168, top-8, 8 local experts a rank."""
    return {"layers": 1, "hidden": 7168, "heads": 56, "ffn": 18432, "ffn_kind": "swiglu", "vocab": 32000,
            "moe": {"experts": 8 * ranks, "top_k": 8, "shared_experts": 0, "expert_ffn": 2048, "dense_layers": 0}}


B200_NODE = {"preset": "hgx-b200", "domains": 1}
GB200_RACK = {"preset": "gb200-nvl72", "domains": 1, "domain": {"gpus": 64}, "scaleout": {"nics_per_domain": 64}}


@pytest.mark.parametrize("topology, ranks, dispatch, combine", [
    (B200_NODE, 8, 535.94, 530.86),  # the 16 SMs measured
    (GB200_RACK, 8, (550.10 + 545.71) / 2, (538.44 + 568.94) / 2),  # 16 and 32 SMs around HybridEP's 24
    (GB200_RACK, 16, (472.84 + 523.48) / 2, (474.48 + 521.55) / 2),
    (GB200_RACK, 32, (485.50 + 484.22) / 2, (423.19 + 464.54) / 2),
])
def test_hybridep_all_to_all_reproduces_its_benchmark(make_scenario, monkeypatch, topology, ranks, dispatch, combine):
    """4,096 tokens a rank, uniform routing: simrack's forward all-to-all (16-bit dispatch, then combine) against the
    time HybridEP's table implies, rows a rank receives x 7168 x 2 bytes over the measured dispatch and combine GB/s:
    within 6% (one fraction fits all the rows, 4% apart on average; a microsecond of latency a phase; a 16,384-token
    sample)."""
    monkeypatch.setattr(routing, "TOKEN_SAMPLE", 16384)
    scn = make_scenario(model=bench_model(ranks), topology=topology,
                        workload={"seq_len": 4096, "global_batch": 64, "routing": {"kind": "uniform"}},
                        layout={"ep": ranks, "ep_backend": "hybridep"})
    simulated = run(scn).plan.moe.a2a[0, 0]
    rows = 4096 * 8 * uniform_rows_per_copy(8 * ranks, ranks, 8)  # ranks x 4096 x P(a token needs this rank)
    measured = rows * 7168 * 2 * (1 / (dispatch * 1e9) + 1 / (combine * 1e9))
    assert simulated == pytest.approx(measured, rel=0.06)


# --- rules -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case, field", [
    (dict(model="llama3-8b", layout={"ep_backend": "deepep"}), "layout.ep_backend"),
    (dict(layout={"ep": 8, "ep_backend": "hybridep", "ep_dispatch": "flat"}), "layout.ep_dispatch"),
    (dict(layout={"ep": 8, "ep_backend": "hybridep"}, topology={"preset": "dgx-a100-superpod", "domains": 2}),
     "layout.ep_backend"),
    (dict(layout={"ep": 8, "ep_backend": "deepep"},
          workload={"kind": "serve", "prompt_len": 512, "output_len": 16, "batch": 8}), "layout.ep_backend"),
])
def test_refusals(make_scenario, case, field):
    """Only MoE models; DeepEP and HybridEP de-duplicate per remote domain by design; HybridEP's TMA kernels need
    Hopper or later; serving refuses it (it prices DeepEP's kernels)."""
    args = {"model": SMALL_MOE, "topology": H800, **case}
    with pytest.raises(ScenarioError, match=field.replace(".", r"\.")):
        make_scenario(**args)
