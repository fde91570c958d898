"""Candidate layouts as arrays: every valid (tp, cp, pp, dp, micro-batch, schedule, chunks, ZeRO,
recompute) for one model, workload and cluster, one numpy row per candidate.

The rules are the scenario's own (simulator/scenario/spec.py): heads split over tp (kv heads split or
replicate), the mesh covers the cluster, the global batch splits into micro-batches per replica,
interleaved needs micro-batches divisible by pp, DualPipe an even pp and micro-batch count, sequence
parallelism seq_len/cp divisible by tp. Layers split evenly over the virtual stages when they can;
otherwise `stage_split` gives the extra layers to interior stages (the first and last hold the
embedding and the head), as Llama 3 405B's 7/8/.../8/7 split over 16 stages.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np

from ..scenario.base import RECOMPUTE_NAMES
from ..schedules import SCHEDULE_NAMES, SPECS


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """Which values each layout field may take; None means every valid value."""

    schedules: tuple[str, ...] = SCHEDULE_NAMES
    """Pipeline schedules to consider."""
    interleaved_chunks: tuple[int, ...] = (2, 3, 4, 6, 8)
    """Chunks per device tried for the interleaved schedule."""
    zero: tuple[int, ...] = (0, 1, 2, 3)
    """ZeRO stages."""
    recompute: tuple[str, ...] = RECOMPUTE_NAMES
    """Activation recomputation modes."""
    micro_batches: tuple[int, ...] = (1, 2, 4, 8, 16)
    """Micro-batch sizes (sequences)."""
    max_cp: int = 16
    """Largest context-parallel degree (powers of two)."""
    sequence_parallel: str = "auto"
    """auto: on whenever tp > 1 (Megatron's practice); both: try on and off."""


@dataclass(frozen=True, kw_only=True)
class Candidates:
    """One row per candidate layout (numpy arrays of equal length)."""

    tp: np.ndarray
    cp: np.ndarray
    pp: np.ndarray
    dp: np.ndarray
    mb: np.ndarray  # sequences per micro-batch
    m: np.ndarray  # micro-batches per pipeline per step
    chunks: np.ndarray
    schedule: np.ndarray  # index into SCHEDULE_NAMES
    zero: np.ndarray
    recompute: np.ndarray  # index into RECOMPUTE_NAMES
    sp: np.ndarray  # bool: sequence parallelism

    def __len__(self) -> int:
        return len(self.tp)

    def take(self, index) -> Candidates:
        """The candidates at `index` (an index array or boolean mask)."""
        return Candidates(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: list[Candidates]) -> Candidates:
        return Candidates(**{f.name: np.concatenate([getattr(c, f.name) for c in parts])
                             for f in fields(Candidates)})

    def row(self, i: int) -> dict:
        """Candidate i as a plain mapping of layout values."""
        return {"tp": int(self.tp[i]), "cp": int(self.cp[i]), "pp": int(self.pp[i]), "dp": int(self.dp[i]),
                "micro_batch": int(self.mb[i]), "micro_batches": int(self.m[i]),
                "schedule": SCHEDULE_NAMES[self.schedule[i]], "chunks": int(self.chunks[i]),
                "zero": int(self.zero[i]), "recompute": RECOMPUTE_NAMES[self.recompute[i]],
                "sequence_parallel": bool(self.sp[i])}


def stage_split(layers: int, stages: int) -> tuple[int, ...] | None:
    """Layers per virtual stage: None when they split evenly, else the extra layers on interior
    stages spread evenly (edges first only when interior stages cannot take them all)."""
    q, r = divmod(layers, stages)
    if r == 0:
        return None
    split = [q] * stages
    interior = list(range(1, stages - 1))
    if r <= len(interior):
        picks = [interior[k * len(interior) // r] for k in range(r)]
    else:
        picks = interior + [0, stages - 1][: r - len(interior)]
    for i in picks:
        split[i] += 1
    return tuple(split)


def virtual_stages(schedule: str, pp: int, chunks: int) -> int:
    """Stages the layers split over: pp for DualPipe (each copy holds the model), else pp*chunks."""
    return SPECS[schedule].virtual_stages(pp, chunks)


def label(row: dict) -> str:
    """Short human label: TP8 CP1 PP8 DP2 mb1 interleaved(v3) ZeRO1 selective SP."""
    sched = row["schedule"] + (f"(v{row['chunks']})" if row["schedule"] == "interleaved" else "")
    return (f"TP{row['tp']} CP{row['cp']} PP{row['pp']} DP{row['dp']} mb{row['micro_batch']} {sched} "
            f"ZeRO{row['zero']} {row['recompute']}" + (" SP" if row["sequence_parallel"] else ""))


def overrides(row: dict, layers: int, gpus_per_domain: int, gpus: int) -> list[str]:
    """`--set` strings that turn a base scenario into this candidate on `gpus` GPUs."""
    split = stage_split(layers, virtual_stages(row["schedule"], row["pp"], row["chunks"]))
    return [f"topology.domains={gpus // gpus_per_domain}", f"layout.tp={row['tp']}", f"layout.cp={row['cp']}",
            f"layout.pp={row['pp']}", "layout.dp=auto", f"workload.micro_batch={row['micro_batch']}",
            f"layout.schedule={row['schedule']}", f"layout.chunks={row['chunks']}",
            f"layout.zero={row['zero']}", f"workload.recompute={row['recompute']}",
            f"layout.sequence_parallel={'true' if row['sequence_parallel'] else 'false'}",
            "layout.stage_layers=" + ("null" if split is None else "[" + ",".join(map(str, split)) + "]")]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _meshes(scn, gpus: int, space: SearchSpace):
    """(tp, cp, pp, dp) tuples valid for the model and the cluster."""
    model, seq = scn.model, scn.workload.seq_len
    out = []
    for tp in _divisors(model.heads):
        if tp > gpus or gpus % tp or (model.kv_heads % tp and tp % model.kv_heads):
            continue
        cp = 1
        while cp <= space.max_cp and gpus % (tp * cp) == 0 and seq % cp == 0:
            for pp in _divisors(gpus // (tp * cp)):
                if pp <= model.layers:
                    out.append((tp, cp, pp, gpus // (tp * cp * pp)))
            cp *= 2
    return out


@lru_cache(maxsize=4096)
def _schedules(pp: int, m: int, layers: int, space: SearchSpace) -> tuple:
    """(schedule index, chunks) pairs valid for pp stages and m micro-batches (the registry's rules;
    interleaved_chunks for a schedule whose chunks are free)."""
    out = []
    for i, name in enumerate(SCHEDULE_NAMES):
        spec = SPECS[name]
        if name not in space.schedules or spec.rule(pp, m) is not None:
            continue
        if pp == 1 and name != "1f1b":  # every schedule is the same single stage
            continue
        chunks = space.interleaved_chunks if spec.chunks is None else (spec.chunks,)
        out += [(i, v) for v in chunks if spec.virtual_stages(pp, v) <= layers]
    return tuple(out)


def enumerate_layouts(scn, gpus: int, space: SearchSpace = SearchSpace()) -> Candidates:
    """Every valid layout of `scn`'s dense model and training workload on `gpus` GPUs."""
    model, w = scn.model, scn.workload
    rec = np.array([RECOMPUTE_NAMES.index(r) for r in space.recompute])
    base, zeros = [], []  # one row per (mesh, micro-batch, schedule, sp); ZeRO and recompute crossed below
    for tp, cp, pp, dp in _meshes(scn, gpus, space):
        sp_ok = tp > 1 and (w.seq_len // cp) % tp == 0
        sp_values = [sp_ok] if space.sequence_parallel == "auto" else ([False, True] if sp_ok else [False])
        zero = tuple(space.zero) if dp * cp > 1 else (0,)  # nothing to shard over one replica
        for mb in space.micro_batches:
            if w.global_batch % (mb * dp):
                continue
            m = w.global_batch // (mb * dp)
            for sched, v in _schedules(pp, m, model.layers, space):
                for sp in sp_values:
                    base.append((tp, cp, pp, dp, mb, m, v, sched, sp))
                    zeros.append(zero)
    if not base:
        z = np.zeros(0, dtype=np.int64)
        return Candidates(tp=z, cp=z, pp=z, dp=z, mb=z, m=z, chunks=z, schedule=z, zero=z, recompute=z,
                          sp=z.astype(bool))
    rows = np.array(base, dtype=np.int64)
    index = {z: i for i, z in enumerate(dict.fromkeys(zeros))}  # at most two: all stages, and (0,)
    zero_sets = [np.array(z) for z in index]
    which = np.array([index[z] for z in zeros])
    nz = np.array([len(z) for z in zero_sets])[which]
    reps = nz * len(rec)
    expanded = np.repeat(rows, reps, axis=0)
    j = np.arange(len(expanded)) - np.repeat(np.cumsum(reps) - reps, reps)  # index within a row's block
    owner = np.repeat(which, reps)
    zero_col = np.zeros(len(expanded), dtype=np.int64)
    for i, z in enumerate(zero_sets):
        sel = owner == i
        zero_col[sel] = z[j[sel] // len(rec)]
    rec_col = rec[j % len(rec)]
    cols = dict(zip(("tp", "cp", "pp", "dp", "mb", "m", "chunks", "schedule", "sp"), expanded.T))
    return Candidates(**{k: v for k, v in cols.items() if k != "sp"}, sp=cols["sp"].astype(bool),
                      zero=zero_col.astype(np.int64), recompute=rec_col.astype(np.int64))
