"""cost.fusions: a serving engine's layer runs the residual add inside the next RMSNorm and quantizes a low-precision
GEMM's input in the norm or activation that produces it. Each fused row's traffic is counted by hand from what the
kernel reads and writes (16-bit elements a token; FP8 one byte an element)."""

from __future__ import annotations

import pytest

from simulator import load_scenario
from simulator.cost.fusions import serving_rows
from simulator.cost.ops import layer_rows


@pytest.fixture(scope="module")
def llama():
    from simulator.data import VALIDATION_DIR

    return load_scenario(VALIDATION_DIR / "mlperf-i41-llama2-70b-h200x8.yaml").model


def _io(rows) -> dict[str, float]:
    return dict(zip(rows.name, rows.io.tolist()))


def test_fp8_layer_rows_count_what_the_fused_kernels_move(llama):
    """Llama 2 70B (h 8192, ffn 28672 = 3.5 h) at FP8: the first norm reads the block output and the residual and
    writes the new residual (16-bit) and its FP8 output (half a 16-bit element): 3.5 h; the second likewise; the
    SwiGLU reads gate and up and writes its FP8 product: 2 x 3.5 h + 0.5 x 3.5 h. No residual or norm-fed cast is
    left; the attention output's cast and RoPE stay."""
    h, f = llama.hidden, llama.ffn
    io = _io(serving_rows(llama, tp=1, dtype="fp8"))
    assert io["norm1"] == pytest.approx(3.5 * h) and io["norm2"] == pytest.approx(3.5 * h)
    assert io["activation"] == pytest.approx(2.5 * f)
    assert not {"residual1", "residual2", "qkv-cast", "fc1-cast", "fc2-cast"} & set(io)
    assert {"proj-cast", "rope"} <= set(io)


def test_bf16_rows_fuse_the_residual_only(llama):
    """In 16 bits there is no cast: the norms take the residual add (4 h: two reads, two writes), the rest is
    training's rows at inference."""
    h = llama.hidden
    plain, fused = _io(layer_rows(llama, 1, False, "bf16", training=False)), _io(serving_rows(llama, tp=1))
    assert fused["norm1"] == fused["norm2"] == pytest.approx(4 * h)
    assert set(plain) - set(fused) == {"residual1", "residual2"}
    assert all(fused[k] == plain[k] for k in fused if not k.startswith("norm"))


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_fusion_saves_the_traffic_it_removes(llama, dtype):
    """A layer's memory-bound traffic drops by one h a residual (the sum read back) and, at FP8, by each norm- or
    activation-fed cast's read and write plus the byte its producer no longer writes (16-bit out, FP8 out)."""
    h, f = llama.hidden, llama.ffn
    plain = layer_rows(llama, 1, False, dtype, training=False)
    fused = serving_rows(llama, tp=1, dtype=dtype)
    saved = 2 * h + (0.0 if dtype == "bf16" else 2 * (1.5 * h + 0.5 * h) + (1.5 * f + 0.5 * f))
    assert plain.io.sum() - fused.io.sum() == pytest.approx(saved)
    assert fused.weights.sum() == plain.weights.sum()  # the GEMMs are untouched
