"""Serving against published end-to-end figures (the development set's serving cases) and the decode bar.

- MLPerf Inference v4.1, Llama 2 70B, offline (simulator/data/published.yaml mlperf_inference_v4_1_llama2_70b): 8 H100
  (TP2 x 4), 8 H200 (TP1 x 8) and one B200 (NVFP4), output tokens/s of the system, simulated from the development
  set's scenarios (simulator/data/validation/mlperf-i41-*.yaml, which state the submissions' settings and what they
  assume). Bar: each within 15%, their mean |error| within 10%, the Hopper pair's within 8%.
- The decode step of a dense model at batch 1 within 15% of (weights + KV cache) / the measured decode HBM bandwidth
  (calibration hbm_decode, FlashMLA's) plus its TP all-reduces.
The roofline decode tables of "How to Scale Your Model" are tests/validation/test_decode_references.py; DeepSeek's
deployment is tests/test_moe_serving.py::test_deepseek_decode_throughput_against_its_published_service.
"""

from __future__ import annotations

import numpy as np
import pytest

from simulator import load_scenario, simulate
from simulator.serving.memory import serve_memory
from simulator.serving.steps import step_costs

MLPERF = {"dgx_h100_x8": "h100x8", "h200_x8": "h200x8", "b200_x1": "b200"}  # system: validation scenario tag


@pytest.fixture(scope="module")
def mlperf():
    from simulator.data import VALIDATION_DIR, reference

    published = reference()["mlperf_inference_v4_1_llama2_70b"]["reported"]["offline_tokens_per_s"]
    return {s: (simulate(load_scenario(VALIDATION_DIR / f"mlperf-i41-llama2-70b-{tag}.yaml")).output_tokens_per_s,
                published[s]) for s, tag in MLPERF.items()}


@pytest.mark.parametrize("system", list(MLPERF))
def test_mlperf_inference_llama2_70b_offline(mlperf, system):
    simulated, published = mlperf[system]
    assert simulated == pytest.approx(published, rel=0.15)


def test_mlperf_mean_error_within_ten_percent(mlperf):
    errors = [abs(s / p - 1) for s, p in mlperf.values()]
    assert np.mean(errors) <= 0.10, errors


def test_mlperf_hopper_pair_within_the_issue_bar(mlperf):
    """The development set's Hopper serving group (8 H100, 8 H200): mean |error| within 8%, the bar every group
    keeps (6.1% with the serving engine's fusions, cost.fusions; 10.3% with training's unfused rows)."""
    errors = [abs(s / p - 1) for s, p in (mlperf["dgx_h100_x8"], mlperf["h200_x8"])]
    assert np.mean(errors) <= 0.08, errors


@pytest.mark.parametrize("model, preset, tp, dtype", [("llama3-70b", "dgx-h100-superpod", 8, "bf16"),
                                                     ("llama3-8b", "dgx-h100-superpod", 1, "fp8"),
                                                     ("llama3-405b", "hgx-h200", 8, "fp8")])
def test_batch_one_decode_is_the_hbm_read_plus_the_all_reduces(make_scenario, model, preset, tp, dtype):
    """A batch-1 decode step at 2K context: the stage's weights (the embedding lookup reads rows, not the table)
    and the sequence's KV cache at the decode kernels' measured HBM bandwidth, plus two TP all-reduces of one
    token's activations a layer (the calibrated serving all-reduce): within 15%."""
    scn = make_scenario(model=model, topology={"preset": preset, "domains": 1}, layout={"tp": tp},
                        workload={"kind": "serve", "prompt_len": 2048, "output_len": 1, "dtype": dtype})
    costs, mem, m = step_costs(scn), serve_memory(scn), scn.model
    table = -(-m.vocab // tp) * m.hidden * {"bf16": 2, "fp8": 1}[dtype]
    read = mem.weights[0] - table + 2048 * mem.kv_per_token[0]
    bar = read / (scn.topology.device.hbm_bandwidth * costs.cal.hbm_decode)
    bar += 2 * m.layers * float(costs.all_reduce(np.array([m.hidden * 2.0]))[0]) if tp > 1 else 0.0
    assert costs.decode_step(1, 2048) == pytest.approx(bar, rel=0.15)
