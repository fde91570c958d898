"""JSON Schema of the scenario format, for editors (`simrack schema`; yaml-language-server).

Generated from the pydantic models of `simulator.scenario.spec` (`model_json_schema`) with the changes a
scenario *file* needs over the validated model, i.e. what `simulator.scenario.loader` accepts before validation:

- dimensional fields (bytes, bytes/s, seconds, FLOP/s) take a string with a unit ("300 GB/s", "2 us"),
  matched by `simulator.scenario.units.DIMENSIONS`' pattern (the loader refuses a bare number there);
- `model` may be a preset name or `{preset: NAME, ...}` with any of the preset's fields overridden;
  `topology` a preset name, a file path or `{preset: ..., ...}`; `topology.device` a device preset name
  or `{preset: NAME, ...}`; presets are listed from the folders the loader reads;
- `name` is optional (the file's stem) and `source` is not allowed (the loader sets it).

Each field's description is its attribute docstring, read from the models' source here (ast) rather
than by pydantic when the models are built (use_attribute_docstrings), which cost every command a
tenth of its start-up.
"""

from __future__ import annotations

import ast
import copy
import inspect
import textwrap
from functools import lru_cache
from typing import Any

from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema as cs

from .base import _auto_bool, _dp_value
from .hardware import DeviceSpec
from .loader import MODELS_DIR, PRESETS_DIR
from .preset_names import device_aliases, preset_aliases
from .spec import Scenario

DRAFT = "http://json-schema.org/draft-07/schema#"  # what yaml-language-server implements
REF = "#/definitions/"

def dimension_of(schema: cs.CoreSchema):
    """The simulator.scenario.units Dimension of a field's core schema (through defaults, nullable and
    after-validators), or None."""
    while schema is not None:
        kind = schema.get("type")
        if kind == "function-before" and hasattr(schema["function"]["function"], "dimension"):
            return schema["function"]["function"].dimension
        if kind in ("function-after", "function-before", "default", "nullable", "function-wrap"):
            schema = schema.get("schema")
        else:
            return None
    return None


@lru_cache(maxsize=None)
def attribute_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring under its annotation in the class body (inherited ones included),
    cleaned as pydantic's use_attribute_docstrings cleans them."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not hasattr(klass, "model_fields") or klass.__module__.startswith("pydantic"):
            continue
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        except (OSError, TypeError, SyntaxError):  # pragma: no cover - no source (a frozen build)
            continue
        for stmt, after in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[stmt.target.id] = inspect.cleandoc(after.value.value)
    return docs


class _Generator(GenerateJsonSchema):
    """pydantic's generator, with unit strings for dimensional fields, layout.dp's int | "auto", the settings' bool |
    "auto" and the fields' docstrings as descriptions."""

    def model_schema(self, schema: cs.ModelSchema):
        out = super().model_schema(schema)
        cls, docs = schema["cls"], attribute_docs(schema["cls"])
        for name, info in cls.model_fields.items():
            prop = out.get("properties", {}).get(info.alias or name)
            if prop is not None and name in docs and info.description is None and "description" not in prop:
                prop["description"] = docs[name]
        return out

    def function_before_schema(self, schema: cs.BeforeValidatorFunctionSchema):
        dim = getattr(schema["function"]["function"], "dimension", None)
        if dim is None:
            return super().function_before_schema(schema)
        return {"type": "string", "pattern": dim.pattern}  # a scenario file needs the unit

    def function_plain_schema(self, schema: cs.PlainValidatorFunctionSchema):
        function = schema["function"]["function"]
        if function is _dp_value:
            return {"anyOf": [{"type": "integer", "minimum": 1}, {"const": "auto"}]}
        if function is _auto_bool:
            return {"anyOf": [{"type": "boolean"}, {"const": "auto"}]}
        return super().function_plain_schema(schema)

    def default_schema(self, schema: cs.WithDefaultSchema):
        out = super().default_schema(schema)
        dim = dimension_of(schema["schema"])
        if dim is not None and isinstance(out.get("default"), (int, float)):
            out["default"] = dim.text(float(out["default"]))
        return out


def _refs(node: Any, rename: dict[str, str]) -> Any:
    """`node` with every "$ref" to a key of `rename` pointed at its value."""
    if isinstance(node, dict):
        out = {k: _refs(v, rename) for k, v in node.items()}
        ref = out.get("$ref", "").removeprefix(REF)
        if ref in rename:
            out["$ref"] = REF + rename[ref]
        return out
    if isinstance(node, list):
        return [_refs(v, rename) for v in node]
    return node


def _ref_names(node: Any):
    """The definition names that `node` refers to, at any depth."""
    if isinstance(node, dict):
        if node.get("$ref", "").startswith(REF):
            yield node["$ref"].removeprefix(REF)
        for value in node.values():
            yield from _ref_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _ref_names(value)


