"""Adam's moments in BF16 (layout.optimizer_moments: Megatron-Core's precision-aware optimizer, DeepSeek-V3's).

Closed forms: the optimizer state takes 4 (fp32 master) + 2 x 2 bytes a parameter instead of 4 + 2 x 4, sharded as
before; the optimizer step moves 30 bytes a parameter instead of 38 (each moment read and written at 2 bytes), so its
HBM seconds scale by 30 / 38; with the state offloaded (stream) the link carries 8 bytes a parameter, not 12.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from refusals import assert_refused

from simulator import load_scenario
from simulator.cost import calibration
from simulator.cost.memory import optimizer_bytes, state_bytes_per_param
from simulator.cost.pipeline import ADAM_BYTES_PER_PARAM, adam_bytes
from simulator.simulate import training_plan

ROOT = Path(__file__).resolve().parents[1]
DEEPSEEK = ROOT / "scenarios" / "deepseek-v3-h800.yaml"
OFFLOAD = ROOT / "scenarios" / "llama3-405b-gb200-offload.yaml"


def _plan(path: Path, *overrides: str):
    return training_plan(load_scenario(path, list(overrides)))[1]


@pytest.mark.parametrize("moments, state, step", [("fp32", 12.0, 38.0), ("bf16", 8.0, 30.0)])
def test_bytes_a_parameter(moments, state, step):
    lay = load_scenario(DEEPSEEK, [f"layout.optimizer_moments={moments}"]).layout
    assert optimizer_bytes(lay) == state and adam_bytes(lay) == step
    assert ADAM_BYTES_PER_PARAM == 38.0
    assert state_bytes_per_param(64, 1, False, optimizer=state)[2] == pytest.approx(state / 64, rel=1e-12)


def test_state_and_step_scale_on_deepseek_v3():
    """The same pipeline with FP32 and with BF16 moments: the busiest device's optimizer state 8 / 12, its optimizer
    step 30 / 38, weights and gradients unchanged."""
    fp32 = _plan(DEEPSEEK, "layout.optimizer_moments=fp32")
    bf16 = _plan(DEEPSEEK, "layout.optimizer_moments=bf16")
    assert bf16.memory.optimizer == pytest.approx(fp32.memory.optimizer * 8 / 12, rel=1e-12)
    assert bf16.memory.weights == fp32.memory.weights and bf16.memory.gradients == fp32.memory.gradients
    assert bf16.optimizer == pytest.approx(fp32.optimizer * 30 / 38, rel=1e-12)


def test_streamed_state_moves_its_own_bytes():
    """Offloaded and streamed through the GPU's Adam: max(S x state bytes / link, Adam on HBM), S the shard's
    parameters (Adam's HBM seconds x HBM rate / the dtype's step bytes): 12 bytes a parameter over the link with FP32
    moments, 8 with BF16."""
    for moments, state in (("fp32", 12.0), ("bf16", 8.0)):
        scn = load_scenario(OFFLOAD, [f"layout.optimizer_moments={moments}"])
        dev = scn.topology.device
        hbm = dev.hbm_bandwidth * calibration.for_device(dev, "bf16").hbm
        on = _plan(OFFLOAD, "layout.offload.optimizer=stream", f"layout.optimizer_moments={moments}")
        base = _plan(OFFLOAD, "layout.offload=null", f"layout.optimizer_moments={moments}")
        shard = base.optimizer * hbm / adam_bytes(scn.layout)
        assert on.optimizer == pytest.approx(np.maximum(shard * state / dev.host_link, base.optimizer), rel=1e-12)


def test_bad_value_is_one_line_exit_2(tmp_path):
    assert_refused(DEEPSEEK, ["layout.optimizer_moments=fp16"], "optimizer_moments", tmp_path)
