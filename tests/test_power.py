"""Power caps and clocks: the clock rule against the one capped board measured, compute-bound rates following the
clock and HBM-bound ones not, the shipped 500 W scenario, and bad input as one line with exit status 2."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from refusals import assert_refused

from simulator import load_scenario, simulate
from simulator.cost import calibration, roofline
from simulator.data import path as data_path
from simulator.scenario.hardware import DeviceSpec
from simulator.scenario.loader import device_preset

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "llama3-70b-h100-500w.yaml"
H100 = dict(name="H100-SXM", peak_flops={"bf16": 989.4e12}, hbm=80 * 2**30, hbm_bandwidth=3.35e12, tdp=700.0,
            boost_clock=1830e6)


def _entry(entry_id):
    doc = yaml.safe_load(data_path("kernels.yaml").read_text())
    return next(e for e in doc["entries"] if e["id"] == entry_id), doc["data_sheet"]


def test_power_rule_is_a_cube_root():
    assert calibration.power_clock(500.0, 700.0) == pytest.approx((5 / 7) ** (1 / 3), rel=1e-15)
    assert calibration.power_clock(700.0, 700.0) == 1.0


def test_power_rule_predicts_the_h100_pcie_clock_at_its_350_w_cap():
    """f ~ (P / SMs)^(1/3) from the H800's 1,600 MHz at 700 W on 132 SMs (FlashMLA, the hopper anchor) to the
    H100 PCIe's 350 W on 114 SMs: 1,333 MHz against 1,395 measured (-4.4%), within 5%."""
    flashmla, sheet = _entry("flashmla_h800_clock_throttle")
    pcie, _ = _entry("chipsandcheese_h100pcie_clock")
    anchor = flashmla["measured"][0]["value"]
    measured = pcie["measured"][0]["value"]
    assert "114 SMs" in pcie["config"]["gpu"] and "350 W" in pcie["config"]["gpu"]
    predicted = anchor * calibration.power_clock(350.0 / 114, 700.0 / sheet["H100-SXM5-80GB"]["sms"])
    assert predicted == pytest.approx(1333, abs=1)
    assert abs(predicted / measured - 1) < 0.05


def test_compute_bound_rates_follow_the_clock_hbm_bound_rates_do_not():
    """Ideal device: a large GEMM takes FLOP / (peak * s), a streaming kernel bytes / HBM at any cap."""
    s = (500 / 700) ** (1 / 3)
    full = DeviceSpec(**H100, efficiency="ideal")
    capped = DeviceSpec(**H100, efficiency="ideal", power_limit=500.0)
    flops, nbytes = np.array([2.0 * 8192**3, 0.0]), np.array([3 * 2.0 * 8192**2, 1e9])
    shapes = np.array([[8192, 8192, 8192], [0, 0, 0]], float)
    times = [roofline.op_times(flops, nbytes, shapes, 989.4e12, 3.35e12, calibration.for_device(d))
             for d in (full, capped)]
    assert times[0][0] == pytest.approx(flops[0] / 989.4e12, rel=1e-9)
    assert times[1][0] == pytest.approx(flops[0] / (989.4e12 * s), rel=1e-9)
    assert times[1][1] == times[0][1] == pytest.approx(1e9 / 3.35e12, rel=1e-9)


def test_explicit_clock_replaces_the_sustained_one():
    """clock / boost_clock is the compute fraction, whatever the generation's measured sustained clock; block-scaled
    FP8 (fitted at the sustained clock already) moves by the same factor."""
    dev = DeviceSpec(**H100, clock=1400e6)
    assert calibration.for_device(dev, "bf16").clock == pytest.approx(1400 / 1830, rel=1e-12)
    block = calibration.for_device(dev, "fp8-block").clock
    assert block == pytest.approx(1400 / 1830 / calibration.sustained_clock("hopper"), rel=1e-12)
    assert calibration.for_device(DeviceSpec(**H100), "bf16") == calibration.fitted("hopper", "bf16")


def _preset(name, **extra):
    """A devices.yaml entry as a DeviceSpec, with `extra` fields."""
    return DeviceSpec.model_validate({**device_preset(name), **extra})


def test_gb200_carries_b200s_sustained_clock_to_its_board_power():
    """B200's sustained clock was measured at its 1,000 W; GB200 is the same die at 1,200 W: its compute-bound rates
    are B200's sustained rate x (1200/1000)^(1/3) on GB200's sheet, i.e. 0.956 of the sheet-based rate; capped at
    1,000 W (power_limit) it sustains exactly B200's rate. Boards at the measured boards' power take 1."""
    b200, gb200 = _preset("b200"), _preset("gb200")
    sustained = calibration.for_device(b200).clock * b200.peak("bf16")
    assert calibration.for_device(gb200).clock * gb200.peak("bf16") == pytest.approx(
        sustained * (1200 / 1000) ** (1 / 3), rel=1e-12)
    assert calibration.board_scale(gb200, "blackwell") == pytest.approx(1.2 ** (1 / 3) * 2.25 / 2.5, rel=1e-12)
    capped = _preset("gb200", power_limit=1000.0)
    assert calibration.for_device(capped).clock * capped.peak("bf16") == pytest.approx(sustained, rel=1e-12)
    for name in ("a100-80gb", "h100-sxm", "h200", "h800", "b200"):
        device = _preset(name)
        assert calibration.board_scale(device, device.arch) == 1.0
    clocked = _preset("gb200", clock=1.6e9, boost_clock=2.0e9)  # an explicit clock replaces both factors
    assert calibration.for_device(clocked).clock == pytest.approx(0.8, rel=1e-12)


def test_shipped_500_w_scenario_is_slower_by_at_most_the_clock():
    capped = simulate(SCENARIO)
    full = simulate(load_scenario(SCENARIO, ["topology.device.power_limit=null"]))
    s = (500 / 700) ** (1 / 3)
    ratio = capped.step_time_s / full.step_time_s
    assert 1.0 < ratio < 1 / s
    assert ratio > 1 + 0.8 * (1 / s - 1)  # compute-bound: most of the clock's loss shows
    assert capped.memory_bytes == full.memory_bytes


@pytest.mark.parametrize("override, says", [
    ("topology.device.power_limit=800 W", "topology.device.power_limit: 800 W is over the tdp of H100-SXM (700 W)"),
    ("topology.device.power_limit=300 W", "topology.device.power_limit: 300 W is under half the tdp"),
    ("topology.device.power_limit=500", "topology.device.power_limit: a bare number has no unit"),
    ("topology.device.power_limit=.inf", "topology.device.power_limit"),
    ("topology.device.clock=1500 MHz", "topology.device.clock: give power_limit or clock, not both"),
    ("topology.device.tdp=null", "topology.device.power_limit: needs the device's tdp"),
])
def test_bad_power_input_is_one_line_exit_2(tmp_path, override, says):
    assert_refused(SCENARIO, [override], says, tmp_path)


def test_clock_over_the_boost_clock_is_refused(tmp_path):
    assert_refused(SCENARIO, ["topology.device.power_limit=null", "topology.device.clock=2 GHz"],
                   "topology.device.clock: 2 GHz is over the boost_clock of H100-SXM (1.83 GHz)", tmp_path)
