"""Loading a scenario: strict YAML, presets, `--set` overrides, one-line errors.

`load_scenario(path, overrides)` reads a scenario YAML file, expands model, topology and device
presets (`MODELS_DIR`, `PRESETS_DIR`), applies `dotted.path=value` overrides and validates against
`simulator.scenario.spec.Scenario`, dimensional fields with a unit; every problem is one `ScenarioError` line,
`"<file>: <field.path>: <what is wrong, quoting the numbers>"`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

import topologies
from simulator.scenario.base import ScenarioError
from simulator.scenario.spec import Scenario
from simulator.scenario.units import UNITS_REQUIRED

from ..data import MODELS_DIR

__all__ = ["MODELS_DIR", "PRESETS_DIR", "load_scenario"]

# MODELS_DIR: model presets, <name>.yaml in the package data (simulator/data/models).
PRESETS_DIR = topologies.PRESETS_DIR
"""Topology presets (<name>.yaml) and device data sheets (devices.yaml): topologies/presets."""
_UNION_TAG = re.compile(r"[\w-]+\[.*\]|(constrained|function)-[\w-]+")
"""pydantic's name for the member of a union an error came from (dict[str,constrained-float])."""
_OVERRIDE = re.compile(r"\s*([A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*)\s*=(.*)", re.S)


class _Issue(Exception):
    """A loading problem at a field path (None: the file itself)."""

    def __init__(self, field: str | None, detail: str) -> None:
        super().__init__(f"{field}: {detail}" if field else detail)
        self.field, self.detail = field, detail


