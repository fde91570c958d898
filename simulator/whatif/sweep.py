"""Sweeps: the cross product of scenario fields, each point simulated, failures kept per point.

`sweep(path, grid)` turns `--grid layout.tp=1,2,4,8 --grid layout.pp=1,2,4` into one override list per
point (first grid field outermost), loads and simulates each point with `simulate()` and returns one
`Point` per combination, in grid order. A point that cannot be loaded or scheduled is `invalid` with
the one-line ScenarioError; one that does not fit in memory is `out_of_memory` and keeps its report;
anything else that goes wrong is `error` with the exception's text. Nothing a point does stops the
sweep.

Execution: in-process for a few points; a process pool over all cores for more (`workers`); or an
existing Dask distributed cluster (`cluster="tcp://host:8786"`), whose workers need simrack installed.
A cluster receives each point's scenario loaded here (presets and topology files expanded, validated),
not its path, so workers in any directory simulate it; only data files the scenario names (an
arrivals trace, routing counts) are read there, at their absolute path. Every executor calls the same
`evaluate`, so results are identical.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import yaml

from .. import signals
from ..scenario.base import ScenarioError
from ..scenario.files import one_line, quote
from ..scenario.limits import MAX_SWEEP_POINTS
from ..scenario.loader import check_field, parse_value
from ..scenario.overrides import as_scenario
from ..scenario.spec import Scenario
from ..scenario.units import fmt_bytes
from ..simulate import simulate
from .workers import worker_pool

STATUSES = ("ok", "out_of_memory", "invalid", "error")
CONNECT_TIMEOUT = "10s"  # to reach a --cluster scheduler
CLUSTER_PATIENCE_S = 60.0
"""Seconds a --cluster sweep waits while its scheduler is unreachable or has no worker, then gives up."""
POLL_S = 0.2  # how often a cluster sweep looks for results and at the cluster's health
FETCH_S = 1.0  # the longest a cluster sweep waits to fetch one result before looking at the cluster again


@dataclass(frozen=True)
class Job:
    """One point to simulate: the scenario file (or a Scenario, sent to the workers with the job; `path`
    is then its source), its overrides, and its place in the grid."""

    index: int
    path: str
    overrides: tuple[str, ...]
    values: dict
    scenario: object = None  # a simulator.scenario.spec.Scenario, or None to read `path`


@dataclass(frozen=True)
class Point:
    """The outcome of one sweep point."""

    index: int
    values: dict  # swept field -> value
    status: str  # ok | out_of_memory | invalid | error
    error: str | None
    report: dict | None  # Report.to_dict() (training or serving), None when it could not run

    def to_dict(self) -> dict:
        return asdict(self)


def parse_grid(specs: Sequence[str]) -> list[tuple[str, list]]:
    """["layout.tp=1,2,4"] -> [("layout.tp", [1, 2, 4])]; values are YAML scalars. ValueError (one
    line) on a malformed spec or a field given twice."""
    grid, seen = [], set()
    for spec in specs:
        field, sep, rest = spec.partition("=")
        field = field.strip()
        if not sep or not field or not rest.strip():
            raise ValueError(f"--grid {quote(spec)}: expected FIELD=V1,V2,... (e.g. layout.tp=1,2,4,8)")
        if field in seen:
            raise ValueError(f"--grid {quote(field)}: given twice")
        seen.add(field)
        values = [_scalar(v, spec) for v in _split(rest)]
        grid.append((field, values))
    check_grid(grid)
    return grid


def check_grid(grid: list[tuple[str, list]]) -> None:
    """ValueError (one line) unless every field of the grid names a field of the schema and the
    cross product has at most MAX_SWEEP_POINTS points: refused once, up front, not point by point."""
    for field, values in grid:
        problem = check_field(field)
        if problem:
            raise ValueError(f"--grid {problem}")
        if not values:
            raise ValueError(f"--grid {quote(field)}: no values")
    points = math.prod(len(values) for _, values in grid)
    if points > MAX_SWEEP_POINTS:
        sizes = " x ".join(str(len(v)) for _, v in grid)
        raise ValueError(f"--grid: {sizes} = {points:,} points, over simrack's limit of {MAX_SWEEP_POINTS:,} "
                         "(each is a simulation and a row of every output)")


def _split(text: str) -> list[str]:
    """Split on commas outside brackets, so list values ([7,8,8]) stay whole."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur]


def _scalar(text: str, spec: str):
    text = text.strip()
    if not text:
        raise ValueError(f"--grid {quote(spec)}: empty value")
    try:
        return parse_value(text)
    except ScenarioError as err:
        raise ValueError(f"--grid {quote(spec)}: {quote(text)} is not a YAML value ({err})") from None


