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
from simulator.scenario.files import FileProblem, clip, one_line, quote, read_text
from simulator.scenario.limits import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_VALUES
from simulator.scenario.preset_names import entry_aliases, preset_aliases, spelled
from simulator.scenario.spec import Scenario
from simulator.scenario.units import UNITS_REQUIRED

from ..data import MODELS_DIR

__all__ = ["MODELS_DIR", "PRESETS_DIR", "check_field", "device_preset", "load_scenario", "model_preset", "parse_value",
           "topology_preset"]

# MODELS_DIR: model presets, <name>.yaml in the package data (simulator/data/models).
PRESETS_DIR = topologies.PRESETS_DIR
"""Topology presets (<name>.yaml) and device data sheets (devices.yaml): topologies/presets."""
_UNION_TAG = re.compile(r"[\w-]+\[.*\]|(constrained|function)-[\w-]+")
"""pydantic's name for the member of a union an error came from (dict[str,constrained-float])."""
_OVERRIDE = re.compile(r"\s*([A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*)\s*=(.*)", re.S)


class _Issue(Exception):
    """A loading problem at a field path (None: the file itself)."""

    def __init__(self, field: str | None, detail: str) -> None:
        field = None if field is None else clip(field)
        super().__init__(f"{field}: {detail}" if field else detail)
        self.field, self.detail = field, detail


def load_scenario(path: str | Path, overrides: Sequence[str] = ()) -> Scenario:
    """Read, expand presets, apply `dotted.path=value` overrides, validate; ScenarioError if bad."""
    display, path = str(path), Path(path)
    try:
        raw = _read_yaml(path)
        if not isinstance(raw, dict):
            raise _Issue(None, f"expected a mapping with model, workload, topology; got {quote(raw)}")
        raw = _expand(raw, path.parent)
        for text in overrides:
            _apply_override(raw, text)
        raw = _expand(raw, path.parent)  # overrides may name presets: --set topology.device=h100-sxm
        if "source" in raw:
            raise _Issue("source", "set by the loader from the file path; remove it")
        raw = {"name": path.stem, **raw, "source": display}
    except _Issue as issue:
        raise ScenarioError(one_line(f"{display}: {issue}")) from None
    try:
        return Scenario.model_validate(raw, context={UNITS_REQUIRED: True})  # YAML and --set: units required
    except ValidationError as exc:
        raise ScenarioError(f"{display}: {_describe(exc.errors()[0])}") from None


_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser where installed


class _StrictLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """A safe loader (libyaml's where present) that rejects duplicate keys instead of keeping the last."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode):
    """A mapping, built like SafeConstructor's (a generator: nested mappings do not recurse)."""
    data: dict = {}
    yield data
    keys: list[Any] = []
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # "<<: *anchor" merge keys may be overridden by explicit keys
        key = loader.construct_object(key_node)
        if key in keys:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {quote(key)}", key_node.start_mark)
        keys.append(key)
    data.update(loader.construct_mapping(node))


def _integer(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    """An integer, or a marked error when Python refuses to convert it (over 4,300 digits)."""
    try:
        return loader.construct_yaml_int(node)
    except ValueError:
        raise yaml.constructor.ConstructorError(None, None, f"an integer of {len(node.value):,} characters is "
                                                "too long to read", node.start_mark) from None


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _integer)

_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
_VALUE = (yaml.ScalarEvent, yaml.AliasEvent, *_OPEN)