def load_scenario(path: str | Path, overrides: Sequence[str] = ()) -> Scenario:
    """Read, expand presets, apply `dotted.path=value` overrides, validate; ScenarioError if bad."""
    display, path = str(path), Path(path)
    try:
        raw = _read_yaml(path)
        if not isinstance(raw, dict):
            raise _Issue(None, f"expected a mapping with model, workload, topology; got {_short(raw)}")
        raw = _expand(raw, path.parent)
        for text in overrides:
            _apply_override(raw, text)
        raw = _expand(raw, path.parent)  # overrides may name presets: --set topology.device=h100-sxm
        if "source" in raw:
            raise _Issue("source", "set by the loader from the file path; remove it")
        raw = {"name": path.stem, **raw, "source": display}
    except _Issue as issue:
        raise ScenarioError(f"{display}: {issue}") from None
    try:
        return Scenario.model_validate(raw, context={UNITS_REQUIRED: True})  # YAML and --set: units required
    except ValidationError as exc:
        raise ScenarioError(f"{display}: {_describe(exc.errors()[0])}") from None


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects duplicate keys instead of keeping the last."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    keys: list[Any] = []
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # "<<: *anchor" merge keys may be overridden by explicit keys
        key = loader.construct_object(key_node)
        if key in keys:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        keys.append(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _read_yaml(path: Path) -> Any:
    """Parsed YAML of `path`; _Issue(None, ...) if unreadable or malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _Issue(None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _Issue(None, f"cannot read file: {exc}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise _Issue(None, f"YAML error at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise _Issue(None, f"YAML error: {exc}") from None


def _read_preset(path: Path, field: str, label: str) -> dict:
    """The mapping in preset file `path`, problems reported at `field`."""
    try:
        data = _read_yaml(path)
    except _Issue as issue:
        raise _Issue(field, f"{label} ({path}): {issue.detail}") from None
    if not isinstance(data, dict):
        raise _Issue(field, f"{label} ({path}): expected a mapping, got {_short(data)}")
    return data


def _preset(folder: Path, name: object, field: str) -> dict:
    """Preset `folder/<name>.yaml` as a mapping, its `name` defaulting to the preset's."""
    available = sorted(p.stem for p in folder.glob("*.yaml") if p.stem != "devices")
    if name not in available:
        raise _Issue(field, f"no preset {name!r}; available: {', '.join(available) or 'none'}")
    return {"name": name, **_read_preset(folder / f"{name}.yaml", field, f"preset {name!r}")}


def _merge(base: dict, over: dict) -> dict:
    """`base` updated by `over`, nested mappings merged key by key."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


def _expand(raw: dict, base_dir: Path) -> dict:
    """Scenario mapping with model, topology and device presets replaced by their mappings."""
    out = dict(raw)
    if "model" in out:
        out["model"] = _expand_model(out["model"])
    if "topology" in out:
        out["topology"] = _expand_topology(out["topology"], base_dir, "topology", 0)
    return out


def _expand_model(value: Any) -> Any:
    """`NAME` or `{preset: NAME, ...overrides}` -> mapping; other values unchanged."""
    if isinstance(value, str):
        return _preset(MODELS_DIR, value, "model")
    if isinstance(value, dict) and "preset" in value:
        rest = {k: v for k, v in value.items() if k != "preset"}
        return _merge(_preset(MODELS_DIR, value["preset"], "model.preset"), rest)
    return value


def _expand_topology(value: Any, base_dir: Path, field: str, depth: int) -> Any:
    """Preset name, file path (relative to `base_dir`) or `{preset: ..., ...}` -> mapping."""
    if depth > 8:
        raise _Issue(field, "presets refer to each other more than 8 deep")
    if isinstance(value, str) and (value.endswith((".yaml", ".yml")) or "/" in value):
        path = base_dir / value
        data = {"name": path.stem, **_read_preset(path, field, f"file {value!r}")}
        return _expand_topology(data, path.parent, field, depth + 1)
    if isinstance(value, str):
        return _expand_topology(_preset(PRESETS_DIR, value, field), PRESETS_DIR, field, depth + 1)
    if not isinstance(value, dict):
        return value
    out = dict(value)
    if "preset" in out:
        base = _expand_topology(out.pop("preset"), base_dir, f"{field}.preset", depth + 1)
        if not isinstance(base, dict):
            raise _Issue(f"{field}.preset", f"expected a preset name or a file path, got {_short(base)}")
        out = _merge(base, out)
    if "device" in out:
        out["device"] = _expand_device(out["device"])
    return out


def _expand_device(value: Any) -> Any:
    """Device preset name or `{preset: NAME, ...}` -> mapping from devices.yaml."""
    if isinstance(value, str):
        return _device_preset(value, "topology.device")
    if isinstance(value, dict) and "preset" in value:
        rest = {k: v for k, v in value.items() if k != "preset"}
        return _merge(_device_preset(value["preset"], "topology.device.preset"), rest)
    return value


def _device_preset(name: object, field: str) -> dict:
    """Entry `name` of devices.yaml, its `name` defaulting to the key."""
    path = PRESETS_DIR / "devices.yaml"
    if not path.is_file():
        raise _Issue(field, f"no preset {name!r}: {path} not found")
    devices = _read_preset(path, field, "devices.yaml")
    entry = devices.get(name) if isinstance(name, str) else None
    if not isinstance(entry, dict):
        raise _Issue(field, f"no preset {name!r}; available: {', '.join(map(str, devices)) or 'none'}")
    return {"name": name, **entry}


def _apply_override(raw: dict, text: object) -> None:
    """Set `dotted.path=value` (value parsed as YAML) in `raw`, creating missing sections."""
    match = _OVERRIDE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise _Issue("--set", f"override {text!r}: expected dotted.path=value, e.g. layout.pp=16")
    dotted, value_text = match.groups()
    keys = dotted.split(".")
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError:
        raise _Issue(dotted, f"override {text!r}: value {value_text.strip()!r} is not valid YAML") from None
    _check_override_path(keys, text)
    target = raw
    for i, key in enumerate(keys[:-1]):
        if target.get(key) is None:
            target[key] = {}
        elif not isinstance(target[key], dict):
            raise _Issue(".".join(keys[: i + 1]), f"override {text!r}: not a section, holds {_short(target[key])}")
        target = target[key]
    target[keys[-1]] = value


def _check_override_path(keys: list[str], text: str) -> None:
    """Each key of an override path names a field of the schema."""
    cls: Any = Scenario
    for i, key in enumerate(keys):
        where = ".".join(keys[: i + 1])
        if not _is_section(cls):
            raise _Issue(".".join(keys[:i]), f"override {text!r}: not a section")
        cls = _step(cls, key)
        if cls is None:
            raise _Issue(where, f"override {text!r}: unknown field{_hint(keys[:i])}")


def _is_section(cls: Any) -> bool:
    """Whether a schema type holds named keys (a model or a dict)."""
    return (isinstance(cls, type) and issubclass(cls, BaseModel)) or get_origin(cls) is dict


def _unwrap(tp: Any) -> Any:
    """`tp` without Annotated and without `| None`."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, UnionType) and type(None) in get_args(tp) and len(get_args(tp)) == 2:
            tp = next(a for a in get_args(tp) if a is not type(None))
        else:
            return tp


def _step(cls: Any, key: object) -> Any:
    """The schema type at `key` inside `cls` (a model, dict or tuple type); None if there is none."""
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        field = next((f for n, f in cls.model_fields.items() if key in (n, f.alias)), None)
        return None if field is None else _unwrap(field.annotation)
    if get_origin(cls) in (dict, tuple):
        return _unwrap(get_args(cls)[-1 if get_origin(cls) is dict else 0])
    return None


def _hint(loc: Sequence[object]) -> str:
    """"; expected one of: ..." listing the fields of the model at `loc`, or ""."""
    cls: Any = Scenario
    for key in loc:
        cls = _step(cls, key)
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
        return ""
    names = [f.alias or n for n, f in cls.model_fields.items() if n != "source"]
    return "; expected one of: " + ", ".join(names)


def _short(value: object) -> str:
    """repr(value), at most 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(err: Any) -> str:
    """One pydantic error as "field.path: what is wrong, got VALUE"."""
    loc = [str(p) for p in err["loc"] if not _UNION_TAG.fullmatch(str(p))]
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "scenario_rule":
        loc, msg = loc + ctx["field"].split("."), ctx["detail"]
    elif kind == "extra_forbidden":
        msg = "unknown field" + _hint(err["loc"][:-1])
    elif kind == "missing":
        msg = "required field missing"
    else:
        msg = err["msg"].removeprefix("Value error, ")
        msg = msg.split(", ")[0] if kind.endswith("_parsing") else msg
        msg = msg[:1].lower() + msg[1:]
        got = _short(err.get("input"))
        if f"got {got}" not in msg and not (isinstance(err.get("input"), str) and got in msg):
            msg += f", got {got}"
    return " ".join(f"{'.'.join(loc) or '(top level)'}: {msg}".split())
