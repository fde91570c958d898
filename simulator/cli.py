"""simrack command line: parse, call the API, render. A ScenarioError is one line and exit status 2;
a broken invariant (a bug in simrack) one line and exit status 3."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._version import __version__
from .invariants import InvariantError
from .output import render
from .output.commit import OutputError, commit, is_stdout
from .scenario.base import ScenarioError
from .scenario.files import one_line
from .scenario.limits import MAX_DRAWN_SLICES, MAX_REFINED
from .scenario.loader import load_scenario
from .simulate import run as run_scenario

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Simulate LLM parallelism layouts on GPU racks.")

def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"simrack {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print simrack's version and exit.")] = False,
) -> None:
    """Simulate LLM parallelism layouts on GPU racks."""


SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a scenario field by its dotted path, e.g. --set layout.pp=16.")]


def _trace(result) -> str:
    from .output.trace import chrome_trace  # the trace writer only when a trace is asked for

    return chrome_trace(result.plan, result.timeline)


def fail(message: str) -> None:
    """Print one line to stderr and exit with status 2."""
    typer.echo(f"simrack: {one_line(message)}", err=True)
    raise typer.Exit(2)


def bug(err: InvariantError) -> None:
    """A broken invariant: one line naming the scenario and the rule, exit status 3 (simrack's fault)."""
    typer.echo(f"simrack: bug, please report it with the scenario: {one_line(str(err))}", err=True)
    raise typer.Exit(3)


def to_stdout(*paths: Optional[Path]) -> bool:
    """Whether an output is '-' (standard output; then no table goes there); two of them is an error."""
    if sum(map(is_stdout, paths)) > 1:
        fail("only one of --json, --csv, --trace may be '-' (standard output)")
    return any(map(is_stdout, paths))


def write_all(outputs) -> None:
    """Write every requested output, all or none (simulator.output.commit): (option, path, text or a
    function drawing into a path) each, None paths skipped, '-' to standard output last; a failure
    is one line and exit status 2, nothing left behind."""
    try:
        commit(outputs, stdout=lambda text: typer.echo(text, nl=False))
    except (OutputError, ValueError) as err:  # ValueError: a plot that cannot be drawn (its format, no point)
        fail(str(err))


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the JSON report here (-: stdout)")] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="write a CSV row here (-: stdout)")] = None,
    trace_out: Annotated[Optional[Path], typer.Option("--trace", help="write a Chrome trace here (-: stdout)")] = None,
    overrides: SetOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no table on the terminal")] = False,
) -> None:
    """Simulate one training step and print the report."""
    quiet = to_stdout(json_out, csv_out, trace_out) or quiet
    try:
        result = run_scenario(load_scenario(scenario, overrides or ()))
    except ScenarioError as err:
        fail(str(err))
    except InvariantError as err:
        bug(err)
    report = result.report
    write_all([("--json", json_out, render.to_json(report) if json_out else ""),
               ("--csv", csv_out, render.to_csv([report]) if csv_out else ""),
               ("--trace", trace_out, _trace(result) if trace_out else "")])
    if not quiet:
        render.print_table(report)


@app.command()
def schedule(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML")],
    svg: Annotated[Optional[Path], typer.Option(
        "--svg", help="draw the simulated schedule (time x stage, coloured by phase); .svg, .png or .pdf")] = None,
    overrides: SetOption = None,
) -> None:
    """Print the scenario's pipeline schedule as a step x stage grid, and optionally draw it."""
    try:
        scn = load_scenario(scenario, overrides or ())
        if scn.workload.kind != "train":
            fail(f"{scenario}: workload.kind: {scn.workload.kind} has no pipeline schedule; use simrack run")
        result = run_scenario(scn)
    except ScenarioError as err:
        fail(str(err))
    except InvariantError as err:
        bug(err)
    if svg is not None and len(result.timeline.start) > MAX_DRAWN_SLICES:
        fail(f"--svg {svg}: {len(result.timeline.start):,} slices to draw, over simrack's limit of "
             f"{MAX_DRAWN_SLICES:,} for a picture (minutes and gigabytes to draw); draw fewer micro-batches")
    typer.echo(result.plan.table.format_grid())
    if svg is not None:
        from .output.plots import save_pipeline  # matplotlib only when a picture is asked for

        lay = scn.layout
        title = (f"{scn.name}: {lay.schedule}, p={lay.pp}, m={scn.micro_batches}, "
                 f"bubble {100 * result.report.bubble_fraction:.1f}%")
        write_all([("--svg", svg, lambda out: save_pipeline(result.plan, result.timeline, out, title))])


