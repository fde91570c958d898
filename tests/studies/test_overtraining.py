"""scenarios/studies/overtraining: the optimum on Chinchilla's iso-loss curve against closed forms.

The study's optimiser is checked on cost curves whose optimum is known in closed form (power laws in
N); simrack's prices are checked on one small model only, so the file runs in a few seconds.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from study_tables import read_rows

STUDY = Path(__file__).resolve().parents[2] / "scenarios" / "studies" / "overtraining" / "study.py"
spec = importlib.util.spec_from_file_location("overtraining_study", STUDY)
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)

FIT = study.FIT
E, A, B, ALPHA, BETA = FIT["E"], FIT["A"], FIT["B"], FIT["alpha"], FIT["beta"]
SIZES = [1e9, 3e9, 8e9, 27e9, 70e9, 405e9]


def power_law(k: float, p: float):
    """$ per token = k N^p on the simulated sizes (the interpolation is then exact: log-log linear)."""
    return study.LogLog(SIZES, [k * n**p for n in SIZES])


def test_published_constants_and_target():
    # Hoffmann et al. 2022, Approach 3 (chinchilla.yml); L(70B, 1.4T) recomputed by hand
    assert (E, A, B, ALPHA, BETA) == (1.69, 406.4, 410.7, 0.34, 0.28)
    assert study.target_loss() == pytest.approx(1.69 + 406.4 / 70e9**0.34 + 410.7 / 1.4e12**0.28, rel=1e-12)


def test_interpolation_passes_through_points_and_slope_is_the_derivative():
    y = [3.0, 5.0, 20.0, 40.0, 200.0, 900.0]
    f = study.LogLog(SIZES, y)
    assert np.allclose(f(np.array(SIZES)), y, rtol=1e-12)
    for n in (2e9, 12e9, 100e9, 1e12):  # inside and beyond the data
        h = 1e-5
        numeric = (math.log(f(n * (1 + h))) - math.log(f(n * (1 - h)))) / (math.log(1 + h) - math.log(1 - h))
        assert float(f.slope(n)) == pytest.approx(numeric, rel=1e-4)


def test_zero_demand_optimum_is_hoffmanns_closed_form():
    """Flat $ per FLOP (train $/token = k 6N) and no demand: minimising cost at fixed loss is minimising
    C = 6ND, whose optimum lies on N_opt = G (C/6)^(beta/(alpha+beta)), G = (alpha A/(beta B))^(1/(alpha+beta))."""
    train, serve = power_law(6e-21, 1.0), power_law(2e-21, 1.0)
    o = study.optimum(study.target_loss(), 0.0, train, serve)
    c = 6 * o["params"] * o["tokens"]
    g = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
    assert o["params"] == pytest.approx(g * (c / 6) ** (BETA / (ALPHA + BETA)), rel=1e-4)
    assert study.compute_optimal_params(c) == pytest.approx(g * (c / 6) ** (BETA / (ALPHA + BETA)), rel=1e-12)


@pytest.mark.parametrize("p", [0.7, 0.9, 1.2])
def test_zero_demand_optimum_with_any_cost_slope(p):
    """train $/token = k N^p: d/dN [N^p D(N)] = 0 gives x = A/N^alpha = p beta (L - E) / (alpha + p beta)."""
    target = study.target_loss()
    o = study.optimum(target, 0.0, power_law(1e-18, p), power_law(1e-18, p))
    x = p * BETA * (target - E) / (ALPHA + p * BETA)
    assert o["params"] == pytest.approx((A / x) ** (1 / ALPHA), rel=1e-4)


@pytest.mark.parametrize("demand", [1e11, 1e12, 1e13, 1e14])
def test_optimum_satisfies_first_order_condition(demand):
    """For power-law prices (train ~ N^p, served ~ N^q) the demand that makes N optimal is, in closed form,
    Q = t(N) D(N) (alpha/beta x/(L - E - x) - p) / (q s(N)), x = A/N^alpha: recover Q from the optimum."""
    p, q, kt, ks = 0.95, 0.6, 3e-18, 4e-16
    target = study.target_loss()
    o = study.optimum(target, demand, power_law(kt, p), power_law(ks, q))
    n, d = o["params"], o["tokens"]
    x = A / n**ALPHA
    assert target == pytest.approx(E + x + B / d**BETA, rel=1e-12)  # on the iso-loss curve
    recovered = kt * n**p * d * (ALPHA / BETA * x / (target - E - x) - p) / (q * ks * n**q)
    assert recovered == pytest.approx(demand, rel=2e-3)
    assert study.demand_for(n, target, power_law(kt, p), power_law(ks, q)) == pytest.approx(demand, rel=2e-3)


def test_more_demand_means_smaller_models_trained_longer():
    train, serve = power_law(3e-18, 0.95), power_law(4e-16, 0.6)
    target = study.target_loss()
    opts = [study.optimum(target, q, train, serve) for q in (0, 1e11, 1e12, 1e13, 1e14)]
    sizes = [o["params"] for o in opts]
    ratios = [o["tokens_per_param"] for o in opts]
    assert sizes == sorted(sizes, reverse=True) and ratios == sorted(ratios)
    assert all(n > study.n_floor(target) for n in sizes)  # never below the floor A/N^alpha < L - E


def test_demand_at_ratio_inverts_the_optimum():
    train, serve = power_law(3e-18, 0.95), power_law(4e-16, 0.6)
    target = study.target_loss()
    q = study.demand_at_ratio(2000, target, train, serve)
    assert study.optimum(target, q, train, serve)["tokens_per_param"] == pytest.approx(2000, rel=1e-3)


def test_simrack_prices_of_one_small_model():
    """The 1B's training token against PaLM's FLOP count 6N + 12 L h s at the reported MFU (2%: how N
    counts the tied embedding), and its decode token against the HBM roofline (weights + the batch's KV
    cache over HBM bandwidth: at least that, and at most 2x: launches, the scheduler's CPU time and the
    achieved HBM bandwidth; the README's caveat gives 1.31x to 2.51x over the six models)."""
    row = {**study.train_point("llama3.2-1b"), **study.serve_point("llama3.2-1b")}
    price = 3.0 / 3600  # $ per GPU-second (train.yaml, serve.yaml)
    peak, hbm = 2.5e15, 8e12  # GB200 dense bf16 FLOP/s and HBM bytes/s (devices.yaml)
    n = row["params"]
    assert n == pytest.approx(1.236e9, rel=1e-3)  # Llama 3.2 1B with tied embeddings: 1.24B
    gpu_s = row["train_usd_per_token"] / price
    assert gpu_s == pytest.approx((6 * n + 12 * 16 * 2048 * 8192) / (peak * row["mfu"]), rel=0.02)
    # decode: a step reads the weights once and each sequence's cache (GQA: 2 x 16 layers x 8 x 64 x 2 B)
    tokens = 1024 + 512
    roofline = (2 * n + row["batch"] * tokens * 2 * 16 * 8 * 64 * 2) / hbm / row["batch"]  # s per token, 1 GPU
    assert row["serve_tp"] == 1
    assert roofline <= row["decode_usd_per_token"] / price <= 2.0 * roofline
    assert row["x_hbm_roofline"] == pytest.approx(row["decode_usd_per_token"] / price / roofline, rel=1e-3)
    assert row["tpot_ms"] <= 50.0


# --- the README's headline numbers, from the committed prices.csv and results.csv -------------------------


def _csv(name: str) -> list[dict]:
    return read_rows(STUDY.parent / name)


def test_committed_optima_satisfy_the_closed_forms():
    """Every optimum in results.csv lies on the iso-loss curve, costs train(N) D + served(N) Q, and (for
    Q > 0) satisfies the first-order condition: the demand recovered in closed form from N is Q (1%)."""
    prices = _csv("prices.csv")
    train, serve = study.interpolants(prices)
    target = study.target_loss()
    for r in _csv("results.csv"):
        n, d, q = r["params_B"] * 1e9, r["tokens_T"] * 1e12, r["demand_T"] * 1e12
        assert float(study.loss(n, d)) == pytest.approx(target, rel=1e-6)
        total = float(train(n)) * d + float(serve(n)) * q
        assert r["total_M_usd"] == pytest.approx(total / 1e6, rel=1e-6)
        if q > 0:
            assert study.demand_for(n, target, train, serve) == pytest.approx(q, rel=0.01)


def test_the_100x_demand_from_the_first_order_condition():
    """The README's answer: the optimum trains 100 x 20 = 2,000 tokens a parameter at the demand it states.
    Independently: the N whose iso-loss D(N) is 2,000 N (bisection), put into the first-order condition."""
    prices = _csv("prices.csv")
    train, serve = study.interpolants(prices)
    target = study.target_loss()
    lo, hi = study.n_floor(target) * 1.0001, 70e9
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if float(study.tokens_for(mid, target)) / mid > 2000 else (lo, mid)
    q = study.demand_for(lo, target, train, serve)
    assert study.demand_at_ratio(2000, target, train, serve) == pytest.approx(q, rel=0.01)
    assert f"{q / 1e12:.1f}T" in (STUDY.parent / "README.md").read_text()  # the README states it


@pytest.mark.parametrize("i", range(6))
def test_training_prices_are_the_flop_count_at_the_reported_mfu(i):
    """$ a training token = $3 / 3600 x (6N + 12 L h s) / (peak x MFU) on a GB200 (2.5 PFLOP/s bf16), to 3%
    (N counts the embedding once when tied)."""
    from simulator import load_scenario

    p = _csv("prices.csv")[i]
    m = load_scenario(STUDY.parent / "train.yaml", [study._model(p["model"])]).model
    flops = 6 * p["params"] + 12 * m.layers * m.hidden * 8192
    assert p["train_usd_per_token"] == pytest.approx(3.0 / 3600 * flops / (2.5e15 * p["mfu"]), rel=0.03)
