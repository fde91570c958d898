"""--cluster: sweep points sent to a Dask distributed scheduler give the local results."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.sweep import parse_grid, sweep

distributed = pytest.importorskip("distributed")
GPT3 = str(Path(__file__).resolve().parents[1] / "scenarios" / "gpt3-175b-selene.yaml")


def test_cluster_results_equal_local():
    grid = parse_grid(["layout.pp=4,8", "layout.tp=3,8"])
    sets = ["layout.schedule=1f1b", "layout.chunks=1"]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        remote = sweep(GPT3, grid, sets, cluster=cluster.scheduler_address)
    local = sweep(GPT3, grid, sets, workers=1)
    assert [p.to_dict() for p in remote] == [p.to_dict() for p in local]
    assert {p.status for p in remote} == {"ok", "invalid", "out_of_memory"}


def test_unreachable_cluster_is_one_line(monkeypatch):
    import importlib

    from simulator.scenario import ScenarioError

    # the module, not simulator.sweep the function (simulator/__init__.py rebinds the name)
    monkeypatch.setattr(importlib.import_module("simulator.sweep"), "CONNECT_TIMEOUT", "1s")
    with pytest.raises(ScenarioError) as err:
        sweep(GPT3, parse_grid(["layout.pp=8"]), cluster="tcp://127.0.0.1:9")
    assert "\n" not in str(err.value)
