"""Activation and parameter memory per pipeline schedule, through `simulate`, against the reference.

Scenario: GPT-3 175B on 64 A100 (scenarios/gpt3-175b-selene.yaml: TP 8, PP 8, DP 1, sequence
parallelism, selective recompute, flash attention, one 2048-token sequence a micro-batch), with
the schedule, chunks and global batch overridden. The unit U is one micro-batch's activations of
one full pipeline stage, by hand: 96 / 8 = 12 layers x activation_bytes_per_layer (Korthikanti
Table 2 with TP and SP and selective recompute, s b h 34 / t = 102 MiB a layer). The last
stage adds its fp32 logits, L = tokens x 4 bytes x vocab / tp (head_activation_bytes).

The report's `memory_bytes` is the most loaded device's. Reference multiples (published.yaml:
bubble_deepseek_v3_table2, bubble_zero_bubble_qi2023, bubble_memory_interleaved_penalty,
deepseek_v3_dualpipe_memory): 1F1B p (first stage), GPipe m, interleaved p (1 + (p-1)/(p v)),
ZB-H1 1x 1F1B, ZB-H2 2x, ZB-V 1x, DualPipe p + 1 and 2x parameters.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator import load_scenario, simulate
from simulator.cost.memory import activation_bytes_per_layer, head_activation_bytes
from simulator.cost.params import parameter_counts

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "gpt3-175b-selene.yaml"
MIB = 2**20
P = 8  # pipeline stages of the scenario


def _run(schedule: str, chunks: int = 1, global_batch: int = 64):
    scn = load_scenario(SCENARIO, [f"layout.schedule={schedule}", f"layout.chunks={chunks}",
                                   f"workload.global_batch={global_batch}"])
    return scn, simulate(scn)


def _units(scn) -> tuple[float, float]:
    """(U, L): one micro-batch's activations of one stage, and the last stage's logits, bytes."""
    w, lay, model = scn.workload, scn.layout, scn.model
    assert (lay.pp, lay.tp, lay.dp, lay.cp) == (P, 8, 1, 1)
    tokens = w.micro_batch * w.seq_len
    per_layer = activation_bytes_per_layer(model, tokens=tokens, seq=w.seq_len, tp=lay.tp,
                                           sequence_parallel=lay.sequence_parallel,
                                           recompute=w.recompute, flash=w.attention == "flash")
    return model.layers / lay.pp * per_layer, head_activation_bytes(model, tokens=tokens, tp=lay.tp)


def test_unit_is_korthikanti_table2(reference):
    """U / 12 layers = Table 2's TP + SP + selective row (102 MiB, printed to whole MiB)."""
    scn, _ = _run("1f1b")
    u, logits = _units(scn)
    point = reference("korthikanti2022_activation_memory_per_layer")["test_points"]["tp_sp_selective_MiB"]
    assert u / 12 / MIB == pytest.approx(point, abs=0.5)
    assert logits == pytest.approx(2048 * 4 * 51200 / 8, rel=1e-12)


def test_1f1b_first_stage_holds_p():
    """1F1B: stage d holds p - d micro-batches; the first stage (p U, no logits) is the most
    loaded (the last holds U + L). Exact to 1e-9."""
    scn, rep = _run("1f1b")
    u, _ = _units(scn)
    assert rep.memory_bytes["activations"] == pytest.approx(P * u, rel=1e-9)


@pytest.mark.parametrize("m", [16, 64])
def test_gpipe_holds_m(m):
    """GPipe: every stage holds all m micro-batches; the last adds its logits: m U + L exactly,
    and m U (the reference multiple) within 1% (L / m U = 0.26% at m = 16)."""
    scn, rep = _run("gpipe", global_batch=m)
    u, logits = _units(scn)
    assert scn.micro_batches == m
    acts = rep.memory_bytes["activations"]
    assert acts == pytest.approx(m * u + logits, rel=1e-9)
    assert acts == pytest.approx(m * u, rel=1e-2)


@pytest.mark.parametrize("v", [2, 3, 4, 12])
def test_interleaved_megatron_penalty(reference, v):
    """Interleaved with v chunks of 96 / (8 v) layers: the first device holds v p + p - 1 chunks,
    p (1 + (p-1)/(p v)) U exactly (Megatron's penalty); p = 8, v = 12 is the published point
    1.0729 (printed to 4 decimals, so within 5e-5)."""
    scn, rep = _run("interleaved", chunks=v)
    u, _ = _units(scn)
    penalty = 1 + (P - 1) / (P * v)
    acts = rep.memory_bytes["activations"]
    assert acts == pytest.approx(P * penalty * u, rel=1e-9)
    assert acts / (P * u) == pytest.approx(penalty, rel=1e-12)
    for point in reference("bubble_memory_interleaved_penalty")["test_points"]:
        if (point["p"], point["v"]) == (P, v):
            assert acts / (P * u) == pytest.approx(point["penalty"], abs=5e-5)


