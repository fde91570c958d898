"""Accelerator data sheets: peak FLOP/s per dtype, HBM capacity and bandwidth (SI units)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from simulator.scenario.base import Real, _rule
from simulator.scenario.units import Bytes, BytesPerSecond, FlopPerSecond, Hertz, Watts, fmt_hertz, fmt_watts

__all__ = ["DeviceSpec", "PEAK_FAMILY"]

PEAK_FAMILY = {"bf16": "bf16", "fp16": "fp16", "fp8": "fp8", "fp8-block": "fp8", "mxfp8": "fp8",
               "nvfp4": "fp4", "mxfp4": "fp4"}
"""The data-sheet peak a compute dtype runs at: block-scaled FP8 (DeepSeek's 1x128 / 128x128 tiles, OCP
MXFP8) at the FP8 peak, NVFP4 and MXFP4 at the FP4 peak (Blackwell)."""

Efficiency = Annotated[Real, Field(gt=0, le=1)]
LOWEST_POWER_SHARE = 0.5
"""The lowest power_limit / tdp the clock rule is applied at (simulator.cost.calibration.power_clock): its one
check, the H100 PCIe at 350 W, sits at 0.58 of the H100 SXM's power per SM; below, refused."""


def generation_from_name(name: str) -> str:
    """A device's generation read from its name: ampere, blackwell, else hopper."""
    name = name.upper()
    if "A100" in name or "A800" in name:
        return "ampere"
    if "B200" in name or "B300" in name or "GB2" in name or "GB3" in name:
        return "blackwell"
    return "hopper"


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
    tdp: Watts | None = None
    """Board power of the data sheet (thermal design power), W: the power a job runs at unless power_limit caps it."""
    power_limit: Watts | None = None
    """A board power cap at or below tdp (nvidia-smi -pl; at least half of it): the sustained clock falls as
    (power_limit / tdp)^(1/3) (simulator.cost.calibration.power_clock); compute-bound rates follow the clock."""
    clock: Hertz | None = None
    """An explicit sustained SM clock under load (nvidia-smi -lgc), Hz, in place of the generation's measured one;
    needs boost_clock. Compute-bound rates run at clock / boost_clock of the data-sheet peaks; HBM rates do not."""
    boost_clock: Hertz | None = None
    """The SM clock the data-sheet peaks are computed at (A100 1410 MHz, H100 1830 MHz), Hz."""
    host_link: BytesPerSecond | None = None
    """Bandwidth between the GPU and host memory per direction, B/s: PCIe 5 x16 64 GB/s on x86 hosts, NVLink-C2C
    450 GB/s on Grace (GB200): what activation and optimizer offload (layout.offload) copy over."""
    host_memory_bandwidth: BytesPerSecond | None = None
    """The GPU's share of its host's DRAM bandwidth, B/s: what the CPU's Adam streams through (offload cpu)."""

    @model_validator(mode="after")
    def _check_power(self) -> DeviceSpec:
        if self.power_limit is not None:
            if self.tdp is None:
                _rule("power_limit", f"needs the device's tdp (data-sheet board power); {self.name} gives none")
            if self.power_limit > self.tdp:
                _rule("power_limit", f"{fmt_watts(self.power_limit)} is over the tdp of {self.name} "
                      f"({fmt_watts(self.tdp)})")
            if self.power_limit < LOWEST_POWER_SHARE * self.tdp:
                _rule("power_limit", f"{fmt_watts(self.power_limit)} is under half the tdp of {self.name} "
                      f"({fmt_watts(self.tdp)}), below the range the clock rule is checked on")
        if self.clock is not None:
            if self.power_limit is not None:
                _rule("clock", "give power_limit or clock, not both")
            if self.boost_clock is None:
                _rule("clock", f"needs boost_clock, the clock of {self.name}'s data-sheet peaks")
            if self.clock > self.boost_clock:
                _rule("clock", f"{fmt_hertz(self.clock)} is over the boost_clock of {self.name} "
                      f"({fmt_hertz(self.boost_clock)}), the clock of its data-sheet peaks")
        return self

    @property
    def arch(self) -> str:
        """The generation whose measured device model applies: `generation` if given, else read from the name
        (A100 / A800 ampere; B200 / B300 / GB200 / GB300 blackwell; H100 / H200 / H800 / H20 and others hopper)."""
        return self.generation or generation_from_name(self.name)

    def peak(self, dtype: str) -> float:
        """Dense peak FLOP/s of a compute dtype (its PEAK_FAMILY entry of peak_flops)."""
        return self.peak_flops[PEAK_FAMILY.get(dtype, dtype)]