# --- what-if commands: sweep, search, check, validate (docs/whatif.md) ---------------------------

JsonOut = Annotated[Optional[Path], typer.Option("--json", help="write the results as JSON here (-: stdout)")]
CsvOut = Annotated[Optional[Path], typer.Option("--csv", help="write the results as CSV here (-: stdout)")]
Workers = Annotated[Optional[int], typer.Option(
    "--workers", "-j", help="local processes (default: all cores; at most 4 a core)")]


def _workers(workers: Optional[int]) -> Optional[int]:
    """-j as given, unless below 1 or above 4 processes a core (each holds a simulator: more only
    add memory); one line and exit status 2 then."""
    from .whatif.sweep import default_workers

    most = 4 * default_workers()
    if workers is not None and not 1 <= workers <= most:
        fail(f"--workers {workers}: expected 1 to {most} (4 processes a core)")
    return workers
Cluster = Annotated[Optional[str], typer.Option(
    "--cluster", help="send the simulations to a Dask distributed scheduler, e.g. tcp://host:8786")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no table on the terminal")]
ClusterTimeout = Annotated[float, typer.Option(
    "--cluster-timeout", min=0.0, help="seconds to wait while the --cluster scheduler is unreachable or has no "
    "worker before giving up with the points done")]


def _progress(n: int, quiet: bool) -> bool:
    """A progress bar (transient, on stderr) on long runs, when stderr is a terminal; -q only drops
    the table."""
    return n >= 8 and sys.stderr.isatty()


@app.command()
def sweep(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML")],
    grid: Annotated[list[str], typer.Option("--grid", help="FIELD=V1,V2,... ; repeat for a cross product")],
    overrides: SetOption = None,
    json_out: JsonOut = None,
    csv_out: CsvOut = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="draw the Pareto front (.png/.svg)")] = None,
    workers: Workers = None,
    cluster: Cluster = None,
    cluster_timeout: ClusterTimeout = 60.0,
    quiet: Quiet = False,
) -> None:
    """Simulate every point of the cross product of --grid fields; failures are reported per point
    (exit status 1 when no point simulates and fits in memory, or when the cluster went away: the
    points done are still written)."""
    from .output import whatif_tables as views
    from .whatif.sweep import ClusterLost, parse_grid
    from .whatif.sweep import sweep as run_sweep

    quiet = to_stdout(json_out, csv_out) or quiet
    lost = None
    try:
        fields = parse_grid(grid)  # every field known, the points within the limit: before any work
        load_scenario(scenario, overrides or ())  # the base must load (points may still be invalid)
        n = math.prod(len(values) for _, values in fields)
        try:
            points = run_sweep(scenario, fields, overrides or (), workers=_workers(workers), cluster=cluster,
                               progress=_progress(n, quiet), patience=cluster_timeout)
        except ClusterLost as err:  # written as far as it got, then exit status 1
            points, lost = err.points, str(err)
        none_ok = not any(p.status == "ok" for p in points)
    except (ScenarioError, ValueError) as err:
        fail(str(err))
    write_all([("--json", json_out, views.sweep_json(points) if json_out else ""),
               ("--csv", csv_out, views.sweep_csv(points) if csv_out else ""),
               ("--plot", None if none_ok else plot, lambda out: _sweep_plot(points, fields, out))])
    if not quiet:
        bad = sum(p.status != "ok" for p in points)
        out = views.console()
        out.print(views.sweep_table(points, f"simrack sweep: {scenario.name}, {len(points)} points"
                                    + (f", {bad} failed or out of memory" if bad else "")))
        for line in views.sweep_notes(points):
            out.print(line, highlight=False, soft_wrap=True)
    if lost:
        typer.echo(f"simrack: {lost}", err=True)
        raise typer.Exit(1)
    if none_ok:
        typer.echo(f"simrack: none of the {len(points)} points simulated and fit in memory"
                   + (f"; {plot} not drawn" if plot else ""), err=True)
        raise typer.Exit(1)


