"""Sliding-window attention (model.sliding_window): in a windowed layer query i (1-based) sees min(i, w) keys.

Closed forms: the mean keys a query sees, (w (w + 1) / 2 + (s - w) w) / s; a layer's fused-attention FLOP averaged
over the layers, (1 - f) 2 s^2 h + f 4 s h keys(s, w) for a share f of windowed layers; MFU's attention term with
the window as the mask's extent; the context-parallel ring, which a windowed layer replaces by one halo of w keys.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import GPT3_175B
from pydantic import ValidationError

from simulator import simulate
from simulator.cost.op_table import build_op_table
from simulator.cost.ops import BLOCK_LAYER, query_key_pairs, window_keys
from simulator.cost.params import active_parameters, model_flops_per_token, parameter_counts, total_parameters
from simulator.cost.pipeline import cp_ring_seconds
from simulator.scenario.loader import model_preset
from simulator.scenario.model import ModelSpec
from simulator.serving.memory import max_batch, serve_memory
from simulator.serving.steps import step_costs

S, H = 2048, 12288


def _windowed(window: int, full_every: int) -> dict:
    return {**GPT3_175B, "sliding_window": {"window": window, "full_every": full_every}}


def _table(make_scenario, model, attention="flash"):
    return build_op_table(make_scenario(model=model, workload={"attention": attention}))


@pytest.mark.parametrize("s, w", [(4096, 128), (2048, 2048), (2048, 4096), (1000, 1)])
def test_window_keys_is_the_mean_of_min_i_w(s, w):
    assert window_keys(s, w) == pytest.approx(np.minimum(np.arange(1, s + 1), w).mean(), rel=1e-12)


@pytest.mark.parametrize("full_every, share", [(2, 0.5), (3, 64 / 96), (0, 1.0)])
def test_fused_attention_flops_average_full_and_windowed_layers(make_scenario, full_every, share):
    """GPT-3's 96 layers: every full_every-th layer full, the rest windowed over 256 keys."""
    ops = _table(make_scenario, _windowed(256, full_every))
    attention = (1 - share) * 2 * S**2 * H + share * 4 * S * H * window_keys(S, 256)
    assert ops.total("flops_f", BLOCK_LAYER) == pytest.approx(24 * S * H**2 + attention, rel=1e-12)
    model = (1 - share) * 4 * S**2 * H + share * 4 * S * H * 256
    assert ops.total("model_flops_f", BLOCK_LAYER) == pytest.approx(24 * S * H**2 + model, rel=1e-12)
    assert ("attention" in ops.name) == (share < 1) and "attention-window" in ops.name


def test_unfused_attention_computes_the_whole_score_matrix_under_a_window(make_scenario):
    """An unfused kernel masks the full s x s scores: the window saves no FLOP."""
    windowed = _table(make_scenario, _windowed(256, 2), attention="unfused")
    full = _table(make_scenario, dict(GPT3_175B), attention="unfused")
    assert windowed.total("flops_f", BLOCK_LAYER) == full.total("flops_f", BLOCK_LAYER)


def test_a_window_as_long_as_the_sequence_is_full_attention(make_scenario):
    """Same FLOP to (s + 1) / s, and the same step time to within a kernel launch a layer."""
    base = make_scenario(workload={"attention": "flash"})
    wide = make_scenario(model=_windowed(S, 0), workload={"attention": "flash"})
    a, b = build_op_table(base), build_op_table(wide)
    assert b.total("flops_f", BLOCK_LAYER) == pytest.approx(a.total("flops_f", BLOCK_LAYER), rel=1 / S)
    assert simulate(wide).step_time_s == pytest.approx(simulate(base).step_time_s, rel=1e-3)


def test_a_short_window_shortens_a_long_sequence_step(make_scenario):
    """GPT-3 at 16K tokens: windowing every layer over 1K keys removes most of the attention time."""
    work = {"seq_len": 16384, "global_batch": 64, "attention": "flash", "recompute": "full"}
    full = simulate(make_scenario(workload=work, layout={"tp": 8, "pp": 8})).step_time_s
    local = simulate(make_scenario(model=_windowed(1024, 0), workload=work, layout={"tp": 8, "pp": 8})).step_time_s
    # a causal flash kernel's 2 s h is 10% of a 16K GPT-3 layer's forward FLOP, 24 h^2 + 2 s h; the window keeps
    # 1/16 of it, at a lower kernel efficiency
    assert 0.85 < local / full < 0.95


def test_mfu_attention_term_counts_the_heads_width_and_the_window():
    """6 L a (d_qk + d_v) keys: Qwen3 30B-A3B's heads span 32 x 128 = 4096 > hidden 2048; GPT-OSS 120B's layers
    alternate a 128-token window and the whole sequence."""
    load = lambda name: ModelSpec(**model_preset(name))  # noqa: E731
    s = 4096
    qwen, oss = load("qwen3-30b-a3b"), load("gpt-oss-120b")
    assert model_flops_per_token(qwen, s) == pytest.approx(6 * active_parameters(qwen) + 12 * 48 * s * 4096,
                                                           rel=1e-12)
    keys = (s + 128) / 2
    assert model_flops_per_token(oss, s) == pytest.approx(6 * active_parameters(oss) + 6 * 36 * keys * 64 * 128,
                                                          rel=1e-12)


