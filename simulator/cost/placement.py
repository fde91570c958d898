"""Named mesh axes -> rank grid, parallel groups, and the layers of each pipeline stage.

Ranks are laid out with `numpy.reshape` over the axes in `layout.order`, innermost first, and rank r
runs on device r (devices are numbered domain-major), so the innermost axis (tp by default) lands in
one NVLink domain. A group of an axis is a row of `moveaxis(grid, axis, -1).reshape(-1, size)`.
Expert parallelism splits the data-parallel ranks: the mesh's `dp` axis holds dp / ep of them.
An EP group is a row of the `ep` axis; `expert_placement: domain_local` moves the ep axis right after
tp (innermost but for tp), so that an EP group spans the fewest NVLink domains (one when tp*ep fits
in a domain). Which expert each EP rank holds is simulator.moe.placement's business.

MoE parallel folding (`layout.expert_tp`, Megatron-Core's) gives the expert layers a grid of their own over
each pipeline stage's GPUs: the stage's devices in order, reshaped (expert-dp, ep, expert_tp) innermost last,
so an expert-TP group is consecutive GPUs, an EP group the next ranks at that stride (inside an NVLink domain
first), and the mesh keeps all of dp for attention (its ep axis has size 1). Hybrid sharding
(`layout.shard_group`) cuts each replica group into consecutive shard groups (`shard_split`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Rank grid and stage layout of one scenario."""

    order: tuple[str, ...]  # innermost first
    sizes: dict[str, int]
    grid: np.ndarray  # device index, one array axis per mesh axis, outermost first
    stage_layers: np.ndarray  # transformer layers of each pipeline stage (virtual stage), in order
    expert: np.ndarray | None = None  # folded expert grid (pp, expert-dp, ep, expert_tp) of devices; None unfolded

    def groups(self, axis: str) -> np.ndarray:
        """(groups, size) device array: one row per group of `axis`."""
        pos = len(self.order) - 1 - self.order.index(axis)
        return np.moveaxis(self.grid, pos, -1).reshape(-1, self.sizes[axis])

    def group_of(self, axis: str, device: int) -> np.ndarray:
        """The devices of `axis`'s group that contains `device`."""
        rows = self.groups(axis)
        return rows[np.nonzero((rows == device).any(axis=1))[0][0]]

    def weight_replicas(self, devices) -> np.ndarray:
        """(len(devices), n) devices holding the same weights as each given device: equal tp and pp
        coordinates (the data-parallel, context-parallel and expert-parallel ranks)."""
        return self.replicas(devices, ("tp", "pp"))

    def replicas(self, devices, keep_axes) -> np.ndarray:
        """(len(devices), n) devices sharing each given device's coordinates on `keep_axes` (an MoE
        expert's replicas: tp, pp and ep)."""
        coords = np.argwhere(self.grid[..., None] == np.asarray(devices))  # (k, ndim + 1)
        coords = coords[np.argsort(coords[:, -1])]
        keep = [len(self.order) - 1 - self.order.index(a) for a in keep_axes]
        rows = []
        for c in coords:
            index = tuple(c[i] if i in keep else slice(None) for i in range(self.grid.ndim))
            rows.append(self.grid[index].ravel())
        return np.array(rows)

    def expert_groups(self, axis: str) -> np.ndarray:
        """(groups, size) devices of each group of an expert axis: "ep", "etp" (the GPUs that split an
        expert by width) or "edp" (the expert's replicas); unfolded, the mesh's ep and tp groups and the
        replicas sharing tp, pp and ep."""
        if self.expert is None:
            if axis == "edp":
                keep = [len(self.order) - 1 - self.order.index(a) for a in ("tp", "pp", "ep")]
                rest = [i for i in range(self.grid.ndim) if i not in keep]
                return np.transpose(self.grid, keep + rest).reshape(-1, int(np.prod([self.grid.shape[i]
                                                                                      for i in rest])))
            return self.groups({"ep": "ep", "etp": "tp"}[axis])
        pos = {"edp": 1, "ep": 2, "etp": 3}[axis]
        return np.moveaxis(self.expert, pos, -1).reshape(-1, self.expert.shape[pos])

    def expert_group_of(self, axis: str, device: int) -> np.ndarray:
        """The devices of the expert axis's group that contains `device`."""
        if self.expert is None and axis != "edp":
            return self.group_of({"ep": "ep", "etp": "tp"}[axis], device)
        rows = self.expert_groups(axis)
        return rows[np.nonzero((rows == device).any(axis=1))[0][0]]

    def expert_replicas(self, devices) -> np.ndarray:
        """(len(devices), n) devices holding the same experts as each given device (its expert-dp group)."""
        if self.expert is None:
            return self.replicas(devices, ("tp", "pp", "ep"))
        return np.array([self.expert_group_of("edp", int(d)) for d in np.asarray(devices)])

    def pipeline(self, device: int = 0) -> np.ndarray:
        """Devices of the pipeline stages (pp group) that contains `device`, stage 0 first."""
        return self.group_of("pp", device)