def _sweep_plot(points, fields, out: Path) -> None:
    from .output.pareto import plot_front

    good = [p for p in points if p.status == "ok"]
    if not good:
        raise ValueError("--plot: no point simulated successfully")
    label = lambda p: " ".join(f"{k.split('.')[-1]}={v}" for k, v in p.values.items())  # noqa: E731
    if "ttft_s" in good[0].report:  # serving: throughput per GPU against latency per user
        pts = [{"x": p.report["tpot_s"]["p50"], "y": p.report["output_tokens_per_s"] / p.report["gpus"],
                "label": label(p)} for p in good]
        plot_front(pts, "x", "y", out, title="serving: throughput per GPU against latency per user",
                   x_label="TPOT p50 (s)", y_label="output tokens/s per GPU", maximize_y=True)
        return
    by_gpus = len({p.report["gpus"] for p in good}) > 1
    pts = [{"x": float(p.report["gpus"] if by_gpus else p.report["cost_per_million_tokens"]),
            "y": p.report["step_time_s"], "label": label(p)} for p in good]
    chosen = min(pts, key=lambda q: q["y"])
    plot_front(pts, "x", "y", out, title=f"training: step time against {'GPUs' if by_gpus else 'cost'}",
               x_label="GPUs" if by_gpus else "$ per million tokens", y_label="step time (s)", chosen=chosen,
               log_x=by_gpus, log_y=True)


@app.command()
def search(
    scenario: Annotated[Path, typer.Argument(help="training scenario YAML (model, workload, topology)")],
    gpus: Annotated[Optional[str], typer.Option(
        "--gpus", help="GPU count, or several: 1024,2048,4096 (default: the scenario's)")] = None,
    objective: Annotated[str, typer.Option(
        "--objective", help="tokens_per_s | cost_per_million_tokens | step_time")] = "tokens_per_s",
    constraint: Annotated[Optional[list[str]], typer.Option(
        "--constraint", help="KEY<VALUE in SI units, e.g. memory_bytes.total<70e9 or mfu>0.4")] = None,
    top: Annotated[int, typer.Option("--top", help="layouts re-simulated with the engine")] = 10,
    overrides: SetOption = None,
    json_out: JsonOut = None,
    csv_out: CsvOut = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="draw the Pareto front (.png/.svg)")] = None,
    workers: Workers = None,
    cluster: Cluster = None,
    quiet: Quiet = False,
) -> None:
    """Rank every valid layout analytically, re-simulate the best with the engine, say why the others lost
    (exit status 1 when no layout fits in memory and meets the constraints)."""
    from .output import whatif_tables as views
    from .whatif.search import parse_constraint
    from .whatif.search import search as run_search

    quiet = to_stdout(json_out, csv_out) or quiet
    try:
        counts = [int(g) for g in gpus.split(",")] if gpus else None
    except ValueError:
        fail(f"--gpus {gpus!r}: expected a number or a comma-separated list of numbers")
    if not 1 <= top <= MAX_REFINED:
        fail(f"--top {top}: expected 1 to {MAX_REFINED:,} (each layout is simulated again with the engine)")
    try:
        cons = [parse_constraint(c) for c in constraint or ()]
        if counts is None:
            counts = [load_scenario(scenario, overrides or ()).gpus]
        res = run_search(scenario, gpus=counts, objective=objective, constraints=cons, top=top,
                         scenario_overrides=overrides or (), workers=_workers(workers), cluster=cluster,
                         progress=sys.stderr.isatty())
    except (ScenarioError, ValueError) as err:
        fail(str(err))
    write_all([("--json", json_out, views.search_json(res) if json_out else ""),
               ("--csv", csv_out, views.search_csv(res) if csv_out else ""),
               ("--plot", plot if res.front else None, lambda out: _search_plot(res, out))])
    if not quiet:
        out = views.console()
        out.print(views.search_table(res, f"simrack search: {scenario.name}, objective {objective}"))
        for line in ["reproduce with:", *views.search_commands(res, scenario), *views.search_summary(res)]:
            out.print(line, highlight=False, soft_wrap=True)
    if res.best is None:
        typer.echo("simrack: no layout fits in memory and meets the constraints"
                   + (f"; {plot} not drawn" if plot and not res.front else ""), err=True)
        raise typer.Exit(1)


