"""--cluster: sweep points sent to a Dask distributed scheduler give the local results."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.whatif.sweep import parse_grid, sweep

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

    from simulator.scenario.base import ScenarioError

    # the module, not simulator.whatif.sweep the function (simulator/__init__.py rebinds the name)
    monkeypatch.setattr(importlib.import_module("simulator.whatif.sweep"), "CONNECT_TIMEOUT", "1s")
    with pytest.raises(ScenarioError) as err:
        sweep(GPT3, parse_grid(["layout.pp=8"]), cluster="tcp://127.0.0.1:9")
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory):
    """A scheduler and one worker process whose working directory is an empty folder."""
    import os

    folder = tmp_path_factory.mktemp("worker-cwd")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        client.run(os.chdir, str(folder))
        assert set(client.run(os.getcwd).values()) == {str(folder)}
        yield cluster.scheduler_address


def test_workers_in_another_directory_get_the_scenario_not_its_path(elsewhere, monkeypatch):
    """A relative scenario path means nothing to a worker elsewhere (every point was 'file not found'):
    the worker receives the loaded scenario and gives the local results, load failures included."""
    monkeypatch.chdir(Path(GPT3).parents[1])
    grid = parse_grid(["layout.pp=4,8", "layout.tp=3,8"])
    sets = ["layout.schedule=1f1b", "layout.chunks=1"]
    remote = sweep("scenarios/gpt3-175b-selene.yaml", grid, sets, cluster=elsewhere)
    local = sweep("scenarios/gpt3-175b-selene.yaml", grid, sets, workers=1)
    assert [p.to_dict() for p in remote] == [p.to_dict() for p in local]
    assert {p.status for p in remote} == {"ok", "invalid", "out_of_memory"}


def test_data_files_beside_the_scenario_resolve_on_the_worker(elsewhere, monkeypatch, tmp_path):
    """A serving scenario whose arrivals come from a CSV beside it, given by a relative path."""
    (tmp_path / "requests.csv").write_text("arrival_s,prompt_len,output_len\n" + "".join(
        f"{0.05 * i},{128 + 64 * (i % 3)},{8 + i % 5}\n" for i in range(20)))
    (tmp_path / "serve.yaml").write_text(
        "model: llama3-8b\ntopology: {preset: dgx-h100-superpod, domains: 1}\n"
        "workload: {kind: serve, prompt_len: 128, output_len: 8, batch: 8, arrivals: {trace: requests.csv}}\n"
        "layout: {tp: 8}\n")
    monkeypatch.chdir(tmp_path)
    grid = parse_grid(["workload.batch=4,8"])
    remote = sweep("serve.yaml", grid, cluster=elsewhere)
    local = sweep("serve.yaml", grid, workers=1)
    assert [p.status for p in remote] == ["ok", "ok"]
    assert [p.to_dict() for p in remote] == [p.to_dict() for p in local]
    assert remote[0].report["completed"] == 20


def test_search_on_a_cluster_elsewhere_equals_local(elsewhere, monkeypatch):
    from simulator.whatif.search import search

    monkeypatch.chdir(Path(GPT3).parents[1])
    path = "simulator/data/validation/korthikanti-175b-seqsel.yaml"
    remote = search(path, gpus=[64], top=2, workers=1, cluster=elsewhere)
    local = search(path, gpus=[64], top=2, workers=1)
    assert [r.status for r in remote.refined] == ["ok"] * 3
    assert [(r.label, r.report) for r in remote.refined] == [(r.label, r.report) for r in local.refined]
