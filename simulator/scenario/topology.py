"""The topology part of a scenario: the device, its NVLink domains and the scale-out fabric between them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import PosInt, Real, _Frozen
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

    @property
    def gpus(self) -> int:
        """Total GPUs: domains * domain.gpus."""
        return self.domains * self.domain.gpus
