"""Layout search: every valid layout of a training scenario on N GPUs, ranked analytically, the best
re-simulated with the engine, and why the runners-up lost.

1. simulator.whatif.space enumerates (tp, cp, pp, dp, micro-batch, schedule, chunks, ZeRO, recompute);
2. simulator.whatif.analytic ranks them all at once (numpy over candidates), dropping those that do not fit
   in memory or break a --constraint;
3. the best `top` (and the scenario's own layout) get the engine's figures (simulator.whatif.refine:
   the event-driven pass only where links are shared, layouts that time the same simulated once) and
   are re-ranked by them; each says whether the engine refined it and why (the analytic figure is
   exact for the others);
4. each runner-up gets the one reason that costs it most against the best (pipeline bubble, exposed
   TP/PP/DP/CP communication, compute from recompute or smaller GEMMs, fewer GPUs...); the layouts
   that never reached the engine are summarized by why they were dropped or ranked lower.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..output.baseline import lookup
from ..output.pareto import front
from ..scenario.base import ScenarioError
from ..scenario.files import clip, quote
from ..scenario.limits import MAX_GPUS, number
from ..scenario.overrides import as_scenario
from ..scenario.spec import Scenario
from .analytic import estimate
from .candidates import CostModel
from .ranking import OBJECTIVES, reason_lost, ties, why_dropped
from .refine import refine, refine_all
from .space import (
    RECOMPUTE_NAMES, SCHEDULE_NAMES, Candidates, SearchSpace, enumerate_layouts, label, stage_split, virtual_stages
)
from .sweep import Job, default_workers, portable, run_jobs

ANALYTIC_KEYS = ("step_time_s", "tokens_per_s", "tokens_per_s_per_gpu", "mfu", "bubble_fraction",
                 "memory_bytes.total", "cost_per_million_tokens", "gpus")
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|<|>)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Constraint:
    key: str
    op: str
    value: float

    def holds(self, x):
        return {"<": x < self.value, "<=": x <= self.value, ">": x > self.value, ">=": x >= self.value}[self.op]

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value:g}"


def parse_constraint(text: str) -> Constraint:
    """'memory_bytes.total<70e9' -> Constraint; ValueError (one line) otherwise."""
    match = _CONSTRAINT.match(text)
    if not match:
        raise ValueError(f"--constraint {quote(text)}: expected KEY<VALUE, KEY<=VALUE, KEY>VALUE or KEY>=VALUE")
    key, op, raw = match.groups()
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"--constraint {quote(text)}: {quote(raw)} is not a finite number (SI units: seconds, "
                         "bytes)") from None
    if key not in ANALYTIC_KEYS:
        raise ValueError(f"--constraint {quote(text)}: {clip(key, 60)} is not a figure of a training search; "
                         f"use one of {', '.join(ANALYTIC_KEYS)}")
    return Constraint(key, op, value)


@dataclass
class Refined:
    """One layout simulated with the engine."""

    row: dict  # layout values (simulator.whatif.space.Candidates.row) plus "gpus"
    label: str
    analytic: dict  # the analytic figures of this layout (empty for a layout outside the search space)
    report: dict | None
    status: str
    error: str | None
    source: str = "search"  # "search" or "scenario" (the scenario's own layout)
    reason: str = ""  # why it lost to the best
    sets: tuple[str, ...] = ()  # `simrack run --set` arguments that reproduce it (the search's own first)
    outside: str = ""  # why the analytic pass does not cover it ("" when it does)
    tie: bool = False  # its objective equals the best's within TIE (relative)
    refined: str = ""  # why the engine refined its analytic figure ("" when that figure is exact)


@dataclass
class SearchResult:
    objective: str
    gpus: list[int]
    constraints: list[Constraint]
    counts: dict  # enumerated, out_of_memory, constrained, ranked
    refined: list[Refined]  # engine-ranked, best first; then those that failed
    dropped: dict  # reason -> count, for layouts that never reached the engine
    timings: dict  # seconds: enumerate, analytic, engine
    front: list[dict] = field(default_factory=list)  # analytic Pareto points (gpus, cost, step, label)
    cloud: list[dict] = field(default_factory=list)  # up to 2000 other feasible layouts, for the picture
    best: Refined | None = None


def _base_for(scn, gpus: int):
    """The scenario on `gpus` GPUs (same domain, device and fabric); its layout is not used."""
    per = scn.topology.ranks_per_domain
    if gpus > MAX_GPUS:
        raise ScenarioError(f"--gpus {number(gpus)}: over simrack's limit of {MAX_GPUS:,} GPUs (per-rank arrays)")
    if gpus <= 0 or gpus % per:
        raise ScenarioError(f"--gpus {gpus}: not a positive multiple of the domain size ({per} GPUs)")
    return scn.model_copy(update={"topology": scn.topology.model_copy(update={"domains": gpus // per})})


def _score(values: np.ndarray, objective: str) -> np.ndarray:
    """Smaller is better."""
    return -values if OBJECTIVES[objective][1] == "higher" else values


def _analytic_values(est, gpus: np.ndarray) -> dict[str, np.ndarray]:
    return {"step_time_s": est.step_time, "tokens_per_s": est.tokens_per_s,
            "tokens_per_s_per_gpu": est.tokens_per_s / gpus, "mfu": est.mfu, "bubble_fraction": est.bubble,
            "memory_bytes.total": est.memory["total"], "cost_per_million_tokens": est.cost_per_million_tokens,
            "gpus": gpus.astype(float)}


def _check_searchable(scn) -> None:
    """Refuse, as one ScenarioError naming the field, what the search's analytic pass does not price."""
    lay, model = scn.layout, scn.model
    unpriced = "the search's analytic pass prices no {}; remove it"
    for refused, name, why in [
        (scn.workload.kind != "train", "workload.kind", "search covers training scenarios for now (got serve)"),
        (model.moe is not None or model.mla is not None, "model",
         "search covers dense models for now (this one has MoE or MLA); simrack sweep simulates the MoE layouts "
         "you list, e.g. --grid layout.ep=8,16,32 --grid layout.pp=4,8"),
        (lay.shard_group is not None, "layout.shard_group",  # candidates would shard over all dp*cp, refinements not
         f"search shards ZeRO state over all data-parallel ranks for now; set layout.shard_group: null to search "
         f"({lay.shard_group} given)"),
        (lay.offload is not None, "layout.offload", unpriced.format("offload")),
        (model.mtp is not None, "model.mtp", unpriced.format("multi-token-prediction module")),
        (lay.pipeline_layout is not None, "layout.pipeline_layout", unpriced.format("pipeline layout")),
    ]:
        if refused:
            raise ScenarioError(f"{scn.source}: {name}: {why}")


