"""`simrack validate`: the shipped validation scenarios against the figures they were published with.

The package's validation/cases.yml (simulator/data/validation) maps each scenario to a published
figure (the case id in simulator/data/published.yaml, the report metric, the value) and says what kind
of case it is: device generation (`group`), train or serve (`kind`), whether simrack's calibration was
fitted on it (`fitted`: in-sample) and whether simrack can express the published configuration at all
(`expressible`, with `why` when not). Every case is simulated; the result is a table of case,
published, simulated and error, and the mean and maximum absolute error per group (generation x kind),
in-sample and out-of-sample apart. Cases that are not expressible are listed with their reason and left
out of every statistic.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..data import VALIDATION_DIR
from .baseline import lookup

DEFAULT_DIR = VALIDATION_DIR
"""The shipped validation scenarios and cases.yml (package data: simulator/data/validation)."""
REQUIRED = {"scenario", "case", "reported", "metric", "value"}
OPTIONAL = {"label", "unit", "source_value", "source_unit", "group", "kind", "dtype", "moe", "fitted", "verified",
            "expressible", "why", "unmodelled"}
CASE_KEYS = REQUIRED | OPTIONAL
KINDS = ("train", "serve")
GROUPS = ("ampere", "hopper", "blackwell", "tpu")
"""Device generations of the shipped cases, in the order validate prints them (others follow)."""


@dataclass(frozen=True)
class Case:
    """One published figure and the scenario that should reproduce it."""

    scenario: Path
    label: str
    case: str  # id in published.yaml
    reported: str  # dotted path of the figure inside the published case
    metric: str  # dotted simrack report key
    value: float  # the published figure in the metric's unit
    unit: str
    group: str = ""  # device generation: ampere, hopper, blackwell, tpu ("" when not given)
    kind: str = ""  # train | serve ("" when not given: read from the report)
    dtype: str = ""
    moe: bool = False
    fitted: bool = False  # in-sample: the calibration was fitted on this case
    verified: bool = True
    expressible: bool = True
    why: str = ""  # why the configuration is not expressible
    source_value: float | None = None  # the figure as the source prints it, when `value` is derived
    source_unit: str = ""
    unmodelled: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    case: Case
    simulated: float | None
    error: float | None  # (simulated - published) / published
    problem: str | None  # why it could not be simulated
    kind: str = ""  # the case's kind, or the report's when the case does not say
    fits_in_memory: bool | None = None
    caveats: tuple[str, ...] = ()  # the report's: what simrack leaves out of this case's step

    @property
    def counted(self) -> bool:
        """Whether the outcome enters the statistics: expressible and simulated."""
        return self.case.expressible and self.error is not None


@dataclass(frozen=True)
class Stat:
    """Mean and max absolute error of the counted outcomes of one group (generation x kind x sample)."""

    group: str
    kind: str
    fitted: bool | None  # True in-sample, False out-of-sample, None both
    cases: int
    mean: float
    max: float

    @property
    def sample(self) -> str:
        return {True: "in-sample", False: "out-of-sample", None: "all"}[self.fitted]

    def to_dict(self) -> dict:
        return {"group": self.group, "kind": self.kind, "sample": self.sample, "cases": self.cases,
                "mean_abs_error": _json_float(self.mean), "max_abs_error": _json_float(self.max)}


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else x


def _flag(path: Path, i: int, row: dict, key: str, default: bool) -> bool:
    value = row.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{path}: cases[{i}].{key}: expected true or false, got {value!r}")
    return value


def _number(path: Path, i: int, row: dict, key: str) -> float:
    try:
        return float(row[key])
    except (TypeError, ValueError):
        raise ValueError(f"{path}: cases[{i}].{key}: expected a number, got {row[key]!r}") from None


def _case(path: Path, folder: Path, i: int, row) -> Case:
    if not isinstance(row, dict):
        raise ValueError(f"{path}: cases[{i}]: expected a mapping, got {row!r}")
    missing, extra = REQUIRED - set(row), set(row) - CASE_KEYS
    if missing or extra:
        what = f"missing {', '.join(sorted(missing))}" if missing else f"unknown {', '.join(sorted(extra))}"
        raise ValueError(f"{path}: cases[{i}]: {what}")
    kind = str(row.get("kind", ""))
    if kind not in ("", *KINDS):
        raise ValueError(f"{path}: cases[{i}].kind: expected {' or '.join(KINDS)}, got {kind!r}")
    expressible = _flag(path, i, row, "expressible", True)
    why = str(row.get("why", "") or "")
    if not expressible and not why:
        raise ValueError(f"{path}: cases[{i}].why: required when expressible is false")
    unmodelled = row.get("unmodelled", []) or []
    if not isinstance(unmodelled, list):
        raise ValueError(f"{path}: cases[{i}].unmodelled: expected a list, got {unmodelled!r}")
    return Case(scenario=folder / row["scenario"], label=str(row.get("label", row["scenario"])),
                case=str(row["case"]), reported=str(row["reported"]), metric=str(row["metric"]),
                value=_number(path, i, row, "value"), unit=str(row.get("unit", "")), group=str(row.get("group", "")),
                kind=kind, dtype=str(row.get("dtype", "")), moe=_flag(path, i, row, "moe", False),
                fitted=_flag(path, i, row, "fitted", False), verified=_flag(path, i, row, "verified", True),
                expressible=expressible, why=why,
                source_value=_number(path, i, row, "source_value") if "source_value" in row else None,
                source_unit=str(row.get("source_unit", "")), unmodelled=tuple(map(str, unmodelled)))


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
    return [_case(path, Path(folder), i, row) for i, row in enumerate(rows)]


def outcome(case: Case, point) -> Outcome:
    """Compare a sweep Point (simrack.sweep) of the case's scenario with the published value."""
    report = point.report
    kind = case.kind or str((report or {}).get("kind", ""))
    if report is None:
        return Outcome(case, None, None, point.error, kind)
    fits = report.get("fits_in_memory")
    simulated = lookup(report, case.metric)
    if simulated is None:
        return Outcome(case, None, None, f"report has no {case.metric}", kind, fits)
    return Outcome(case, simulated, (simulated - case.value) / case.value, None, kind, fits,
                   tuple(report.get("caveats", ())))


