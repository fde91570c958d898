"""What goes wrong: the `faults:` of a scenario applied to a training Plan, and the healthy comparison.

One replica is simulated (DESIGN.md section 5): the DP gradient reduction is synchronous, so every
replica waits for the slowest one, and the step is that replica's step. A fault therefore changes the
replica that holds the faulty GPU, and by symmetry the engine runs that replica.

- straggler {gpu, slowdown s}: the GPU's kernels take s times longer; its TP group is synchronous, so
  its whole pipeline stage k computes s times slower: F, B, W and the optimizer step of stage k grow by
  (s - 1) x their compute part (exposed TP/CP/EP communication is link time, unchanged).
- degraded_link {gpu, tier, fraction f}: the GPU's link of that tier runs at f of its bandwidth. Ring
  collectives run at their slowest member's bandwidth, so every collective of the groups holding the
  GPU (its TP, CP, EP group: stage k's tasks; its DP group: stage k's gradient reduction) and the
  pipeline sends from and to stage k on that tier are recomputed on a Fabric whose tier bandwidth is
  cut by f (the bandwidth term grows by 1/f; latencies are unchanged).
- failed_node {domain, policy}: spare: a standby domain swaps in, the step is unchanged and the time
  lost is restart + half a checkpoint interval; relayout: the job continues on the survivors with the
  largest dp' that fits them and divides the global batch (more micro-batches per pipeline), the same
  time lost once, and the slower step from then on.
- jitter {cv, seed}: every task's duration times a lognormal factor of mean 1 and coefficient of
  variation cv, drawn with numpy's default_rng((options.seed, jitter.seed)) in schedule order.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..cost.fabric import Fabric
from ..cost.placement import Placement
from .plan import Plan, make_plan


def stage_of(placement: Placement, gpu: int) -> int:
    """Pipeline stage (pp coordinate) of a global device index: grid = arange(gpus).reshape(...)."""
    coords = np.unravel_index(gpu, placement.grid.shape)
    return int(coords[len(placement.order) - 1 - placement.order.index("pp")])


def faulty_gpu(faults) -> int:
    """The GPU whose replica is simulated: the degraded link's, else the straggler's, else 0."""
    if faults.degraded_link is not None:
        return faults.degraded_link.gpu
    return faults.straggler.gpu if faults.straggler is not None else 0


def compute_parts(plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """(p, v) compute seconds inside F and B: the task minus its exposed TP, CP and EP seconds."""
    ep = plan.exposed_ep if plan.exposed_ep is not None else np.zeros_like(plan.exposed_tp)
    cf = plan.f - plan.exposed_tp[..., 0] - plan.exposed_cp[..., 0] - ep[..., 0]
    cb = plan.b - plan.exposed_tp[..., 1] - plan.exposed_cp[..., 1] - ep[..., 1]
    return np.maximum(cf, 0.0), np.maximum(cb, 0.0)


def straggle(plan: Plan, stage: int, s: float) -> Plan:
    """Stage `stage` computes `s` times slower: compute parts of F, B, W, F&B pairs and Adam times s."""
    cf, cb = compute_parts(plan)
    f, b, w, fb, opt = plan.f.copy(), plan.b.copy(), plan.w.copy(), plan.fb.copy(), plan.optimizer.copy()
    f[stage] += (s - 1) * cf[stage]
    b[stage] += (s - 1) * cb[stage]
    w[stage] *= s
    opt[stage] *= s
    pre = cf[stage][:, None] + cb[stage][None, :]  # the pair's two computes, back to back
    serial = 0.0  # communication a pair runs between its computes: TP and CP under combined 1F1B
    if not plan.pairs_hide_tp:
        comm = plan.exposed_tp[stage] + plan.exposed_cp[stage]
        serial = comm[:, 0][:, None] + comm[:, 1][None, :]
    hidden = plan.exposed_ep_pair[stage] if plan.exposed_ep_pair is not None else 0.0
    fb[stage] = np.maximum(s * pre + serial, plan.fb[stage])  # max(compute, communication): the latter unchanged
    extra = {}
    if plan.exposed_ep_pair is not None:
        pair = plan.exposed_ep_pair.copy()
        pair[stage] = np.maximum(pre + serial + hidden - fb[stage], 0.0)
        extra["exposed_ep_pair"] = pair
    return dataclasses.replace(plan, f=f, b=b, w=w, fb=fb, optimizer=opt, **extra)


def degraded_fabric(fabric: Fabric, tier: str, fraction: float) -> Fabric:
    """The Fabric with one tier's per-GPU bandwidth cut to `fraction`."""
    field = "nvlink_bw" if tier == "nvlink" else "nic_bw"
    return dataclasses.replace(fabric, **{field: getattr(fabric, field) * fraction})


def touching(table, stage: int) -> np.ndarray:
    """(p, v, 2) mask of the sends (indexed by sender) whose sender or receiver is `stage`."""
    mask = np.zeros((table.p, table.v, 2), dtype=bool)
    for route in table.routes:
        for direction, (a, b) in enumerate(((route[:-1], route[1:]), (route[1:], route[:-1]))):
            hit = (a[:, 0] == stage) | (b[:, 0] == stage)
            mask[a[hit, 0], a[hit, 1], direction] = True
    return mask


