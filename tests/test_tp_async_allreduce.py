"""The backward's tensor-parallel all-reduce beside the weight-gradient GEMM, or after it (layout.tp_async_allreduce).

Without sequence parallelism a layer's backward all-reduces two input gradients over the TP group (the QKV's and
FC1's). Megatron-LM since September 2021 runs each beside its weight-gradient GEMM: hidden up to that GEMM's time, the
GEMM slowed by the SM share s of the communication kernel (x s / (1 - s) while they overlap). Megatron-LM before ran
it after both GEMMs on the compute stream: exposed whole, nothing slowed.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from refusals import assert_refused

from simulator import load_scenario, simulate
from simulator.cost.pipeline import PASS_FIELDS, pass_table

ROOT = Path(__file__).resolve().parents[1]
VALIDATION = ROOT / "simulator" / "data" / "validation"
MS = 1e-3
CAL = SimpleNamespace(comm_sms=0.15)
COL = {name: i for i, name in enumerate(PASS_FIELDS)}


def _backward(tp_async: bool, *, w=20 * MS, ar=2 * MS, split=False):
    """(B seconds, B's exposed TP seconds) of one layer: 40 ms of input-gradient work, `w` of weight gradients."""
    sums = np.zeros((1, 3, 8))
    sums[0, 1] = [20 * MS, 40 * MS, w, 2 * MS, 4 * MS, 16 * MS, 32 * MS, w]
    one = np.array
    out = pass_table(sums, (one([ar]), one([ar / 2]), one([ar / 2])), (one([0.0]), one([0.0])), one([0]),
                     one([False]), one([split]), CAL, tp=one([8]), tp_async=tp_async)[0, 1]
    return out[COL["b"]], out[COL["b_tp"]]


def test_async_hides_the_all_reduces_behind_the_weight_gradients():
    """4 ms of all-reduces beside 20 ms of weight-gradient GEMMs: none exposed, the GEMMs slowed 4 s / (1 - s)."""
    b, b_tp = _backward(True)
    assert b_tp == pytest.approx(0.0, abs=1e-15)
    assert b == pytest.approx(40 * MS + 4 * MS * 0.15 / 0.85, rel=1e-12)


def test_async_hides_no_more_than_the_weight_gradients_last():
    b, b_tp = _backward(True, w=1 * MS)
    assert b_tp == pytest.approx(3 * MS, rel=1e-12)
    assert b == pytest.approx(40 * MS + 3 * MS + 1 * MS * 0.15 / 0.85, rel=1e-12)


@pytest.mark.parametrize("w", [1 * MS, 20 * MS])
def test_without_async_the_all_reduces_are_exposed_whole(w):
    b, b_tp = _backward(False, w=w)
    assert b_tp == pytest.approx(4 * MS, rel=1e-12)
    assert b == pytest.approx(44 * MS, rel=1e-12)


def test_a_split_backward_exposes_them_either_way():
    """Zero-bubble schedules run W apart, so there is no GEMM to hide behind, async or not."""
    assert _backward(True, split=True) == pytest.approx(_backward(False, split=True), rel=1e-12)


def _step(name: str, *overrides: str) -> float:
    return simulate(load_scenario(VALIDATION / name, list(overrides))).step_time_s


def test_the_2021_runs_pay_it_and_nothing_without_tensor_parallelism_changes():
    """Megatron 2021's 18.4B row (TP8, no pipeline) is slower with its all-reduces exposed; the 1.7B row (TP1)
    is the same to the bit."""
    slow = _step("megatron2021-t1-18.4b.yaml")
    fast = _step("megatron2021-t1-18.4b.yaml", "layout.tp_async_allreduce=true")
    assert slow > fast * 1.02
    assert _step("megatron2021-t1-1.7b.yaml") == _step("megatron2021-t1-1.7b.yaml", "layout.tp_async_allreduce=true")


def test_each_development_case_states_the_megatron_of_its_time():
    """The SC21 paper's PTD-P rows ran Megatron-LM before the asynchronous all-reduce; Korthikanti et al. 2022's
    after it (the default)."""
    for path in VALIDATION.glob("megatron2021-t*.yaml"):
        if "zero3" not in path.name:
            assert load_scenario(path).layout.tp_async_allreduce is False, path.name
    for path in VALIDATION.glob("korthikanti-*.yaml"):
        assert load_scenario(path).layout.tp_async_allreduce is True, path.name


def test_with_userbuffers_overlap_it_is_refused(tmp_path):
    """tp_overlap overlaps the backward's collectives itself: false beside it is a one-line error, exit 2."""
    assert_refused(ROOT / "scenarios" / "llama3-405b-h100.yaml", ["layout.sequence_parallel=true",
                   "layout.tp_overlap=true", "layout.tp_async_allreduce=false"], "tp_async_allreduce", tmp_path)
