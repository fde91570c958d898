"""simrack's version: the installed distribution's (importlib.metadata), else the version in the
checkout's pyproject.toml when simrack runs from a source tree that was never installed."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

UNKNOWN = "0+unknown"


def _find() -> str:
    try:
        return version("simrack")
    except PackageNotFoundError:
        pass
    try:
        project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return UNKNOWN
    return str(project["version"]) if project.get("name") == "simrack" and "version" in project else UNKNOWN


__version__ = _find()
