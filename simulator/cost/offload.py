"""Host-memory offload: what copying activations and the optimizer state to the host saves in HBM and costs in time.

Activations (Megatron-Core / Transformer Engine CPU offloading): a device offloads `n` of its L layers, spread over
its chunks in proportion to their layers. A micro-batch's pass through a chunk copies those layers' activations to
the host during its forward (device to host) and back during its backward (host to device, prefetched), each way at
the device's host_link rate a direction. The copy engines run beside the SMs, so a task lasts max(its compute, its
copies): the copies hide behind compute, or the excess is exposed. HBM keeps (L - n) / L of the in-flight
activations plus one layer's as the copy buffer. Contention of the copies for HBM bandwidth is not modelled.

Optimizer (ZeRO-Offload): the fp32 master weights, momentum and variance (12 bytes a parameter of the shard) leave
HBM. `stream`: the state streams through the GPU's Adam chunk by chunk, double-buffered: the update lasts the longest
of the copy in, the copy out (12 bytes a parameter each) and Adam's own HBM time. `cpu`: the gradients go down (2 or
4 bytes a parameter), the CPU runs Adam over the GPU's share of host DRAM bandwidth (the same bytes a parameter as
Adam on HBM), and the updated 16-bit weights come back (2 bytes), one after the other after the gradient reduction.
Units: seconds, bytes, bytes/s.
"""

from __future__ import annotations

import numpy as np

from .memory import WEIGHT_BYTES


def offloaded_share(layers: np.ndarray, n: int) -> np.ndarray:
    """(p, 1) share of each device's layers whose activations are offloaded: n / the layers it holds (layers: the
    (p, v) grid of layers of each device's chunk)."""
    held = layers.sum(axis=1, keepdims=True)
    return np.divide(float(n), held, out=np.zeros_like(held), where=held > 0)


def kept_layers(layers: np.ndarray, activations: np.ndarray, off):
    """(layers (p, v), activations (K, 3)) for pipeline.device_memory with `off` (layout.offload or None): each
    device's layers scaled to the share it keeps in HBM, and one layer's activations added to the working set
    (the copy buffer) where a device offloads any."""
    if off is None or not off.activations_layers:
        return layers, activations
    activations = np.array(activations, float)
    activations[:, 1] += activations[:, 0]
    return layers * (1.0 - offloaded_share(layers, off.activations_layers)), activations


def hbm_state(per_param, off) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes a parameter held in HBM: the optimizer's none where `off` moves it."""
    if off is None or off.optimizer == "none":
        return tuple(per_param)
    return per_param[0], per_param[1], 0.0


def activation_copies(chunk_bytes: np.ndarray, share: np.ndarray, host_link: float) -> np.ndarray:
    """(p, v) seconds one micro-batch's offloaded activations of each chunk take each way: chunk_bytes (p, v) the
    activations the chunk keeps for backward, share (p, 1) offloaded_share, at host_link bytes/s a direction."""
    return chunk_bytes * share / host_link


def hide(task: np.ndarray, copies: np.ndarray) -> np.ndarray:
    """(p, v) task seconds with the task's copies beside its compute: max(compute, copies)."""
    return np.maximum(task, copies)


def exposed_seconds(f, b, copies, counts) -> float:
    """Mean over devices of the seconds a step's copies add beyond the forward and backward tasks they ride with:
    f, b (p, v) task seconds before hiding, copies (p, v), counts (p, v) micro-batches through each chunk."""
    per = (np.maximum(copies - f, 0.0) + np.maximum(copies - b, 0.0)) * counts
    return float(per.sum(axis=1).mean())


def optimizer_seconds(mode: str, adam_hbm, hbm_rate: float, host_link: float | None, host_memory: float | None,
                      grad_bytes: float, state_bytes: float, adam: float):
    """(p,) seconds of the optimizer step with its state offloaded (`mode` cpu or stream), from Adam's seconds on HBM
    `adam_hbm` (p,) at `hbm_rate` bytes/s, `adam` bytes a parameter (pipeline.adam_bytes), whose parameters of the
    shard they give back: adam_hbm * hbm_rate / adam; `state_bytes` Adam's state a parameter (memory.optimizer_bytes).
    Mode none: adam_hbm unchanged."""
    adam_hbm = np.asarray(adam_hbm, float)
    if mode == "none":
        return adam_hbm
    shard = adam_hbm * hbm_rate / adam
    if mode == "stream":
        return np.maximum(shard * state_bytes / host_link, adam_hbm)
    return shard * grad_bytes / host_link + shard * adam / host_memory + shard * WEIGHT_BYTES / host_link
