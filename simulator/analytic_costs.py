"""What every candidate layout's pipeline costs, as arrays: the Plan's figures without the Plan.

For a group of candidates that share a schedule, pp and chunks, `group_costs` returns the (N, p, v)
forward, backward and weight-gradient seconds, the (N, p, v, 2) pipeline sends, the (N, p) gradient
reduction, optimizer and parameter-gather seconds and the memory of the most loaded device: the
numbers simulator/plan.py would put in each candidate's Plan, computed once per distinct key and
broadcast. It calls plan.py's own functions wherever they take arrays (layer pass times, the
fabric's collectives and sends, parameter and memory formulas), so that the two stay equal;
tests/test_analytic.py checks it against make_plan on random layouts.

Keys: layer costs depend on (tp, cp, micro-batch, sequence parallelism, recompute, split backward);
the data-parallel reduction on the mesh (tp, cp, pp, dp) and the parameters each stage holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import calibration
from .fabric import fabric_for
from .layouts import RECOMPUTE_NAMES, SCHEDULE_NAMES, Candidates, stage_split, virtual_stages
from .memory import activation_bytes_per_layer, head_activation_bytes, state_bytes_per_param
from .model import ACT_BYTES, build_op_table, layer_shape, parameter_counts
from .plan import (ADAM_BYTES_PER_PARAM, GRAD_COMM_BYTES, PARAM_COMM_BYTES, block_seconds, cp_ring_seconds, pass_table,
                   stage_grid)
from .placement import mesh_order, replica_groups, split_layers
from .schedules import SPECS

@dataclass(frozen=True)
class _Routes:
    """The part of a ScheduleTable that plan.stage_grid reads."""

    p: int
    v: int
    routes: np.ndarray


@dataclass(frozen=True, kw_only=True)
class GroupCosts:
    """Per-candidate pipeline figures of one (schedule, pp, chunks) group, SI units."""

    f: np.ndarray  # (N, p, v) seconds
    b: np.ndarray
    w: np.ndarray
    fb: np.ndarray  # (N, p, v, v)
    tp: np.ndarray  # (N, p, v, 2) exposed TP seconds inside F and B
    send: np.ndarray  # (N, p, v, 2)
    send_tier: np.ndarray  # (N, p, v, 2) 0 none, 1 nvlink, 2 scaleout
    dp: np.ndarray  # (N, p)
    dp_tier: np.ndarray  # (N, p)
    optimizer: np.ndarray  # (N, p)
    param_gather: np.ndarray  # (N, p)
    memory: dict  # category -> (N,) bytes on the most loaded device, plus "capacity"


class CostModel:
    """Cost model of one base scenario (model, workload, topology) for candidate layouts."""

    def __init__(self, scn):
        if scn.model.moe is not None or getattr(scn.model, "mla", None) is not None:
            raise ValueError("the analytic pass covers dense models (no MoE or MLA) for now")
        self.scn = scn
        self.fabric = fabric_for(scn.topology)
        self.cal = calibration.for_device(scn.topology.device)
        self.counts = parameter_counts(scn.model)
        identity = _identity(scn, self.fabric)
        self._layer_cache = _LAYER_CACHE.setdefault(identity, {})
        self._dp_cache = _LAYER_CACHE.setdefault("dp:" + identity, {})
        self._ops = {}  # (tp, cp, mb, sp) -> (OpTable, LayerShape): shared by recompute modes and splits

    # --- scenario copies for plan.py's functions -------------------------------------------------
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
        """Entries of layer keys (tp, cp, mb, sp, recompute, split, (tp stride, cp stride)): (3 blocks,
        7 PASS_FIELDS) seconds, send bytes, exposed TP all-gather of a send (s), activation bytes (3,).
        Cached; the missing ones are computed together (plan.py's formulas over arrays of keys)."""
        todo = [k for k in dict.fromkeys(keys) if k not in self._layer_cache]
        if todo:
            self._layer_cache.update(zip(todo, self._compute_layers(todo)))
        return [self._layer_cache[k] for k in keys]

    def _compute_layers(self, keys: list[tuple]) -> list[tuple]:
        """layers() entries of these keys, computed (plan.layer_pass_times over arrays of keys)."""
        ops_keys = list(dict.fromkeys(k[:4] for k in keys))
        for k in ops_keys:
            if k not in self._ops:  # build_op_table reads tp, cp, mb and sp only
                scn = self.variant(tp=k[0], cp=k[1], mb=k[2], sp=k[3])
                self._ops[k] = (build_op_table(scn), layer_shape(scn))
        index = {k: i for i, k in enumerate(ops_keys)}
        which = np.array([index[k[:4]] for k in keys])
        shapes = [self._ops[k][1] for k in ops_keys]
        dev = self.scn.topology.device
        sums = block_seconds([self._ops[k][0] for k in ops_keys], dev.peak_flops[self.scn.workload.dtype],
                             dev.hbm_bandwidth, self.cal)[which]
        tp, cp, _, sp, rec, split = (np.array([k[i] for k in keys]) for i in range(6))
        s_tp, s_cp = np.array([k[6] for k in keys]).T
        tokens = np.array([sh.tokens for sh in shapes])[which]
        size = tokens * np.array([sh.hidden for sh in shapes])[which] * ACT_BYTES
        act = size / tp
        comm, gather = self._tp_collectives(tp, s_tp, size, act * tp)
        kv = 2 * tokens * np.array([sh.kv_heads * sh.head_dim for sh in shapes])[which] * ACT_BYTES
        ring = cp_ring_seconds(self.fabric, self.cal, cp, kv, 0, np.where(cp > 1, s_cp, 0))
        table = pass_table(sums, comm, ring, rec, sp, split)
        gather = np.where(sp, 0.0, gather)
        return [(table[i], float(act[i]), float(gather[i]), self._activations(k, shapes[which[i]]))
                for i, k in enumerate(keys)]

    def _tp_collectives(self, tp, stride, size, gathered):
        """((all-reduce, all-gather, reduce-scatter) of `size` bytes, all-gather of `gathered` bytes)
        seconds (K,) over each key's TP group (tp ranks `stride` apart)."""
        comm, gather = np.zeros((3, len(tp))), np.zeros(len(tp))
        for t, s in dict.fromkeys(zip(tp.tolist(), stride.tolist())):
            sel = (tp == t) & (stride == s)
            group = np.arange(t)[None] * s
            for i, kind in enumerate(("all_reduce", "all_gather", "reduce_scatter")):
                comm[i, sel] = self.fabric.collective(kind, size[sel], group, self.cal)
            gather[sel] = self.fabric.collective("all_gather", gathered[sel], group, self.cal)
        return comm, gather

    def _activations(self, key: tuple, sh) -> np.ndarray:
        """(per layer, full recompute's working layer, head) activation bytes of a layer key."""
        tp, _, _, sp, rec = key[:5]
        model, recompute = self.scn.model, RECOMPUTE_NAMES[rec]
        kw = dict(tokens=sh.tokens, seq=self.scn.workload.seq_len, tp=tp, sequence_parallel=sp, flash=sh.flash)
        per_layer = activation_bytes_per_layer(model, recompute=recompute, **kw)
        working = activation_bytes_per_layer(model, recompute="none", **kw) if recompute == "full" else 0.0
        return np.array([per_layer, working, head_activation_bytes(model, tokens=sh.tokens, tp=tp)])

    def layer_keys(self, c: Candidates, split: bool):
        """(distinct layers() keys of the candidates, inverse index, pp rank stride)."""
        sizes = {"tp": c.tp, "cp": c.cp, "ep": np.ones_like(c.tp), "dp": c.dp, "pp": c.pp}
        st = self.strides(sizes)
        uniq, inverse = _unique_rows(np.stack([c.tp, c.cp, c.mb, c.sp, c.recompute, st["tp"], st["cp"]], axis=1))
        keys = [(int(tp), int(cp), int(mb), bool(sp), int(rec), split, (int(a), int(b)))
                for tp, cp, mb, sp, rec, a, b in uniq]
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


_LAYER_CACHE: dict = {}
"""Layer figures and replica groups per identity (see _identity) and key: pure functions, memoized
across searches of one process (a search over several GPU counts, repeated benchmark rounds)."""


def _identity(scn, fabric) -> str:
    """Everything the cached figures read: the model, the workload, the device, the mesh order and the
    fabric's tier figures, but not the cluster's size (a search over GPU counts shares them)."""
    import dataclasses
    import json

    dump = scn.model_dump(mode="json")
    fab = {k: v for k, v in dataclasses.asdict(fabric).items() if k != "gpus"}
    return json.dumps({"model": dump["model"], "workload": dump["workload"], "device": dump["topology"]["device"],
                       "order": dump["layout"]["order"], "fabric": fab}, sort_keys=True)


@lru_cache(maxsize=512)
def _grid(schedule: str, p: int, v: int, layers: int):
    """(layers, embed, head) (p, v) arrays of a schedule family with the search's stage split."""
    routes = SPECS[schedule].routes(p, v)
    split = stage_split(layers, routes.shape[1])
    return stage_grid(_Routes(p, v, routes), split_layers(layers, routes.shape[1], split))


def _sends(cm: CostModel, routes, devices, nbytes, gather, keys):
    """(N, p, v, 2) send seconds and tiers, as plan.sends computes them, once per distinct key (the
    layout fields that fix the pipeline's devices, the bytes and the gather) and shared."""
    uniq, inverse = _unique_rows(keys)
    first = np.zeros(len(uniq), dtype=np.int64)
    first[inverse] = np.arange(len(keys))
    devices, nbytes, gather = devices[first], nbytes[first], gather[first]
    N, p = devices.shape
    v = int(routes[..., 1].max()) + 1
    send, tier = np.zeros((N, p, v, 2)), np.zeros((N, p, v, 2), dtype=np.int8)
    for route in routes:
        for direction, (a, b) in enumerate(((route[:-1], route[1:]), (route[1:], route[:-1]))):
            moves = a[:, 0] != b[:, 0]
            src, dst = devices[:, a[moves, 0]], devices[:, b[moves, 0]]
            t = cm.fabric.p2p(nbytes[:, None], src, dst, cm.cal) + gather[:, None]
            send[:, a[moves, 0], a[moves, 1], direction] = t
            same = cm.fabric.domain_of(src) == cm.fabric.domain_of(dst)
            tier[:, a[moves, 0], a[moves, 1], direction] = np.where(same, 1, 2)
    return send[inverse], tier[inverse]


@dataclass(frozen=True, kw_only=True)
class PipelineCosts:
    """The part of GroupCosts that ZeRO does not change (before ZeRO-3's gathers), SI units."""

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
    split = SPECS[schedule].split_backward
    layers, embed, head = _grid(schedule, p, v, cm.scn.model.layers)
    lt = cm.prepare(c, split) if lt is None else lt
    pt, act, gather, stride_pp = lt["pass"], lt["act"], lt["gather"], lt["stride_pp"]
    grid = lambda k: (layers[None] * pt[:, 1, k, None, None] + embed[None] * pt[:, 0, k, None, None]  # noqa: E731
                      + head[None] * pt[:, 2, k, None, None])
    f, b, w = grid(0), grid(1), grid(2)
    if not split:
        b, w = b + w, np.zeros_like(w)
    devices = np.arange(p)[None] * stride_pp[:, None]
    send, tier = _sends(cm, SPECS[schedule].routes(p, v), devices, act, gather,
                        np.stack([c.tp, c.cp, c.dp, c.mb, c.sp], axis=1))
    return PipelineCosts(f=f, b=b, w=w, tp=np.stack([grid(3), grid(4)], axis=-1),
                         cp=np.stack([grid(5), grid(6)], axis=-1) if pairs else None, send=send, send_tier=tier)


def data_parallel_costs(cm: CostModel, c: Candidates, schedule: str, p: int, v: int):
    """(N, p) gradient reduction, its tier, parameter gather, Adam, and ZeRO-3's per-pass gather."""
    layers, embed, head = _grid(schedule, p, v, cm.scn.model.layers)
    return _data_parallel(cm, c, p, lambda tp: _device_params(cm.scn.model, tp, layers, embed, head))


def gathered(x: np.ndarray, zero3: np.ndarray, ag3: np.ndarray) -> np.ndarray:
    """(N, p, v) pass seconds under ZeRO-3, which gathers a pass's parameters first: at least ag3."""
    return np.where(zero3[:, None, None], np.maximum(x, ag3[:, :, None]), x)


def pair_seconds(f, b, tp, cp) -> np.ndarray:
    """(N, p, v, v) seconds of an overlapped F&B pair: max(both computations, both exposed TP + CP
    communications), as plan.pair_times."""
    comm_f, comm_b = tp[..., 0] + cp[..., 0], tp[..., 1] + cp[..., 1]
    compute = (f - comm_f)[:, :, :, None] + (b - comm_b)[:, :, None, :]
    comm = comm_f[:, :, :, None] + comm_b[:, :, None, :]
    return np.maximum(np.maximum(compute, comm), 0.0)


def group_costs(cm: CostModel, c: Candidates, schedule: str, p: int, v: int, in_flight: np.ndarray,
                lt: dict | None = None) -> GroupCosts:
    """Costs of candidates `c` (all with this schedule, pp = p, chunks = v); in_flight (N, p); lt: the
    candidates' CostModel.prepare, when already computed."""
    lt = cm.prepare(c, SPECS[schedule].split_backward) if lt is None else lt
    pc = pipeline_costs(cm, c, schedule, p, v, lt)
    dp_time, dp_tier, gather_time, opt, ag3 = data_parallel_costs(cm, c, schedule, p, v)
    zero3 = c.zero >= 3
    f, b = gathered(pc.f, zero3, ag3), gathered(pc.b, zero3, ag3)
    return GroupCosts(f=f, b=b, w=pc.w, fb=pair_seconds(f, b, pc.tp, pc.cp), tp=pc.tp, send=pc.send,
                      send_tier=pc.send_tier, dp=dp_time, dp_tier=dp_tier, optimizer=opt,
                      param_gather=np.maximum(0.0, gather_time - f[:, :, 0]),
                      memory=group_memory(cm, c, schedule, p, v, in_flight, lt))


def group_memory(cm: CostModel, c: Candidates, schedule: str, p: int, v: int, in_flight: np.ndarray,
                 lt: dict | None = None) -> dict:
    """Only the memory of group_costs (cheap: no durations), to drop what does not fit first."""
    layers, embed, head = _grid(schedule, p, v, cm.scn.model.layers)
    lt = cm.prepare(c, SPECS[schedule].split_backward) if lt is None else lt
    params = _device_params(cm.scn.model, c.tp, layers, embed, head)
    return _memory(cm.scn, c, params, layers, head, v, in_flight, lt["mem"])


def _device_params(model, tp, layers, embed, head) -> np.ndarray:
    """(N, p) parameters on one TP rank of each stage (plan.device_params over candidates)."""
    cnt = parameter_counts(model)
    head_params = cnt["embedding"] if model.tied_embeddings else cnt["head"]
    per_chunk = layers * cnt["layer"] + embed * cnt["embedding"] + head * (head_params + cnt["final_norm"])
    shared = model.tied_embeddings * embed.any(axis=1) * head.any(axis=1) * cnt["embedding"]
    return (per_chunk.sum(axis=1) - shared)[None, :] / tp[:, None]


def _data_parallel(cm: CostModel, c: Candidates, p: int, params):
    """(N, p) gradient reduction, its tier, parameter gather, Adam, and ZeRO-3's per-pass gather;
    params(tp) -> (len(tp), p) parameters on a TP rank of each stage.

    The replica groups' profiles (members per domain, domains, leaf crossing) come from placement and
    Fabric.profile once per mesh; the alpha-beta times are Fabric.collective's, computed once per
    distinct (tp, cp, dp, sharded) and shared by the candidates that differ only elsewhere."""
    sharded = (c.zero >= 1) | bool(cm.scn.layout.distributed_optimizer)
    uniq, inverse = _unique_rows(np.stack([c.tp, c.cp, c.dp, sharded], axis=1))
    prm = params(uniq[:, 0])
    prof = [cm.dp_groups(int(tp), int(cp), p, int(dp)) for tp, cp, dp, _ in uniq]
    k = np.stack([q[2][0] for q in prof]).astype(float)
    d = np.stack([q[2][1] for q in prof]).astype(float)
    crosses = np.stack([q[2][2] for q in prof])
    n = np.array([float(q[1].shape[1]) for q in prof])[:, None]
    coll = lambda kind, size: cm.fabric.collective_profiled(kind, size, k, d, crosses, cm.cal)  # noqa: E731
    sh = uniq[:, 3:4].astype(bool)
    dp_time = np.where(sh, coll("reduce_scatter", prm * GRAD_COMM_BYTES), coll("all_reduce", prm * GRAD_COMM_BYTES))
    ag = coll("all_gather", prm * PARAM_COMM_BYTES)
    hbm = cm.scn.topology.device.hbm_bandwidth * cm.cal.hbm
    opt = prm / np.where(sh, n, 1) * ADAM_BYTES_PER_PARAM / hbm
    return (dp_time[inverse], np.where(d > 1, 2, 1)[inverse], np.where(sh, ag, 0.0)[inverse], opt[inverse],
            ag[inverse])


def _memory(scn, c: Candidates, params, layers, head, v, in_flight, mem_layer) -> dict:
    """Memory of the most loaded device (plan.device_memory over candidates)."""
    replicas = c.dp * c.cp
    uniq, inverse = _unique_rows(np.stack([replicas, c.zero], axis=1))
    per_param = np.array([state_bytes_per_param(int(rep), int(zero), scn.layout.distributed_optimizer)
                          for rep, zero in uniq])[inverse]
    chunk_layers = layers.sum(axis=1) / v  # (p,)
    acts = (in_flight * chunk_layers[None] * mem_layer[:, 0, None] + mem_layer[:, 1, None]
            + head.any(axis=1)[None] * mem_layer[:, 2, None])
    totals = params * per_param.sum(axis=1)[:, None] + acts
    d = np.argmax(totals, axis=1)
    pick = lambda a: np.take_along_axis(a, d[:, None], axis=1)[:, 0]  # noqa: E731
    prm = pick(params)
    out = {"weights": prm * per_param[:, 0], "gradients": prm * per_param[:, 1],
           "optimizer": prm * per_param[:, 2], "activations": pick(acts), "kv_cache": np.zeros(len(c))}
    out["total"] = out["weights"] + out["gradients"] + out["optimizer"] + out["activations"]
    out["capacity"] = np.full(len(c), float(scn.topology.device.hbm_bytes))
    return out


def _unique_rows(keys: np.ndarray):
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


def schedule_name(code: int) -> str:
    return SCHEDULE_NAMES[int(code)]


__all__ = ["CostModel", "GroupCosts", "group_costs", "group_memory", "virtual_stages"]
