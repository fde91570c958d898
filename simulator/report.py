"""Timeline -> Report: the figures of DESIGN.md section 8, in SI units.

bubble_fraction: mean over pipeline stages of (step - compute - exposed waits for communication) /
step, so that with equal stages and free communication 1F1B gives (p-1)/(m+p-1). Exposed
communication per kind is the mean over stages of the seconds the kind added to the step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .engine import Timeline
from .plan import Plan

COMM_KINDS = ("tp", "pp", "dp", "ep", "cp")


@dataclass(frozen=True, kw_only=True)
class Report:
    """One simulated training step."""

    scenario: str
    kind: str
    gpus: int
    layout: dict
    step_time_s: float
    tokens_per_s: float
    tokens_per_s_per_gpu: float
    mfu: float
    hfu: float
    bubble_fraction: float
    exposed_comm_s: dict
    memory_bytes: dict
    fits_in_memory: bool
    memory_overflow: list
    traffic_bytes: dict
    busiest_link: dict
    cost_per_million_tokens: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON-ready mapping; floats rounded to 12 significant digits for stable output."""
        return _round(asdict(self))


def _round(x):
    if isinstance(x, float):
        return float(f"{x:.12g}")
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v) for v in x]
    if isinstance(x, np.generic):
        return _round(x.item())
    return x


def stage_busy(plan: Plan, tl: Timeline) -> np.ndarray:
    """(p,) compute seconds per stage: tasks plus optimizer step."""
    busy = np.bincount(tl.device, weights=tl.end - tl.start, minlength=plan.table.p)
    return busy + plan.optimizer


def exposed_comm(plan: Plan, tl: Timeline) -> dict:
    """Mean over stages of the seconds each kind of communication added to the step."""
    p = plan.table.p
    kinds = np.minimum(tl.kind, 2)
    per_task = lambda grid: grid[tl.device, tl.chunk, kinds]  # noqa: E731
    pair = tl.kind == 3
    tp = per_task(plan.exposed_tp) * ~pair
    cp = per_task(plan.exposed_cp) * ~pair
    dp = np.maximum(0.0, tl.dp_end - _last_task_end(plan, tl)) + plan.param_gather
    out = {"tp": tp.sum() / p, "pp": tl.comm_wait.sum() / p, "dp": float(dp.mean()), "ep": 0.0,
           "cp": cp.sum() / p}
    return {k: float(out[k]) for k in COMM_KINDS}


def bubble_fraction(plan: Plan, tl: Timeline) -> float:
    """Mean over stages of idle time not spent waiting on communication, over the step time."""
    waits = np.bincount(tl.device, weights=tl.comm_wait, minlength=plan.table.p)
    dp_wait = np.maximum(0.0, tl.optimizer_start - _last_task_end(plan, tl))
    idle = tl.step_time - stage_busy(plan, tl) - waits - dp_wait - plan.param_gather
    return float(np.clip(idle, 0.0, None).mean() / tl.step_time)


def _last_task_end(plan: Plan, tl: Timeline) -> np.ndarray:
    out = np.zeros(plan.table.p)
    np.maximum.at(out, tl.device, tl.end)
    return out


def busiest_link(scn, plan: Plan, fabric, step_time: float) -> dict:
    """The rank link (NVLink port or NIC share) with the highest utilization over the step."""
    per_rank = plan.traffic["per_rank"]
    bw = np.array([fabric.nvlink_bw, fabric.nic_bw])
    util = per_rank / (bw * step_time)
    stage, tier = np.unravel_index(int(np.argmax(util)), util.shape)
    return {"tier": ("nvlink", "scaleout")[tier], "stage": int(stage), "device": int(plan.devices[stage]),
            "bytes": float(per_rank[stage, tier]), "utilization": float(util[stage, tier])}


def summarize(scn, plan: Plan, tl: Timeline, fabric) -> Report:
    """The Report of one simulated training step."""
    step = tl.step_time
    tokens = scn.workload.global_batch * scn.workload.seq_len
    peak = scn.topology.device.peak_flops[scn.workload.dtype]
    exposed = exposed_comm(plan, tl)
    mem = plan.memory
    cats = {k: v for k, v in mem.as_dict().items() if k not in ("total", "capacity")}
    overflow = sorted(cats, key=cats.get, reverse=True) if not mem.fits else []
    lay = scn.layout
    return Report(
        scenario=scn.name, kind="train", gpus=scn.gpus,
        layout={"tp": lay.tp, "pp": lay.pp, "dp": lay.dp, "ep": lay.ep, "cp": lay.cp,
                "schedule": lay.schedule, "chunks": lay.chunks, "micro_batches": scn.micro_batches,
                "micro_batch": scn.workload.micro_batch, "zero": lay.zero},
        step_time_s=step, tokens_per_s=tokens / step, tokens_per_s_per_gpu=tokens / step / scn.gpus,
        mfu=plan.model_flops / (step * scn.gpus * peak),
        hfu=plan.hardware_flops / (step * scn.gpus * peak),
        bubble_fraction=bubble_fraction(plan, tl), exposed_comm_s=exposed,
        memory_bytes=mem.as_dict(), fits_in_memory=mem.fits, memory_overflow=overflow,
        traffic_bytes={"nvlink": plan.traffic["nvlink"], "scaleout": plan.traffic["scaleout"]},
        busiest_link=busiest_link(scn, plan, fabric, step),
        cost_per_million_tokens=scn.gpus * scn.options.gpu_hour_price / 3600.0 * step / tokens * 1e6,
    )
