"""`simrack validate`: the shipped validation scenarios against the figures they were published with.

The package's validation/cases.yml (simulator/data/validation) maps each scenario to a published
figure (the case id in simulator/data/published.yaml, the report metric, the value). Every case is
simulated; the result is a table of case, published, simulated and error, with the mean and maximum
absolute error, so that any user can see how far to trust the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ..data import VALIDATION_DIR
from .baseline import lookup

DEFAULT_DIR = VALIDATION_DIR
"""The shipped validation scenarios and cases.yml (package data: simulator/data/validation)."""
CASE_KEYS = {"scenario", "label", "case", "reported", "metric", "value", "unit"}


@dataclass(frozen=True)
class Case:
    """One published figure and the scenario that should reproduce it."""

    scenario: Path
    label: str
    case: str  # id in published.yaml
    reported: str  # dotted path inside the case's `reported`
    metric: str  # dotted simrack report key
    value: float
    unit: str


@dataclass(frozen=True)
class Outcome:
    case: Case
    simulated: float | None
    error: float | None  # (simulated - published) / published
    problem: str | None  # why it could not be simulated


def load_cases(folder: Path = DEFAULT_DIR) -> list[Case]:
    """The cases of `folder`/cases.yml (or cases.yaml); ValueError (one line) when missing or malformed.

    The shipped file is cases.yml: tests/test_scenario.py loads every *.yaml of the folder as a
    scenario."""
    path = Path(folder) / "cases.yml"
    if not path.exists() and (Path(folder) / "cases.yaml").exists():
        path = Path(folder) / "cases.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: not found (each validation scenario needs its published figure)") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: {' '.join(str(err).split())}") from None
    rows = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected a non-empty `cases:` list")
    out = []
    for i, row in enumerate(rows):
        missing = CASE_KEYS - {"label", "unit"} - set(row or {})
        extra = set(row or {}) - CASE_KEYS
        if missing or extra:
            what = f"missing {', '.join(sorted(missing))}" if missing else f"unknown {', '.join(sorted(extra))}"
            raise ValueError(f"{path}: cases[{i}]: {what}")
        try:
            value = float(row["value"])
        except (TypeError, ValueError):
            raise ValueError(f"{path}: cases[{i}].value: expected a number, got {row['value']!r}") from None
        out.append(Case(scenario=Path(folder) / row["scenario"], label=str(row.get("label", row["scenario"])),
                        case=str(row["case"]), reported=str(row["reported"]), metric=str(row["metric"]),
                        value=value, unit=str(row.get("unit", ""))))
    return out


def outcome(case: Case, point) -> Outcome:
    """Compare a sweep Point (simrack.sweep) of the case's scenario with the published value."""
    if point.report is None:
        return Outcome(case, None, None, point.error)
    simulated = lookup(point.report, case.metric)
    if simulated is None:
        return Outcome(case, None, None, f"report has no {case.metric}")
    return Outcome(case, simulated, (simulated - case.value) / case.value, None)


def summary(outcomes: list[Outcome]) -> tuple[float, float]:
    """(mean, max) absolute relative error over the cases that ran."""
    errors = [abs(o.error) for o in outcomes if o.error is not None]
    if not errors:
        return float("nan"), float("nan")
    return sum(errors) / len(errors), max(errors)


def rows(outcomes: list[Outcome]) -> list[dict]:
    """Plain rows for JSON/CSV."""
    return [{"case": o.case.label, "scenario": o.case.scenario.name, "reference": o.case.case,
             "metric": o.case.metric, "published": o.case.value, "simulated": o.simulated,
             "error": o.error, "problem": o.problem} for o in outcomes]
