"""Routing draws: uniform loads, Zipf imbalance against the pmf's closed form, the top-k cap, capacity
drops, measured counts, and the token sample's marginals and co-activation.

Tolerances are statistical: with N token choices an expert of probability p gets N p +- sqrt(N p);
each test picks N so that the stated tolerance is several standard deviations wide.
"""

from __future__ import annotations

import numpy as np
import pytest

from simulator.moe import routing
from simulator.moe.placement import place_experts


def _zipf_theory(experts: int, skew: float, k: int) -> float:
    """Expected max / mean tokens per expert: E * max(p) for the Zipf pmf p_i = i^-s / H_{E,s},
    water-filled to at most 1/k (computed here independently of simulator.moe.routing)."""
    p = np.arange(1, experts + 1, dtype=float) ** -skew
    p /= p.sum()
    for m in range(experts):  # cap the m hottest at 1/k, rescale the rest; first m that is consistent
        rest = p[m:] * (1 - m / k) / p[m:].sum()
        if rest[0] <= 1 / k + 1e-15:
            return experts * (1 / k if m else rest[0])
    raise AssertionError("unreachable")


def test_uniform_loads_per_rank_within_one_percent():
    """E=256 experts, top-8, EP 64, 65,536 tokens a rank: every rank gets tokens * top_k within 1%."""
    e, k, ep, tokens, layers = 256, 8, 64, 65536, 8
    rng = np.random.default_rng(0)
    pmf = np.full((layers, e), 1 / e)
    loads, dropped = routing.draw_loads(pmf, ep * tokens * k, 4, rng)
    placed = place_experts("contiguous", pmf * ep * tokens * k, ep, 0, np.zeros(ep, int))
    per_rank = placed.rank_tokens(loads).sum(axis=-1)
    assert per_rank.shape == (4, layers, ep)
    np.testing.assert_allclose(per_rank, tokens * k, rtol=0.01)
    assert (per_rank.sum(axis=-1) == ep * tokens * k).all()  # every choice lands somewhere
    assert not dropped.any()


@pytest.mark.parametrize("skew", [0.0, 0.5, 0.8, 1.0, 1.5])
def test_zipf_max_over_mean_matches_the_pmf(skew):
    """Per-expert max/mean load equals E * max(p) of the (capped) Zipf pmf within 2%, 2e7 choices."""
    e, k = 64, 4
    rng = np.random.default_rng(1)
    pmf = routing.popularity(_Spec("zipf", skew), _MoE(e, k), 16, rng, ".")
    loads, _ = routing.draw_loads(pmf, 20_000_000, 2, rng)
    measured = (loads.max(axis=-1) / loads.mean(axis=-1)).mean()
    assert measured == pytest.approx(_zipf_theory(e, skew, k), rel=0.02)


def test_zipf_skew_raises_imbalance_monotonically():
    e, k = 256, 8
    rng = np.random.default_rng(2)
    ratios = []
    for skew in (0.0, 0.3, 0.6, 0.9, 1.2):
        pmf = routing.popularity(_Spec("zipf", skew), _MoE(e, k), 8, rng, ".")
        loads, _ = routing.draw_loads(pmf, 4_000_000, 2, rng)
        ratios.append((loads.max(axis=-1) / loads.mean(axis=-1)).mean())
    assert np.all(np.diff(ratios) > 0), ratios


def test_top_k_cap_binds_at_high_skew():
    """A top-k router cannot send more than every token to one expert: max(p) <= 1/k after clipping,
    the pmf still sums to 1, and entries below the cap keep their ratios."""
    p = routing.zipf_pmf(256, 1.5)
    assert p[0] > 1 / 8
    c = routing.clip_to_top_k(p, 8)
    assert c.sum() == pytest.approx(1.0, abs=1e-12)
    assert c.max() <= 1 / 8 + 1e-12
    free = c < 1 / 8 - 1e-9
    np.testing.assert_allclose(c[free] / c[free][0], p[free] / p[free][0], rtol=1e-9)
    np.testing.assert_array_equal(routing.clip_to_top_k(np.full(8, 1 / 8), 2), np.full(8, 1 / 8))