def _partial(defs: dict, name: str, keep: tuple[str, ...] = ()) -> str:
    """Add `<name>Partial` to defs: `name` without required fields, nested models partial as well
    (a preset's mapping is merged key by key), except the definitions in `keep`. Its name."""
    todo, done = [name], {}
    while todo:
        cur = todo.pop()
        if cur in done:
            continue
        done[cur] = f"{cur}Partial"
        todo += [ref for ref in _ref_names(defs[cur]) if ref not in keep and ref not in done]
    for cur, new in done.items():
        body = _refs(copy.deepcopy(defs[cur]), done)
        body.pop("required", None)
        body["description"] = f"Fields overriding a preset's: {cur}. " + body.get("description", "")
        defs[new] = body
    return done[name]


def _presets(folder) -> list[str]:
    """The names a preset folder answers to: each file's and its aliases."""
    return sorted(name for stem, aliases in preset_aliases(folder).items() for name in (stem, *aliases))


def _device_presets() -> list[str]:
    """The names devices.yaml answers to: each entry's and its aliases."""
    return sorted(name for key, aliases in device_aliases(PRESETS_DIR).items() for name in (key, *aliases))


def _with_preset(defs: dict, partial: str, preset: dict, what: str) -> str:
    """Add `<name>Preset`: `{preset: NAME, ...}`, the partial definition plus a required preset key."""
    name = partial.removesuffix("Partial") + "Preset"
    body = copy.deepcopy(defs[partial])
    body["properties"] = {"preset": preset, **body["properties"]}
    body["required"] = ["preset"]
    body["description"] = f"A {what} preset, some of its fields overridden."
    defs[name] = body
    return name


def scenario_schema() -> dict:
    """The JSON Schema (draft-07) of a scenario YAML file."""

    schema = _bounds(Scenario.model_json_schema(ref_template=REF + "{model}", schema_generator=_Generator))
    defs = schema["definitions"] = schema.pop("$defs")
    model_name = {"type": "string", "enum": _presets(MODELS_DIR), "description": "A model preset."}
    device_name = {"type": "string", "enum": _device_presets(), "description": "A device preset (devices.yaml)."}
    topo_name = {"type": "string", "anyOf": [{"enum": _presets(PRESETS_DIR)},
                                             {"pattern": r"(\.ya?ml$|/)"}],
                 "description": "A topology preset, or a topology file path."}

    device = _with_preset(defs, _partial(defs, "DeviceSpec"), device_name, "device")
    _python_names(defs, "DeviceSpec", DeviceSpec)  # not beside a preset: its `hbm` and `hbm_bytes` would clash
    defs["Device"] = {"anyOf": [{"$ref": REF + "DeviceSpec"}, device_name, {"$ref": f"{REF}{device}"}]}
    defs["TopologySpec"]["properties"]["device"] = {"$ref": REF + "Device",
                                                    **_without_ref(defs["TopologySpec"]["properties"]["device"])}
    model = _with_preset(defs, _partial(defs, "ModelSpec"), model_name, "model")
    topology = _with_preset(defs, _partial(defs, "TopologySpec", keep=("Device", "DeviceSpec")), topo_name,
                            "topology")

    props = schema["properties"]
    props.pop("source", None)
    schema["required"] = [r for r in schema.get("required", []) if r not in ("name", "source")]
    props["model"] = {"description": props["model"].get("description", ""),
                      "anyOf": [{"$ref": REF + "ModelSpec"}, model_name, {"$ref": f"{REF}{model}"}]}
    props["topology"] = {"description": props["topology"].get("description", ""),
                         "anyOf": [{"$ref": REF + "TopologySpec"}, topo_name, {"$ref": f"{REF}{topology}"}]}
    return {"$schema": DRAFT, **schema, "title": "simrack scenario"}


def _bounds(node: Any, in_properties: bool = False) -> Any:
    """pydantic writes the bounds of a dimensional field as "gt"/"ge" (not JSON Schema) beside its
    anyOf: move them onto the bare-number branch as exclusiveMinimum/minimum, drop them elsewhere."""
    if isinstance(node, list):
        return [_bounds(v) for v in node]
    if not isinstance(node, dict):
        return node
    if in_properties:
        return {k: _bounds(v) for k, v in node.items()}
    out = {k: _bounds(v, k in ("properties", "$defs", "definitions")) for k, v in node.items() if k not in ("gt", "ge")}
    for key, json_key in (("gt", "exclusiveMinimum"), ("ge", "minimum")):
        if key in node:
            for branch in out.get("anyOf", []):
                if branch.get("type") == "number":
                    branch.pop("minimum", None)
                    branch[json_key] = node[key]
    return out


def _python_names(defs: dict, name: str, model) -> None:
    """A model validated by name as well as by alias (DeviceSpec: hbm or hbm_bytes): both keys, one
    of them required."""
    body = defs[name]
    for field, info in model.model_fields.items():
        if info.alias and info.alias != field and info.alias in body["properties"]:
            body["properties"][field] = body["properties"][info.alias]
            if info.alias in body.get("required", []):
                body["required"].remove(info.alias)
                body.setdefault("allOf", []).append(
                    {"oneOf": [{"required": [info.alias]}, {"required": [field]}]})


def _without_ref(prop: dict) -> dict:
    return {k: v for k, v in prop.items() if k != "$ref"}
