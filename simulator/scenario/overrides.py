"""A Scenario from a Scenario or a path, and `--set`-style overrides on a Scenario.

Overrides on a Scenario (also one built in memory, `Scenario.model_validate({...})`) are applied by the
loader to the scenario written out as YAML (`to_yaml`): the fields it was given (model_fields_set;
derived ones such as layout.dp from "auto" are left out and re-derived), quantities with their SI unit,
data files by absolute path; so overrides read as they would on the file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator

from .base import ScenarioError
from .loader import load_scenario
from .spec import Scenario

ScenarioLike = Union[Scenario, str, os.PathLike]


# Fields holding a path relative to the scenario file: written absolute.
PATH_FIELDS = (("workload", "arrivals", "trace"), ("workload", "routing", "counts_file"))


def as_scenario(scenario: ScenarioLike, overrides: Sequence[str] = ()) -> Scenario:
    """A Scenario from a Scenario or a path, with `dotted.path=value` overrides applied."""
    if isinstance(scenario, Scenario):
        return with_overrides(scenario, overrides)
    if isinstance(scenario, (str, os.PathLike)):
        return load_scenario(scenario, overrides)
    raise TypeError(f"expected a Scenario or the path of a scenario file, got {type(scenario).__name__}")


def with_overrides(scn: Scenario, overrides: Sequence[str]) -> Scenario:
    """`scn` with overrides applied as the loader applies them to a file; ScenarioError (naming
    scn.source) if the result is invalid."""
    if isinstance(overrides, str):
        overrides = [overrides]
    if not overrides:
        return scn
    with tempfile.TemporaryDirectory(prefix="simrack-") as tmp:
        path = Path(tmp) / "scenario.yaml"
        path.write_text(to_yaml(scn), encoding="utf-8")
        try:
            out = load_scenario(path, overrides)
        except ScenarioError as err:
            text = str(err)
            raise ScenarioError(scn.source + text[len(str(path)):] if text.startswith(str(path)) else text) from None
    return out.model_copy(update={"source": scn.source})


def to_yaml(scn: Scenario) -> str:
    """A scenario file the loader reads back as `scn` (its source aside), from anywhere."""
    return yaml.safe_dump(to_raw(scn), sort_keys=False, allow_unicode=True)


def to_raw(scn: Scenario) -> dict:
    """`scn` as the mapping a scenario file holds: the fields it was given (model_fields_set),
    quantities as strings with their SI unit, relative data files made absolute."""
    raw = _model(scn)
    raw.pop("source", None)
    base = Path(scn.source).parent
    for keys in PATH_FIELDS:
        *parents, leaf = keys
        node = raw
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(leaf), str) and not Path(node[leaf]).is_absolute():
            node[leaf] = str((base / node[leaf]).resolve())
    return raw


def _model(m: BaseModel) -> dict:
    out = {}
    for name, info in type(m).model_fields.items():
        if name in m.model_fields_set:
            out[info.alias or name] = _value(getattr(m, name), info.annotation, info.metadata)
    return out


def _value(value: Any, annotation: Any, metadata: Sequence[Any] = ()) -> Any:
    if isinstance(value, BaseModel):
        return _model(value)
    if isinstance(value, dict):
        inner = _arg(annotation, dict)
        return {k: _value(v, inner) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        inner = _arg(annotation, tuple)
        return [_value(v, inner) for v in value]
    dim = _dimension(annotation, metadata)
    if dim is not None and isinstance(value, float):
        return dim.text(value)
    return value


def _dimension(annotation: Any, metadata: Sequence[Any] = ()) -> Any:
    """The simulator.scenario.units Dimension a field type validates with (BeforeValidator), or None."""
    for m in metadata:
        if isinstance(m, BeforeValidator) and hasattr(m.func, "dimension"):
            return m.func.dimension
    origin = get_origin(annotation)
    if origin is Annotated:
        args = get_args(annotation)
        return _dimension(args[0], args[1:])
    if origin in (Union, UnionType):
        for arg in get_args(annotation):
            found = _dimension(arg)
            if found is not None:
                return found
    return None


def _arg(annotation: Any, container: type) -> Any:
    """The value type of a dict (or item type of a tuple) annotation, through Optional."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _arg(get_args(annotation)[0], container)
    if origin in (Union, UnionType):
        for arg in get_args(annotation):
            if get_origin(arg) is container or get_origin(arg) is Annotated:
                return _arg(arg, container)
        return None
    if origin is container:
        args = get_args(annotation)
        return args[-1] if container is dict else args[0]
    return None
