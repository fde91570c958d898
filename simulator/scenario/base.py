"""The scenario schema's building blocks: the one-line ScenarioError, the frozen base model, the
integer and name types every part of the schema shares, and the helpers its validators raise with."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NoReturn, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from ..schedules import SCHEDULE_NAMES


def _real(value: object) -> object:
    """A float field's input as given, unless it is a boolean (YAML `true` is not the number 1)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


Real = Annotated[float, BeforeValidator(_real)]
"""A float field: a number, never a boolean; infinities and NaN are refused by every model's config."""
PosInt = Annotated[int, Field(strict=True, ge=1)]
NonNegInt = Annotated[int, Field(strict=True, ge=0)]
Axis = Literal["tp", "cp", "ep", "dp", "pp"]
StoreDtype = Literal["bf16", "fp16", "fp8", "fp8-block", "mxfp8", "nvfp4", "mxfp4", "int8", "int4"]
Schedule = Literal[SCHEDULE_NAMES]  # the registry's names (simulator.schedules)
Recompute = Literal["none", "selective", "full"]
RecomputeModule = Literal["core_attn", "layernorm", "mla_up_proj", "mlp", "moe_act", "shared_experts"]
ExpertPlacement = Literal["contiguous", "round_robin", "domain_local", "load_balanced", "graph"]

AXES: tuple[str, ...] = get_args(Axis)
"""Mesh axis names, in the default order (innermost first)."""
SCHEDULES: tuple[str, ...] = get_args(Schedule)
"""Pipeline schedule names a layout may ask for."""
RECOMPUTE_NAMES: tuple[str, ...] = get_args(Recompute)
"""Activation recomputation modes, in the order the search numbers them."""


class ScenarioError(Exception):
    """A scenario that cannot be loaded; `str()` is one line: "<file>: <field.path>: <problem>"."""


def _rule(field: str, detail: str) -> NoReturn:
    """Raise a cross-field violation at `field` (dotted, relative to the validating model)."""
    raise PydanticCustomError("scenario_rule", "{field}: {detail}", {"field": field, "detail": detail})


def _dp_value(value: object) -> int | str:
    """Accept a positive int or "auto" for layout.dp."""
    if value == "auto" or (type(value) is int and value >= 1):
        return value  # type: ignore[return-value]
    raise ValueError(f"expected a positive integer or 'auto', got {value!r}")


def _auto_bool(value: object) -> bool | str:
    """Accept true, false or "auto" (a setting resolved by generation: simulator.scenario.defaults)."""
    if value == "auto" or type(value) is bool:
        return value  # type: ignore[return-value]
    raise ValueError(f"expected true, false or 'auto', got {value!r}")


class _Frozen(BaseModel):
    """Base: frozen, keyword-only, unknown keys rejected, finite numbers only, one docstring a field (read from
    the source by the JSON schema, simulator.scenario.json_schema, not when the models are built: start-up)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _fill(model: BaseModel, **values: Any) -> None:
    """Set defaulted fields of a frozen model inside its own after-validator."""
    for name, value in values.items():
        object.__setattr__(model, name, value)


def _derived(model: BaseModel, **values: Any) -> BaseModel:
    """A copy of `model` with derived values that, like _fill's, stay out of model_fields_set (so
    simulator.scenario.overrides.to_raw writes what was given, and an override re-derives them)."""
    out = model.model_copy(update=values)
    out.__pydantic_fields_set__.difference_update(values)
    return out
