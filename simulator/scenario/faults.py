"""The faults part of a scenario: stragglers, degraded links, a failed node, jitter (training what-ifs)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import NonNegInt, Real, _Frozen
from .units import Seconds


class Straggler(_Frozen):
    """Faults: one GPU slower than the rest (thermal throttling, a bad HBM stack)."""

    gpu: NonNegInt
    """Global device index of the slow GPU."""
    slowdown: Annotated[Real, Field(ge=1)]
    """Factor (>= 1) by which the GPU's kernels take longer; its TP group and stage wait for it."""


class DegradedLink(_Frozen):
    """Faults: one GPU's link of one tier runs below line rate (a flapping NIC, a degraded NVLink)."""

    gpu: NonNegInt
    """Global device index whose link is degraded."""
    tier: Literal["nvlink", "scaleout"]
    """Which link: the GPU's NVLink port or its NIC share."""
    fraction: Annotated[Real, Field(ge=1e-6, le=1)]
    """Bandwidth left, a fraction in [1e-6, 1] of the healthy figure (below that the link is dead:
    a failed node)."""


class FailedNode(_Frozen):
    """Faults: one NVLink domain (node or rack) fails; a spare replaces it or the job re-lays out."""

    domain: NonNegInt
    """Index of the failed NVLink domain."""
    policy: Literal["spare", "relayout"] = "spare"
    """spare: a standby domain swaps in (step unchanged); relayout: continue on the survivors with
    the largest valid dp, global batch kept."""
    restart_s: Seconds = 600.0
    """Seconds to detect the failure and restart from the last checkpoint (default 600 s)."""
    checkpoint_interval_s: Annotated[Seconds, Field(gt=0)]
    """Seconds between checkpoints; on average half an interval of work is lost."""


class Jitter(_Frozen):
    """Faults: every task's duration times a lognormal factor of mean 1."""

    cv: Annotated[Real, Field(ge=0, le=10)]
    """Coefficient of variation of the factor (0: no jitter)."""
    seed: NonNegInt = 0
    """Seed of the draw, combined with options.seed."""


class Faults(_Frozen):
    """What goes wrong in a training step (simulator.training.faults); each entry optional."""

    straggler: Straggler | None = None
    """One slow GPU."""
    degraded_link: DegradedLink | None = None
    """One GPU's link bandwidth cut."""
    failed_node: FailedNode | None = None
    """One failed NVLink domain."""
    jitter: Jitter | None = None
    """Random per-task compute-time noise."""
