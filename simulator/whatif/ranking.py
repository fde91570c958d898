"""Ranking layouts: the search's objectives, when two layouts tie, and why a layout ranks below the best.

reason_lost explains an engine-refined runner-up in one line by the part of the step that costs it most
against the best (pipeline bubble, exposed TP/PP/DP/EP/CP communication, the rest compute), or by its GPU
count when the objective compares clusters of several sizes; why_dropped counts why the other layouts never
reached the engine (memory by largest category, constraints, the analytic component that ranks them lower).
Seconds throughout.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

OBJECTIVES = {  # name -> (report key, better)
    "tokens_per_s": ("tokens_per_s", "higher"),
    "cost_per_million_tokens": ("cost_per_million_tokens", "lower"),
    "step_time": ("step_time_s", "lower"),
}
TIE = 1e-9
"""Relative difference of the objective under which two layouts tie."""


def ties(a: float, b: float) -> bool:
    """Whether two objective values are equal within TIE (relative)."""
    return abs(a - b) <= TIE * max(abs(a), abs(b))


def step_parts(report: dict) -> dict[str, float]:
    """Seconds of a step by cause: pipeline bubble, exposed communication per kind, the rest compute."""
    step = report["step_time_s"]
    exposed = report.get("exposed_comm_s", {})
    parts = {"pipeline bubble": report.get("bubble_fraction", 0.0) * step}
    for kind in ("tp", "pp", "dp", "ep", "cp"):
        parts[f"exposed {kind.upper()}"] = exposed.get(kind, 0.0)
    parts["compute"] = step - sum(parts.values())
    return parts


def reason_lost(r, best, objective: str) -> str:
    """One line: why refined layout `r` (a search.Refined) ranks below `best`."""
    if r.report is None:
        return r.error or r.status
    if r.status == "out_of_memory":
        return r.error or "out of memory"
    if r.status == "constrained":
        return r.error or "breaks a constraint"
    key, way = OBJECTIVES[objective]
    if ties(r.report[key], best.report[key]):
        return f"tie with the best: the same {key} within {TIE:g}"
    gap = r.report[key] / best.report[key] - 1
    gap_text = f"{percent(abs(gap))} {'lower' if way == 'higher' else 'higher'} {key}"
    if r.row["gpus"] != best.row["gpus"] and objective != "step_time":
        return f"{gap_text}: {r.row['gpus']} GPUs vs {best.row['gpus']}"
    mine, theirs = step_parts(r.report), step_parts(best.report)
    cause = max(mine, key=lambda k: mine[k] - theirs[k])
    extra = mine[cause] - theirs[cause]
    detail = ""
    if cause == "pipeline bubble":
        detail = f" ({100 * r.report['bubble_fraction']:.1f}% vs {100 * best.report['bubble_fraction']:.1f}%)"
    elif cause == "compute":
        diffs = [f"{k} {r.row[k]} vs {best.row[k]}" for k in ("recompute", "micro_batch", "tp", "cp")
                 if r.row[k] != best.row[k]]
        detail = f" ({', '.join(diffs[:2])})" if diffs else ""
    return f"{gap_text}: {cause} +{extra:.3g} s{detail}"


def percent(x: float) -> str:
    """A positive fraction as a percentage with enough digits not to read 0.0%: 0.103 -> '10.3%'."""
    return f"{100 * x:.1f}%" if x >= 1e-3 else f"{100 * x:.2g}%"


def why_dropped(cands, ests, fits, ok, values, ranked, chosen, constraints) -> dict:
    """Why layouts never reached the engine: memory (by largest category), constraints, and for the
    ranked-lower ones the analytic component that costs them most against the analytic best."""
    out: Counter = Counter()
    mem = {k: np.concatenate([e.memory[k] for e in ests]) for k in ("weights", "gradients", "optimizer",
                                                                     "activations")}
    cats = np.array(list(mem))
    largest = cats[np.argmax(np.stack([mem[k] for k in cats]), axis=0)]
    for cat, n in Counter(largest[~fits].tolist()).items():
        out[f"out of memory (largest: {cat})"] += n
    for con in constraints:
        out[f"breaks {con}"] += int((fits & ~con.holds(values[con.key])).sum())
    rest = ranked[len(chosen):]
    if len(ranked) and len(rest):
        comp = {k: np.concatenate([getattr(e, a) for e in ests]) for k, a in
                (("pipeline bubble", "bubble"), ("exposed TP", "exposed_tp"), ("DP, optimizer tail", "tail"))}
        step = values["step_time_s"]
        comp["pipeline bubble"] = comp["pipeline bubble"] * step
        comp["compute"] = np.concatenate([e.busy - e.exposed_tp for e in ests])
        best = ranked[0]
        names = list(comp)
        delta = np.stack([comp[k][rest] - comp[k][best] for k in names])
        for name, n in Counter(np.array(names)[np.argmax(delta, axis=0)].tolist()).items():
            out[f"ranked lower, mostly {name}"] += n
    return dict(out.most_common())
