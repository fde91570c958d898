"""The offload part of a layout: activations of some layers and the optimizer state kept in host memory, and the
rule that a device cannot offload more layers than it holds."""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..schedules import SPECS
from .base import NonNegInt, _Frozen


class Offload(_Frozen):
    """Host-memory offload (training): activations of some layers, the optimizer state (ZeRO-Offload)."""

    activations_layers: NonNegInt = 0
    """Layers of each device whose activations are copied to host memory after their forward pass and back
    before their backward (Megatron-Core / Transformer Engine cpu_offloading_num_layers), over the device's
    topology.device.host_link; at most the layers the device holds."""
    optimizer: Literal["none", "cpu", "stream"] = "none"
    """Where the optimizer state lives: none (HBM), cpu (host memory, Adam on the CPU: ZeRO-Offload's gradients down,
    CPU Adam over host_memory_bandwidth, parameters up), stream (host memory, streamed through the GPU's Adam chunk
    by chunk, its copies beside the update)."""


def device_layers(schedule: str, pp: int, chunks: int, stage_layers) -> np.ndarray:
    """(pp,) transformer layers each pipeline device holds over its chunks (a DualPipe device holds two stages)."""
    routes = SPECS[schedule].routes(pp, chunks)
    grid = np.zeros((pp, int(routes[..., 1].max()) + 1))
    for route in routes:
        grid[route[:, 0], route[:, 1]] = stage_layers
    return grid.sum(axis=1)


def offload_problem(s) -> tuple[str, str] | None:
    """(field, detail) of what is wrong with a scenario's layout.offload, or None."""
    lay, off = s.layout, s.layout.offload
    if off is None:
        return None
    if s.workload.kind != "train":
        return "layout.offload", f"offload is simulated for training only, got workload.kind {s.workload.kind}"
    dev = s.topology.device
    if (off.activations_layers or off.optimizer != "none") and dev.host_link is None:
        return "layout.offload", f"needs topology.device.host_link, the link of {dev.name} to host memory"
    if off.optimizer == "cpu" and dev.host_memory_bandwidth is None:
        return "layout.offload.optimizer", f"cpu needs topology.device.host_memory_bandwidth ({dev.name} gives none)"
    stages = SPECS[lay.schedule].virtual_stages(lay.pp, lay.chunks)
    split = lay.stage_layers if lay.stage_layers is not None else [s.model.layers // stages] * stages
    held = device_layers(lay.schedule, lay.pp, lay.chunks, split)
    fewest = int(np.argmin(held))
    if off.activations_layers > held[fewest]:
        return "layout.offload.activations_layers", (f"{off.activations_layers} layers offloaded, more than the "
                                                     f"{int(held[fewest])} pipeline stage {fewest} holds")
    return None