@pytest.mark.parametrize("schedule, chunks", [("zb-h1", 1), ("zb-v", 2)])
def test_zero_bubble_h1_and_v_equal_1f1b(schedule, chunks):
    """ZB-H1 (W deferred) and ZB-V (2p half-stage chunks) hold p stages' worth on every device,
    and the device with the head (the last for ZB-H1; device 0 for the V, which ends there) adds
    its logits: p U + L exactly, 1x 1F1B's p U (reference) within 1% (the logits, 0.5% here)."""
    scn, rep = _run(schedule, chunks)
    u, logits = _units(scn)
    _, one = _run("1f1b")
    acts = rep.memory_bytes["activations"]
    assert acts == pytest.approx(P * u + logits, rel=1e-9)
    assert acts / one.memory_bytes["activations"] == pytest.approx(1.0, rel=1e-2)


def test_zero_bubble_h2_about_twice_1f1b():
    """ZB-H2 holds 2p - 1 micro-batches on every device ((2p-1) U + L on the last): "about 2x"
    1F1B, i.e. (2p-1)/p = 1.875 at p = 8, within 1%, and never above 2x."""
    scn, rep = _run("zb-h2")
    u, logits = _units(scn)
    _, one = _run("1f1b")
    acts = rep.memory_bytes["activations"]
    assert acts == pytest.approx((2 * P - 1) * u + logits, rel=1e-9)
    ratio = acts / one.memory_bytes["activations"]
    assert ratio == pytest.approx((2 * P - 1) / P, rel=1e-2)
    assert ratio < 2.0


def test_dualpipe_p_plus_one_and_twice_the_parameters():
    """DualPipe: PP + 1 chunks in flight, each a full stage of one of the two pipeline copies, on
    devices 0 and p-1, which also hold a head: (p+1) U + L exactly, (p+1)/p x 1F1B within 1%.
    Parameters: device 0 holds stage 0 of one copy and stage p-1 of the other, 2 x 12 layers +
    one embedding (tied with the head it also holds) + final norm, over TP 8, at 2 bytes each;
    1F1B's most loaded (first) stage 12 layers + embedding. Exact to 1e-9; the ratio is 2x within
    3% (the one embedding copy keeps it at 1.97)."""
    scn, rep = _run("dualpipe", 2)
    u, logits = _units(scn)
    _, one = _run("1f1b")
    acts = rep.memory_bytes["activations"]
    assert acts == pytest.approx((P + 1) * u + logits, rel=1e-9)
    assert acts / one.memory_bytes["activations"] == pytest.approx((P + 1) / P, rel=1e-2)
    c = parameter_counts(scn.model)
    per_stage = scn.model.layers / P * c["layer"]
    tp = scn.layout.tp
    assert rep.memory_bytes["weights"] == pytest.approx(
        2.0 * (2 * per_stage + c["embedding"] + c["final_norm"]) / tp, rel=1e-9)
    assert one.memory_bytes["weights"] == pytest.approx(2.0 * (per_stage + c["embedding"]) / tp, rel=1e-9)
    ratio = rep.memory_bytes["weights"] / one.memory_bytes["weights"]
    assert ratio == pytest.approx(2.0, rel=3e-2)
    assert rep.memory_bytes["gradients"] / one.memory_bytes["gradients"] == pytest.approx(ratio, rel=1e-12)
    assert rep.memory_bytes["optimizer"] / one.memory_bytes["optimizer"] == pytest.approx(ratio, rel=1e-12)


def test_fits_in_memory_flips_with_the_schedule():
    """64 micro-batches on 80 GB A100s, ~55 GB of weights, gradients and Adam state a device:
    1F1B (8 U ~ 10 GB of activations) fits; GPipe (64 U ~ 78 GB) and DualPipe (2x the state)
    overflow, named as a result with the categories that overflow; GPipe at 16 micro-batches
    fits again."""
    _, one = _run("1f1b")
    _, gpipe = _run("gpipe")
    _, dual = _run("dualpipe", 2)
    _, small = _run("gpipe", global_batch=16)
    assert one.fits_in_memory and small.fits_in_memory
    assert not gpipe.fits_in_memory and not dual.fits_in_memory
    for rep in (one, gpipe, dual, small):
        mem = rep.memory_bytes
        assert mem["capacity"] == pytest.approx(80e9, rel=0.08)  # 80 GB or 80 GiB
        assert rep.fits_in_memory == (mem["total"] <= mem["capacity"])
    assert gpipe.memory_overflow[0] == "activations"
    assert dual.memory_overflow and one.memory_overflow == []
