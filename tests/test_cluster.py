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


# --- a cluster that goes away: the sweep ends with the points done, one line, no traceback ---------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _limit() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def _wait_for_results(address: str, at_least: int, timeout: float = 120.0) -> None:
    """Wait until the scheduler holds `at_least` finished tasks (a loaded machine starts slowly)."""
    import time

    def finished(dask_scheduler) -> int:  # a closure: sent to the scheduler by value
        return sum(ts.state == "memory" for ts in dask_scheduler.tasks.values())

    with distributed.Client(address, timeout="30s") as client:
        end = time.monotonic() + timeout
        while client.run_on_scheduler(finished) < at_least:
            assert time.monotonic() < end, "the sweep's first points never finished"
            time.sleep(0.2)


@pytest.fixture
def killable_cluster():
    """A scheduler and one worker, each its own process (group), to be killed by the test."""
    import subprocess
    import sys
    import time

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=_limit)
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", str(port), "--dashboard-address", ":0", "--no-show"], **quiet)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                               "--no-nanny", "--no-dashboard"], **quiet)
    with distributed.Client(address, timeout="30s") as client:  # up, with its worker
        client.wait_for_workers(1, timeout=30)
    time.sleep(0.2)
    yield address, scheduler, worker
    for proc in (scheduler, worker):
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.mark.parametrize("victim", ["worker", "scheduler"])
def test_sweep_on_a_cluster_that_goes_away(killable_cluster, tmp_path, victim):
    """Killing every worker used to make the sweep wait forever, killing the scheduler an 80-line
    traceback: now --cluster-timeout seconds without a scheduler or a worker end it with exit 1, one
    line naming the cluster, and the points done written."""
    import json
    import signal
    import subprocess
    import sys

    address, scheduler, worker = killable_cluster
    grid = ["--grid", "layout.pp=1,2,4,8", "--grid", "layout.tp=1,2,4,8", "--grid",
            "workload.recompute=none,selective,full", "--grid", "workload.global_batch=512,1024", "--grid",
            "options.seed=" + ",".join(map(str, range(16)))]  # 1,536 points: far more than the wait
    out = tmp_path / "s.json"
    sweep_proc = subprocess.Popen([sys.executable, "-m", "simulator", "sweep", GPT3, *grid, "--cluster", address,
                                   "--cluster-timeout", "2", "-q", "--json", str(out)], cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_limit)
    _wait_for_results(address, at_least=100)  # connected, the first points simulated and fetched
    assert sweep_proc.poll() is None, sweep_proc.communicate()
    (worker if victim == "worker" else scheduler).send_signal(signal.SIGKILL)
    _, err = sweep_proc.communicate(timeout=60)
    assert sweep_proc.returncode == 1, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith(f"simrack: --cluster {address}: "), err
    points = json.loads(out.read_text())["points"]
    assert len(points) == 1536 and [p["index"] for p in points] == list(range(1536))
    lost = [p for p in points if p["status"] == "error"]
    assert lost and all(p["error"].startswith("not simulated: --cluster") for p in lost)
    assert len(lost) < 1536 or victim == "scheduler", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]
