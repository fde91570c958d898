"""Serving against published end-to-end figures (the development set's serving cases) and the decode bar.

- MLPerf Inference v4.1, Llama 2 70B, offline (simulator/data/published.yaml mlperf_inference_v4_1_llama2_70b): 8 H100
  (TP2 x 4), 8 H200 (TP1 x 8) and one B200, output tokens/s of the system. From the submissions: FP8 on Hopper
  (NVIDIA's announcement: FP4 on B200), NVIDIA's Offline gpu_batch_size as the most running sequences of an engine,
  24,576 samples, the published mean output length (tokens/s over samples/s). Assumed, as the development set's
  scenarios do: 300-token prompts (the OpenOrca subset's mean prompt is not transcribed), every answer that long,
  all requests at once, whole prompts prefilled up to 8,192 tokens a step, an FP8 KV cache. Bar: each within 15%,
  their mean |error| within 10%.
- The decode step of a dense model at batch 1 within 15% of (weights + KV cache) / the measured decode HBM bandwidth
  (calibration hbm_decode, FlashMLA's) plus its TP all-reduces.
The roofline decode tables of "How to Scale Your Model" are tests/validation/test_decode_references.py; DeepSeek's
deployment is tests/test_moe_serving.py::test_deepseek_decode_throughput_against_its_published_service.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from simulator import load_scenario, simulate
from simulator.serving.memory import serve_memory
from simulator.serving.steps import step_costs

MLPERF = {  # system: topology, layout, dtype, Offline gpu_batch_size (B200: NVIDIA's preview, not in the repository)
    "dgx_h100_x8": ({"preset": "dgx-h100-superpod", "domains": 1}, {"tp": 2}, "fp8", 896),
    "h200_x8": ({"preset": "hgx-h200", "domains": 1}, {"tp": 1}, "fp8", 806),
    "b200_x1": ({"preset": "hgx-b200", "domains": 1, "domain": {"gpus": 1}, "scaleout": {"nics_per_domain": 1}},
                {"tp": 1}, "nvfp4", 1024),
}
PROMPT = 300  # assumed (see the module docstring)


def mlperf_scenario(tmp_path, system: str, case: dict):
    topology, layout, dtype, batch = MLPERF[system]
    rep = case["reported"]
    output = round(rep["offline_tokens_per_s"][system] / rep["offline_samples_per_s"][system])
    raw = {"model": "llama2-70b", "topology": topology, "layout": layout,
           "workload": {"kind": "serve", "prompt_len": PROMPT, "output_len": output, "batch": batch,
                        "max_num_tokens": 8192, "dtype": dtype, "weight_dtype": dtype, "kv_dtype": "fp8",
                        "arrivals": {"rate": 1e6, "count": 24576, "seed": 0}}}
    path = tmp_path / f"mlperf-{system}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_scenario(path)


@pytest.fixture(scope="module")
def mlperf(tmp_path_factory):
    from simulator.data import reference

    case = reference()["mlperf_inference_v4_1_llama2_70b"]
    tmp = tmp_path_factory.mktemp("mlperf")
    return {s: (simulate(mlperf_scenario(tmp, s, case)).output_tokens_per_s,
                case["reported"]["offline_tokens_per_s"][s]) for s in MLPERF}


@pytest.mark.parametrize("system", list(MLPERF))
def test_mlperf_inference_llama2_70b_offline(mlperf, system):
    simulated, published = mlperf[system]
    assert simulated == pytest.approx(published, rel=0.15)


def test_mlperf_mean_error_within_ten_percent(mlperf):
    errors = [abs(s / p - 1) for s, p in mlperf.values()]
    assert np.mean(errors) <= 0.10, errors


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
