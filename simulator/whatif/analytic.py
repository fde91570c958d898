"""Closed-form step time of many candidate layouts at once: the search's analytic pass.

Candidates are grouped by (schedule, pp, chunks, micro-batches); each group's schedule Structure
(simulator.whatif.structures, built once, in worker processes when there are many) gives the path
families of its task graph, evaluated for every distinct pipeline of the group at once
(simulator.whatif.families); pipelines whose stages tie so closely that the critical path runs round
trips between them, which no family holds, get the longest path itself (simulator.whatif.exact). The
stage's gradient reduction, Adam and parameter gather end the step. Every family is a real path of the
graph, so the result never exceeds the engine's step time without link sharing, and equals it where
the critical path is one of them: docs/whatif.md states the class precisely; tests/test_analytic.py
checks both facts. Seconds, bytes and FLOP throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cost.params import model_flops_per_token
from ..cost.pipeline import beside, exposed_param_gather, zero3_passes
from ..schedules import SCHEDULE_NAMES, SPECS
from . import workers as forked
from .candidates import (
    data_parallel_costs, distinct_pipelines, firsts, group_memory, layer_figures, layer_tables, pair_seconds,
    pipeline_costs, unique_rows
)
from .exact import exact_last_task_end, ties
from .families import pipeline_paths
from .structures import STRUCTURES, Structure, build_structures, in_flight_of, steady_from



# --- the whole pass: costs, structure, longest paths, over every candidate --------------------------

@dataclass(frozen=True, kw_only=True)
class Estimates:
    """Analytic figures of N candidates (SI units); index-aligned with the Candidates given."""

    step_time: np.ndarray
    memory: dict  # category -> (N,) bytes, plus "total" and "capacity"
    fits: np.ndarray  # bool
    busy: np.ndarray  # compute seconds of the busiest device (its tasks, with exposed TP inside)
    exposed_tp: np.ndarray  # TP seconds inside the busiest device's tasks
    tail: np.ndarray  # seconds after the critical device's last task: gradient reduction, Adam, gather
    bubble: np.ndarray  # mean over devices of idle / step
    tokens_per_s: np.ndarray
    mfu: np.ndarray
    cost_per_million_tokens: np.ndarray


OUT_FIELDS = ("step_time", "busy", "exposed_tp", "tail", "bubble")
MEM_FIELDS = ("weights", "gradients", "optimizer", "activations", "kv_cache", "total", "capacity")


def _jobs(c, chunk: int = 8192) -> list[tuple]:
    """(schedule, p, v, m or None, rows): candidates sharing one Structure (m None: the linear one)."""
    family, inverse = unique_rows(np.stack([c.schedule, c.pp, c.chunks], axis=1))
    steady = np.array([steady_from(SCHEDULE_NAMES[s], int(p), int(v)) for s, p, v in family])[inverse]
    m1, period = steady[:, 0], steady[:, 1]
    key_m = np.where((c.m >= m1) & ((c.m - m1) % period == 0), -1, c.m)  # as structure_key
    uniq, inverse = unique_rows(np.stack([inverse, key_m + 1], axis=1))  # the family's order, then m's
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    out = []
    for u, ((s, p, v), m) in enumerate(zip(family[uniq[:, 0]], uniq[:, 1] - 1)):
        rows = order[bounds[u]:bounds[u + 1]]
        for start in range(0, len(rows), chunk):  # bounded pieces: memory, and balanced workers
            out.append((SCHEDULE_NAMES[s], int(p), int(v), None if m < 0 else int(m), rows[start:start + chunk]))
    return out


def _run_jobs(cm, c, jobs, skip_oom: bool, lts, out: dict, mem: dict) -> None:
    """Evaluate jobs in this process, a (schedule, pp, chunks) family at a time, into out[field] and
    mem[field] at the candidates' indices ((N,) arrays). lts: candidates.layer_tables', or a callable that
    gives them (asked once the Structures are built)."""
    build_structures([(name, p, v, m) for name, p, v, m, _ in jobs])
    lts = lts() if callable(lts) else lts
    families = {}
    for i, job in enumerate(jobs):
        families.setdefault(job[:3], []).append(i)
    for (name, _, _), members in families.items():
        idx = np.concatenate([jobs[i][4] for i in members])
        group = np.repeat(np.arange(len(members)), [len(jobs[i][4]) for i in members])
        sts = [STRUCTURES[jobs[i][:4]] for i in members]
        lt = layer_figures(lts, name, idx)
        _estimate_family(cm, c.take(idx), sts, group, name, idx, out, mem, skip_oom, lt)


def _evaluate(jobs: list) -> dict:
    """_run_jobs of one family's jobs, in whichever process took them (its figures land in the shared
    arrays); the Structures it built for them, to keep in the process that asked."""
    cm, c, skip_oom, out, mem, lts = forked.state()
    new = [k for k in dict.fromkeys(j[:4] for j in jobs) if k not in STRUCTURES]
    _run_jobs(cm, c, jobs, skip_oom, lts, out, mem)
    return {k: STRUCTURES[k] for k in new}


def _table_slots(key: tuple) -> int:
    """Slots of the schedule tables a Structure key needs (the work of building it)."""
    name, p, v, m = key
    m1, period = steady_from(name, p, v)
    return p * v * (2 * m1 + period if m is None else m)


def _families(jobs: list) -> list[list]:
    """The jobs by (schedule, pp, chunks) family, the most work first (rows times stages, and building
    the Structures no process has built: about 5 row-stages a table slot)."""
    families = {}
    for j in jobs:
        families.setdefault(j[:3], []).append(j)

    def work(family):
        keys = [k for k in dict.fromkeys(j[:4] for j in family) if k not in STRUCTURES]
        return sum((len(j[4]) + 200) * j[1] * j[2] for j in family) + 5 * sum(map(_table_slots, keys))

    return sorted(families.values(), key=work, reverse=True)


def _parallel(cm, c, jobs: list, workers: int, skip_oom: bool, out: dict, mem: dict) -> None:
    """_run_jobs over `workers` processes (this one and forked ones), a family of jobs at a time, into
    out and mem: the workers write into shared copies. The process that takes a family builds the
    Structures it lacks; they come back to be kept here for later passes. The layer tables are
    computed here while the workers build their first Structures."""
    so = {k: forked.shared_array(len(c)) for k in OUT_FIELDS}
    sm = {k: forked.shared_array(len(c)) for k in MEM_FIELDS}
    for built in forked.run(_evaluate, _families(jobs), (cm, c, skip_oom, so, sm, forked.Late()), workers,
                            late=lambda: layer_tables(cm, c)):
        STRUCTURES.update(built)
    for k in OUT_FIELDS:
        out[k][:] = so[k]
    for k in MEM_FIELDS:
        mem[k][:] = sm[k]


def estimate(cm, c, *, workers: int = 1, skip_oom: bool = False) -> Estimates:
    """Analytic figures of every candidate in `c` for the cost model `cm` (candidates.CostModel).

    workers > 1 splits the work over that many processes (this one and forked ones); the results are
    the same as in one process. skip_oom: compute memory first and the step time only of the layouts
    that fit (the others get NaN timings)."""
    N = len(c)
    out = {k: np.zeros(N) for k in OUT_FIELDS}
    mem = {k: np.zeros(N) for k in MEM_FIELDS}
    jobs = _jobs(c, chunk=8192 if workers <= 1 else 2048)
    if workers > 1 and N >= 4096:
        _parallel(cm, c, jobs, workers, skip_oom, out, mem)
    else:
        _run_jobs(cm, c, jobs, skip_oom, layer_tables(cm, c), out, mem)
    scn = cm.scn
    tokens = scn.workload.global_batch * scn.workload.seq_len
    gpus = scn.gpus
    peak = scn.topology.device.peak(scn.workload.dtype)
    step = out["step_time"]
    return Estimates(
        step_time=step, memory=mem, fits=mem["total"] <= mem["capacity"], busy=out["busy"],
        exposed_tp=out["exposed_tp"], tail=out["tail"], bubble=out["bubble"], tokens_per_s=tokens / step,
        mfu=tokens * model_flops_per_token(scn.model, scn.workload.seq_len) / (step * gpus * peak),
        cost_per_million_tokens=gpus * scn.options.gpu_hour_price / 3600.0 * step / tokens * 1e6)


def _estimate_family(cm, c, sts: list[Structure], group, schedule: str, idx, out: dict, mem: dict,
                     skip_oom: bool, lt: dict) -> None:
    """Memory and timings of one family's candidates c into mem[...][idx] and out[...][idx] (group:
    each candidate's index in sts, the Structures of its jobs); skip_oom: timings only of those that
    fit (NaN for the others)."""
    in_flight = np.zeros((len(c), sts[0].p))
    for g, st in enumerate(sts):
        sel = group == g
        in_flight[sel] = in_flight_of(st, c.m[sel])
    memory = group_memory(cm, c, schedule, sts[0].p, sts[0].v, in_flight, lt)
    for k in mem:
        mem[k][idx] = memory[k]
    if skip_oom:
        fit = np.nonzero(memory["total"] <= memory["capacity"])[0]
        for k in out:
            out[k][idx] = np.nan
        if not len(fit):
            return
        c, idx, group, lt = c.take(fit), idx[fit], group[fit], {k: v[fit] for k, v in lt.items()}
    # ZeRO 1 and 2 differ in memory only: time one of each pair (and every other shared key) once
    sharded = (c.zero >= 1) | bool(cm.scn.layout.distributed_optimizer)
    zclass = np.where(c.zero >= 3, 2, sharded.astype(np.int64))
    _, inverse = unique_rows(np.stack([c.tp, c.cp, c.dp, c.mb, c.sp, c.recompute, zclass, group], axis=1))
    first = firsts(inverse)
    timed = _timings(cm, c.take(first), sts, group[first], schedule, {k: v[first] for k, v in lt.items()})
    for k in out:
        out[k][idx] = timed[k][inverse]


def _timings(cm, c, sts: list[Structure], group, schedule: str, lt: dict) -> dict:
    """Step time, busiest device, exposed TP, tail and bubble (N,) of candidates c, seconds (group:
    each candidate's index in sts).

    The longest paths run once per distinct pipeline: candidates that differ only in ZeRO share their
    pass and send seconds (ZeRO changes the tail), unless ZeRO-3's gathers lengthen passes."""
    p, v = sts[0].p, sts[0].v
    dp, _, gather, opt, ag3 = data_parallel_costs(cm, c, schedule, p, v)
    _, q = unique_rows(np.stack([c.tp, c.cp, c.dp, c.mb, c.sp, c.recompute, group], axis=1))
    first = firsts(q)
    pairs = any(((st.used >= 3 * v) & (st.used < 3 * v + v * v)).any() for st in sts)
    pc = pipeline_costs(cm, c.take(first), schedule, p, v, {k: x[first] for k, x in lt.items()}, pairs)
    lifted = (c.zero >= 3) & (ag3 > 0).any(axis=1)
    own = np.nonzero(lifted)[0]  # ZeRO-3 gathers lengthen the passes of these (cost.pipeline.zero3_passes)
    keys = np.unique(q[~lifted])  # the keys' pipelines some candidate runs unlifted
    src = np.concatenate([keys, q[own]])  # pipelines: those keys', then ZeRO-3's own
    at = np.full(len(first), -1)
    at[keys] = np.arange(len(keys))
    q = at[q]
    q[own] = len(keys) + np.arange(len(own))
    lift = np.zeros((len(src), p))
    lift[len(keys):] = ag3[own]
    f, b = zero3_passes(pc.f[src], lift, cm.cal), zero3_passes(pc.b[src], lift, cm.cal)
    m_first = c.m[first]
    # the longest paths of the distinct pipelines only (e.g. ZeRO-3 rows whose passes all last the gather)
    rest = [pc.w, pc.tp, pc.send] + ([pc.cp] if pairs else [])
    u, same = distinct_pipelines(f, b, src, m_first, rest)
    s = src[u]
    w, tp, send, m = pc.w[s], pc.tp[s], pc.send[s], m_first[s]
    fb = pair_seconds(f[u], b[u], tp, pc.cp[s], cm.cal) if pairs else None
    L, last, busy, tp_dev = (np.zeros((len(u), p)) for _ in range(4))
    pipe_group = group[first][s]
    for g, st in enumerate(sts):
        k = np.nonzero(pipe_group == g)[0]
        if len(k):
            L[k], last[k], busy[k], tp_dev[k] = pipeline_paths(st, m[k], f[u[k]], b[u[k]], w[k],
                                                       None if fb is None else fb[k], tp[k], send[k])
    # where stages tie, round trips between them can outrun every family: the longest path itself there
    even = cm.scn.model.layers % SPECS[schedule].virtual_stages(p, v) == 0
    tied = np.nonzero(ties(schedule, even, sts[0].routes, busy, send, m))[0]
    if len(tied):
        L[tied] = exact_last_task_end(schedule, p, v, m[tied], f[u[tied]], b[u[tied]], w[tied],
                                      None if fb is None else fb[tied], send[tied])
    r = same[q]  # each candidate's distinct pipeline
    param_gather = exposed_param_gather(gather, f[q, :, 0], v, cm.scn.layout.overlap_param_gather, cm.cal)
    beside_last = last[r] if cm.scn.overlap_grad_reduce else 0.0  # else the reduction follows the last task
    stage_end = L[r] + beside(beside_last, dp, cm.cal.comm_sms) + opt + param_gather
    step = stage_end.max(axis=1)
    crit = np.argmax(stage_end, axis=1)
    pick = lambda a: np.take_along_axis(a, crit[:, None], axis=1)[:, 0]  # noqa: E731
    idle = step[:, None] - busy[r] - opt - param_gather
    return {"step_time": step, "busy": busy.max(axis=1)[r], "exposed_tp": pick(tp_dev[r]),
            "tail": pick(stage_end - L[r]), "bubble": np.clip(idle, 0.0, None).mean(axis=1) / step}