def test_capacity_factor_drops_the_excess():
    rng = np.random.default_rng(3)
    pmf = routing.clip_to_top_k(routing.zipf_pmf(32, 1.0)[None], 4)
    n = 1_000_000
    loads, dropped = routing.draw_loads(pmf, n, 3, rng, capacity_factor=1.25)
    cap = np.floor(1.25 * n / 32)
    assert loads.max() <= cap
    np.testing.assert_allclose(loads.sum(axis=-1) + dropped, n)
    expected_drop = np.maximum(pmf[0] * n - cap, 0).sum()  # ample tokens: the mean loads' excess
    assert dropped.mean() == pytest.approx(expected_drop, rel=0.02)


def test_counts_file_sets_the_pmf(tmp_path):
    counts = np.arange(1, 9, dtype=float)
    (tmp_path / "counts.txt").write_text(" ".join(map(str, counts)))
    pmf = routing.popularity(_Spec("counts", counts_file="counts.txt"), _MoE(8, 1), 3, None, tmp_path)
    np.testing.assert_allclose(pmf, np.tile(counts / counts.sum(), (3, 1)))
    per_layer = np.arange(1, 25, dtype=float).reshape(3, 8)
    np.savetxt(tmp_path / "layers.txt", per_layer)
    pmf = routing.popularity(_Spec("counts", counts_file="layers.txt"), _MoE(8, 1), 3, None, tmp_path)
    np.testing.assert_allclose(pmf, per_layer / per_layer.sum(axis=1, keepdims=True))
    with pytest.raises(ValueError, match="expected 1 or 5 rows of 8"):
        routing.popularity(_Spec("counts", counts_file="layers.txt"), _MoE(8, 1), 5, None, tmp_path)


@pytest.mark.parametrize("affinity", [0.0, 0.7])
def test_token_sample_marginals_follow_the_pmf(affinity):
    """Each choice's marginal is p whatever the affinity (to 4 standard deviations)."""
    rng = np.random.default_rng(4)
    e, k, n, layers = 32, 4, 20000, 2
    pmf = routing.clip_to_top_k(routing.zipf_pmf(e, 0.8)[np.argsort(rng.random((layers, e)), axis=1)], k)
    choices = routing.sample_choices(pmf, k, n, rng, affinity, topics=4)
    assert choices.shape == (layers, n, k)
    freq = np.stack([np.bincount(choices[i].ravel(), minlength=e) for i in range(layers)]) / (n * k)
    sd = np.sqrt(pmf * (1 - pmf) / (n * k)) * (1 + 2 * affinity)  # topic draws correlate a token's choices
    assert (np.abs(freq - pmf) < 4 * sd + 1e-4).all()


def test_affinity_concentrates_co_activation_inside_topics():
    """With affinity a, two choices of a token share a topic with probability about a^2 + (1 - a^2)/T
    for T equal topics and a uniform pmf (both from the topic, or by chance)."""
    rng = np.random.default_rng(5)
    e, k, topics = 64, 8, 4
    pmf = np.full((1, e), 1 / e)
    for a in (0.0, 0.8):
        rng = np.random.default_rng(5)
        choices = routing.sample_choices(pmf, k, 20000, rng, a, topics)
        rng = np.random.default_rng(5)
        topic_of = rng.integers(0, topics, size=e) if a > 0 else None
        c = routing.coactivation(choices, e)
        assert np.allclose(c, c.T) and not c.diagonal().any()
        if topic_of is None:
            continue
        t = topic_of[choices[0]]  # (tokens, k) topic of each choice
        same = (t[:, :, None] == t[:, None, :]).sum() - t.size  # ordered pairs of distinct positions
        inside = same / (t.shape[0] * k * (k - 1))
        chance = ((np.bincount(topic_of, minlength=topics) / e) ** 2).sum()
        assert inside == pytest.approx(a**2 + (1 - a**2) * chance, abs=0.01)


class _MoE:
    def __init__(self, experts, top_k):
        self.experts, self.top_k = experts, top_k


class _Spec:
    def __init__(self, kind, skew=1.0, counts_file=None):
        self.kind, self.skew, self.counts_file, self.capacity_factor = kind, skew, counts_file, None
