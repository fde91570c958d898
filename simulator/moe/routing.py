"""Routing: how many tokens each expert receives, drawn with numpy from a popularity pmf per MoE layer.

The load model. Each MoE layer has a popularity pmf p over its E routed experts: uniform; Zipf with
exponent s (the i-th most popular expert weighs i**-s, which expert is i-th is shuffled per layer);
or measured counts read from a file. A token visits k distinct experts, so no expert can be chosen
by more than 1/k of the choices: p is clipped to 1/k by water-filling (the excess goes to the others
in proportion), which leaves p alone whenever k * max(p) <= 1. The T tokens of an EP group's
micro-batch make T*k choices; the tokens per expert are Multinomial(T*k, p), one draw per layer and
sampled micro-batch step, so E[load_e] = T*k*p_e exactly and the total is exactly T*k. With a
capacity factor c, an expert keeps at most c*T*k/E tokens and drops the rest.

Co-activation (which experts a token picks together) is a separate, token-level sample: tokens belong
to topics, experts to topics (at random), and a fraction `affinity` of a token's k choices is drawn
from its topic's experts; the pmf of each choice is still p, so the marginal loads are unchanged.
That sample feeds the graph placement and the de-duplicated dispatch (distinct domains per token).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..scenario.base import ScenarioError
from ..scenario.files import FileProblem, clip, one_line, quote, read_text, resolve
from ..scenario.limits import MAX_COUNTS_BYTES

TOKEN_SAMPLE = 1024  # tokens per MoE layer in the co-activation sample


@dataclass(frozen=True, kw_only=True)
class Routing:
    """Drawn routing of every MoE layer (arrays; loads in tokens)."""

    pmf: np.ndarray  # (L, E) popularity of each expert per MoE layer, clipped to <= 1/k
    loads: np.ndarray  # (S, L, E) tokens each expert keeps, per sampled micro-batch step and layer
    dropped: np.ndarray  # (S, L) tokens dropped by the capacity limit
    choices: np.ndarray | None  # (L, n, k) expert ids chosen by a sample of tokens; None if not needed
    assignments: int  # tokens * top_k per EP group and micro-batch step


def zipf_pmf(experts: int, skew: float) -> np.ndarray:
    """Zipf pmf over `experts` ranks: weight i**-skew for i = 1..experts, normalized (most popular first)."""
    w = np.arange(1, experts + 1, dtype=float) ** -skew
    return w / w.sum()


def clip_to_top_k(pmf: np.ndarray, k: int) -> np.ndarray:
    """Water-fill a pmf (..., E) so no entry exceeds 1/k, spreading the excess over the rest pro rata.

    A top-k router picks k distinct experts per token: expert e is in at most every token's set, so at
    most a fraction 1/k of all choices. Entries already below the cap keep their ratios.
    """
    p = np.array(pmf, dtype=float)
    cap = 1.0 / k
    for _ in range(p.shape[-1]):
        over = p > cap * (1 + 1e-12)
        if not over.any():
            break
        fixed = np.where(over | np.isclose(p, cap), cap, 0.0)
        free = np.where(fixed > 0, 0.0, p)
        room = 1.0 - fixed.sum(axis=-1, keepdims=True)
        scale = np.divide(room, free.sum(axis=-1, keepdims=True), out=np.ones_like(room),
                          where=free.sum(axis=-1, keepdims=True) > 0)
        p = fixed + free * scale
    return p


def popularity(routing, moe, layers: int, rng: np.random.Generator, base_dir: Path) -> np.ndarray:
    """(layers, E) pmf of each MoE layer from a workload.routing spec (None: uniform), clipped to 1/k."""
    e = moe.experts
    kind = "uniform" if routing is None else routing.kind
    if kind == "uniform" or (kind == "zipf" and routing.skew == 0):
        p = np.full((layers, e), 1.0 / e)
    elif kind == "zipf":
        ranks = np.argsort(rng.random((layers, e)), axis=1)  # a random permutation per layer
        p = zipf_pmf(e, routing.skew)[ranks]
    else:
        p = read_counts(base_dir, routing.counts_file, layers, e)
    return clip_to_top_k(p, moe.top_k)


class CountsError(ValueError):
    """A routing counts file that cannot be used; `str()` is one line naming the file (and the line)."""


def read_counts(base_dir: Path, name: str, layers: int, experts: int) -> np.ndarray:
    """(layers, E) pmf from a text file of tokens per expert: one row for all layers, or one per layer
    (whitespace-separated counts, '#' starts a comment). CountsError names the file and the line of
    a count that is not a finite number from 0 to 2**53, a row of the wrong length or all zeros."""
    path = resolve(name, base_dir)
    shown = clip(str(path))
    try:
        text = read_text(path, MAX_COUNTS_BYTES)
    except FileProblem as exc:
        raise CountsError(f"{shown}: {exc.detail}") from None
    rows = []
    for line, content in enumerate(text.splitlines(), start=1):
        fields = content.split("#", 1)[0].split()
        if not fields:
            continue
        if len(rows) == layers:
            raise CountsError(f"{shown} line {line}: more than {layers} rows; expected 1 or {layers} rows of "
                              f"{experts} non-negative counts")
        if len(fields) != experts:
            raise CountsError(f"{shown} line {line}: {len(fields)} counts; expected 1 or {layers} rows of "
                              f"{experts} non-negative counts")
        try:
            row = np.array(fields, dtype=float)
        except ValueError:
            row = np.array([math.nan])  # a word: _count names it below
        if not (np.all(row >= 0) and np.all(row <= 2.0**53)):  # NaN fails this too
            for f in fields:
                _count(f, shown, line)
        rows.append(row)
        if not rows[-1].any():
            raise CountsError(f"{shown} line {line}: every count is zero; a layer's tokens must go somewhere")
    if len(rows) not in (1, layers):
        raise CountsError(f"{shown}: expected 1 or {layers} rows of {experts} non-negative counts, got "
                          f"{len(rows)} rows")
    counts = np.broadcast_to(np.array(rows), (layers, experts))
    return counts / counts.sum(axis=1, keepdims=True)


def _count(text: str, shown: str, line: int) -> float:
    """One count of a counts file: a finite number from 0 to 2**53."""
    try:
        value = float(text) if len(text) <= 40 else math.nan
    except ValueError:
        value = math.nan
    if not 0 <= value <= 2.0**53:  # NaN, infinities and words fail this too
        raise CountsError(f"{shown} line {line}: {quote(text)} is not a count of tokens from 0 to 2**53")
    return value


def draw_loads(pmf: np.ndarray, assignments: int, samples: int, rng: np.random.Generator,
               capacity_factor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(S, L, E) tokens per expert, Multinomial(assignments, pmf) per layer and sample; (S, L) dropped.

    With a capacity factor c an expert keeps at most floor(c * assignments / E) tokens.
    """
    loads = rng.multinomial(assignments, pmf, size=(samples, pmf.shape[0])).astype(float)
    if capacity_factor is None:
        return loads, np.zeros(loads.shape[:2])
    cap = np.floor(capacity_factor * assignments / pmf.shape[1])
    kept = np.minimum(loads, cap)
    return kept, (loads - kept).sum(axis=-1)