def _text(value) -> str:
    """A value as --set writes it (YAML flow style for lists)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def jobs(path, grid: list[tuple[str, list]], overrides: Sequence[str] = ()) -> list[Job]:
    """One Job per point of the cross product (first field outermost); `path` may be a Scenario."""

    scn = path if isinstance(path, Scenario) else None
    where = scn.source if scn is not None else str(path)
    fields = [f for f, _ in grid]
    out = []
    for i, combo in enumerate(itertools.product(*(v for _, v in grid))):
        sets = tuple(overrides) + tuple(f"{f}={_text(v)}" for f, v in zip(fields, combo))
        out.append(Job(i, where, sets, dict(zip(fields, combo)), scn))
    return out


def evaluate(job: Job) -> Point:
    """Load and simulate one point; every failure becomes the point's status, never an exception."""

    try:
        report = simulate(as_scenario(job.path if job.scenario is None else job.scenario, job.overrides))
    except ScenarioError as err:
        return Point(job.index, job.values, "invalid", _as_given(str(err), job), None)
    except Exception as err:  # noqa: BLE001 - a point's failure is its result
        text = " ".join(f"{type(err).__name__}: {err}".split())
        return Point(job.index, job.values, "error", _as_given(text, job), None)
    data = report.to_dict()
    if data.get("fits_in_memory", True) is False:
        return Point(job.index, job.values, "out_of_memory", out_of_memory_text(data), data)
    return Point(job.index, job.values, "ok", None, data)


def _as_given(text: str, job: Job) -> str:
    """A message with a sent scenario's absolute path written as the job gave it."""
    return text if job.scenario is None else text.replace(job.scenario.source, job.path)


def portable(job: Job) -> Job | Point:
    """The job with its scenario loaded here, to send instead of its path (source made absolute, for
    the data files it names), or its `invalid` or `error` Point when it does not load."""

    try:
        scn = as_scenario(job.path if job.scenario is None else job.scenario, job.overrides)
    except ScenarioError as err:
        return Point(job.index, job.values, "invalid", str(err), None)
    except Exception as err:  # noqa: BLE001 - as evaluate
        return Point(job.index, job.values, "error", " ".join(f"{type(err).__name__}: {err}".split()), None)
    source = scn.source if job.scenario is not None else str(Path(job.path).resolve())
    return replace(job, overrides=(), scenario=scn.model_copy(update={"source": source}))


def out_of_memory_text(report: dict) -> str:
    """One line: 'out of memory: 93.1 GiB of 80.0 GiB (largest: activations, optimizer)'."""

    mem = report.get("memory_bytes", {})
    largest = ", ".join(report.get("memory_overflow", [])[:2])
    return (f"out of memory: {fmt_bytes(mem.get('total', 0.0))} of {fmt_bytes(mem.get('capacity', 0.0))}"
            + (f" (largest: {largest})" if largest else ""))