def search(path, *, gpus: Sequence[int], objective: str = "tokens_per_s", constraints: Sequence[Constraint] = (),
           top: int = 10, scenario_overrides: Sequence[str] = (), space: SearchSpace = SearchSpace(),
           workers: int | None = None, cluster: str | None = None, progress: bool = False) -> SearchResult:
    """Search the layouts of the training scenario at `path` (or a Scenario) on each GPU count in `gpus`."""

    if objective not in OBJECTIVES:
        raise ValueError(f"--objective {objective!r}: choose one of {', '.join(OBJECTIVES)}")
    scn = as_scenario(path, scenario_overrides)
    _check_searchable(scn)
    workers = default_workers() if workers is None else workers
    t0 = time.perf_counter()
    parts, ests, gcol, timing = [], [], [], {"enumerate": 0.0, "analytic": 0.0}
    for g in gpus:
        base = _base_for(scn, g)
        t = time.perf_counter()
        cands = enumerate_layouts(base, g, space)
        timing["enumerate"] += time.perf_counter() - t
        t = time.perf_counter()
        ests.append(estimate(CostModel(base), cands, workers=workers, skip_oom=True))
        timing["analytic"] += time.perf_counter() - t
        parts.append(cands)
        gcol.append(np.full(len(cands), g))
    cands, gcol = Candidates.concat(parts), np.concatenate(gcol)
    values = {k: np.concatenate([_analytic_values(e, np.full(len(e.step_time), g))[k] for e, g in zip(ests, gpus)])
              for k in ANALYTIC_KEYS}
    fits = np.concatenate([e.fits for e in ests])
    ok = fits.copy()
    for con in constraints:
        ok &= con.holds(values[con.key])
    score = _score(values[OBJECTIVES[objective][0]], objective)
    ranked = np.nonzero(ok)[0][np.argsort(score[ok], kind="stable")]
    counts = {"enumerated": int(len(cands)), "out_of_memory": int((~fits).sum()),
              "constrained": int((fits & ~ok).sum()), "ranked": int(len(ranked))}
    chosen = list(ranked[:top])
    refined = _refine(path, scn, scenario_overrides, cands, gcol, values, chosen, workers, cluster, progress,
                      timing, list(gpus), space)
    refined = _rank_refined(refined, objective, constraints)
    best = refined[0] if refined and refined[0].status == "ok" else None
    if best is not None:
        key = OBJECTIVES[objective][0]
        for r in refined[1:]:
            r.tie = r.status == "ok" and ties(r.report[key], best.report[key])
            r.reason = reason_lost(r, best, objective)
        best.tie = any(r.tie for r in refined[1:])
    dropped = why_dropped(cands, ests, fits, ok, values, ranked, chosen, constraints)
    timing["total"] = time.perf_counter() - t0
    return SearchResult(objective=objective, gpus=list(gpus), constraints=list(constraints), counts=counts,
                        refined=refined, dropped=dropped, timings=timing, best=best,
                        front=_front(values, cands, gcol, ok), cloud=_cloud(values, ok))


