"""The layout search's bookkeeping around the physics core: candidate keys, de-duplication, caches.

The search prices every candidate layout with the functions make_plan uses (simulator.cost.pipeline),
each called once per distinct key and broadcast: layer costs per (tp, cp, micro-batch, sequence
parallelism, recompute, split backward, group strides) through CostModel, cached across searches
of one process; the data-parallel reduction per (tp, cp, dp, sharded) over the mesh's replica
groups; sends per pipeline; memory per (replicas, ZeRO). For a group of candidates that share a
schedule, pp and chunks, pipeline_costs, data_parallel_costs and group_memory give the (N, p, v)
pass seconds, (N, p) stage figures and (N,) memory of the most loaded device that each candidate's
Plan would hold; unique_rows, sorted_groups, firsts and distinct_pipelines group equal keys.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..cost import calibration
from ..cost.fabric import fabric_for
from ..cost.memory import grad_bytes, param_bytes, scenario_state_bytes
from ..cost.op_table import build_op_table, reads_one_stage
from ..cost.ops import layer_shape
from ..cost.pipeline import (
    LayerKeys, adam_bytes, backward_tasks, bucket_params, data_parallel, device_memory, device_params, fb_pairs,
    layer_costs, pass_grid, sends, stage_grid
)
from ..cost.placement import mesh_order, replica_groups, split_layers
from ..schedules import SPECS
from .space import Candidates, stage_split


class CostModel:
    """Cost model of one base scenario (model, workload, topology) for candidate layouts."""

    def __init__(self, scn):
        if scn.model.moe is not None or getattr(scn.model, "mla", None) is not None:
            raise ValueError("the analytic pass covers dense models (no MoE or MLA) for now")
        self.scn = scn
        self.fabric = fabric_for(scn.topology)
        self.cal = calibration.for_training(scn)
        identity = _identity(scn, self.fabric)
        self._layer_cache = _LAYER_CACHE.setdefault(identity, {})
        self._dp_cache = _LAYER_CACHE.setdefault("dp:" + identity, {})
        self._ops = {}  # (tp, cp, mb, sp, pp == 1) -> (OpTable, LayerShape): shared by recompute modes and splits

    # --- scenario copies for the step_costs functions ---------------------------------------------
    def variant(self, *, tp=1, cp=1, pp=1, dp=None, mb=None, sp=False, recompute=None, zero=0):
        """The base scenario with these layout and workload fields (no validation: they are valid)."""
        scn = self.scn
        lay = scn.layout.model_copy(update=dict(
            tp=int(tp), cp=int(cp), pp=int(pp), dp=int(dp if dp is not None else scn.gpus // (tp * cp * pp)),
            ep=1, sequence_parallel=bool(sp), zero=int(zero), stage_layers=None))
        work = scn.workload.model_copy(update=dict(
            micro_batch=int(mb or scn.workload.micro_batch), recompute=recompute or scn.workload.recompute))
        return scn.model_copy(update=dict(layout=lay, workload=work))

    def strides(self, sizes: dict) -> dict:
        """Rank stride of each mesh axis for these sizes (innermost axis first in layout.order)."""
        out, step = {}, np.ones_like(sizes["tp"])
        for axis in self.scn.layout.order:
            out[axis] = step
            step = step * sizes[axis]
        return out

    # --- per-layer costs --------------------------------------------------------------------------
    def layers(self, keys: list[tuple]) -> list[tuple]:
        """Entries of layer keys (tp, cp, mb, sp, recompute, split, (tp stride, cp stride), pp == 1): (3 blocks,
        7 PASS_FIELDS) seconds, send bytes, exposed TP all-gather of a send (s), activation bytes (3,).
        Cached; the missing ones are computed together (step_costs.layer_costs over arrays of keys)."""
        todo = [k for k in dict.fromkeys(keys) if k not in self._layer_cache]
        if todo:
            lc = layer_costs(self.scn, self.layer_keys_of(todo), self.fabric, self.cal)
            self._layer_cache.update((k, (lc.passes[i], float(lc.send_bytes[i]), float(lc.send_gather[i]),
                                          lc.activations[i])) for i, k in enumerate(todo))
        return [self._layer_cache[k] for k in keys]

    def layer_keys_of(self, keys: list[tuple]) -> LayerKeys:
        """The step_costs.LayerKeys of layers() keys: TP groups tp ranks `tp stride` apart from device 0,
        the CP ring's first hop from device 0 to its `cp stride` neighbour."""
        ops_keys = list(dict.fromkeys(_ops_key(k) for k in keys))
        for k in ops_keys:
            if k not in self._ops:  # build_op_table reads tp, cp, mb, sp and pp == 1 of a dense model (the search's)
                scn = self.variant(tp=k[0], cp=k[1], mb=k[2], sp=k[3], pp=1 if k[4] else 2)
                self._ops[k] = (build_op_table(scn), layer_shape(scn))
        index = {k: i for i, k in enumerate(ops_keys)}
        tp, cp, _, sp, rec, split = (np.array([k[i] for k in keys]) for i in range(6))
        s_tp, s_cp = np.array([k[6] for k in keys]).T
        groups = list(zip(tp.tolist(), s_tp.tolist()))
        prof = {g: self.fabric.profile(np.arange(g[0])[None] * g[1]) for g in dict.fromkeys(groups)}
        return LayerKeys(ops=[self._ops[k][0] for k in ops_keys], shapes=[self._ops[k][1] for k in ops_keys],
                         which=np.array([index[_ops_key(k)] for k in keys]), tp=tp, cp=cp, sp=sp, recompute=rec,
                         split=split, tp_profile=tuple(np.array([prof[g][j][0] for g in groups]) for j in range(3)),
                         cp_hop=(np.zeros(len(keys), dtype=np.int64), np.where(cp > 1, s_cp, 0)))

    def layer_keys(self, c: Candidates, split: bool):
        """(distinct layers() keys of the candidates, inverse index, pp rank stride)."""
        sizes = {"tp": c.tp, "cp": c.cp, "ep": np.ones_like(c.tp), "dp": c.dp, "pp": c.pp}
        st = self.strides(sizes)
        one = (c.pp == 1) & reads_one_stage(self.scn)  # a tied table's accumulation pass once on one stage
        uniq, inverse = unique_rows(np.stack([c.tp, c.cp, c.mb, c.sp, c.recompute, st["tp"], st["cp"], one], axis=1))
        keys = [(int(tp), int(cp), int(mb), bool(sp), int(rec), split, (int(a), int(b)), bool(o))
                for tp, cp, mb, sp, rec, a, b, o in uniq]
        return keys, inverse.ravel(), st["pp"]

    def layer_table(self, c: Candidates, split: bool) -> tuple[dict, np.ndarray, np.ndarray]:
        """(figures of each distinct layer key: pass times (K, 3 blocks, 7 fields), send bytes, the TP
        all-gather before a send (no sequence parallelism), activation bytes (K, 3); each candidate's
        key index; each candidate's pp rank stride)."""
        keys, inverse, stride_pp = self.layer_keys(c, split)
        parts = self.layers(keys)
        table = {"pass": np.stack([q[0] for q in parts]), "act": np.array([q[1] for q in parts]),
                 "gather": np.array([q[2] for q in parts]), "mem": np.stack([q[3] for q in parts])}
        return table, inverse, stride_pp

    def prepare(self, c: Candidates, split: bool) -> dict:
        """Per-candidate layer figures: layer_table's, (N, ...) each, and the pp stride."""
        table, inverse, stride_pp = self.layer_table(c, split)
        return {**{k: a[inverse] for k, a in table.items()}, "stride_pp": stride_pp}

    # --- data-parallel groups ---------------------------------------------------------------------
    def dp_groups(self, tp, cp, pp, dp):
        """(pipeline devices (p,), weight-replica groups (p, n), their Fabric.profile) of the mesh, as
        placement has them (Placement.pipeline(0), weight_replicas), from the ranks' strides."""
        key = (tp, cp, pp, dp)
        hit = self._dp_cache.get(key)
        if hit is None:
            sizes = {"tp": tp, "cp": cp, "ep": 1, "dp": dp, "pp": pp}
            order = mesh_order(self.scn.layout)
            devices = np.arange(pp) * int(np.prod([sizes[a] for a in order[:order.index("pp")]]))
            groups = replica_groups(sizes, order, devices, ("tp", "pp"))
            hit = self._dp_cache[key] = (devices, groups, self.fabric.profile(groups))
        return hit


