"""Expert placement: slot layouts of each strategy, EPLB-style replication, load balance with redundant
experts, domain-local EP groups, and the co-activation graph partition."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.cost.placement import place
from simulator.moe import routing
from simulator.moe.placement import STRATEGIES, partition_graph, place_experts, replicate
from small_moe import SMALL_MOE


def _zipf(layers=8, experts=64, k=8, skew=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return routing.clip_to_top_k(routing.zipf_pmf(experts, skew)[np.argsort(rng.random((layers, experts)), 1)], k)


def test_contiguous_and_round_robin_slots():
    pmf = np.full((2, 16), 1 / 16)
    c = place_experts("contiguous", pmf, 4, 0, np.zeros(4, int))
    np.testing.assert_array_equal(c.slot_expert[1], np.arange(16).reshape(4, 4))
    r = place_experts("round_robin", pmf, 4, 0, np.zeros(4, int))
    np.testing.assert_array_equal(r.slot_expert[0], np.arange(16).reshape(4, 4).T)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("redundant", [0, 16])
def test_every_expert_placed_with_equal_slots(strategy, redundant):
    pmf = _zipf()
    placed = place_experts(strategy, pmf * 1e6, 16, redundant, np.arange(16) // 4,
                           routing.coactivation(routing.sample_choices(pmf, 8, 256, np.random.default_rng(0)), 64))
    L, ep, slots = placed.slot_expert.shape
    assert (L, ep, slots) == (8, 16, (64 + redundant) // 16)
    for layer in range(L):
        counts = np.bincount(placed.slot_expert[layer].ravel(), minlength=64)
        np.testing.assert_array_equal(counts, placed.copies[layer])  # each copy in exactly one slot
    assert (placed.copies >= 1).all() and (placed.copies.sum(axis=1) == 64 + redundant).all()


def test_replicate_copies_the_hottest_by_load_per_copy():
    copies = replicate(np.array([[8.0, 3.0, 2.0, 1.0]]), 3)
    np.testing.assert_array_equal(copies, [[3, 2, 1, 1]])  # 8 -> 8/2 = 4 > 3 -> 8/3 < 3: expert 1


def test_tokens_split_evenly_among_copies():
    placed = place_experts("load_balanced", np.array([[6.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]), 2, 2,
                           np.zeros(2, int))
    loads = np.array([[[600.0, 10, 10, 10, 10, 10, 10, 10]]])
    slot = placed.rank_tokens(loads)
    assert slot.sum() == pytest.approx(loads.sum())
    hot = placed.slot_expert[0] == 0
    np.testing.assert_allclose(slot[0, 0][hot], 600 / placed.copies[0, 0])


def test_load_balanced_with_redundant_experts_lowers_max_over_mean():
    """Zipf(1.0) over 64 experts on 16 EP ranks: LPT packing beats contiguous; redundant copies of the
    hottest experts bring the busiest rank close to the mean."""
    pmf = _zipf()
    rng = np.random.default_rng(1)
    loads, _ = routing.draw_loads(pmf, 2_000_000, 4, rng)

    def imbalance(strategy, redundant):
        placed = place_experts(strategy, pmf * 2e6, 16, redundant, np.zeros(16, int))
        rank = placed.rank_tokens(loads).sum(axis=-1)
        return (rank.max(axis=-1) / rank.mean(axis=-1)).mean()

    contiguous, balanced, redundant = imbalance("contiguous", 0), imbalance("load_balanced", 0), \
        imbalance("load_balanced", 16)
    assert contiguous > balanced > redundant
    assert contiguous > 1.5 and redundant < 1.1


def test_domain_local_keeps_an_ep_group_inside_one_domain(make_scenario):
    """EP 8 on 8-GPU HGX nodes with dp innermost: the group strides over nodes unless domain_local."""
    layout = {"ep": 8, "order": ["tp", "cp", "dp", "ep", "pp"]}
    kw = dict(model=SMALL_MOE, topology={"preset": "hgx-h800", "domains": 4}, workload={"seq_len": 1024,
              "global_batch": 32})
    spread = place(make_scenario(layout=layout, **kw)).group_of("ep", 0)
    local = place(make_scenario(layout={**layout, "expert_placement": "domain_local"}, **kw)).group_of("ep", 0)
    assert len(np.unique(spread // 8)) == 4
    np.testing.assert_array_equal(local, np.arange(8))


def test_graph_partition_recovers_planted_groups():
    """Four planted cliques of 16 experts (strong edges inside, weak noise across) are recovered."""
    rng = np.random.default_rng(2)
    perm = rng.permutation(64)
    group = np.empty(64, int)
    group[perm] = np.arange(64) // 16
    c = np.where(group[:, None] == group[None, :], 10.0, 1.0) + rng.random((64, 64))
    c = (c + c.T) / 2
    np.fill_diagonal(c, 0)
    part = partition_graph(c, 4)
    assert np.bincount(part).tolist() == [16] * 4
    for g in range(4):
        assert len(np.unique(part[group == g])) == 1


def test_graph_placement_keeps_co_chosen_experts_in_one_domain():
    """With co-activation (affinity 0.8, 4 topics), the graph placement puts more of a token's choices
    in one domain than contiguous placement does."""
    rng = np.random.default_rng(3)
    pmf = np.full((4, 64), 1 / 64)
    choices = routing.sample_choices(pmf, 8, 2048, rng, 0.8, 4)
    coact = routing.coactivation(choices, 64)
    domain = np.arange(16) // 4

    def within(strategy):
        placed = place_experts(strategy, pmf * 1e6, 16, 0, domain, coact)
        dom_of = np.empty((4, 64), int)
        for layer in range(4):
            dom_of[layer, placed.slot_expert[layer].ravel()] = np.repeat(domain, 4)
        d = np.take_along_axis(dom_of, choices.reshape(4, -1), axis=1).reshape(choices.shape)
        return (d[..., :, None] == d[..., None, :]).mean()

    assert within("graph") > within("contiguous") + 0.2