def parse_yaml(text: str) -> Any:
    """The YAML document in `text`, within MAX_YAML_DEPTH levels and MAX_YAML_VALUES values (aliases
    expanded); _Issue(None, ...) if malformed or beyond them. The events are counted first (libyaml
    streams them in constant memory), so an oversized document is refused before it is built."""
    try:
        depth = values = 0
        for event in yaml.parse(text, Loader=_BaseLoader):
            if isinstance(event, _VALUE):
                values += 1
            if isinstance(event, _OPEN):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise _Issue(None, f"YAML nested deeper than {MAX_YAML_DEPTH} levels at line "
                                 f"{event.start_mark.line + 1}")
            elif isinstance(event, _CLOSE):
                depth -= 1
            if values > MAX_YAML_VALUES:
                raise _Issue(None, f"YAML document of more than {MAX_YAML_VALUES:,} values (a scenario has about 100)")
        loader = _StrictLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_expansion(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _Issue(None, f"YAML error{where}: {clip(' '.join(str(exc.problem or exc.context).split()))}") from None
    except yaml.YAMLError as exc:
        raise _Issue(None, f"YAML error: {clip(' '.join(str(exc).split()))}") from None
    except (ValueError, OverflowError, RecursionError) as exc:  # a scalar the constructor cannot build
        raise _Issue(None, f"YAML value cannot be read: {clip(' '.join(str(exc).split()))}") from None


def _check_expansion(root: yaml.Node) -> None:
    """_Issue if the node graph, aliases expanded, is recursive, deeper than MAX_YAML_DEPTH or holds
    more than MAX_YAML_VALUES values (a "billion laughs" document); iterative, each node seen once."""
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) of its expansion
    path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if id(node) in done:
            continue
        if isinstance(node, yaml.ScalarNode):
            done[id(node)] = (1, 0)
            continue
        kids = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
        if not finished:
            if id(node) in path:
                raise _Issue(None, f"YAML alias at line {node.start_mark.line + 1} refers to a value that holds it")
            path.add(id(node))
            stack.append((node, True))
            stack.extend((kid, False) for kid in kids)
            continue
        path.discard(id(node))
        values = 1 + sum(done[id(k)][0] for k in kids)
        depth = 1 + max((done[id(k)][1] for k in kids), default=0)
        if values > MAX_YAML_VALUES:
            raise _Issue(None, f"YAML aliases expand to more than {MAX_YAML_VALUES:,} values "
                         f"(line {node.start_mark.line + 1})")
        if depth > MAX_YAML_DEPTH:
            raise _Issue(None, f"YAML aliases nest deeper than {MAX_YAML_DEPTH} levels "
                         f"(line {node.start_mark.line + 1})")
        done[id(node)] = (values, depth)


def _read_yaml(path: Path) -> Any:
    """Parsed YAML of `path`; _Issue(None, ...) if unreadable, malformed or beyond the limits."""
    try:
        text = read_text(path, MAX_YAML_BYTES)
    except FileProblem as exc:
        raise _Issue(None, exc.detail) from None
    return parse_yaml(text)


def _read_preset(path: Path, field: str, label: str) -> dict:
    """The mapping in preset file `path`, problems reported at `field`."""
    try:
        data = _read_yaml(path)
    except _Issue as issue:
        raise _Issue(field, f"{label} ({clip(str(path))}): {issue.detail}") from None
    if not isinstance(data, dict):
        raise _Issue(field, f"{label} ({clip(str(path))}): expected a mapping, got {quote(data)}")
    return data


def _preset(folder: Path, name: object, field: str) -> dict:
    """Preset `folder/<name>.yaml` (or the one listing `name` among its aliases) as a mapping, its `name`
    defaulting to the preset's file name."""
    stems = sorted(p.stem for p in folder.glob("*.yaml") if p.stem != "devices")
    stem = name if name in stems else spelled(name, preset_aliases(folder))
    if stem is None:
        raise _Issue(field, f"no preset {quote(name)}; available: {', '.join(stems) or 'none'}")
    data = _read_preset(folder / f"{stem}.yaml", field, f"preset {quote(stem)}")
    return _named(stem, data)


def _named(name: str, preset: dict) -> dict:
    """A preset's mapping as a scenario section: its `name` defaulting to `name`, its `aliases` (how the preset is
    looked up, not a field of the section) dropped."""
    return {"name": name, **{k: v for k, v in preset.items() if k != "aliases"}}


def model_preset(name: str) -> dict:
    """The mapping a scenario's `model: NAME` expands to (NAME a preset or one of its aliases); ScenarioError if
    there is none."""
    try:
        return _preset(MODELS_DIR, name, "model")
    except _Issue as issue:
        raise ScenarioError(str(issue)) from None


def topology_preset(name: str) -> dict:
    """The mapping `topology: NAME` expands to, its device too; ScenarioError if there is none."""
    try:
        return _expand_topology(name, PRESETS_DIR, "topology", 0)
    except _Issue as issue:
        raise ScenarioError(str(issue)) from None