def _ops_key(key: tuple) -> tuple:
    """The OpTable a layers() key reads: (tp, cp, mb, sp, pp == 1)."""
    return (*key[:4], key[7])


_LAYER_CACHE: dict = {}
"""Layer figures and replica groups per identity (see _identity) and key: pure functions, memoized
across searches of one process (a search over several GPU counts, repeated benchmark rounds)."""


def _identity(scn, fabric) -> str:
    """Everything the cached figures read: the model, the workload, the device, the layout's fields the search does
    not vary (the mesh order, overlap settings, gradient precision) and the fabric's tier figures, but not the
    cluster's size (a search over GPU counts shares them)."""
    dump = scn.model_dump(mode="json")
    fab = {k: v for k, v in dataclasses.asdict(fabric).items() if k != "gpus"}
    layout = {k: v for k, v in dump["layout"].items() if k not in SEARCHED}
    return json.dumps({"model": dump["model"], "workload": dump["workload"], "device": dump["topology"]["device"],
                       "layout": layout, "fabric": fab}, sort_keys=True)


SEARCHED = ("tp", "pp", "dp", "cp", "ep", "sequence_parallel", "zero", "schedule", "chunks", "stage_layers",
            "pipeline_layout")
"""The layout fields a search's candidates set themselves (whatif.space): not part of the cache's identity."""


