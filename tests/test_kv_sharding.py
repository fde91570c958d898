"""layout.kv_sharding batch: a serving KV cache split over the sequences past the heads ("How to Scale Your Model",
inference chapter: KV[2, B_Z, S, K_Y, H]), checked against closed forms: the cache bytes a rank holds, the cache a
decode step reads, the two all-to-alls a layer adds, and the scaling book's Llama 3 70B step on 16 v5e chips."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from refusals import assert_refused
from small_gqa import SMALL_GQA

from simulator import load_scenario
from simulator.cost.fabric import fabric_for
from simulator.cost.kv_cache import kv_bytes_per_token, kv_bytes_per_token_per_rank
from simulator.data import VALIDATION_DIR
from simulator.serving.memory import serve_memory
from simulator.serving.steps import step_costs

H100 = {"preset": "dgx-h100-superpod", "domains": 1}
SERVE = {"kind": "serve", "prompt_len": 1024, "output_len": 128, "batch": 64, "dtype": "bf16"}


def _serve(make_scenario, sharding: str, tp: int = 8):
    return make_scenario(model=dict(SMALL_GQA), topology=H100, workload=dict(SERVE),
                         layout={"tp": tp, "kv_sharding": sharding})


def test_cache_bytes_a_rank_holds(make_scenario):
    """SMALL_GQA's 4 KV heads on 8 ranks: each head's cache on 2 ranks (1/4 of the cache a rank), or split over the
    sequences (1/8); an MLA latent, whole on every rank, splits over all 8."""
    heads, batch = _serve(make_scenario, "heads"), _serve(make_scenario, "batch")
    total = kv_bytes_per_token(heads.model, "bf16")
    assert kv_bytes_per_token_per_rank(heads.model, "bf16", 8, 4) == total / 4
    assert kv_bytes_per_token_per_rank(batch.model, "bf16", 8, 4, "batch") == total / 8
    assert serve_memory(batch).kv_per_token[0] == serve_memory(heads).kv_per_token[0] / 2
    dsv3 = make_scenario(model="deepseek-v3", topology=H100, workload=dict(SERVE), layout={"tp": 8})
    latent = kv_bytes_per_token(dsv3.model, "bf16")
    assert kv_bytes_per_token_per_rank(dsv3.model, "bf16", 8, dsv3.model.layers) == latent
    assert kv_bytes_per_token_per_rank(dsv3.model, "bf16", 8, dsv3.model.layers, "batch") == latent / 8


def test_decode_reads_the_shard_and_computes_as_much(make_scenario):
    """A decode token's attention on one rank: the same FLOP and compute seconds, the cache read over tp / kv_heads
    = 2 times fewer bytes (the queries' and outputs' bytes unchanged)."""
    costs = {s: step_costs(_serve(make_scenario, s)) for s in ("heads", "batch")}
    new, ctx = np.ones(3), np.array([0.0, 4096.0, 65536.0])
    (ch, mh, fh), (cb, mb, fb) = (costs[s].attention_terms(new, ctx) for s in ("heads", "batch"))
    np.testing.assert_array_equal(fh, fb)
    np.testing.assert_array_equal(ch, cb)
    a = costs["heads"].attn
    io = a.exchanged() * 2.0 / (a.hbm_bw * a.cal.hbm_decode)  # 16-bit queries and outputs of one token
    np.testing.assert_allclose(mb - io, (mh - io) / 2, rtol=1e-12)


def test_two_all_to_alls_a_layer_among_a_heads_shards(make_scenario):
    """The TP collectives of a layer gain two all-to-alls over the 2 ranks holding one KV head's query heads, each
    moving m tokens' 2 query heads of width 128 (queries in, outputs back) at 2 bytes an element."""
    heads, batch = _serve(make_scenario, "heads"), _serve(make_scenario, "batch")
    ch, cb = step_costs(heads), step_costs(batch)
    fabric = fabric_for(batch.topology)
    group = np.arange(2)[None]  # ranks 0 and 1: the first head's shards, consecutive in the TP group
    for m in (1, 64, 4096):
        size = m * (SMALL_GQA["heads"] // 8) * SMALL_GQA["head_dim"] * 2.0
        a2a = float(fabric.collective("all_to_all", size, group, cb.cal, algorithm="serving")[0])
        assert cb.tp_comm(m) == pytest.approx(ch.tp_comm(m) + 2 * a2a, rel=1e-12)
        assert a2a > 0


def test_scaling_book_llama3_70b_on_16_chips():
    """The book's 8.5 ms (Part 8: int8 weights and cache, batch 32 at 8K, TPU v5e 4x4, fully sharded): the cache a
    chip reads is 1/16 of 32 x 8,192 x 163,840 bytes at 8.1e11 B/s (within 1%: the queries are read beside it); the
    step within 8% (+7.2%: the K and V projections each pair of chips holds whole and the activations every chip
    reads, 0.2 ms, which the book's total leaves out)."""
    scn = load_scenario(VALIDATION_DIR / "scalingbook-llama3-70b-int8-16chips.yaml")
    costs, b, ctx = step_costs(scn), 32, 8192
    attn, _ = costs.attention(np.ones(b), np.full(b, float(ctx)))
    cache = b * ctx * kv_bytes_per_token(scn.model, "int8") / 16 / 8.1e11
    assert scn.model.layers * attn == pytest.approx(cache, rel=0.01)
    assert costs.decode_step(b, ctx) == pytest.approx(8.5e-3, rel=0.08)


def test_refused_where_nothing_splits(tmp_path):
    """Batch sharding refuses a TP group the heads already split and a training run, one line and exit 2."""
    path = tmp_path / "gqa.yaml"
    path.write_text(yaml.safe_dump({"model": dict(SMALL_GQA), "topology": H100, "workload": dict(SERVE),
                                    "layout": {"tp": 4}}))
    assert_refused(path, ["layout.kv_sharding=batch"], "layout.kv_sharding: batch needs tp (4) above", tmp_path)
    train = {"kind": "train", "seq_len": 1024, "global_batch": 8, "micro_batch": 1, "dtype": "bf16"}
    path.write_text(yaml.safe_dump({"model": dict(SMALL_GQA), "topology": H100, "workload": train,
                                    "layout": {"tp": 8}}))
    assert_refused(path, ["layout.kv_sharding=batch"], "got workload.kind train", tmp_path)