def _row(cands: Candidates, i: int, g: int) -> dict:
    return {**cands.row(i), "gpus": int(g)}


def _scenario_row(scn) -> dict:
    lay, w = scn.layout, scn.workload
    return {"tp": lay.tp, "cp": lay.cp, "pp": lay.pp, "dp": lay.dp, "micro_batch": w.micro_batch,
            "micro_batches": scn.micro_batches, "schedule": lay.schedule, "chunks": lay.chunks, "zero": lay.zero,
            "recompute": w.recompute, "sequence_parallel": lay.sequence_parallel, "gpus": scn.gpus}


def _set_text(value) -> str:
    """A value as `--set` reads it back (YAML): true, null, [7,8,8]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def reproduce(row: dict, scn) -> tuple[str, ...]:
    """The `--set` arguments that turn scenario `scn` into layout `row` for `simrack run`: the fields
    that differ from the scenario's, stage_layers when the layout's split is uneven or the scenario's
    own split no longer applies."""
    lay, w, per = scn.layout, scn.workload, scn.topology.ranks_per_domain
    split = stage_layers_of(row, scn.model.layers)
    fields = (("topology.domains", row["gpus"] // per, scn.topology.domains), ("layout.tp", row["tp"], lay.tp),
              ("layout.cp", row["cp"], lay.cp), ("layout.pp", row["pp"], lay.pp), ("layout.dp", row["dp"], lay.dp),
              ("workload.micro_batch", row["micro_batch"], w.micro_batch),
              ("layout.schedule", row["schedule"], lay.schedule), ("layout.chunks", row["chunks"], lay.chunks),
              ("layout.zero", row["zero"], lay.zero), ("workload.recompute", row["recompute"], w.recompute),
              ("layout.sequence_parallel", row["sequence_parallel"], lay.sequence_parallel),
              ("layout.stage_layers", split, lay.stage_layers))
    return tuple(f"{name}={_set_text(want)}" for name, want, have in fields if want != have)


def outside_space(scn, gpus: Sequence[int], space: SearchSpace) -> str:
    """Why the scenario's own layout is not among the search's candidates ("" if it may be)."""
    lay, w = scn.layout, scn.workload
    listed = lambda values: ", ".join(map(str, values))  # noqa: E731
    if scn.gpus not in gpus:
        return f"{scn.gpus} GPUs, the search ran on {listed(gpus)}"
    if lay.schedule not in space.schedules:
        return f"schedule {lay.schedule} is not searched"
    if lay.pp == 1 and lay.schedule != "1f1b":
        return f"schedule {lay.schedule} on one stage (the search runs one stage as 1f1b)"
    if lay.schedule == "interleaved" and lay.chunks not in space.interleaved_chunks:
        return f"interleaved chunks {lay.chunks}, the search tries {listed(space.interleaved_chunks)}"
    if w.micro_batch not in space.micro_batches:
        return f"micro_batch {w.micro_batch}, the search tries {listed(space.micro_batches)}"
    if w.recompute not in space.recompute:
        return f"recompute {w.recompute} is not searched"
    if lay.zero not in space.zero:
        return f"ZeRO {lay.zero} is not searched"
    if lay.zero and lay.dp * lay.cp == 1:
        return f"ZeRO {lay.zero} over one replica (the search keeps ZeRO 0 there)"
    if lay.cp > space.max_cp or lay.cp & (lay.cp - 1):
        return f"cp {lay.cp}, the search tries powers of two up to {space.max_cp}"
    sp_on = lay.tp > 1 and (w.seq_len // lay.cp) % lay.tp == 0
    if space.sequence_parallel == "auto" and lay.sequence_parallel != sp_on:
        return (f"sequence_parallel {'on' if lay.sequence_parallel else 'off'} with TP{lay.tp} (the search turns "
                f"it {'on' if sp_on else 'off'} here)")
    split = stage_layers_of(_scenario_row(scn), scn.model.layers)
    if lay.stage_layers is not None and lay.stage_layers != split:
        theirs = "evenly" if split is None else f"as [{','.join(map(str, split))}]"
        return (f"stage_layers [{','.join(map(str, lay.stage_layers))}] (the search splits {scn.model.layers} "
                f"layers {theirs})")
    return ""


def _refine(path, scn, scenario_overrides, cands, gcol, values, chosen, workers, cluster, progress, timing,
            gpus, space):
    """Engine runs of the chosen candidates and of the scenario's own layout (`path` may be a Scenario)."""
    base = path if isinstance(path, Scenario) else None
    where = scn.source if base is not None else str(path)
    items, meta = [], []
    for i in chosen:
        row = _row(cands, i, gcol[i])
        sets = tuple(scenario_overrides) + reproduce(row, scn)
        items.append(Job(len(items), where, sets, {}, base))
        meta.append(Refined(row=row, label=label(row), analytic={k: float(v[i]) for k, v in values.items()},
                            report=None, status="", error=None, sets=sets))
    same = [m for m in meta if m.sets == tuple(scenario_overrides)]
    if same:
        same[0].source = "search+scenario"
    else:
        own = _scenario_row(scn)
        outside = outside_space(scn, gpus, space)
        match = None if outside else _find(cands, gcol, own)
        if not outside and match is None:
            outside = "no candidate of the search has this layout"
        analytic = {} if match is None else _own_analytic(scn, cands.take(np.array([match])))
        items.append(Job(len(items), where, tuple(scenario_overrides), {}, base))
        meta.append(Refined(row=own, label=label(own), analytic=analytic, report=None, status="", error=None,
                            source="scenario", sets=tuple(scenario_overrides), outside=outside))
    t = time.perf_counter()
    if cluster:  # scenarios loaded here and sent, not their paths (as sweep's points)
        ready = [portable(job) for job in items]
        done = iter(run_jobs([j for j in ready if isinstance(j, Job)], refine, workers=workers, cluster=cluster,
                             progress=progress, label="engine refinement"))
        outcomes = [next(done) if isinstance(j, Job) else (j, "") for j in ready]
    else:  # the engine's costly pass runs only for shared links: here, the distinct steps over the workers
        outcomes = refine_all(items, workers)
    timing["engine"] = time.perf_counter() - t
    for m, (p, why) in zip(meta, outcomes):
        m.report, m.status, m.error = p.report, p.status, p.error
        m.refined = why if p.report is not None else ""
    return meta


