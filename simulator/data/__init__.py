"""simrack's package data, found through importlib.resources so that a wheel works like a checkout.

- models/<name>.yaml: model presets (`model: NAME` in a scenario);
- validation/: the validation scenarios and cases.yml (`simrack validate`);
- published.yaml: published figures and closed forms, each case with its source, keyed by `id`.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib.resources import files
from pathlib import Path

import yaml

__all__ = ["MODELS_DIR", "PUBLISHED", "VALIDATION_DIR", "path", "reference"]


def path(name: str) -> Path:
    """A file or folder of the package data as a file-system path (simrack installs unzipped)."""
    found = files(__name__).joinpath(name)
    return found if isinstance(found, Path) else Path(str(found))


MODELS_DIR = path("models")
VALIDATION_DIR = path("validation")
PUBLISHED = path("published.yaml")


@cache
def _cases() -> dict[str, dict]:
    data = yaml.safe_load(PUBLISHED.read_text(encoding="utf-8"))
    return {case["id"]: case for case in data["cases"]}


def reference() -> dict[str, dict]:
    """The cases of published.yaml by id (a fresh copy: callers may modify it)."""
    return copy.deepcopy(_cases())