def test_gpt_oss_120b_preset_has_the_model_cards_parameters():
    """OpenAI's model card: 116.83B parameters, 5.13B active a token (embedding lookup not counted); the preset
    omits biases and sinks (tolerance 0.1%)."""
    m = ModelSpec(**model_preset("gpt-oss-120b"))
    assert total_parameters(m) == pytest.approx(116.83e9, rel=1e-3)
    assert active_parameters(m) - parameter_counts(m)["embedding"] == pytest.approx(5.13e9, rel=1e-3)


class _LinearFabric:
    """p2p seconds = bytes / 1 GB/s: the ring's closed form without latency."""

    def p2p(self, nbytes, src, dst, cal):
        return np.asarray(nbytes, dtype=float) / 1e9


@pytest.mark.parametrize("cp, share, halo", [(4, 0.5, 0.125), (2, 1.0, 0.5), (8, 0.0, 0.25)])
def test_cp_ring_passes_a_halo_in_windowed_layers(cp, share, halo):
    kv = 1e9
    f, b = cp_ring_seconds(_LinearFabric(), None, np.array([cp]), kv, 0, 1, np.array([share]), np.array([halo]))
    forward = (1 - share) * (cp - 1) + share * halo
    assert f[0] == pytest.approx(forward, rel=1e-12) and b[0] == pytest.approx(2 * forward, rel=1e-12)


def test_sliding_window_with_latent_attention_is_refused():
    raw = model_preset("deepseek-v3")
    with pytest.raises(ValidationError, match="sliding-window attention with multi-head latent attention"):
        ModelSpec(**{**raw, "sliding_window": {"window": 128}})


# --- serving -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [1, 5, 64])
def test_query_key_pairs_sum_min_c_plus_j_w(window):
    rng = np.random.default_rng(0)
    new, ctx = rng.integers(1, 100, 50).astype(float), rng.integers(0, 100, 50).astype(float)
    brute = [np.minimum(c + np.arange(1, n + 1), window).sum() for n, c in zip(new, ctx)]
    assert query_key_pairs(new, ctx, window) == pytest.approx(brute, rel=1e-12)
    assert query_key_pairs(new, ctx) == pytest.approx([(c + np.arange(1, n + 1)).sum() for n, c in zip(new, ctx)])


def _serve(make_scenario, model, **work):
    workload = {"kind": "serve", "prompt_len": 4096, "output_len": 64, "batch": 8, "max_num_tokens": 4096,
                "arrivals": {"rate": 2, "count": 8, "seed": 0}, **work}
    return make_scenario(model=model, topology={"preset": "dgx-h100-superpod", "domains": 1}, workload=workload,
                         layout={"tp": 8})


def test_a_windowed_decode_reads_the_window_not_the_context(make_scenario):
    """Every layer windowed over 256 keys: a decode token's attention time and FLOP are the same at 4K and at 64K
    cached tokens; with one full layer in four the KV reads are 1/4 of the context's and 3/4 of the window's."""
    llama = model_preset("llama3-8b")
    local = step_costs(_serve(make_scenario, {**llama, "sliding_window": {"window": 256}}))
    one = np.ones(1)
    near, far = (local.attention_terms(one, np.array([c])) for c in (4096.0, 65536.0))
    assert np.allclose(near, far, rtol=1e-12)
    mixed = step_costs(_serve(make_scenario, {**llama, "sliding_window": {"window": 256, "full_every": 4}}))
    full = step_costs(_serve(make_scenario, llama))
    c = 65535.0
    got = mixed.attention_terms(one, np.array([c]))[1]
    keys = lambda n: full.attention_terms(one, np.array([n]))[1]  # noqa: E731
    want = 0.25 * keys(c) + 0.75 * keys(255.0)  # one layer in four full, three windowed
    assert got == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("tokens, held", [(100, 112), (1000, 0.5 * 1008 + 0.5 * 9 * 16), (144, 144)])
def test_a_windowed_cache_keeps_whole_blocks_of_the_window(make_scenario, tokens, held):
    """16-token blocks, a 128-token window in half the layers: a windowed layer keeps ceil(128 / 16) + 1 blocks."""
    llama = model_preset("llama3-8b")
    memory = serve_memory(_serve(make_scenario, {**llama, "sliding_window": {"window": 128, "full_every": 2}},
                                 kv_block=16))
    assert float(memory.held(tokens)) == pytest.approx(np.ceil(held), abs=0)
    assert memory.room(1000.0, 100.0) == pytest.approx(8 + 100 / 0.5)  # past the window: two tokens a free token
    assert memory.room(100.0, 100.0) == pytest.approx(12 + 100)  # inside it: one


def test_a_windowed_model_serves_more_long_sequences_at_once(make_scenario):
    """GPT-OSS 120B at 64K contexts: with half its layers keeping 128 keys the KV cache holds ~2x the sequences."""
    oss = model_preset("gpt-oss-120b")
    full = {k: v for k, v in oss.items() if k != "sliding_window"}
    with_window, without = (max_batch(_serve(make_scenario, m, weight_dtype="mxfp4"), 65536) for m in (oss, full))
    assert with_window / without == pytest.approx(2.0, rel=0.01)
    report = simulate(_serve(make_scenario, oss, weight_dtype="mxfp4"))
    assert (report.completed, report.rejected) == (8, 0)
