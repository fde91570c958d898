"""Tensor-parallel communication behind the GEMMs (layout.tp_overlap) against its closed form.

With sequence parallelism a layer's forward runs 2 all-gathers and 2 reduce-scatters over the TP
group. Chunked overlap (Transformer Engine's userbuffers) splits each GEMM in tp pieces, each piece's
collective behind the next piece's GEMM: the exposed time is max(comm / tp, comm - GEMM), and the
GEMMs that run beside the rest are slowed by the SM share s of the communication kernels,
overlapped x s / (1 - s).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from simulator.cost.pipeline import PASS_FIELDS, pass_table

MS = 1e-3
CAL = SimpleNamespace(comm_sms=0.15)
COL = {name: i for i, name in enumerate(PASS_FIELDS)}


def _layer(gemm_f, *, tp=4, sp=True, overlap=True, ag=1 * MS, rs=1 * MS, ar=2 * MS):
    """Seconds of one layer's passes: 20 ms forward (GEMMs gemm_f of it), 40 ms backward, 20 ms W."""
    sums = np.zeros((1, 3, 8))
    sums[0, 1] = [20 * MS, 40 * MS, 20 * MS, 2 * MS, 4 * MS, gemm_f, 2 * gemm_f, 20 * MS]
    one = np.array
    out = pass_table(sums, (one([ar]), one([ag]), one([rs])), (one([0.0]), one([0.0])), one([0]), one([sp]),
                     one([True]), CAL, tp_overlap=overlap, tp=one([tp]))
    return out[0, 1]


@pytest.mark.parametrize("gemm_f, exposed", [(16 * MS, 1 * MS), (2 * MS, 2 * MS), (0.0, 4 * MS)])
def test_forward_exposes_one_chunk_or_what_the_gemms_cannot_hide(gemm_f, exposed):
    """4 ms of collectives at TP 4: one chunk (1 ms) behind ample GEMMs, 4 - 2 ms behind 2 ms of them."""
    layer = _layer(gemm_f)
    hidden = 4 * MS - exposed
    assert layer[COL["f_tp"]] == pytest.approx(exposed, rel=1e-12)
    slowed = hidden * CAL.comm_sms / (1 - CAL.comm_sms)
    assert layer[COL["f"]] == pytest.approx(20 * MS + exposed + slowed, rel=1e-12)


def test_without_overlap_every_forward_collective_is_exposed():
    layer = _layer(16 * MS, overlap=False)
    assert layer[COL["f_tp"]] == pytest.approx(4 * MS, rel=1e-12)
    assert layer[COL["f"]] == pytest.approx(24 * MS, rel=1e-12)


def test_overlap_needs_sequence_parallelism():
    """Without SP the all-reduces stay exposed, overlap or not (Transformer Engine's userbuffers
    overlap the SP all-gather and reduce-scatter only)."""
    np.testing.assert_array_equal(_layer(16 * MS, sp=False), _layer(16 * MS, sp=False, overlap=False))


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_backward_exposes_one_chunk_behind_ample_gemms(tp):
    """Backward: 2 all-gathers and 2 reduce-scatters (4 ms) behind the input-gradient GEMMs."""
    layer = _layer(16 * MS, tp=tp)
    assert layer[COL["b_tp"]] == pytest.approx(4 * MS / tp, rel=1e-12)
    assert layer[COL["b_tp"]] < _layer(16 * MS, tp=tp, overlap=False)[COL["b_tp"]]