def _own_analytic(scn, one: Candidates) -> dict:
    """Analytic figures of one candidate on the scenario's own GPUs, out of memory or not."""
    est = estimate(CostModel(scn), one)
    return {k: float(v[0]) for k, v in _analytic_values(est, np.array([scn.gpus])).items()}


def _find(cands: Candidates, gcol, row: dict):
    """Index of the candidate with this layout, or None."""
    if row["schedule"] not in SCHEDULE_NAMES:
        return None
    hit = ((cands.tp == row["tp"]) & (cands.cp == row["cp"]) & (cands.pp == row["pp"]) & (cands.dp == row["dp"])
           & (cands.mb == row["micro_batch"]) & (cands.chunks == row["chunks"]) & (gcol == row["gpus"])
           & (cands.schedule == SCHEDULE_NAMES.index(row["schedule"])) & (cands.zero == row["zero"])
           & (cands.recompute == RECOMPUTE_NAMES.index(row["recompute"])) & (cands.sp == row["sequence_parallel"]))
    idx = np.nonzero(hit)[0]
    return int(idx[0]) if len(idx) else None


def _engine_value(r: Refined, key: str) -> float:
    return lookup(r.report, key) if key != "gpus" else float(r.row["gpus"])


def _rank_refined(refined: list[Refined], objective: str, constraints) -> list[Refined]:
    """Engine-feasible layouts by the objective, then out-of-memory or constrained ones, then failures."""
    key, way = OBJECTIVES[objective]
    sign = -1 if way == "higher" else 1

    def order(r: Refined):
        if r.report is None:
            return (3, 0.0)
        feasible = r.status == "ok" and all(c.holds(_engine_value(r, c.key)) for c in constraints)
        if r.status == "ok" and not feasible:
            r.status = "constrained"
            r.error = "breaks " + ", ".join(str(c) for c in constraints if not c.holds(_engine_value(r, c.key)))
        return (0 if feasible else 1 if r.status == "constrained" else 2, sign * r.report[key])

    return sorted(refined, key=order)