def _stat(outcomes: list[Outcome], group: str, kind: str, fitted: bool | None) -> Stat:
    errors = [abs(o.error) for o in outcomes if o.counted]
    if not errors:
        return Stat(group, kind, fitted, 0, float("nan"), float("nan"))
    return Stat(group, kind, fitted, len(errors), sum(errors) / len(errors), max(errors))


def summary(outcomes: list[Outcome]) -> tuple[float, float]:
    """(mean, max) absolute relative error over the counted cases (expressible and simulated)."""
    s = _stat(outcomes, "", "", None)
    return s.mean, s.max


def _order(group: str) -> tuple:
    return (GROUPS.index(group) if group in GROUPS else len(GROUPS), group)


def _stats_by(outcomes: list[Outcome], kind_of) -> list[Stat]:
    """One Stat per (group, kind_of(outcome), in-sample or out-of-sample) with at least one counted case, in the
    order of GROUPS, then KINDS (other kinds after them, by name), in-sample first."""
    keyed: dict[tuple, list[Outcome]] = {}
    for o in outcomes:
        if o.counted:
            keyed.setdefault((o.case.group, kind_of(o), o.case.fitted), []).append(o)
    order = lambda k: (_order(k[0]), KINDS.index(k[1]) if k[1] in KINDS else len(KINDS), k[1], not k[2])  # noqa: E731
    return [_stat(keyed[k], *k) for k in sorted(keyed, key=order)]


def group_stats(outcomes: list[Outcome]) -> list[Stat]:
    """One Stat per (group, kind, in-sample or out-of-sample) with at least one counted case (_stats_by)."""
    return _stats_by(outcomes, lambda o: o.kind)