@lru_cache(maxsize=512)
def _grid(schedule: str, p: int, v: int, layers: int):
    """(layers, embed, head) (p, v) arrays of a schedule family with the search's stage split."""
    routes = SPECS[schedule].routes(p, v)
    split = stage_split(layers, routes.shape[1])
    return stage_grid(routes, split_layers(layers, routes.shape[1], split))


def _sends(cm: CostModel, routes, devices, nbytes, gather, keys):
    """(N, p, v, 2) send seconds and tiers (step_costs.sends), once per distinct key (the layout fields
    that fix the pipeline's devices, the bytes and the gather) and shared."""
    uniq, inverse = unique_rows(keys)
    first = np.zeros(len(uniq), dtype=np.int64)
    first[inverse] = np.arange(len(keys))
    send, tier = sends(routes, devices[first], nbytes[first], gather[first], cm.fabric, cm.cal)
    return send[inverse], tier[inverse]


@dataclass(frozen=True, kw_only=True)
class PipelineCosts:
    """Pass and send seconds of candidates (before ZeRO-3's gathers), SI units."""

    f: np.ndarray  # (N, p, v) seconds
    b: np.ndarray
    w: np.ndarray
    tp: np.ndarray  # (N, p, v, 2) exposed TP seconds inside F and B
    cp: np.ndarray | None  # (N, p, v, 2) exposed CP seconds inside F and B (None: not asked for)
    send: np.ndarray  # (N, p, v, 2)
    send_tier: np.ndarray  # (N, p, v, 2)