def _front(values, cands, gcol, ok) -> list[dict]:
    """The analytic Pareto front of step time against GPUs (several GPU counts) or cost."""
    idx = np.nonzero(ok)[0]
    if not len(idx):
        return []
    x = values["gpus"][idx] if len(np.unique(gcol)) > 1 else values["cost_per_million_tokens"][idx]
    keep = idx[front(x, values["step_time_s"][idx])]
    return [{"gpus": int(gcol[i]), "cost_per_million_tokens": float(values["cost_per_million_tokens"][i]),
             "step_time_s": float(values["step_time_s"][i]), "label": label(_row(cands, i, gcol[i]))}
            for i in keep]


def _cloud(values, ok, limit: int = 2000) -> list[dict]:
    """An evenly spaced sample (by rank order of index) of the feasible layouts' analytic points."""
    idx = np.nonzero(ok)[0]
    idx = idx[np.linspace(0, len(idx) - 1, min(limit, len(idx))).astype(int)] if len(idx) else idx
    return [{"gpus": float(values["gpus"][i]), "cost_per_million_tokens": float(values["cost_per_million_tokens"][i]),
             "step_time_s": float(values["step_time_s"][i])} for i in idx]


def stage_layers_of(row: dict, layers: int):
    """The stage split the search gives this layout (None: even)."""
    return stage_split(layers, virtual_stages(row["schedule"], row["pp"], row["chunks"]))
