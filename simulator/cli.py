"""simrack command line: parse, call the API, render. A ScenarioError is one line and exit status 2."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import render
from .scenario import ScenarioError, load_scenario
from .simulate import run as run_scenario
from .trace import chrome_trace

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Simulate LLM parallelism layouts on GPU racks.")

SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a scenario field by its dotted path, e.g. --set layout.pp=16.")]


def fail(message: str) -> None:
    """Print one line to stderr and exit with status 2."""
    typer.echo(f"simrack: {message}", err=True)
    raise typer.Exit(2)


def write_all(outputs: dict[Optional[Path], str]) -> None:
    """Write every requested file, each atomically (temp file + rename), after all were rendered."""
    for path, text in outputs.items():
        if path is None:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the JSON report here")] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="write a CSV row here")] = None,
    trace_out: Annotated[Optional[Path], typer.Option("--trace", help="write a Chrome trace here")] = None,
    overrides: SetOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no table on the terminal")] = False,
) -> None:
    """Simulate one training step and print the report."""
    try:
        result = run_scenario(load_scenario(scenario, overrides or ()))
    except ScenarioError as err:
        fail(str(err))
    report = result.report
    write_all({
        json_out: render.to_json(report) if json_out else "",
        csv_out: render.to_csv([report]) if csv_out else "",
        trace_out: chrome_trace(result.plan, result.timeline) if trace_out else "",
    })
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
        result = run_scenario(scn)
    except ScenarioError as err:
        fail(str(err))
    typer.echo(result.plan.table.format_grid())
    if svg is not None:
        from .plots import save_pipeline  # matplotlib only when a picture is asked for

        lay = scn.layout
        title = (f"{scn.name}: {lay.schedule}, p={lay.pp}, m={scn.micro_batches}, "
                 f"bubble {100 * result.report.bubble_fraction:.1f}%")
        svg.parent.mkdir(parents=True, exist_ok=True)
        save_pipeline(result.plan, result.timeline, svg, title)


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="simrack")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
