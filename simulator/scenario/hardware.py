"""Accelerator data sheets: peak FLOP/s per dtype, HBM capacity and bandwidth (SI units)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from simulator.scenario.units import Bytes, BytesPerSecond, FlopPerSecond

__all__ = ["DeviceSpec"]

Efficiency = Annotated[float, Field(gt=0, le=1)]


class DeviceSpec(BaseModel):
    """One accelerator's data sheet, as `topology.device` gives it (or names a preset of).

    YAML keys: `name`, `peak_flops` ({dtype: "312 TFLOP/s"}), `hbm` ("80 GiB"), `hbm_bandwidth`
    ("2039 GB/s"), optional `efficiency`. Python names: `hbm_bytes` for `hbm`; both are accepted.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True,
        use_attribute_docstrings=True,
    )

    name: str
    """Marketing name of the device, e.g. "A100-80GB"."""
    peak_flops: dict[str, FlopPerSecond] = Field(min_length=1)
    """Dense peak FLOP/s per dtype (bf16, fp16, fp8, ...), without sparsity."""
    hbm_bytes: Bytes = Field(alias="hbm")
    """HBM capacity in bytes (YAML key `hbm`)."""
    hbm_bandwidth: BytesPerSecond
    """HBM bandwidth in bytes/s."""
    efficiency: dict[str, Efficiency] | None = None
    """Optional achieved fractions of peak, each in (0, 1]; keys are defined by the cost model.
    None: simrack uses its own calibration, the same for every scenario."""
