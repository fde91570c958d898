"""Accelerator data sheets: peak FLOP/s per dtype, HBM capacity and bandwidth (SI units)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from simulator.scenario.base import Real
from simulator.scenario.units import Bytes, BytesPerSecond, FlopPerSecond

__all__ = ["DeviceSpec", "PEAK_FAMILY"]

PEAK_FAMILY = {"bf16": "bf16", "fp16": "fp16", "fp8": "fp8", "fp8-block": "fp8", "mxfp8": "fp8",
               "nvfp4": "fp4", "mxfp4": "fp4"}
"""The data-sheet peak a compute dtype runs at: block-scaled FP8 (DeepSeek's 1x128 / 128x128 tiles, OCP
MXFP8) at the FP8 peak, NVFP4 and MXFP4 at the FP4 peak (Blackwell)."""

Efficiency = Annotated[Real, Field(gt=0, le=1)]


class DeviceSpec(BaseModel):
    """One accelerator's data sheet, as `topology.device` gives it (or names a preset of).

    YAML keys: `name`, `peak_flops` ({dtype: "312 TFLOP/s"}), `hbm` ("80 GiB"), `hbm_bandwidth`
    ("2039 GB/s"), optional `efficiency`. Python names: `hbm_bytes` for `hbm`; both are accepted.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True,
        allow_inf_nan=False,
    )  # field docstrings: read by the JSON schema (simulator.scenario.json_schema), as _Frozen's

    name: str
    """Marketing name of the device, e.g. "A100-80GB"."""
    peak_flops: dict[str, FlopPerSecond] = Field(min_length=1)
    """Dense peak FLOP/s per dtype (bf16, fp16, fp8, ...), without sparsity."""
    hbm_bytes: Bytes = Field(alias="hbm")
    """HBM capacity in bytes (YAML key `hbm`)."""
    hbm_bandwidth: BytesPerSecond
    """HBM bandwidth in bytes/s."""
    generation: Literal["ampere", "hopper", "blackwell"] | None = None
    """Architecture generation whose measured device model applies (simulator.cost.calibration);
    None: read from the name (A100 ampere; H100, H200, H800 hopper; B200, GB200 blackwell)."""
    efficiency: dict[str, Efficiency] | Literal["ideal"] | None = None
    """Optional overrides of the device model (simulator.cost.calibration.Calibration's fields, each in
    (0, 1]), or "ideal": the pure roofline closed-form references assume (every fraction 1, no
    overheads). None: the measured model of the device's generation."""

    def peak(self, dtype: str) -> float:
        """Dense peak FLOP/s of a compute dtype (its PEAK_FAMILY entry of peak_flops)."""
        return self.peak_flops[PEAK_FAMILY.get(dtype, dtype)]
