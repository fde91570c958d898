"""Sliding-window attention (model.sliding_window): in a windowed layer query i (1-based) sees min(i, w) keys.

Closed forms: the mean keys a query sees, (w (w + 1) / 2 + (s - w) w) / s; a layer's fused-attention FLOP averaged
over the layers, (1 - f) 2 s^2 h + f 4 s h keys(s, w) for a share f of windowed layers; MFU's attention term with
the window as the mask's extent; the context-parallel ring, which a windowed layer replaces by one halo of w keys.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import GPT3_175B
from pydantic import ValidationError

from simulator import simulate
from simulator.cost.ops import BLOCK_LAYER, build_op_table, window_keys
from simulator.cost.params import active_parameters, model_flops_per_token, parameter_counts, total_parameters
from simulator.cost.pipeline import cp_ring_seconds
from simulator.scenario.loader import MODELS_DIR
from simulator.scenario.model import ModelSpec

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
    load = lambda name: ModelSpec(**yaml.safe_load((MODELS_DIR / f"{name}.yaml").read_text()))  # noqa: E731
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
    m = ModelSpec(**yaml.safe_load((MODELS_DIR / "gpt-oss-120b.yaml").read_text()))
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
    raw = yaml.safe_load((MODELS_DIR / "deepseek-v3.yaml").read_text())
    with pytest.raises(ValidationError, match="sliding-window attention with multi-head latent attention"):
        ModelSpec(**{**raw, "sliding_window": {"window": 128}})
