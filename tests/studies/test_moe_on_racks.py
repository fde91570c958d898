"""scenarios/studies/moe-on-racks: the README's all-to-all figures, cross-rack penalties and the DeepSeek
comparison against closed forms, from the committed results (results.csv, nic.csv) and one fresh step.

All-to-all of one micro-batch on one stage and one direction (DualPipe chunk), uniform routing:
    moe_layers x copies over the link x hidden x 7 bytes / (link bandwidth x calibrated fraction) x busiest/mean
(dispatch FP8 + combine BF16 forward, both BF16 backward: 1 + 2 + 2 + 2 bytes an element; a token makes
top_k = 8 copies, of which (n - n_d)/n leave an EP group of n ranks with n_d in its domain.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from study_tables import read_rows

from simulator import load_scenario, run
from simulator.cost import calibration

STUDY = Path(__file__).resolve().parents[2] / "scenarios" / "studies" / "moe-on-racks" / "study.py"
spec = importlib.util.spec_from_file_location("moe_on_racks_study", STUDY)
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)

T, K, H, BYTES = 4096, 8, 7168, 1 + 2 + 2 + 2
MOE_LAYERS_PER_CHUNK = 58 / 4  # DeepSeek-V3's 58 MoE layers over 4 stages, each direction (chunk) all of them
NVLINK, NIC = 900e9, {"400 Gb/s": 50e9, "800 Gb/s": 100e9}  # bytes/s a GPU (the GB200 NVL72 preset)


def rows(name: str) -> list[dict]:
    return read_rows(STUDY.parent / name)


def pick(**kw) -> dict:
    return next(r for r in rows("results.csv") if all(r[k] == v for k, v in kw.items()))


CAL = calibration.for_device(load_scenario(STUDY.parent / "gb200.yaml").topology.device)


def closed_form_ms(copies: float, bandwidth: float, fraction: float, imbalance: float) -> float:
    return 1e3 * MOE_LAYERS_PER_CHUNK * copies * H * BYTES / (bandwidth * fraction) * imbalance


def test_in_rack_all_to_all_is_the_nvlink_closed_form():
    """EP 72 in one rack: 71/72 of a token's copies go over NVLink."""
    r = pick(system="GB200", ep=72, routing="uniform", balance="static", dispatch="flat")
    expect = closed_form_ms(T * K * 71 / 72, NVLINK, CAL.nvlink, r["imbalance"])
    assert r["a2a_ms_per_direction"] == pytest.approx(expect, rel=0.01)


@pytest.mark.parametrize("nic", list(NIC))
def test_cross_rack_flat_all_to_all_is_the_nic_closed_form(nic):
    """EP 144 over two racks, flat: half of a token's copies leave the rack through the GPU's NIC; the
    penalty against one rack is the ratio of the two closed forms (9.3x at 400 Gb/s, 4.7x at 800 Gb/s)."""
    table = {(r["ep"], r["dispatch"]): r for r in rows("nic.csv") if r["nic"] == nic}
    imb = pick(system="GB200", ep=144, routing="uniform", balance="static", dispatch="flat")["imbalance"]
    flat = closed_form_ms(T * K / 2, NIC[nic], CAL.scaleout, imb)
    assert table[(144, "flat")]["a2a_ms_per_direction"] == pytest.approx(flat, rel=0.01)
    imb72 = pick(system="GB200", ep=72, routing="uniform", balance="static", dispatch="flat")["imbalance"]
    one_rack = closed_form_ms(T * K * 71 / 72, NVLINK, CAL.nvlink, imb72)
    assert table[(144, "flat")]["a2a_over_one_rack"] == pytest.approx(flat / one_rack, rel=0.02)
    # de-duplicated: a token crosses once per remote rack it needs, far fewer bytes than flat
    assert table[(144, "dedup")]["a2a_ms_per_direction"] < 0.3 * table[(144, "flat")]["a2a_ms_per_direction"]


def test_report_adds_both_dualpipe_directions():
    """The report's all_to_all_s_per_micro_batch sums a device's two DualPipe chunks: twice the per-direction
    figure the study prints (one fresh step, EP 72)."""
    scn = load_scenario(STUDY.parent / "gb200.yaml")
    res = run(scn)
    assert scn.layout.schedule == "dualpipe" and res.plan.exposed_ep.shape[1] == 2
    both = res.report.extra["ep"]["all_to_all_s_per_micro_batch"]
    assert study.a2a_per_direction(res.plan) == pytest.approx(both / 2, rel=1e-12)
    r = pick(system="GB200", ep=72, routing="uniform", balance="eplb", dispatch="dedup")
    assert r["a2a_ms_both_directions"] == pytest.approx(2 * r["a2a_ms_per_direction"], rel=1e-9)


def test_deepseek_against_its_pretraining_figure():
    """180K H800 GPU-hours a trillion tokens = 1e12 / (180e3 x 3600) = 1,543 tokens/s a GPU; simrack's
    tokens/s a GPU is batch x sequence / step / GPUs (15,360 x 4,096 on 2,048 H800)."""
    cases = yaml.safe_load(study.PUBLISHED.read_text())["cases"]
    case = next(c for c in cases if c["id"] == "deepseek_v3_training_config_and_cost")
    assert case["reported"]["gpu_hours_per_trillion_tokens"] == 180000
    ref = study.deepseek_reference(rows("results.csv"))
    assert ref["published_tokens_per_s_per_gpu"] == pytest.approx(1543.2, abs=0.1)
    sim = pick(system="H800", ep=64, routing="uniform", balance="static", dispatch="dedup")
    assert sim["tokens_per_s_per_gpu"] == pytest.approx(15360 * 4096 / sim["step_s"] / 2048, rel=1e-9)
    assert ref["simrack_over_published"] == pytest.approx(sim["tokens_per_s_per_gpu"] / 1543.2, rel=1e-4)


def test_static_placement_imbalance_from_redundant_slots():
    """256 experts + 32 redundant slots over 72 GPUs: 4 slots a GPU, 3.56 experts' worth of load on average,
    so a copy-blind placement leaves the busiest GPU at least 4 / 3.56 = 1.125x the mean."""
    r = pick(system="GB200", ep=72, routing="uniform", balance="static", dispatch="dedup")
    assert r["imbalance"] >= 4 / (256 / 72) - 1e-9
    assert r["imbalance"] == pytest.approx(4 / (256 / 72), rel=0.03)