def device_preset(name: str) -> dict:
    """The mapping `topology.device: NAME` expands to (NAME an entry of devices.yaml or one of its aliases);
    ScenarioError if there is none."""
    try:
        return _device_preset(name, "topology.device")
    except _Issue as issue:
        raise ScenarioError(str(issue)) from None


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
        data = _read_preset(path, field, f"file {quote(value)}")
        data = _named(path.stem, data)  # a preset copied as a file may keep its aliases
        return _expand_topology(data, path.parent, field, depth + 1)
    if isinstance(value, str):
        return _expand_topology(_preset(PRESETS_DIR, value, field), PRESETS_DIR, field, depth + 1)
    if not isinstance(value, dict):
        return value
    out = dict(value)
    if "preset" in out:
        base = _expand_topology(out.pop("preset"), base_dir, f"{field}.preset", depth + 1)
        if not isinstance(base, dict):
            raise _Issue(f"{field}.preset", f"expected a preset name or a file path, got {quote(base)}")
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
    """Entry `name` of devices.yaml (or the one listing `name` among its aliases), its `name` defaulting to the
    key."""
    path = PRESETS_DIR / "devices.yaml"
    if not path.is_file():
        raise _Issue(field, f"no preset {quote(name)}: {path} not found")
    devices = _read_preset(path, field, "devices.yaml")
    key = spelled(name, {k: entry_aliases(v) for k, v in devices.items()})
    entry = devices.get(key)
    if not isinstance(entry, dict):
        raise _Issue(field, f"no preset {quote(name)}; available: {', '.join(map(str, devices)) or 'none'}")
    return _named(key, entry)


def _apply_override(raw: dict, text: object) -> None:
    """Set `dotted.path=value` (value parsed as YAML) in `raw`, creating missing sections."""
    match = _OVERRIDE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise _Issue("--set", f"override {quote(text)}: expected dotted.path=value, e.g. layout.pp=16")
    dotted, value_text = match.groups()
    keys = dotted.split(".")
    try:
        value = parse_yaml(value_text)
    except _Issue as issue:
        raise _Issue(dotted, f"override {quote(text)}: value {quote(value_text.strip())} is not valid YAML "
                     f"({issue.detail})") from None
    _check_override_path(keys, text)
    target = raw
    for i, key in enumerate(keys[:-1]):
        if target.get(key) is None:
            target[key] = {}
        elif not isinstance(target[key], dict):
            raise _Issue(".".join(keys[: i + 1]), f"override {quote(text)}: not a section, holds {quote(target[key])}")
        target = target[key]
    target[keys[-1]] = value


def check_field(dotted: str) -> str | None:
    """None if `dotted` ("layout.pp") names a field of the scenario schema, else one line saying why."""
    if _OVERRIDE.fullmatch(f"{dotted}=") is None:
        return f"{quote(dotted)}: expected a dotted field path, e.g. layout.pp"
    try:
        _check_override_path(dotted.split("."), None)
    except _Issue as issue:
        return str(issue)
    return None


def parse_value(text: str) -> Any:
    """A `--set` or `--grid` value: YAML within the document limits; ScenarioError (one line) if not."""
    try:
        return parse_yaml(text)
    except _Issue as issue:
        raise ScenarioError(str(issue)) from None


def _check_override_path(keys: list[str], text: str | None) -> None:
    """Each key of an override path names a field of the schema (`text`: the override, quoted)."""
    said = "" if text is None else f"override {quote(text)}: "
    cls: Any = Scenario
    for i, key in enumerate(keys):
        where = ".".join(keys[: i + 1])
        if not _is_section(cls):
            raise _Issue(".".join(keys[:i]), f"{said}not a section")
        cls = _step(cls, key)
        if cls is None and key == "preset" and i > 0:
            section = ".".join(keys[:i])
            raise _Issue(where, f"{said}a preset is named by its section: --set {section}=NAME (the section "
                         f"becomes the preset; add --set {section}.FIELD=... for its fields)")
        if cls is None:
            raise _Issue(where, f"{said}unknown field{_hint(keys[:i])}")


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


def _describe(err: Any) -> str:
    """One pydantic error as "field.path: what is wrong, got VALUE"."""
    loc = [clip(str(p), 60) for p in err["loc"] if not _UNION_TAG.fullmatch(str(p))]
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
        got = quote(err.get("input"))
        if f"got {got}" not in msg and not (isinstance(err.get("input"), str) and got in msg):
            msg += f", got {got}"
    return one_line(f"{'.'.join(loc) or '(top level)'}: {msg}")