def replica_groups(sizes: dict[str, int], order: tuple[str, ...], devices, keep_axes) -> np.ndarray:
    """Placement.replicas of the mesh with these axis sizes and order (innermost first), by arithmetic
    on the ranks' strides instead of a search of the device grid: the same rows, in the same order."""
    strides, step = {}, 1
    for axis in order:
        strides[axis], step = step, step * sizes[axis]
    devices = np.asarray(devices)
    base = sum((devices // strides[a] % sizes[a]) * strides[a] for a in keep_axes)
    offsets = np.zeros(1, dtype=np.int64)
    for axis in reversed(order):  # outermost first: the grid's C order
        if axis not in keep_axes:
            offsets = (offsets[:, None] + np.arange(sizes[axis]) * strides[axis]).ravel()
    return base[:, None] + offsets[None]


def mesh_sizes(layout) -> dict[str, int]:
    """Size of each mesh axis; the dp axis holds dp / ep ranks (all dp under folding, the ep axis 1)."""
    if getattr(layout, "expert_tp", None) is not None:
        return {"tp": layout.tp, "cp": layout.cp, "ep": 1, "dp": layout.dp, "pp": layout.pp}
    return {"tp": layout.tp, "cp": layout.cp, "ep": layout.ep, "dp": layout.dp // layout.ep,
            "pp": layout.pp}


def expert_grid(grid: np.ndarray, order: tuple[str, ...], ep: int, etp: int) -> np.ndarray:
    """(pp, expert-dp, ep, etp) devices of the folded expert grid: each stage's devices in order, cut into
    expert-TP groups of etp consecutive GPUs, ep of those an EP group."""
    pos = len(order) - 1 - order.index("pp")
    stages = np.sort(np.moveaxis(grid, pos, 0).reshape(grid.shape[pos], -1), axis=1)
    return stages.reshape(stages.shape[0], -1, ep, etp)


def shard_counts(layout) -> tuple[int, int]:
    """(dense, expert) ranks that ZeRO or the distributed optimizer shards each part's state over: every
    replica (dp*cp; an expert's expert_dp), or under hybrid sharding a shard group of each (shard_group, and
    expert_dp over the dp*cp/shard_group groups)."""
    dense, expert = layout.dp * layout.cp, layout.expert_dp
    if layout.shard_group is None:
        return dense, expert
    return layout.shard_group, expert // (dense // layout.shard_group)


def shard_split(rows: np.ndarray, devices, shard: int) -> tuple[np.ndarray, np.ndarray]:
    """(shard groups (len(devices), shard), cross groups (len(devices), n / shard)) of hybrid sharding: each
    device's replica row (rows (len(devices), n)) in device order cut into groups of `shard` consecutive
    ranks, the nearest GPUs together; the cross group holds the ranks at the device's place in every group
    (those that all-reduce its gradient shard)."""
    shards, cross = [], []
    for row, device in zip(np.asarray(rows), np.asarray(devices)):
        cut = np.sort(row).reshape(-1, shard)
        g, j = np.argwhere(cut == device)[0]
        shards.append(cut[g])
        cross.append(cut[:, j])
    return np.array(shards), np.array(cross)


def split_layers(layers: int, stages: int, given=None) -> np.ndarray:
    """Layers per stage: as given, or an even split (layers divisible by stages, checked on load)."""
    if given is not None:
        return np.asarray(given, dtype=int)
    return np.full(stages, layers // stages, dtype=int)


def mesh_order(layout) -> tuple[str, ...]:
    """Mesh axes, innermost first: layout.order, with ep moved right after tp for domain_local."""
    order = tuple(layout.order)
    if getattr(layout, "expert_placement", None) != "domain_local":
        return order
    rest = tuple(a for a in order if a not in ("tp", "ep"))
    return ("tp", "ep") + rest


def place(scenario) -> Placement:
    """The Placement of a validated scenario."""
    lay = scenario.layout
    sizes = mesh_sizes(lay)
    order = mesh_order(lay)
    shape = [sizes[a] for a in reversed(order)]
    grid = np.arange(int(np.prod(shape))).reshape(shape)
    stages = lay.pp * lay.chunks
    folded = getattr(lay, "expert_tp", None) is not None
    return Placement(order=order, sizes=sizes, grid=grid,
                     stage_layers=split_layers(scenario.model.layers, stages, lay.stage_layers),
                     expert=expert_grid(grid, order, lay.ep, lay.expert_tp) if folded else None)
