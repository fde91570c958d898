"""The `simrack` program: signal handlers first, then the command line (simulator.cli).

SIGINT and SIGTERM are handled before the heavy imports (numpy, pydantic, simpy), so an interrupt at
any point, start-up included, ends with one line and status 130 or 143, never a traceback
(simulator.signals).
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
            from .cli import app

            app(args=argv, prog_name="simrack")
        except SystemExit as done:
            status = _status(done.code)
        signals.settle()  # the command has finished: a signal from here on changes nothing
    except signals.Interrupted as stop:
        _leave(f"simrack: interrupted by {stop}", stop.status)
    _leave(None, status)


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
