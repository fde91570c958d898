"""Timeline -> Report: the figures of DESIGN.md section 8, in SI units.

bubble_fraction: mean over pipeline stages of (step - compute - exposed waits for communication) /
step, so that with equal stages and free communication 1F1B gives (p-1)/(m+p-1). Exposed
communication per kind is the mean over stages of the seconds the kind added to the step.

MoE models: `exposed_comm_s.ep` is the all-to-all time left on the critical path (all of it in plain
tasks; in DualPipe's F&B pairs what the other half's compute does not cover), and `extra["ep"]`
splits it by the tier that bounded each all-to-all, with the EP traffic per tier, the busiest EP
link, the load imbalance (max / mean tokens per EP rank) and the dropped fraction. `extra["params"]`
gives total and active parameters, `extra["attention"]` the attention kernel priced, whether workload.attention
auto chose it (Scenario.attention_kernel) and whether it runs in FP8 (workload.fp8_attention), `extra["defaults"]` the
other settings left to auto and what they resolved to (scenario.defaults). `caveats` names
what the step leaves unpriced where the development set shows simrack optimistic (caveats()).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .._version import __version__
from ..cost.params import active_parameters, mtp_parameters, total_parameters
from .engine import Timeline
from .plan import Plan, mesh_ranks

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
    caveats: list[str] = field(default_factory=list)  # what the figures leave out where they are known optimistic
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON-ready mapping, with the simrack_version that wrote it; floats rounded to 12
        significant digits for stable output."""
        return {**_round(asdict(self)), "simrack_version": __version__}


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
    tp, cp = per_task(plan.exposed_tp) * ~pair, per_task(plan.exposed_cp) * ~pair
    if not plan.pairs_hide_tp:  # a combined-1F1B pair runs both halves' TP and CP communication exposed
        tp, cp = tp + _pair_halves(plan.exposed_tp, tl) * pair, cp + _pair_halves(plan.exposed_cp, tl) * pair
    dp = np.maximum(0.0, tl.optimizer_start - _last_task_end(plan, tl)) + plan.param_gather
    ep = ep_exposed(plan, tl).sum() if plan.exposed_ep is not None else 0.0
    out = {"tp": tp.sum() / p, "pp": tl.comm_wait.sum() / p, "dp": float(dp.mean()), "ep": ep,
           "cp": cp.sum() / p}
    return {k: float(out[k]) for k in COMM_KINDS}


def _pair_halves(grid: np.ndarray, tl: Timeline) -> np.ndarray:
    """(tasks,) a (p, v, 3) grid's F entry of each task's chunk plus its B entry of the paired chunk."""
    return grid[tl.device, tl.chunk, 0] + grid[tl.device, np.maximum(tl.pair_chunk, 0), 1]


def ep_exposed(plan: Plan, tl: Timeline) -> np.ndarray:
    """(2,) mean over stages of the exposed all-to-all seconds, [nvlink-bound, scale-out-bound]."""
    p = plan.table.p
    kinds = np.minimum(tl.kind, 2)
    pair = tl.kind == 3
    plain = plan.exposed_ep[tl.device, tl.chunk, kinds] * ~pair
    paired = plan.exposed_ep_pair[tl.device, tl.chunk, np.maximum(tl.pair_chunk, 0)] * pair
    so = np.concatenate([plan.ep_scaleout, np.zeros(plan.ep_scaleout.shape[:2] + (1,))], axis=-1)
    total = np.concatenate([plan.exposed_ep[..., :2], np.ones(so.shape[:2] + (1,))], axis=-1)
    share = np.divide(so, total, out=np.zeros_like(so), where=total > 0)
    # a pair's exposed time is split by the shares of its two halves' all-to-alls
    pair_share = 0.5 * (share[tl.device, tl.chunk, 0] + share[tl.device, np.maximum(tl.pair_chunk, 0), 1])
    scaleout = plain * share[tl.device, tl.chunk, kinds] + paired * pair_share
    return np.array([(plain + paired - scaleout).sum(), scaleout.sum()]) / p


def ep_extra(scn, plan: Plan, tl: Timeline, fabric) -> dict:
    """The EP breakdown of an MoE step: exposed seconds and bytes by tier, the busiest EP link, the seconds a
    micro-batch's MoE layer waits on the host to issue its routed experts (forward and backward, mean layer) and
    the host seconds its eager pre-dispatch part adds (calibration.eager_moe_host, 0 under CUDA graphs)."""

    costs = plan.moe
    exposed = ep_exposed(plan, tl)
    per_rank = plan.traffic["ep_per_rank_peak"]
    bw = np.array([fabric.nvlink_bw, fabric.nic_bw])
    util = per_rank / (bw * tl.step_time)
    stage, tier = np.unravel_index(int(np.argmax(util)), util.shape)
    a2a = (plan.exposed_ep[..., 0] + plan.exposed_ep[..., 1]).sum(axis=1).mean()
    module = mtp_parameters(scn.model)  # zeros without model.mtp
    return {
        "ep": {"exposed_s": {"nvlink": float(exposed[0]), "scaleout": float(exposed[1])},
               "traffic_bytes": dict(plan.traffic["ep"]),
               "all_to_all_s_per_micro_batch": float(a2a),
               "busiest_link": {"tier": ("nvlink", "scaleout")[tier], "stage": int(stage),
                                "bytes": float(per_rank[stage, tier]), "utilization": float(util[stage, tier])},
               "expert_host_wait_s_per_layer": float(costs.host_wait[list(scn.model.moe.is_moe(scn.model.layers))]
                                                      .sum(axis=1).mean()),
               "eager_host_s_per_layer": costs.eager_host,
               "load_imbalance": costs.imbalance, "dropped_fraction": costs.dropped,
               "domains_per_group": int(len(np.unique(costs.rank_domain))),
               "tokens_per_rank_mean": float(costs.rank_tokens.mean())},
        "params": {"total": total_parameters(scn.model), "active": active_parameters(scn.model),
                   **({"mtp": scn.model.mtp.depth * (module["layer"] + module["projection"])}
                      if scn.model.mtp is not None else {})},
    }



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
    """The rank link (NVLink port or NIC share) with the highest utilization over the step; with
    experts, the busiest EP rank's link in its busier direction."""
    per_rank = plan.traffic.get("per_rank_peak", plan.traffic["per_rank"])
    bw = np.array([fabric.nvlink_bw, fabric.nic_bw])
    util = per_rank / (bw * step_time)
    stage, tier = np.unravel_index(int(np.argmax(util)), util.shape)
    return {"tier": ("nvlink", "scaleout")[tier], "stage": int(stage), "device": int(plan.devices[stage]),
            "bytes": float(per_rank[stage, tier]), "utilization": float(util[stage, tier])}


