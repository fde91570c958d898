"""The `simrack` program: signal handlers first, then the command line (simulator.cli).

SIGINT and SIGTERM are handled before the heavy imports (numpy, pydantic, simpy: imported inside
main, the one other place than cli with function-level imports), so an interrupt at any point,
start-up included, ends with one line and status 130 or 143, never a traceback (simulator.signals).
A usage error (a missing argument, an unknown option) is one line and status 2 like any bad input;
an unexpected exception, a bug in simrack, is one line and status 3 (SIMRACK_TRACEBACK=1 re-raises it).
"""

from __future__ import annotations

import os
import sys

from . import signals


def main(argv: list[str] | None = None) -> None:
    """Run one simrack command and end the process with its status: 0 done, 1 nothing usable or a
    regression, 2 bad input, 3 a simrack bug, 130 / 143 interrupted by SIGINT / SIGTERM."""
    signals.install()
    status = 0
    try:
        try:
            import typer

            from .cli import app

            usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
            try:
                status = _status(app(args=argv, prog_name="simrack", standalone_mode=False))
            except usage_error as err:  # a usage error: one line, as every other bad input
                _leave(_usage(err) if err.format_message().strip() else None, err.exit_code)
        except SystemExit as done:
            status = _status(done.code)
        except Exception as err:  # noqa: BLE001 - anything else is a bug in simrack: one line, status 3
            if os.environ.get("SIMRACK_TRACEBACK"):
                raise
            text = " ".join(f"{type(err).__name__}: {err}".split())[:500]
            _leave(f"simrack: bug, please report it with the command line: {text} (SIMRACK_TRACEBACK=1 shows "
                   "where)", 3)
        signals.raise_pending()
        signals.settle()  # the command has finished: a signal from here on changes nothing
    except signals.Interrupted as stop:
        _leave(f"simrack: interrupted by {stop}", stop.status)
    _leave(None, status)


def _usage(err) -> str:
    """A command-line usage error as one line: "simrack: run: No such option: --nosuch (simrack run --help)"."""
    from .scenario.files import one_line

    ctx = getattr(err, "ctx", None)
    command = ctx.command_path if ctx is not None else "simrack"
    where = command.removeprefix("simrack").strip()
    return one_line(f"simrack: {where + ': ' if where else ''}{err.format_message()} (see {command} --help)")


def _status(code: object) -> int:
    """The exit status of a SystemExit code (click gives ints; a message means 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _leave(line: str | None, status: int) -> None:
    """Print `line` on stderr, flush, and end the process now: the interpreter's shutdown (which puts
    the default signal handlers back) and leftover threads cannot hold it up or kill it half-way."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if line is not None and stream is sys.stderr:
                print(line, file=stream)
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


if __name__ == "__main__":  # pragma: no cover
    main()
