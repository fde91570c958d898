"""workload.attention selects the measured attention kernel: flash (the generation's newest: FA2 on A100, FA3 on
Hopper), flash2 (FlashAttention-2: A100 and Hopper, simulator/data/calibration.yaml `attention.fa2`), auto (the
default: resolved by generation in training, flash in serving). Closed forms:
the fused attention row's time is FLOP / (16-bit peak x eff_max x s'/(s' + s_half) x clock) with the FA2 curve's
parameters, s' = s/2 causal."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import yaml
from refusals import assert_refused
from rich.console import Console

from simulator import load_scenario, simulate
from simulator.cost import calibration, roofline
from simulator.output.render import print_table
from simulator.scenario.spec import FA2_MEASURED

ROOT = Path(__file__).resolve().parents[1]
LLAMA = ROOT / "scenarios" / "llama3-405b-h100.yaml"
GB200 = ROOT / "scenarios" / "llama3-405b-nvl72-64of72.yaml"


def fa2_yaml() -> dict:
    text = resources.files("simulator.data").joinpath("calibration.yaml").read_text()
    return yaml.safe_load(text)["generations"]["hopper"]["attention"]["fa2"]


def test_flash2_on_hopper_prices_attention_with_the_fa2_curves():
    scn = load_scenario(LLAMA)
    fa2, cal = fa2_yaml(), calibration.for_device(scn.topology.device, "bf16", "flash2")
    assert (cal.attention, cal.attention_bwd) == (fa2["fwd"]["eff_max"][128], fa2["bwd"]["eff_max"][128])
    assert cal.attention_half_seq == fa2["fwd"]["s_half"]
    s, flops, peak = 8192, 1e12, 989.4e12
    shape = np.array([[s, s, 128]], dtype=float)  # queries, keys, head width of a causal kernel
    for backward, block in ((False, fa2["fwd"]), (True, fa2["bwd"])):
        t = roofline.op_times(np.array([flops]), np.array([0.0]), shape, peak, 3.35e12, cal, np.array([True]),
                              backward=backward, peak16=peak, overhead=0.0)
        eff = block["eff_max"][128] * (s / 2) / (s / 2 + block["s_half"]) * cal.clock
        assert t[0] == pytest.approx(flops / (peak * eff), rel=1e-12)


def test_flash2_is_flash_on_a100_and_slower_than_fa3_on_h100():
    a100 = load_scenario(ROOT / "scenarios" / "gpt3-175b-selene.yaml").topology.device
    assert calibration.for_device(a100, "bf16", "flash2") == calibration.for_device(a100, "bf16", "flash")
    base = simulate(load_scenario(LLAMA)).step_time_s
    fa2 = simulate(load_scenario(LLAMA, ["workload.attention=flash2"])).step_time_s
    assert 1.02 < fa2 / base < 1.08  # attention is ~5% of a Llama 3 405B step at 8K; FA2 takes 1.6-2x FA3's time


def test_flash2_on_blackwell_is_refused(tmp_path):
    assert_refused(GB200, ["workload.attention=flash2"], "workload.attention: flash2: no FlashAttention-2 "
                   "measurement on blackwell", tmp_path)


def test_the_schema_refuses_flash2_exactly_where_no_curve_is_measured():
    """spec.FA2_MEASURED (the schema's check) names the generations whose calibration has FlashAttention-2 curves."""
    have = {g for g in calibration.GENERATIONS if calibration.attention_curves(g, "flash2") is not None}
    assert have == set(FA2_MEASURED)


def test_auto_trains_with_the_kernel_published_training_ran_on_the_generation():
    """workload.attention auto (the default) resolves in training by generation (spec.TRAINING_ATTENTION): Hopper
    at FlashAttention-2's rates, A100 unfused (Megatron-LM to 2022), Blackwell the newest kernel; a step with auto
    is the step with that kernel named, and on Hopper and A100 slower than with flash."""
    for path, named in ((LLAMA, "flash2"), (ROOT / "scenarios" / "gpt3-175b-selene.yaml", "unfused"), (GB200, "flash")):
        auto = load_scenario(path, ["workload.attention=auto"])
        assert auto.attention_kernel == named, path.name
        step = simulate(auto).step_time_s
        assert step == simulate(load_scenario(path, [f"workload.attention={named}"])).step_time_s, path.name
        flash = simulate(load_scenario(path, ["workload.attention=flash"])).step_time_s
        assert step > flash if named != "flash" else step == flash, path.name


def test_auto_serves_with_the_newest_kernel():
    """Serving engines run the generation's newest kernels: auto is flash there, on Hopper too."""
    scn = load_scenario(ROOT / "scenarios" / "serve-llama3-70b-h100.yaml", ["workload.attention=auto"])
    assert scn.attention_kernel == "flash"
    dev, dtype = scn.topology.device, scn.workload.dtype
    assert calibration.for_device(dev, dtype, scn.attention_kernel) == calibration.for_device(dev, dtype, "flash")


def test_the_report_says_which_kernel_auto_priced():
    """extra.attention names the kernel priced and whether auto chose it; the table shows a row only where auto chose
    an older kernel than the newest (flash), so a scenario that names its kernel prints as before."""
    def shown(report) -> str:
        console = Console(record=True, width=200)
        print_table(report, console)
        return console.export_text()

    auto = simulate(load_scenario(LLAMA, ["workload.attention=auto"]))
    named = simulate(load_scenario(LLAMA))
    assert auto.extra["attention"] == {"kernel": "flash2", "default": True, "fp8": False}
    assert named.extra["attention"] == {"kernel": "flash", "default": False, "fp8": False}
    assert "flash2 (workload.attention auto" in shown(auto) and "attention " not in shown(named)