def _search_plot(res, out: Path) -> None:
    from .output.pareto import plot_front

    if not res.front:
        raise ValueError("--plot: no layout fits in memory and meets the constraints")
    by_gpus = len(res.gpus) > 1
    key = "gpus" if by_gpus else "cost_per_million_tokens"
    chosen = None
    if res.best is not None:
        chosen = {key: float(res.best.row["gpus"] if by_gpus else res.best.report["cost_per_million_tokens"]),
                  "step_time_s": res.best.report["step_time_s"], "label": res.best.label}
    points = res.front + [dict(q, label="") for q in res.cloud]  # labelled first: they win ties
    plot_front(points, key, "step_time_s", out, title="training search: analytic Pareto front",
               x_label="GPUs" if by_gpus else "$ per million tokens", y_label="step time (s)", chosen=chosen,
               log_x=by_gpus, log_y=True)


@app.command()
def check(
    scenarios: Annotated[list[Path], typer.Argument(help="scenario YAML files")],
    baseline: Annotated[Path, typer.Option("--baseline", help="baseline JSON (written by --update)")],
    tolerance: Annotated[str, typer.Option("--tolerance", help="allowed worsening, e.g. 2% or 0.02")] = "2%",
    update: Annotated[bool, typer.Option("--update", help="rewrite the baseline with the current figures")] = False,
    overrides: SetOption = None,
    workers: Workers = None,
) -> None:
    """Exit 1 with one line per scenario whose throughput, step time, latency or memory got worse."""
    from .output import baseline as chk
    from .whatif.sweep import Job, evaluate, run_jobs

    try:
        tol = chk.parse_tolerance(tolerance)
        old = {} if update and not baseline.exists() else chk.load_baseline(baseline)
        todo = [Job(i, str(p), tuple(overrides or ()), {}) for i, p in enumerate(scenarios)]
        points = run_jobs(todo, evaluate, workers=_workers(workers) if len(todo) > 1 else 1)
    except ValueError as err:
        fail(str(err))
    for p in points:
        if p.report is None:
            fail(p.error or f"{scenarios[p.index]}: could not be simulated")
    keys = [chk.baseline_key(p, baseline) for p in scenarios]
    if update:
        write_all([("--baseline", baseline, chk.updated(old, {k: chk.entry(p.report) for k, p in zip(keys, points)}))])
        typer.echo(f"simrack: wrote {baseline} ({len(points)} scenario{'s' * (len(points) != 1)})")
        return
    findings = [chk.compare(k, chk.figures(p.report), (old.get(k) or {}).get("metrics"), tol)
                for k, p in zip(keys, points)]
    for f in findings:
        if f.missing:
            typer.echo(f"simrack: {f.key}: not in {baseline} (add it with --update)", err=True)
        for line in f.improvements:
            typer.echo(f"simrack: {f.key}: improved: {line}", err=True)
    bad = [f for f in findings if f.regressions]
    for f in bad:
        typer.echo(f.line())
    if bad:
        raise typer.Exit(1)
    typer.echo(f"simrack: {len(findings)} scenario{'s' * (len(findings) != 1)} within {100 * tol:g}% of {baseline}")