def pipeline_costs(cm: CostModel, c: Candidates, schedule: str, p: int, v: int, lt: dict | None = None,
                   pairs: bool = True) -> PipelineCosts:
    """Pass and send seconds of candidates `c` (all with this schedule, pp = p, chunks = v); pairs:
    whether the exposed CP seconds are needed (they only shorten overlapped F&B pairs)."""
    spec = SPECS[schedule]
    grid = _grid(schedule, p, v, cm.scn.model.layers)
    lt = cm.prepare(c, spec.split_backward) if lt is None else lt
    passes = lambda k: pass_grid(lt["pass"], k, *grid)  # noqa: E731
    b, w = backward_tasks(passes(1), passes(2), spec.split_backward)
    devices = np.arange(p)[None] * lt["stride_pp"][:, None]
    send, tier = _sends(cm, spec.routes(p, v), devices, lt["act"], lt["gather"],
                        np.stack([c.tp, c.cp, c.dp, c.mb, c.sp], axis=1))
    return PipelineCosts(f=passes(0), b=b, w=w, tp=np.stack([passes(3), passes(4)], axis=-1),
                         cp=np.stack([passes(5), passes(6)], axis=-1) if pairs else None, send=send, send_tier=tier)


def data_parallel_costs(cm: CostModel, c: Candidates, schedule: str, p: int, v: int):
    """(N, p) gradient reduction, its tier, parameter gather, Adam, and ZeRO-3's per-pass gather
    (step_costs.data_parallel), once per distinct (tp, cp, dp, sharded) and shared by the candidates
    that differ only elsewhere; the replica groups' profiles come from dp_groups, once per mesh."""
    layers, embed, head = _grid(schedule, p, v, cm.scn.model.layers)
    sharded = (c.zero >= 1) | bool(cm.scn.layout.distributed_optimizer)
    uniq, inverse = unique_rows(np.stack([c.tp, c.cp, c.dp, sharded], axis=1))
    prof = [cm.dp_groups(int(tp), int(cp), p, int(dp)) for tp, cp, dp, _ in uniq]
    profile = tuple(np.stack([q[2][j] for q in prof]) for j in range(3))
    out = data_parallel(device_params(cm.scn.model, uniq[:, 0], layers, embed, head), profile,
                        [q[1].shape[1] for q in prof], uniq[:, 3].astype(bool), cm.fabric, cm.cal,
                        cm.scn.topology.device.hbm_bandwidth, grad_bytes(cm.scn.layout),
                        bucket=bucket_params(cm.scn.layout, uniq[:, 2] * uniq[:, 1]), param_bytes=param_bytes(cm.scn),
                        adam=adam_bytes(cm.scn.layout))
    return tuple(x[inverse] for x in out)


def pair_seconds(f, b, tp, cp, cal) -> np.ndarray:
    """(N, p, v, v) seconds of an overlapped F&B pair (step_costs.fb_pairs): exposed TP + CP inside."""
    return fb_pairs(f, b, tp[..., 0] + cp[..., 0], tp[..., 1] + cp[..., 1], cal)[0]


def group_memory(cm: CostModel, c: Candidates, schedule: str, p: int, v: int, in_flight: np.ndarray,
                 lt: dict | None = None) -> dict:
    """Memory of candidates `c` (cheap: no durations), to drop what does not fit first: the most loaded
    device's bytes by category (step_costs.device_memory), kv_cache and capacity, (N,) each."""
    layers, embed, head = _grid(schedule, p, v, cm.scn.model.layers)
    lt = cm.prepare(c, SPECS[schedule].split_backward) if lt is None else lt
    params = device_params(cm.scn.model, c.tp, layers, embed, head)
    uniq, inverse = unique_rows(np.stack([c.dp * c.cp, c.zero], axis=1))
    per_param = np.array([scenario_state_bytes(cm.scn, int(rep), int(zero)) for rep, zero in uniq])[inverse]
    out = device_memory(params, per_param, lt["mem"], in_flight, layers, head)
    return {**out, "kv_cache": np.zeros(len(c)), "capacity": np.full(len(c), float(cm.scn.topology.device.hbm_bytes))}


