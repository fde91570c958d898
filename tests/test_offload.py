"""Host-memory offload: activations of some layers over the host link, the optimizer state in host memory. Closed
forms for the copies (hidden behind compute or exposed), the HBM they save and the optimizer step; the shipped
scenario; bad input as one line with exit status 2."""

from pathlib import Path

import numpy as np
import pytest
from refusals import assert_refused

from simulator import load_scenario, simulate
from simulator.cost import calibration
from simulator.cost.memory import activation_bytes_per_layer
from simulator.cost.pipeline import ADAM_BYTES_PER_PARAM
from simulator.simulate import training_plan

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "llama3-405b-gb200-offload.yaml"
C2C, PCIE = 450e9, 64e9


def _plans(*overrides):
    on = load_scenario(SCENARIO, list(overrides))
    off = load_scenario(SCENARIO, [*overrides, "layout.offload=null"])
    return on, training_plan(on)[1], training_plan(off)[1]


def _layer_bytes(scn):
    """One layer's activations of a micro-batch on a TP rank (Korthikanti's Table 2, generalized)."""
    return activation_bytes_per_layer(scn.model, tokens=8192, seq=8192, tp=4, sequence_parallel=True,
                                      recompute="none", flash=True)


@pytest.mark.parametrize("link", [C2C, PCIE])
def test_copies_ride_beside_each_task(link):
    """Each chunk copies 10 of its 14 layers each way: c = 10 a / host_link; a task lasts max(compute, c)."""
    scn, plan, base = _plans(f"topology.device.host_link={link / 1e9:g} GB/s")
    c = 10 * _layer_bytes(scn) / link
    assert plan.f == pytest.approx(np.maximum(base.f, c), rel=1e-12)
    assert plan.b == pytest.approx(np.maximum(base.b, c), rel=1e-12)
    assert plan.offload["copy_s_per_micro_batch"] == pytest.approx(c, rel=1e-12)
    exposed = ((np.maximum(c - base.f, 0) + np.maximum(c - base.b, 0)) * 32).sum(axis=1).mean()
    assert plan.offload["exposed_s"] == pytest.approx(exposed, rel=1e-12)
    assert (exposed == 0.0) == (link == C2C)  # NVLink-C2C hides them; PCIe 5 does not


def test_hbm_keeps_the_layers_not_offloaded_and_one_copy_buffer():
    """Stage 0 holds 9 micro-batches in flight of 14 layers: 9 * 14 a without offload, 9 * 4 a + a with it."""
    scn, plan, base = _plans()
    a = _layer_bytes(scn)
    assert base.memory.activations == pytest.approx(9 * 14 * a, rel=1e-12)
    assert plan.memory.activations == pytest.approx(9 * 4 * a + a, rel=1e-12)
    assert not base.memory.fits and plan.memory.fits
    assert plan.memory.weights == base.memory.weights and plan.memory.optimizer == base.memory.optimizer


@pytest.mark.parametrize("mode", ["stream", "cpu"])
def test_optimizer_state_in_host_memory(mode):
    """Shard S parameters (Adam's HBM seconds back to parameters): stream max(12 S / link, Adam on HBM); cpu
    2 S / link (bf16 gradients down) + 38 S / host DRAM (Adam) + 2 S / link (weights up). HBM keeps no state."""
    scn, plan, base = _plans(f"layout.offload.optimizer={mode}")
    dev = scn.topology.device
    hbm = dev.hbm_bandwidth * calibration.for_device(dev, "bf16").hbm
    shard = base.optimizer * hbm / ADAM_BYTES_PER_PARAM
    expected = (np.maximum(shard * 12 / C2C, base.optimizer) if mode == "stream"
                else shard * 2 / C2C + shard * ADAM_BYTES_PER_PARAM / dev.host_memory_bandwidth + shard * 2 / C2C)
    assert plan.optimizer == pytest.approx(expected, rel=1e-12)
    assert plan.memory.optimizer == 0.0 and base.memory.optimizer > 0
    assert dev.host_memory_bandwidth == 256e9


def test_shipped_scenario_fits_only_with_offload():
    on = simulate(SCENARIO)
    off = simulate(load_scenario(SCENARIO, ["layout.offload=null"]))
    pcie = simulate(load_scenario(SCENARIO, ["topology.device.host_link=64 GB/s"]))
    assert on.fits_in_memory and not off.fits_in_memory
    assert on.step_time_s == pytest.approx(off.step_time_s, rel=1e-12)  # C2C hides every copy
    exposed = pcie.extra["offload"]["exposed_s"]  # PCIe's 64 GB/s cannot hide 10 layers' copies: the step grows by them
    assert on.extra["offload"]["exposed_s"] == 0.0 and exposed > 0.02 * on.step_time_s
    # the report's exposure is the stages' mean; the step grows by the exposure on its critical path, which the
    # first and last stages (embedding, LM head) make differ from the mean by a fraction of a percent of the step
    assert pcie.step_time_s == pytest.approx(on.step_time_s + exposed, rel=5e-3)
    assert on.extra["offload"]["activations_layers"] == 10


@pytest.mark.parametrize("override, says", [
    ("layout.offload.activations_layers=15", "layout.offload.activations_layers: 15 layers offloaded, more than "
     "the 14 pipeline stage 0 holds"),
    ("layout.offload.activations_layers=-1", "layout.offload.activations_layers"),
    ("layout.offload.optimizer=disk", "layout.offload.optimizer"),
    ("topology.device.host_link=null", "layout.offload: needs topology.device.host_link"),
    ("topology.device.host_link=64", "topology.device.host_link: a bare number has no unit"),
])
def test_bad_offload_input_is_one_line_exit_2(tmp_path, override, says):
    assert_refused(SCENARIO, [override], says, tmp_path)


def test_serving_refuses_offload(tmp_path):
    assert_refused(ROOT / "scenarios" / "serve-llama3-70b-h100.yaml", ["layout.offload={activations_layers: 1}"],
                   "layout.offload: offload is simulated for training only", tmp_path)


def test_moe_layers_offload_too():
    """DeepSeek-V3 (MoE, DualPipe): the busiest EP rank's per-layer activations leave HBM alike; the report stays
    JSON."""
    import json

    path = ROOT / "scenarios" / "deepseek-v3-h800.yaml"
    base = simulate(path)
    on = simulate(load_scenario(path, ["layout.offload={activations_layers: 2, optimizer: stream}"]))
    assert on.memory_bytes["activations"] < base.memory_bytes["activations"]
    assert on.memory_bytes["optimizer"] == 0.0 < base.memory_bytes["optimizer"]
    assert isinstance(on.extra["offload"]["exposed_s"], float)
    json.dumps(on.to_dict())
