"""The studies' committed CSV tables as rows of numbers (floats), booleans and strings."""

from __future__ import annotations

import csv
from pathlib import Path

BOOLEANS = {"True": True, "False": False}


def _value(text: str):
    try:
        return float(text)
    except ValueError:
        return BOOLEANS.get(text, text)


def read_rows(path: Path) -> list[dict]:
    """Every row of the CSV file at `path`, each cell a float where it parses as one."""
    with open(path) as fh:
        return [{k: _value(v) for k, v in r.items()} for r in csv.DictReader(fh)]