def default_workers() -> int:
    """Every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def run_jobs(items: Sequence, fn: Callable = evaluate, *, workers: int | None = None,
             cluster: str | None = None, progress: bool = False, label: str = "simulating",
             patience: float | None = None) -> list:
    """fn(item) for every item, in order: on a Dask cluster, a local process pool, or in-process.
    `patience`: seconds a cluster may stay unreachable or without workers (CLUSTER_PATIENCE_S)."""
    items = list(items)
    with Bar(len(items) if progress else 0, label) as bar:
        if cluster:
            return _on_cluster(items, fn, cluster, bar, CLUSTER_PATIENCE_S if patience is None else patience)
        workers = default_workers() if workers is None else workers
        if workers <= 1 or len(items) < 2:
            return [bar.tick(fn(x)) for x in items]
        return _in_pool(items, fn, workers, bar)


def _in_pool(items: list, fn: Callable, workers: int, bar: Bar) -> list:
    """fn over items in a pool of forked processes (workers.worker_pool: on any exception here, an
    interrupt included, the workers are killed at once rather than left to finish or orphaned)."""
    ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
    with worker_pool(min(workers, len(items)), ctx) as pool:
        with signals.held():  # the workers fork here and start with the signals held
            results = pool.map(fn, items, chunksize=max(1, len(items) // (16 * workers)))
        return [bar.tick(r) for r in results]


class Bar:
    """A rich progress bar on stderr (transient), or nothing when total is 0."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.progress = total, label, None

    def __enter__(self) -> Bar:
        if self.total:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.progress = Progress("{task.description}", BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self.progress.__enter__()
            self.task = self.progress.add_task(self.label, total=self.total)
        return self

    def tick(self, result):
        if self.progress is not None:
            self.progress.advance(self.task)
        return result

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


class ClusterLost(ScenarioError):
    """A --cluster run gave up: its scheduler went away or kept no worker for `patience` seconds.
    `points` holds every point, those not simulated as `error` saying so; `str()` is one line."""

    def __init__(self, message: str, points: list) -> None:
        super().__init__(message)
        self.points = points


def _on_cluster(items: list, fn: Callable, address: str, bar: Bar, patience: float) -> list:
    """Send the items to an existing Dask distributed scheduler; results in item order. Gives up
    (ClusterLost, with what is done) when the scheduler is unreachable or has had no worker for
    `patience` seconds; a point whose worker died is an `error` point."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ScenarioError("--cluster needs Dask distributed: pip install 'simrack[cluster]'") from None
    with _quiet_dask():
        return _with_client(Client, as_completed, items, fn, address, bar, patience)


@contextmanager
def _quiet_dask():
    """Dask's (and asyncio's) loggers silenced inside the block: a lost scheduler is reported in one
    line, not by the client's reconnection tracebacks."""
    roots = ("distributed", "tornado", "asyncio")
    names = [n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in roots]
    loggers = [logging.getLogger(n) for n in (*roots, *names)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        if not signals.installed():  # the Python API gets its logging back; the program stays quiet to the end
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _with_client(Client, as_completed, items: list, fn: Callable, address: str, bar: Bar,  # noqa: N803
                 patience: float) -> list:
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as err:
        raise ScenarioError(one_line(f"--cluster {address}: cannot reach the scheduler ({err})")) from None
    try:
        out = [portable(x) for x in items] if fn is evaluate else list(items)  # send scenarios, not paths
        send = [i for i, x in enumerate(out) if fn is not evaluate or isinstance(x, Job)]
        for _ in range(len(out) - len(send)):  # points that did not load: done here
            bar.tick(None)
        futures = client.map(fn, [out[i] for i in send], pure=False)
        position = {f.key: i for i, f in zip(send, futures)}
        left = set(position.values())
        problem = _collect(client, as_completed(futures), position, out, left, fn, address, bar, patience)
        if problem is None:
            return out
        for i in sorted(left):
            job = items[i]
            out[i] = Point(job.index, job.values, "error", f"not simulated: {problem}", None) \
                if isinstance(job, Job) else None
        done = len(out) - len(left)
        raise ClusterLost(one_line(f"{problem}; {done} of {len(out)} points done"), out)
    finally:
        try:
            client.close(timeout=5)
        except Exception:  # noqa: BLE001 - a client whose scheduler is gone may fail to close
            pass


def _collect(client, stream, position: dict, out: list, left: set, fn: Callable, address: str, bar: Bar,
             patience: float) -> str | None:
    """Store results as they complete; the reason to give up, or None when every item is done. A
    result that cannot be fetched (its worker died with it) goes back to be computed again; the
    cluster's health decides how long that may take."""
    trouble_since = None
    while left:
        progressed = False
        for future in stream.next_batch(block=False):
            i = position[future.key]
            if future.status in ("finished", "error"):
                try:
                    err = future.exception(timeout=FETCH_S)
                    value = future.result(timeout=FETCH_S) if err is None else None
                except (Exception, asyncio.CancelledError):  # noqa: BLE001 - not fetched: computed again
                    stream.add(future)
                    continue
                if err is None:
                    out[i] = bar.tick(value)
                elif fn is evaluate:  # evaluate never raises: the worker died under it
                    job = out[i]
                    out[i] = bar.tick(Point(job.index, job.values, "error",
                                            one_line(f"--cluster {address}: {type(err).__name__}: {err}"), None))
                else:
                    raise err  # the item's own exception, as in-process
            elif future.status == "lost":  # its worker died: computed again once a worker is there
                stream.add(future)
                continue
            else:  # cancelled: the scheduler forgot it (it went away, or restarted)
                gone = "went away" if client.status != "running" else "dropped the work"
                return f"--cluster {address}: the scheduler {gone} ({future.status})"
            left.discard(i)
            progressed = True
        if progressed:
            trouble_since = None
            continue
        problem = _health(client, address)
        if problem is None:
            trouble_since = None
        elif trouble_since is None:
            trouble_since = time.monotonic()
        elif time.monotonic() - trouble_since > patience:
            return f"{problem} for {patience:g} s"
        time.sleep(POLL_S)
    return None


def _health(client, address: str) -> str | None:
    """What keeps the cluster from working, or None."""
    if client.status != "running":
        return f"--cluster {address}: the scheduler has been unreachable"
    try:
        workers = client.scheduler_info().get("workers", {})
    except Exception:  # noqa: BLE001 - whatever the client raises, the scheduler is not answering
        return f"--cluster {address}: the scheduler has been unreachable"
    return None if workers else f"--cluster {address}: the scheduler has had no worker"


def sweep(path, grid: list[tuple[str, list]], overrides: Sequence[str] = (), *, workers: int | None = None,
          cluster: str | None = None, progress: bool = False, patience: float | None = None) -> list[Point]:
    """Simulate every point of `grid` over the scenario at `path`, or a Scenario (see the module
    docstring); ValueError up front for a field the schema lacks or too many points; ClusterLost
    (with every point) when a cluster goes away."""
    check_grid(grid)
    todo = jobs(path, grid, overrides)
    if not cluster and (workers is None and len(todo) <= 2):
        workers = 1
    return run_jobs(todo, evaluate, workers=workers, cluster=cluster, progress=progress, patience=patience)
