"""One check for bad input given on the command line: `simrack run` refuses it with exit status 2 and
one line on stderr that names the file and says what was wrong, and writes no output."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from simulator.cli import app


def assert_refused(scenario: Path, sets: list[str], says: str, tmp_path: Path) -> str:
    """`simrack run scenario --set ... --json out` exits 2 with one stderr line naming scenario and
    holding `says`, and leaves no `out`; the line."""
    out = tmp_path / "refused.json"
    args = ["run", str(scenario), "--json", str(out)]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message and str(scenario) in message and says in message, message
    assert not out.exists()
    return message