def family_stats(outcomes: list[Outcome]) -> list[Stat]:
    """The training cases of group_stats split by model family: one Stat per (group, dense or MoE, in-sample or
    out-of-sample) with at least one counted case, kind "train dense" or "train moe"."""
    return _stats_by([o for o in outcomes if o.kind == "train"],
                     lambda o: "train moe" if o.case.moe else "train dense")


def sample_stats(outcomes: list[Outcome]) -> dict[str, Stat]:
    """In-sample, out-of-sample and all counted cases."""
    return {"in_sample": _stat([o for o in outcomes if o.case.fitted], "", "", True),
            "out_of_sample": _stat([o for o in outcomes if not o.case.fitted], "", "", False),
            "all": _stat(outcomes, "", "", None)}


def rows(outcomes: list[Outcome]) -> list[dict]:
    """Plain rows for JSON/CSV: one per case, the same fields in both."""
    return [{"case": o.case.label, "scenario": o.case.scenario.name, "reference": o.case.case,
             "reported": o.case.reported, "metric": o.case.metric, "unit": o.case.unit, "published": o.case.value,
             "source_value": o.case.source_value, "source_unit": o.case.source_unit, "simulated": o.simulated,
             "error": o.error, "problem": o.problem, "group": o.case.group, "kind": o.kind, "dtype": o.case.dtype,
             "moe": o.case.moe, "fitted": o.case.fitted, "verified": o.case.verified,
             "expressible": o.case.expressible, "why": o.case.why, "counted": o.counted,
             "fits_in_memory": o.fits_in_memory, "unmodelled": list(o.case.unmodelled),
             "caveats": list(o.caveats)} for o in outcomes]


def document(outcomes: list[Outcome]) -> dict:
    """The JSON document of validate (less the version): cases, statistics per group, per model family of the
    training cases and per sample."""
    mean, worst = summary(outcomes)
    samples = sample_stats(outcomes)
    return {"cases": rows(outcomes), "groups": [s.to_dict() for s in group_stats(outcomes)],
            "families": [s.to_dict() for s in family_stats(outcomes)],
            "in_sample": samples["in_sample"].to_dict(), "out_of_sample": samples["out_of_sample"].to_dict(),
            "not_expressible": sum(not o.case.expressible for o in outcomes),
            "mean_abs_error": _json_float(mean), "max_abs_error": _json_float(worst)}


# --- published.yaml paths ----------------------------------------------------------------------------

_PART = re.compile(r"([^.\[\]]+)(?:\[([^\]]*)\])?")


def _key(mapping: dict, name: str):
    """mapping[name], with name also tried as the int or float YAML would have read."""
    if name in mapping:
        return mapping[name]
    parsed = yaml.safe_load(name)
    if parsed in mapping:
        return mapping[parsed]
    raise KeyError(name)


def _select(table: dict, name: str, where: str) -> dict:
    """The one row of table[name] (with table['columns']) matching 'COL=VALUE,...', as a mapping."""
    columns = table["columns"]
    wanted = [(c.strip(), yaml.safe_load(v)) for c, v in (cond.split("=", 1) for cond in where.split(","))]
    hits = [dict(zip(columns, row)) for row in table[name]
            if all(dict(zip(columns, row)).get(c) == v for c, v in wanted)]
    if len(hits) != 1:
        raise KeyError(f"{name}[{where}]: {len(hits)} rows match")
    return hits[0]


def published_figure(case: dict, path: str):
    """The figure at `path` inside a published.yaml case: dotted keys from the case's root
    (reported.iteration_time_s.22B.full); a part `rows[COL=VALUE,...]` selects the one row of a
    columns/rows table and the next part names a column. KeyError when the path leads nowhere."""
    node = case
    for name, where in _PART.findall(path):
        if where:
            node = _select(node, name, where)
        elif isinstance(node, list):
            node = node[int(name)]
        else:
            node = _key(node, name)
    return node
