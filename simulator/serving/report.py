"""ServeTimeline -> ServeReport: the serving figures of DESIGN.md section 8, in SI units.

Latencies per completed request: TTFT = first token - arrival; TPOT = (last token - first token) /
(output tokens - 1), for requests of two or more output tokens; end-to-end = last token - arrival.
Throughputs are over the makespan (first arrival to last completion); cost per million tokens counts
output tokens and every GPU of the scenario for the makespan. `slo_met`: p99 TTFT and p99 TPOT within
`workload.slo` (MLPerf Inference's server rule); `slo_attainment`: the fraction of requests meeting both
(DistServe). Step figures (`prefill_s`, `decode_step_s`, `exposed_comm_s`) are the cost model's for one
prompt alone and for a decode step of `batch` sequences at the mean context, without queueing; `step_breakdown_s`
splits both by what bounds them (simulator.serving.summary.BREAKDOWN: weights, KV cache, activations, compute, TP,
EP, PP, launch and scheduler seconds, adding up to the step).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .._version import __version__
from ..training.report import _round
from .timeline import DECODE, ServeTimeline

if TYPE_CHECKING:
    from .memory import ServeMemory

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True, kw_only=True)
class ServeReport:
    """One simulated serving run."""

    scenario: str
    kind: str
    gpus: int
    layout: dict
    requests: int
    completed: int
    rejected: int
    preemptions: int
    ttft_s: dict
    tpot_s: dict
    e2e_latency_s: dict
    makespan_s: float
    requests_per_s: float
    output_tokens_per_s: float
    tokens_per_s: float
    tokens_per_s_per_gpu: float
    output_tokens_per_s_per_gpu: float
    mfu: float
    prefill_s: float
    decode_step_s: float
    decode_bound: str
    step_breakdown_s: dict
    exposed_comm_s: dict
    kv_cache_bytes_peak: float
    kv_cache_tokens_capacity: int
    memory_bytes: dict
    fits_in_memory: bool
    traffic_bytes: dict
    slo: dict
    slo_met: bool | None
    slo_attainment: float | None
    cost_per_million_tokens: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON-ready mapping, with the simrack_version that wrote it; floats rounded to 12
        significant digits; NaN becomes null."""
        return {**_nulls(_round(asdict(self))), "simrack_version": __version__}


def _nulls(x):
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nulls(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nulls(v) for v in x]
    return x


def percentiles(values: np.ndarray) -> dict:
    """{p50, p90, p99, mean} of the finite values (linear interpolation); NaN when there are none."""
    v = values[np.isfinite(values)]
    if not len(v):
        return {**{f"p{q}": float("nan") for q in PERCENTILES}, "mean": float("nan")}
    return {**{f"p{q}": float(np.percentile(v, q)) for q in PERCENTILES}, "mean": float(v.mean())}


def request_latencies(tl: ServeTimeline) -> dict[str, np.ndarray]:
    """Per request TTFT, TPOT and end-to-end latency (s); NaN where undefined."""
    req = tl.requests
    out = req.output.astype(float)
    tpot = np.where(out > 1, (tl.finish - tl.first_token) / np.maximum(out - 1, 1), np.nan)
    return {"ttft": tl.first_token - req.arrival, "tpot": tpot, "e2e": tl.finish - req.arrival}


def _slo(scn, lat: dict, done: np.ndarray) -> tuple[dict, bool | None, float | None]:
    slo = scn.workload.slo
    targets = {"ttft": slo.ttft if slo else None, "tpot": slo.tpot if slo else None}
    if not any(v is not None for v in targets.values()):
        return targets, None, None
    ok = done.copy()
    met = bool(done.any())
    for key, target in targets.items():
        if target is None:
            continue
        v = lat[key]
        ok &= ~(v > target)  # NaN (a one-token request's TPOT) passes
        finite = v[done & np.isfinite(v)]
        met &= bool(len(finite) == 0 or np.percentile(finite, 99) <= target)
    return targets, met, float(ok.sum() / max(len(done), 1))


def _traffic(tl: ServeTimeline) -> dict:
    """Bytes over NVLink and scale-out in the whole run: TP all-reduces, PP hops, EP dispatch and
    combine per processed token, and the KV transfers."""
    tokens = float(tl.steps["tokens"].sum()) if len(tl.steps["tokens"]) else 0.0
    tiers = {tier: tokens * b for tier, b in tl.summary.bytes_per_token.items()}
    tr = tl.transfers
    for key, code in (("nvlink", 1), ("scaleout", 2)):
        tiers[key] += float(tr["bytes"][tr["tier"] == code].sum()) if len(tr["bytes"]) else 0.0
    return tiers