def degrade(plan: Plan, bad: Plan, stage: int) -> Plan:
    """`plan` with stage `stage`'s tasks, DP reduction and the sends touching it taken from `bad`
    (the same plan costed on the degraded Fabric)."""
    def rows(name):
        good, worse = getattr(plan, name), getattr(bad, name)
        if good is None:
            return None
        out = good.copy()
        out[stage] = worse[stage]
        return out

    names = ("f", "b", "w", "fb", "exposed_tp", "exposed_cp", "dp", "param_gather", "exposed_ep",
             "exposed_ep_pair", "ep_scaleout")
    mask = touching(plan.table, stage)
    return dataclasses.replace(plan, send=np.where(mask, bad.send, plan.send), **{n: rows(n) for n in names})


def jitter_scale(scn, plan: Plan) -> np.ndarray | None:
    """(tasks,) lognormal factors of mean 1 and coefficient of variation cv, in schedule order."""
    j = scn.faults.jitter
    n = sum(len(o) for o in plan.table.orders)
    sigma2 = np.log1p(j.cv ** 2)
    rng = np.random.default_rng((scn.options.seed, j.seed))
    return rng.lognormal(-sigma2 / 2, np.sqrt(sigma2), n)


def relayout(scn):
    """(scenario on the survivors, dp') after losing one domain: the largest dp' with tp*pp*cp*dp'
    within the surviving GPUs that keeps the expert grid and the shard groups whole (_whole), dividing
    the global batch (and, interleaved, giving micro-batches divisible by pp). None when no dp' fits.
    The scenario is a copy, not re-validated: its mesh uses fewer GPUs than the topology holds (the
    failed domain's and leftovers idle)."""
    lay, w = scn.layout, scn.workload
    survivors = scn.gpus - scn.topology.ranks_per_domain
    inner = lay.tp * lay.pp * lay.cp
    for dp in range(survivors // inner, 0, -1):
        if not _whole(scn, lay.model_copy(update={"dp": dp})) or w.global_batch % (w.micro_batch * dp):
            continue
        m = w.global_batch // (w.micro_batch * dp)
        if lay.schedule == "interleaved" and m % lay.pp:
            continue
        return scn.model_copy(update={"layout": lay.model_copy(update={"dp": dp}), "faults": None}), dp
    return None, None


def _whole(scn, lay) -> bool:
    """Whether a layout's expert grid and shard groups cut its mesh evenly (the scenario's own rules)."""
    moe = scn.model.moe is not None
    return lay.expert_grid_problem(moe) is None and lay.shard_problem(moe) is None


def renumber(faults, node, gpus_per_domain: int, used: int):
    """The straggler and degraded link after a relayout: survivors are renumbered past the failed
    domain; a fault on a failed GPU, or on one the smaller mesh leaves idle, no longer matters."""
    update = {"failed_node": None}
    lo = node.domain * gpus_per_domain
    for name in ("straggler", "degraded_link"):
        entry = getattr(faults, name)
        if entry is None:
            continue
        gpu = entry.gpu - gpus_per_domain if entry.gpu >= lo + gpus_per_domain else entry.gpu
        gone = lo <= entry.gpu < lo + gpus_per_domain or gpu >= used
        update[name] = None if gone else entry.model_copy(update={"gpu": gpu})
    return faults.model_copy(update=update)


def apply(scn, ops, placement: Placement, fabric: Fabric) -> tuple[Plan, dict]:
    """(faulty Plan, description) for a training scenario with faults (failed nodes handled apart)."""
    faults = scn.faults
    anchor = faulty_gpu(faults)
    plan = make_plan(scn, ops, placement, fabric, anchor=anchor)
    info = {}
    if faults.straggler is not None:
        st = faults.straggler
        k = stage_of(placement, st.gpu)
        plan = straggle(plan, k, st.slowdown)
        info["straggler"] = f"stage {k} (gpu {st.gpu}, {st.slowdown:g}x)"
    if faults.degraded_link is not None:
        dl = faults.degraded_link
        k = stage_of(placement, dl.gpu)
        bad = make_plan(scn, ops, placement, degraded_fabric(fabric, dl.tier, dl.fraction), anchor=anchor)
        if faults.straggler is not None:
            bad = straggle(bad, stage_of(placement, faults.straggler.gpu), faults.straggler.slowdown)
        plan = degrade(plan, bad, k)
        info["degraded_link"] = f"link {dl.tier} of gpu {dl.gpu} (stage {k}, {dl.fraction:g} of bandwidth)"
    if faults.jitter is not None:
        plan = dataclasses.replace(plan, task_scale=jitter_scale(scn, plan))
        info["jitter"] = f"jitter cv {faults.jitter.cv:g}"
    return plan, info


def dominant_stage(healthy: Plan, faulty: Plan, h_tl, f_tl) -> int:
    """The stage whose busy time (tasks and waits for the gradient reduction) grew the most."""
    def busy(plan, tl):
        return np.bincount(tl.device, weights=tl.end - tl.start, minlength=plan.table.p) + plan.optimizer
    return int(np.argmax(busy(faulty, f_tl) - busy(healthy, h_tl)))


def summary(scn, healthy_step: float, step: float, info: dict, lost: float, stage: int) -> dict:
    """The report's `faults` block."""
    if "straggler" in info and "degraded_link" not in info:
        dominant = info["straggler"]
    elif "degraded_link" in info and "straggler" not in info:
        dominant = info["degraded_link"]
    elif "failed_node" in info:
        dominant = info["failed_node"]
    else:
        dominant = f"stage {stage} ({', '.join(sorted(info))})"
    return {"healthy_step_time_s": healthy_step, "step_time_s": step, "slowdown": step / healthy_step,
            "dominant": dominant, "time_lost_s": lost, "applied": dict(sorted(info.items()))}


def recovery_seconds(node) -> float:
    """Time lost to one failure: detection and restart, plus half a checkpoint interval of work redone."""
    return node.restart_s + node.checkpoint_interval_s / 2
