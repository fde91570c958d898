"""scenarios/studies/long-context: the README's caches, batches and costs against closed forms, from the
committed results.csv (and one point recomputed by the study's function).

KV bytes a token: GQA 2 x layers x kv_heads x head_dim x 2 bytes (Llama 3 70B: 320 KiB), MLA layers x
(latent + RoPE key) x 2 bytes (90 KiB); TP8 splits GQA's 8 KV heads (one a GPU) and copies MLA's latent
to every rank, unless the cache splits over the sequences (kv_sharding batch: 1/8 of it a GPU); PP8 gives
each GPU 1/8 of the layers. Batch = min(256, free HBM / (held tokens x bytes a
token on one GPU)); $ = GPUs x $/GPU-s x step / batch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from study_tables import read_rows

STUDY = Path(__file__).resolve().parents[2] / "scenarios" / "studies" / "long-context" / "study.py"
spec = importlib.util.spec_from_file_location("long_context_study", STUDY)
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)

GQA, MLA = 2 * 80 * 8 * 128 * 2, 80 * (512 + 64) * 2  # bytes a token, whole model
BY_BATCH = "MLA, TP8, cache by batch"
PER_GPU = {"GQA, TP8": GQA / 8, "GQA, PP8": GQA / 8, "MLA, TP8": MLA, "MLA, PP8": MLA / 8, BY_BATCH: MLA / 8}
N = 70.55e9  # Llama 3 70B's parameters (the MLA what-if differs only in its attention projections)
H100_BYTES, H100_HBM, OUTPUT = 80 * 2**30, 3.35e12, 1024
PRICE = 8 * 2.0 / 3600  # $ a second of the replica


def rows() -> list[dict]:
    return read_rows(STUDY.parent / "results.csv")


def test_kv_bytes_per_sequence_from_the_shapes():
    assert GQA == 320 * 1024 and MLA == 90 * 1024
    for r in rows():
        held = r["context"] + OUTPUT
        whole = GQA if r["series"].startswith("GQA") else MLA
        assert r["kv_per_sequence_GB"] == pytest.approx(held * whole / 1e9, rel=1e-9)
        assert r["kv_per_sequence_per_GPU_GB"] == pytest.approx(held * PER_GPU[r["series"]] / 1e9, rel=1e-6)


def test_batch_is_free_hbm_over_a_sequences_cache():
    """Free HBM a GPU: 80 GiB less its weights (N x 2 / 8 under TP8 or PP8; PP8's end stages hold a whole
    2.1 GB embedding or LM head, at most 1.6 GB more; the MLA what-if's wider attention projections, whose
    latent ones every TP rank holds whole, at most 1.3 GB more) and at most 1.5 GB of working set (8,192
    tokens of hidden states and FFN outputs, the batch's fp32 logits)."""
    for r in rows():
        per_seq = (r["context"] + OUTPUT) * PER_GPU[r["series"]]
        mla = 1.3e9 if r["series"].startswith("MLA") else 0.0
        hi = (H100_BYTES - N * 2 / 8 + 0.3e9) / per_seq
        lo = (H100_BYTES - N * 2 / 8 - 1.6e9 - mla - 1.5e9) / per_seq
        assert min(256, int(lo)) <= r["batch"] <= min(256, hi), (r["series"], r["context"])


def test_cost_is_price_times_step_over_batch_and_doubles_past_the_knee():
    table = {(r["series"], r["context"]): r for r in rows()}
    for r in rows():
        if r["batch"]:
            assert r["usd_per_million_output_tokens"] == pytest.approx(
                PRICE * r["step_ms"] / 1e3 / r["batch"] * 1e6, rel=1e-9)
    # past the knee the batch halves with each doubling and the step hardly moves: the cost doubles
    for c in (32768, 65536, 131072, 262144, 524288):
        ratio = table[("GQA, TP8", c)]["usd_per_million_output_tokens"] / table[("GQA, TP8", c // 2)][
            "usd_per_million_output_tokens"]
        assert ratio == pytest.approx(2.0, rel=0.1)


def test_steps_between_their_hbm_roofline_and_twice_it():
    """GQA on TP8 at 128K, batch 12: each GPU reads 17.6 GB of weights and 12 x 131,584 x 40 KiB of cache;
    every step of the study is at least its roofline and at most twice it, but for MLA on TP8 with its cache split
    below 16K: 256 sequences of a cache too small to bound the step, whose GEMMs are FLOP-bound and whose layers add
    two all-to-alls, so HBM bounds it only from below there."""
    r = next(x for x in rows() if x["series"] == "GQA, TP8" and x["context"] == 131072)
    roof = (N * 2 / 8 + r["batch"] * (131072 + OUTPUT // 2) * GQA / 8) / H100_HBM * 1e3
    assert r["step_ms"] / roof == pytest.approx(r["x_hbm_roofline"], rel=0.01)
    for x in rows():
        if x["batch"]:
            top = float("inf") if x["series"] == BY_BATCH and x["context"] < 16384 else 2.0
            assert 1.0 <= x["x_hbm_roofline"] <= top, (x["series"], x["context"])


def test_mla_on_tp8_copies_the_latent_and_pp8_buys_batch():
    """MLA's per-GPU cache under TP8 is 90 / 40 = 2.25x GQA's; under PP8 GQA's over MLA's is 320 / 90 =
    3.56x, so where both are memory-bound MLA on PP8 holds about 3.5x GQA on TP8's batch."""
    table = {(r["series"], r["context"]): r for r in rows()}
    for c in (131072, 262144):
        m, g = table[("MLA, TP8", c)], table[("GQA, TP8", c)]
        assert m["kv_per_sequence_per_GPU_GB"] / g["kv_per_sequence_per_GPU_GB"] == pytest.approx(2.25, rel=1e-6)
        assert table[("MLA, PP8", c)]["batch"] / g["batch"] == pytest.approx(GQA / MLA, rel=0.1)
    fresh = study.point("MLA, PP8", 131072)
    assert fresh["batch"] == table[("MLA, PP8", 131072)]["batch"]
    assert fresh["usd_per_million_output_tokens"] == pytest.approx(
        table[("MLA, PP8", 131072)]["usd_per_million_output_tokens"], rel=1e-9)


def test_mla_cache_by_batch_has_pp8s_batch_at_tp8s_step():
    """Split over the sequences, MLA's cache on TP8 is PP8's 1/8 a GPU, so it holds PP8's batch (within 5%: TP8's
    weights a GPU differ from PP8's busiest stage) while one TP8 step serves the whole batch: the cheapest token of
    the study at every context. Past the knee, against GQA on TP8: both steps read the weights and a full cache
    once (about the same bytes), so the cost goes as one over the batch, which the caches set (320 / 90 KiB)."""
    table = {(r["series"], r["context"]): r for r in rows()}
    for c in study.CONTEXTS:
        mine, pp8 = table[(BY_BATCH, c)], table[("MLA, PP8", c)]
        assert mine["batch"] == pytest.approx(pp8["batch"], rel=0.05)
        cost = mine["usd_per_million_output_tokens"]
        assert all(cost < r["usd_per_million_output_tokens"] for (n, x), r in table.items()
                   if x == c and n != BY_BATCH and r["batch"])
    for c in (131072, 262144, 524288):
        mine, gqa = table[(BY_BATCH, c)], table[("GQA, TP8", c)]
        assert mine["batch"] / gqa["batch"] == pytest.approx(GQA / MLA, rel=0.1)
        assert gqa["usd_per_million_output_tokens"] / mine["usd_per_million_output_tokens"] == pytest.approx(
            mine["batch"] / gqa["batch"], rel=0.15)