def layer_tables(cm: CostModel, c: Candidates) -> dict:
    """CostModel.layer_table of the candidates, once per split-backward flag: {flag: (position of each
    candidate of c among those with the flag, key table, key index and pp stride of those)}."""
    split = np.array([spec.split_backward for spec in SPECS.values()])[c.schedule]
    out = {}
    for flag in (False, True):
        sel = np.nonzero(split == flag)[0]
        if len(sel):
            pos = np.full(len(c), -1)
            pos[sel] = np.arange(len(sel))
            out[flag] = (pos, *cm.layer_table(c.take(sel), flag))
    return out


def layer_figures(lts: dict, schedule: str, idx: np.ndarray) -> dict:
    """CostModel.prepare of the candidates at idx, from layer_tables' tables."""
    pos, table, key, stride_pp = lts[SPECS[schedule].split_backward]
    at = pos[idx]
    return {**{k: a[key[at]] for k, a in table.items()}, "stride_pp": stride_pp[at]}


@lru_cache(maxsize=None)
def _projection(role: int, size: int) -> np.ndarray:
    """A fixed random vector of `size` numbers in [0, 1) for hashing the arrays of one role."""
    return np.random.default_rng((role, size)).random(size)


def distinct_pipelines(f, b, src, m, rest: list) -> tuple[np.ndarray, np.ndarray]:
    """(first row of each distinct pipeline, inverse index) of pipelines given by their passes f and b
    (n, p, v) and the row of the cost arrays they take the rest from (src: into m (micro-batches) and
    each array of rest): rows grouped by a random projection, then the duplicates checked equal to
    their group's first row (else every row stands alone)."""
    n = len(src)
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    h = flat(f) @ _projection(0, f[0].size) + flat(b) @ _projection(1, b[0].size)
    h += (m * _projection(2, 1)[0] + sum(flat(a) @ _projection(3 + i, a[0].size) for i, a in enumerate(rest)))[src]
    first, inverse = sorted_groups(h)
    dup = np.nonzero(first[inverse] != np.arange(n))[0]
    rep = first[inverse[dup]]
    other = src[dup] != src[rep]  # duplicates that take the rest from another row
    same = (np.array_equal(f[dup], f[rep]) and np.array_equal(b[dup], b[rep])
            and all(np.array_equal(a[src[dup[other]]], a[src[rep[other]]]) for a in (m, *rest)))
    return (first, inverse) if same else (np.arange(n), np.arange(n))


def unique_rows(keys: np.ndarray):
    """(unique rows, inverse index) of a small non-negative integer matrix, ordered as np.unique orders
    them, by one 1-D code per row (a lookup table when the codes are dense, else a stable sort)."""
    keys = np.asarray(keys, dtype=np.int64)
    if not len(keys):
        return keys, np.zeros(0, dtype=np.int64)
    span = (keys.max(axis=0) + 1).tolist()
    total = int(np.prod(span, dtype=object))
    if total >= 1 << 62:  # codes would overflow: compare whole rows
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        return uniq, inverse.ravel()
    weights = np.cumprod([1] + span[:0:-1])[::-1]  # code = sum of keys[:, c] * prod(span[c + 1:])
    code = keys @ weights
    if total <= 4 * len(keys) + 4096:  # dense codes: a lookup table instead of a sort
        present = np.zeros(total, dtype=bool)
        present[code] = True
        inverse = (np.cumsum(present) - 1)[code]
        count = int(inverse.max()) + 1
        first = np.zeros(count, dtype=np.int64)
        first[inverse[::-1]] = np.arange(len(keys))[::-1]
    else:
        first, inverse = sorted_groups(code)
    return keys[first], inverse


def sorted_groups(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first index of each distinct value of a 1-D array, in ascending order of the values; inverse
    index), by one stable sort."""
    order = np.argsort(key, kind="stable")
    new = np.empty(len(key), dtype=bool)
    new[:1] = True
    np.not_equal(key[order[1:]], key[order[:-1]], out=new[1:])
    inverse = np.empty(len(key), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return order[new], inverse


def firsts(inverse: np.ndarray) -> np.ndarray:
    """Index of the first row of each class of an inverse index."""
    first = np.zeros(inverse.max() + 1, dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(inverse))[::-1]
    return first