@app.command()
def validate(
    folder: Annotated[Optional[Path], typer.Argument(help="folder with cases.yml (default: the shipped cases)")] = None,
    json_out: JsonOut = None,
    csv_out: CsvOut = None,
    workers: Workers = None,
    quiet: Quiet = False,
) -> None:
    """Simulate the validation cases; print published, simulated and error per case, and the mean and max
    error per group (generation x kind) and per model family of the training cases (dense, MoE), in-sample and
    out-of-sample apart (exit status 1 when a case fails to simulate)."""
    from .output import validation as val
    from .output import whatif_tables as views
    from .whatif.sweep import Job, evaluate, run_jobs

    quiet = to_stdout(json_out, csv_out) or quiet
    if folder is not None and not folder.is_dir():
        fail(f"{folder}: {'not a folder' if folder.exists() else 'not found'} (validate reads cases.yml and the "
             "scenarios beside it)")
    try:
        cases = val.load_cases(folder or val.DEFAULT_DIR)
        points = run_jobs([Job(i, str(c.scenario), (), {}) for i, c in enumerate(cases)], evaluate,
                          workers=_workers(workers), progress=_progress(len(cases), quiet))
    except (ValueError, OSError) as err:
        fail(str(err))
    outcomes = [val.outcome(c, p) for c, p in zip(cases, points)]
    mean, worst = val.summary(outcomes)
    doc = val.document(outcomes)
    write_all([("--json", json_out, (json.dumps({**doc, "simrack_version": __version__}, indent=2, sort_keys=True)
                                     + "\n") if json_out else ""),
               ("--csv", csv_out, views.validate_csv(doc["cases"]) if csv_out else "")])
    if not quiet:
        out = views.console()
        out.print(views.validate_table(outcomes, mean, worst))
        out.print(views.validate_groups_table(val.group_stats(outcomes), val.sample_stats(outcomes)))
        out.print(views.validate_groups_table(val.family_stats(outcomes), title="training errors by model family"))
        lines = views.validate_not_expressible(outcomes)
        if lines:
            out.print("not expressible yet (simulated and listed, not counted):", highlight=False)
            for line in lines:
                out.print(line, highlight=False, soft_wrap=True)
    failed = [o for o in outcomes if o.simulated is None]
    for o in failed:
        typer.echo(f"simrack: {o.case.scenario.name}: {o.problem}", err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def schema(
    out: Annotated[Optional[Path], typer.Option("--out", help="write the schema here instead of stdout")] = None,
) -> None:
    """Write the JSON Schema of the scenario format, for editors (yaml-language-server)."""
    from .scenario.json_schema import scenario_schema

    text = json.dumps(scenario_schema(), indent=2, ensure_ascii=False) + "\n"
    if out is None:
        typer.echo(text, nl=False)
        return
    write_all([("--out", out, text)])


@app.command()
def presets(
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the catalogue as JSON (SI units) here "
                                                     "(-: stdout)")] = None,
) -> None:
    """List the model, topology and device presets a scenario can name, with their aliases and figures."""
    from .output import presets as catalogue

    if json_out is not None:
        rows = {"models": catalogue.model_rows(), "topologies": catalogue.topology_rows(),
                "devices": catalogue.device_rows()}
        write_all([("--json", json_out, json.dumps(rows, indent=2) + "\n")])
        if to_stdout(json_out):
            return
    render.print_tables(catalogue.tables())


def main() -> None:  # pragma: no cover - console entry
    from .entry import main as entry_main  # signal handlers, then this app

    entry_main()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