def sample_choices(pmf: np.ndarray, k: int, tokens: int, rng: np.random.Generator,
                   affinity: float = 0.0, topics: int = 1) -> np.ndarray:
    """(L, tokens, k) expert ids chosen by a sample of tokens, each choice with marginal pmf.

    A token's topic g is drawn with probability P(g) = sum of p over g's experts; each of its k
    choices is, with probability `affinity`, drawn from p restricted to g's experts, else from p.
    Choices are drawn with replacement, which the loads do not see (they are drawn from p) but the per-token
    statistics do: with 64 experts and k = 8 a third of the tokens repeat one, and a token reaches 3% fewer
    ranks of 8 than k distinct experts would (1.4% with 256 experts over 64 ranks).
    """
    L, e = pmf.shape
    topic_of = rng.integers(0, topics, size=e) if affinity > 0 else np.zeros(e, dtype=int)
    order = np.argsort(topic_of, kind="stable")  # experts grouped by topic
    p_sorted = pmf[:, order]
    cdf = np.cumsum(p_sorted, axis=1)
    cdf[:, -1] = 1.0
    u = rng.random((L, tokens, k))
    glob = _search(cdf, u)
    if affinity <= 0:
        return order[glob]
    bounds = np.searchsorted(topic_of[order], np.arange(topics + 1))  # topic g: [bounds[g], bounds[g+1])
    lo = np.concatenate([np.zeros((L, 1)), cdf], axis=1)[:, bounds]  # (L, topics + 1) cdf at bounds
    mass = np.diff(lo, axis=1)
    topic = _search(np.cumsum(mass, axis=1), rng.random((L, tokens, 1)))  # (L, tokens, 1)
    start = np.take_along_axis(lo[:, :-1], topic[..., 0], axis=1)[..., None]
    width = np.take_along_axis(mass, topic[..., 0], axis=1)[..., None]
    local = _search(cdf, np.minimum(start + rng.random((L, tokens, k)) * width, 1.0 - 1e-12))
    pick = np.where(rng.random((L, tokens, k)) < affinity, local, glob)
    return order[pick]


def _search(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Per layer l, the index i with cdf[l, i-1] <= u < cdf[l, i] (vectorized searchsorted by row)."""
    L, n = cdf.shape
    offset = np.arange(L)[:, None] * 2.0
    flat = (cdf + offset).ravel()
    idx = np.searchsorted(flat, (u + offset.reshape(L, *([1] * (u.ndim - 1)))).ravel(), side="right")
    return np.minimum(idx.reshape(u.shape) - np.arange(L).reshape(L, *([1] * (u.ndim - 1))) * n, n - 1)


def coactivation(choices: np.ndarray, experts: int) -> np.ndarray:
    """(E, E) tokens of the sample that chose both experts (summed over layers), zero diagonal."""
    flat = choices.reshape(-1, choices.shape[-1])
    pairs = flat[:, :, None] * experts + flat[:, None, :]  # every ordered pair of one token's choices
    c = np.bincount(pairs.ravel(), minlength=experts * experts).reshape(experts, experts).astype(float)
    np.fill_diagonal(c, 0.0)
    return c


def draw(scn, moe_layers: int, ep: int, tokens_per_rank: int, need_choices: bool) -> Routing:
    """The routing of a scenario: pmf, loads of `ep` ranks' micro-batches, and the token sample."""
    moe, spec = scn.model.moe, scn.workload.routing
    rng = np.random.default_rng(scn.options.seed)
    try:
        pmf = popularity(spec, moe, moe_layers, rng, Path(scn.source).parent)
    except CountsError as err:
        raise ScenarioError(one_line(f"{scn.source}: workload.routing.counts_file: {err}")) from None
    assignments = ep * tokens_per_rank * moe.top_k
    samples = 16 if spec is None else spec.samples
    loads, dropped = draw_loads(pmf, assignments, samples, rng, None if spec is None else spec.capacity_factor)
    choices = None
    if need_choices:
        aff, topics = (0.0, 1) if spec is None else (spec.affinity, spec.topics)
        choices = sample_choices(pmf, moe.top_k, TOKEN_SAMPLE, rng, aff, topics)
    return Routing(pmf=pmf, loads=loads, dropped=dropped, choices=choices, assignments=assignments)
