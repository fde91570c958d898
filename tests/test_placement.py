"""Placement: named mesh axes, innermost first, laid over devices numbered domain-major.

With order (tp, cp, ep, dp, pp) and sizes T, C, E, D, P, rank r has coordinates
tp = r % T, cp = r // T % C, ep = r // (T C) % E, dp = r // (T C E) % D, pp = r // (T C E D)
(nanotron's ParallelContext layout); the expected groups below are built from that arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest

from simulator.cost.placement import place, split_layers


def _coords(r, sizes):
    """Coordinates of rank r along sizes (innermost first)."""
    out = []
    for s in sizes:
        out.append(r % s)
        r //= s
    return tuple(out)


@pytest.fixture
def tp8_pp4(make_scenario):
    """64 A100 in 8 HGX domains: tp 8, dp 2, pp 4."""
    return place(make_scenario(layout={"tp": 8, "pp": 4}))


def test_sizes_and_grid(tp8_pp4):
    pl = tp8_pp4
    assert pl.sizes == {"tp": 8, "cp": 1, "ep": 1, "dp": 2, "pp": 4}
    assert sorted(pl.grid.ravel()) == list(range(64))


def test_tp_groups_are_consecutive_devices_in_one_domain(tp8_pp4):
    tp = tp8_pp4.groups("tp")
    np.testing.assert_array_equal(tp, np.arange(64).reshape(8, 8))
    assert (tp // 8 == tp[:, :1] // 8).all()  # every TP group inside one 8-GPU HGX domain


def test_pp_groups_stride_tp_times_dp(tp8_pp4):
    pp = tp8_pp4.groups("pp")
    assert pp.shape == (16, 4)
    expected = {tuple(first + 16 * np.arange(4)) for first in range(16)}  # stride tp*dp = 16
    assert {tuple(row) for row in pp} == expected
    np.testing.assert_array_equal(tp8_pp4.pipeline(0), [0, 16, 32, 48])
    np.testing.assert_array_equal(tp8_pp4.pipeline(21), [5, 21, 37, 53])


def test_dp_groups_stride_tp(tp8_pp4):
    dp = tp8_pp4.groups("dp")
    assert {tuple(row) for row in dp} == {(r, r + 8) for r in range(64) if r % 16 < 8}


def test_group_of(tp8_pp4):
    np.testing.assert_array_equal(tp8_pp4.group_of("tp", 13), np.arange(8, 16))
    np.testing.assert_array_equal(tp8_pp4.group_of("dp", 13), [5, 13])


def test_weight_replicas_share_tp_and_pp_coordinates(make_scenario):
    """tp 8, cp 2, dp 2, pp 2: replicas of a device are the cp x dp ranks with its tp and pp."""
    pl = place(make_scenario(layout={"tp": 8, "cp": 2, "pp": 2}))
    sizes = (8, 2, 1, 2, 2)  # tp, cp, ep, dp, pp
    assert pl.sizes == dict(zip(("tp", "cp", "ep", "dp", "pp"), sizes))
    devices = np.array([0, 5, 13, 22, 37, 63])
    replicas = pl.weight_replicas(devices)
    assert replicas.shape == (len(devices), 4)
    for dev, row in zip(devices, replicas):
        tp, _, _, _, pp = _coords(int(dev), sizes)
        expected = {r for r in range(64) if _coords(r, sizes)[0] == tp and _coords(r, sizes)[4] == pp}
        assert set(row.tolist()) == expected
        assert dev in row


def test_order_puts_first_axis_innermost(make_scenario):
    """order (dp, tp, cp, ep, pp): the dp ranks are consecutive and TP groups stride dp."""
    pl = place(make_scenario(layout={"tp": 8, "pp": 4, "order": ["dp", "tp", "cp", "ep", "pp"]}))
    np.testing.assert_array_equal(pl.group_of("dp", 0), [0, 1])
    np.testing.assert_array_equal(pl.group_of("tp", 0), np.arange(0, 16, 2))
    np.testing.assert_array_equal(pl.pipeline(0), [0, 16, 32, 48])


def test_stage_layers_even_split(make_scenario):
    np.testing.assert_array_equal(place(make_scenario(layout={"tp": 8, "pp": 4})).stage_layers,
                                  [24] * 4)
    inter = make_scenario(layout={"tp": 8, "pp": 4, "schedule": "interleaved", "chunks": 3})
    np.testing.assert_array_equal(place(inter).stage_layers, [8] * 12)  # 96 / (4 x 3)


def test_stage_layers_explicit(make_scenario):
    given = [20, 26, 26, 24]
    pl = place(make_scenario(layout={"tp": 8, "pp": 4, "stage_layers": given}))
    np.testing.assert_array_equal(pl.stage_layers, given)
    assert pl.stage_layers.sum() == 96


def test_split_layers():
    np.testing.assert_array_equal(split_layers(126, 7), [18] * 7)
    np.testing.assert_array_equal(split_layers(10, 3, (3, 3, 4)), [3, 3, 4])