EAGER_MOE = ("MoE layers without whole-layer CUDA graphs: the host's time is priced by the routed experts' launches "
             "and, where attention, router and dispatch preprocessing run eagerly, one measured exposure a layer and "
             "micro-batch (Grace hosts, extra.ep.eager_host_s_per_layer); published eager runs mostly took longer "
             "still, most on x86 hosts (docs/calibration.md, development set)")
EAGER_MOE_GROUPED = ("MoE layers without CUDA graphs, each rank's experts one grouped kernel (expert_gemm "
                     "single_kernel, not Megatron-Core's eager path): the host's launches are not priced; eager MoE "
                     "runs of the development set mostly took longer than simrack predicts (docs/calibration.md)")


AUTO_SETTINGS = (("workload", "cross_entropy"), ("workload", "grad_accumulation_fusion"),
                 ("layout", "overlap_grad_reduce"), ("layout", "tp_overlap"))
"""The training settings besides the attention kernel that default to auto (scenario.defaults resolves them)."""


MOE_AUTO_SETTINGS = (("layout", "ep_backend"),)
"""The MoE training settings that default to auto (listed for MoE models only)."""


def resolved_defaults(scn) -> dict:
    """{section.field: resolved value} of the AUTO_SETTINGS (and, for an MoE model, MOE_AUTO_SETTINGS) a training
    scenario leaves to auto."""
    settings = AUTO_SETTINGS + (MOE_AUTO_SETTINGS if scn.model.moe is not None else ())
    return {f"{part}.{name}": getattr(scn, name) for part, name in settings
            if getattr(getattr(scn, part), name) == "auto"}


def caveats(scn) -> list[str]:
    """One line for each part of the step that simrack prices only in part, or not at all, and the development set
    shows slow: an MoE model launched eagerly (the dispatcher syncs with the host in every layer's forward pass)."""
    if scn.model.moe is None or scn.workload.cuda_graphs:
        return []
    return [EAGER_MOE if scn.workload.expert_gemm == "multi_stream" else EAGER_MOE_GROUPED]


def summarize(scn, plan: Plan, tl: Timeline, fabric) -> Report:
    """The Report of one simulated training step."""
    step = tl.step_time
    tokens = scn.workload.global_batch * scn.workload.seq_len
    peak = scn.topology.device.peak(scn.workload.dtype)
    exposed = exposed_comm(plan, tl)
    mem = plan.memory
    cats = {k: v for k, v in mem.as_dict().items() if k not in ("total", "capacity")}
    overflow = sorted(cats, key=cats.get, reverse=True) if not mem.fits else []
    lay = scn.layout
    gpus = mesh_ranks(scn)  # scn.gpus, or the survivors a relayout uses
    return Report(
        scenario=scn.name, kind="train", gpus=gpus,
        layout={"tp": lay.tp, "pp": lay.pp, "dp": lay.dp, "ep": lay.ep, "cp": lay.cp,
                "sequence_parallel": lay.sequence_parallel, "schedule": lay.schedule, "chunks": lay.chunks,
                "micro_batches": scn.micro_batches,
                "micro_batch": scn.workload.micro_batch, "zero": lay.zero,
                **({"ep_backend": scn.ep_backend} if scn.model.moe is not None and lay.ep > 1 else {}),
                **({"expert_tp": lay.expert_tp} if lay.expert_tp is not None else {}),
                **({"shard_group": lay.shard_group} if lay.shard_group is not None else {})},
        step_time_s=step, tokens_per_s=tokens / step, tokens_per_s_per_gpu=tokens / step / gpus,
        mfu=plan.model_flops / (step * gpus * peak),
        hfu=plan.hardware_flops / (step * gpus * peak),
        bubble_fraction=bubble_fraction(plan, tl), exposed_comm_s=exposed,
        memory_bytes=mem.as_dict(), fits_in_memory=mem.fits, memory_overflow=overflow,
        traffic_bytes={"nvlink": plan.traffic["nvlink"], "scaleout": plan.traffic["scaleout"]},
        busiest_link=busiest_link(scn, plan, fabric, step),
        cost_per_million_tokens=gpus * scn.topology.billed_per_gpu * scn.options.gpu_hour_price / 3600.0 * step / tokens
        * 1e6,
        caveats=caveats(scn),
        extra={"attention": {"kernel": scn.attention_kernel, "default": scn.workload.attention == "auto",
                             "fp8": scn.workload.fp8_attention},
               "defaults": resolved_defaults(scn),
               **(ep_extra(scn, plan, tl, fabric) if plan.moe is not None else {}),
               **({"offload": plan.offload} if plan.offload is not None else {})},
    )