def _model_flops(scn, tl: ServeTimeline) -> float:
    """FLOP of the run: linear layers per token, LM head per sampled token, attention as computed."""
    st, s = tl.steps, tl.summary
    if not len(st["tokens"]):
        return 0.0
    attn = tl.attn_flops * scn.layout.tp * scn.model.layers
    return s.flops_per_token * float(st["tokens"].sum()) + s.head_flops_per_token * float(st["sampled"].sum()) + attn


def summarize_serving(scn, memory: ServeMemory, tl: ServeTimeline) -> ServeReport:
    """The ServeReport of one simulated serving run."""
    w = scn.workload
    req = tl.requests
    done = np.isfinite(tl.finish)
    lat = request_latencies(tl)
    start = float(req.arrival.min()) if len(req) else 0.0
    makespan = float(np.nanmax(tl.finish)) - start if done.any() else 0.0
    per_s = (lambda x: x / makespan) if makespan > 0 else (lambda x: 0.0)
    out_tokens = float(req.output[done].sum())
    all_tokens = out_tokens + float(req.prompt[done].sum())
    peak = scn.topology.device.peak(w.dtype)
    targets, met, attain = _slo(scn, lat, done)
    kv_peak_tokens = float(tl.kv_tokens_peak.max()) if len(tl.kv_tokens_peak) else 0.0
    mem = memory.by_category(kv_peak_tokens)
    return ServeReport(
        scenario=scn.name, kind="serve", gpus=scn.gpus, layout=_layout(scn, tl),
        requests=len(req), completed=int(done.sum()), rejected=int(tl.rejected.sum()),
        preemptions=int(tl.preemptions.sum()),
        ttft_s=percentiles(lat["ttft"][done]), tpot_s=percentiles(lat["tpot"][done]),
        e2e_latency_s=percentiles(lat["e2e"][done]), makespan_s=makespan,
        requests_per_s=per_s(float(done.sum())), output_tokens_per_s=per_s(out_tokens),
        tokens_per_s=per_s(all_tokens), tokens_per_s_per_gpu=per_s(all_tokens) / scn.gpus,
        output_tokens_per_s_per_gpu=per_s(out_tokens) / scn.gpus,
        mfu=per_s(_model_flops(scn, tl)) / (scn.gpus * peak),
        prefill_s=tl.summary.prefill_s, decode_step_s=tl.summary.decode_step_s, decode_bound=tl.summary.decode_bound,
        step_breakdown_s={k: dict(v) for k, v in tl.summary.breakdown.items()},
        exposed_comm_s=dict(tl.summary.comm_s), kv_cache_bytes_peak=mem["kv_cache"],
        kv_cache_tokens_capacity=memory.kv_tokens, memory_bytes=mem,
        fits_in_memory=bool(memory.fits_weights and memory.kv_tokens > 0),
        traffic_bytes=_traffic(tl), slo=targets, slo_met=met, slo_attainment=attain,
        cost_per_million_tokens=(scn.gpus * scn.topology.billed_per_gpu * scn.options.gpu_hour_price / 3600.0
                                 * makespan / out_tokens * 1e6 if out_tokens else float("nan")),
        extra={"decode_steps": int((tl.steps["kind"] == DECODE).sum()), "steps": int(len(tl.steps["kind"])),
               "kv_transfer_bytes": float(tl.transfers["bytes"].sum()) if len(tl.transfers["bytes"]) else 0.0},
    )


def _layout(scn, tl: ServeTimeline) -> dict:
    w, lay = scn.workload, scn.layout
    return {"tp": lay.tp, "pp": lay.pp, "dp": lay.dp, "ep": lay.ep, "kv_sharding": lay.kv_sharding,
            "prefill_replicas": tl.roles.count("prefill"),
            "decode_replicas": tl.roles.count("decode"), "batch": w.batch, "max_num_tokens": w.max_num_tokens,
            "kv_block": w.kv_block,
            "chunked_prefill": w.chunked_prefill, "admission": w.admission, "weight_dtype": w.weight_dtype,
            "kv_dtype": w.kv_dtype, "dtype": w.dtype}
