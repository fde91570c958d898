"""The topology part of a scenario: the device, its NVLink domains and the scale-out fabric between them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool, model_validator

from .base import PosInt, Real, _Frozen, _rule
from .hardware import DeviceSpec
from .units import BytesPerSecond, Seconds


class DomainSpec(_Frozen):
    """A scale-up (NVLink) domain: an HGX node or an NVL72 rack."""

    kind: Literal["hgx", "nvl72"] = "hgx"
    """hgx (8-GPU node) or nvl72 (72-GPU rack)."""
    gpus: PosInt
    """GPUs per domain."""
    bandwidth: BytesPerSecond
    """NVLink bandwidth per GPU per direction, B/s."""
    latency: Seconds = 2e-6
    """NVLink latency per hop, s (default 2 us)."""
    used: PosInt | None = None
    """GPUs of each domain the job runs on (the first `used`; the others spares, e.g. 64 of an NVL72's 72);
    None: all. Ranks fill the used GPUs domain by domain; each keeps its own NVLink and NIC bandwidth."""


class ScaleoutSpec(_Frozen):
    """The scale-out network joining domains (InfiniBand / RoCE)."""

    kind: Literal["fat_tree", "rail"] = "fat_tree"
    """fat_tree or rail (rail-optimized)."""
    nic_bandwidth: BytesPerSecond
    """Bandwidth of one NIC per direction, B/s."""
    nics_per_domain: PosInt
    """NICs per domain (usually one per GPU)."""
    oversubscription: Annotated[Real, Field(ge=1)] = 1.0
    """Leaf downlink : uplink bandwidth ratio; 1 is non-blocking."""
    latency: Seconds = 5e-6
    """End-to-end scale-out latency, s (default 5 us)."""
    domains_per_leaf: PosInt = 16
    """Domains under one leaf switch (a DGX SuperPOD scalable unit: 16 to 20 nodes)."""


class TopologySpec(_Frozen):
    """The rack: devices, their scale-up domains and the scale-out fabric."""

    name: str = "custom"
    """System name; a preset's name when loaded from one."""
    device: DeviceSpec
    """Accelerator data sheet."""
    domain: DomainSpec
    """Scale-up domain."""
    scaleout: ScaleoutSpec
    """Scale-out network."""
    domains: PosInt
    """Number of domains."""
    spares_billed: StrictBool = True
    """Whether the GPUs a domain holds beyond domain.used cost gpu_hour_price like the used ones (a rack is
    bought or rented whole: true), or nothing (false)."""

    @model_validator(mode="after")
    def _check_used(self) -> TopologySpec:
        if self.domain.used is not None and self.domain.used > self.domain.gpus:
            _rule("domain.used", f"{self.domain.used} GPUs used of a domain of {self.domain.gpus}")
        return self

    @property
    def ranks_per_domain(self) -> int:
        """GPUs of each domain the job runs on: domain.used, else domain.gpus."""
        return self.domain.used or self.domain.gpus

    @property
    def gpus(self) -> int:
        """GPUs the job runs on: domains * ranks_per_domain (domains * domain.gpus unless domain.used)."""
        return self.domains * self.ranks_per_domain

    @property
    def billed_per_gpu(self) -> float:
        """GPU-hours billed per GPU-hour of a used GPU: domain.gpus / used with spares_billed, else 1."""
        return self.domain.gpus / self.ranks_per_domain if self.spares_billed else 1.0
