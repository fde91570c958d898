"""Kernel measurements on one NVIDIA GPU, as calibration input for simulator/cost/device_fit.py.

Run on the lent device machine (never in CI): `python3 benchmarks/device/measure_kernels.py OUT.json [SECTION...]`.
Sections: gemm, gemm_load, attention, layer, memory_bound, hbm, optimizer, launch, clocks (all, in this order, when
none is named). Kernels are timed with CUDA events (median of repeats after a warm-up, the L2 cleared before each
repeat by writing a 256 MiB buffer) beside the SM clock sampled every 10 ms; each section is written to OUT.json as
soon as it ends, and a failing one is recorded under `errors` and skipped. Units in the file: seconds, bytes, FLOP,
MHz; rates are derived later, not stored.
Needs PyTorch with CUDA (cuBLAS, cuDNN) and pynvml; inputs are random normal, never zeros.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
import traceback

import torch
import torch.nn.functional as F

DEV = "cuda"
BF16, FP32 = torch.bfloat16, torch.float32
E4M3 = getattr(torch, "float8_e4m3fn", None)
TOKENS = (2048, 4096, 8192, 16384)  # GEMM M: a micro-batch's tokens on one rank
LAYERS = [  # name, hidden, ffn, gated (SwiGLU), heads, kv heads, tp
    ("gpt-1.7b", 2048, 8192, False, 16, 16, 1), ("gpt-7.1b", 4096, 16384, False, 32, 32, 2),
    ("te-gpt-4096", 4096, 16384, False, 32, 32, 1), ("gpt-16b", 6144, 24576, False, 48, 48, 4),
    ("gpt-32b", 7168, 28672, False, 56, 56, 8), ("gpt-175b", 12288, 49152, False, 96, 96, 8),
    ("llama-8b", 4096, 14336, True, 32, 8, 1), ("llama-70b-tp4", 8192, 28672, True, 64, 8, 4),
    ("llama-70b-tp8", 8192, 28672, True, 64, 8, 8), ("llama-405b", 16384, 53248, True, 128, 8, 8)]


# ---------------------------------------------------------------- timing
class Timer:
    """Median device time (s) of a callable, L2 cleared before each repeat; `sm_MHz` is the mean SM clock the
    sampler saw while the last call's repeats ran."""

    def __init__(self, clocks):
        self.flush = torch.empty(256 * 2**20, dtype=torch.uint8, device=DEV)
        self.clocks, self.sm_MHz = clocks, None

    def __call__(self, fn, target=0.03, least=5, most=100, flush=True) -> float:
        fn()
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        n = max(least, min(most, int(target / max(a.elapsed_time(b) * 1e-3, 1e-7))))
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        t0 = time.time()
        for s, e in zip(starts, ends):
            if flush:
                self.flush.fill_(1)
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize()
        self.sm_MHz = self.clocks.mean_sm(t0, time.time())
        return statistics.median(s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends))


def measured(row: dict, make, timer) -> dict:
    """`row` with the median time (s) of the callable make() builds, or the error (one kernel fails, not the sweep)."""
    try:
        return {**row, "time": timer(make()), "sm_MHz": timer.sm_MHz}
    except Exception as exc:  # noqa: BLE001
        return {**row, "error": str(exc)[:200]}


def randn(*shape, dtype=BF16):
    return torch.randn(*shape, device=DEV, dtype=FP32).to(dtype)


# ---------------------------------------------------------------- clocks (pynvml sampler)
class Clocks:
    """Samples SM clock (MHz), memory clock (MHz), power (W) and temperature (C) every 10 ms in a thread."""

    def __init__(self):
        import pynvml
        pynvml.nvmlInit()
        self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        self.samples, self.label, self.stop = [], "", False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        n, h = self.nvml, self.handle
        while not self.stop:
            try:
                self.samples.append([time.time(), self.label, n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM),
                                     n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM),
                                     n.nvmlDeviceGetPowerUsage(h) / 1000.0,
                                     n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)])
            except Exception:  # noqa: BLE001 - a missing counter must not stop the measurement
                pass
            time.sleep(0.01)

    def mean_sm(self, t0: float, t1: float) -> float | None:
        """Mean SM clock (MHz) of the samples taken between wall times t0 and t1, else of the nearest sample."""
        inside = [x[2] for x in self.samples[-2000:] if t0 <= x[0] <= t1]
        if inside:
            return statistics.fmean(inside)
        near = min(self.samples[-2000:], key=lambda x: abs(x[0] - (t0 + t1) / 2), default=None)
        return near[2] if near else None

    def meta(self) -> dict:
        n, h = self.nvml, self.handle
        out = {}
        for key, call in {"power_limit_W": lambda: n.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
                          "max_sm_MHz": lambda: n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_SM),
                          "max_mem_MHz": lambda: n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_MEM),
                          "driver": lambda: n.nvmlSystemGetDriverVersion()}.items():
            try:
                v = call()
                out[key] = v.decode() if isinstance(v, bytes) else v
            except Exception as exc:  # noqa: BLE001
                out[key] = f"unavailable: {exc}"
        return out


def sustained(timer, clocks, dtype: str, seconds=8.0, n=8192) -> dict:
    """A square GEMM repeated for `seconds`: rate (FLOP/s) over the first and the last second, and the clocks."""
    a, b = randn(n, n), randn(n, n)
    fn = lambda: a @ b  # noqa: E731
    if dtype == "fp8":
        a8, b8, one = a.to(E4M3), b.t().contiguous().to(E4M3).t(), torch.ones((), device=DEV)
        fn = lambda: torch._scaled_mm(a8, b8, one, one, out_dtype=BF16)  # noqa: E731
    clocks.label = f"sustained_{dtype}"
    t_end, rates = time.time() + seconds, []
    while time.time() < t_end:
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(20):
            fn()
        e1.record()
        torch.cuda.synchronize()
        rates.append([time.time(), 20 * 2 * n**3 / (e0.elapsed_time(e1) * 1e-3)])
    clocks.label = ""
    return {"dtype": dtype, "M": n, "N": n, "K": n, "rate_trace": rates}


def section_clocks(timer, clocks) -> list:
    return [sustained(timer, clocks, "bf16"), sustained(timer, clocks, "fp8")]


# ---------------------------------------------------------------- HBM
def section_hbm(timer, clocks) -> list:
    """Copy (read + write) from 1 MiB to 4 GiB, and a read-only sum, a bf16 add and a triad at 2 GiB."""
    out = []
    for log2 in range(20, 33):
        n = 2**log2
        x = torch.empty(n, dtype=torch.uint8, device=DEV).random_(0, 255)
        y = torch.empty_like(x)
        out.append({"kernel": "copy", "bytes": 2 * n, "time": timer(lambda: y.copy_(x)),
                    "time_l2_warm": timer(lambda: y.copy_(x), flush=False)})
    x, y, z = randn(2**30), randn(2**30), randn(2**30)
    out.append({"kernel": "sum_read_only", "bytes": 2 * 2**30, "time": timer(lambda: x.sum(dtype=FP32))})
    out.append({"kernel": "add", "bytes": 3 * 2 * 2**30, "time": timer(lambda: torch.add(x, y, out=z))})
    out.append({"kernel": "triad", "bytes": 3 * 2 * 2**30, "time": timer(lambda: torch.add(x, y, alpha=0.5, out=z))})
    return out


# ---------------------------------------------------------------- GEMM
def layer_gemms(h, ffn, gated, heads, kv, tp) -> dict:
    """(N, K) of a transformer layer's four GEMMs on one TP rank (weights split as Megatron splits them)."""
    d = h // heads
    return {"qkv": ((h + 2 * kv * d) // tp, h), "proj": (h, h // tp),
            "fc1": ((2 if gated else 1) * ffn // tp, h), "fc2": (h, ffn // tp)}


def gemm_shapes() -> list:
    """Every (layer, gemm, pass, M, N, K) of the sweep, fprop / dgrad / wgrad as a training step runs them."""
    shapes, seen = [], set()
    for name, h, ffn, gated, heads, kv, tp in LAYERS:
        for gemm, (n, k) in layer_gemms(h, ffn, gated, heads, kv, tp).items():
            for m in TOKENS:
                for pas, dims in (("fprop", (m, n, k)), ("dgrad", (m, k, n)), ("wgrad", (n, k, m))):
                    if (pas, dims) not in seen:
                        seen.add((pas, dims))
                        shapes.append({"layer": name, "gemm": gemm, "pass": pas, "M": dims[0], "N": dims[1],
                                       "K": dims[2]})
    for n in (256, 512, 1024, 2048, 4096, 8192, 16384):
        shapes.append({"layer": "square", "gemm": "square", "pass": "fprop", "M": n, "N": n, "K": n})
    return shapes


def bf16_gemm(s):
    """The BF16 product as the training pass lays it out: fprop X W^T, dgrad dY W, wgrad dY^T X."""
    m, n, k = s["M"], s["N"], s["K"]
    if s["pass"] == "fprop":
        x, w = randn(m, k), randn(n, k)
        return lambda: F.linear(x, w)
    if s["pass"] == "dgrad":
        dy, w = randn(m, k), randn(k, n)  # dY [tokens, out] times W [out, in]
        return lambda: dy @ w
    dy, x = randn(k, m), randn(k, n)  # wgrad: dY^T [out, tokens] times X [tokens, in]; k here is tokens
    return lambda: dy.t() @ x


def fp8_operands(m, n, k, recipe):
    """E4M3 A (row-major) and B (column-major) with scales for `recipe`: tensor, row, or block (1x128 A, 128x128 B)."""
    a, b = randn(m, k).to(E4M3), randn(n, k).to(E4M3).t()
    if recipe == "tensor":
        return a, b, torch.ones((), device=DEV), torch.ones((), device=DEV)
    if recipe == "row":
        return a, b, torch.rand(m, 1, device=DEV) + 0.5, torch.rand(1, n, device=DEV) + 0.5
    return a, b, torch.rand(k // 128, m, device=DEV).t() + 0.5, torch.rand(n // 128, k // 128, device=DEV).t() + 0.5


def fp8_gemm(s, recipe):
    a, b, sa, sb = fp8_operands(s["M"], s["N"], s["K"], recipe)
    return lambda: torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=BF16)


def fp8_check(recipe) -> float:
    """Relative error of the scaled FP8 product against FP32 arithmetic on the dequantized operands."""
    m, n, k = 256, 384, 512
    a, b, sa, sb = fp8_operands(m, n, k, recipe)
    out = torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=BF16).float()
    af, bf = a.float(), b.float()
    if recipe == "row":
        af, bf = af * sa, bf * sb
    elif recipe == "block":
        af = af * sa.repeat_interleave(128, dim=1)
        bf = bf * sb.repeat_interleave(128, dim=0).repeat_interleave(128, dim=1)
    ref = af @ bf
    return float((out - ref).norm() / ref.norm())


def section_gemm(timer, clocks) -> list:
    out = []
    for s in gemm_shapes():
        out.append(measured({**s, "dtype": "bf16"}, lambda: bf16_gemm(s), timer))
    for recipe in ("tensor", "row", "block"):
        try:
            err = fp8_check(recipe)
        except Exception as exc:  # noqa: BLE001 - a recipe this PyTorch lacks is recorded, not fatal
            out.append({"dtype": f"fp8_{recipe}", "unsupported": str(exc)[:300]})
            continue
        out.append({"dtype": f"fp8_{recipe}", "check_rel_err": err})
        if err > 0.05:
            continue
        for s in gemm_shapes():
            if recipe == "tensor" or s["M"] in (4096, 8192) or s["layer"] == "square":
                if all(d % 128 == 0 for d in (s["M"], s["N"], s["K"])):
                    row = {**s, "dtype": f"fp8_{recipe}"}
                    out.append(measured(row, lambda: fp8_gemm(s, recipe), timer))
    return out


LOADS = (("gpt-1.7b", 4096), ("gpt-7.1b", 4096), ("te-gpt-4096", 16384), ("gpt-175b", 2048),
         ("llama-70b-tp8", 8192), ("llama-405b", 8192))  # a layer's twelve GEMMs at a micro-batch's tokens


def layer_set(name: str, tokens: int) -> list:
    """The twelve GEMM shapes (fprop, dgrad, wgrad of QKV, projection, FC1, FC2) of one layer at `tokens`."""
    return [s for s in gemm_shapes() if s["layer"] == name and (s["K"] if s["pass"] == "wgrad" else s["M"]) == tokens]


def section_gemm_load(timer, clocks) -> list:
    """A layer's twelve GEMMs under two loads: burst (each timed once after the GPU idled 1 s) and sustained
    (the twelve back to back for 3 s, the last 2 s kept): seconds and the SM clock of each, BF16 and FP8."""
    out = []
    for name, tokens in LOADS:
        shapes = layer_set(name, tokens)
        for dtype in ("bf16", "fp8_tensor"):
            fns = [bf16_gemm(s) if dtype == "bf16" else fp8_gemm(s, "tensor") for s in shapes]
            for fn in fns:
                fn()
            torch.cuda.synchronize()
            time.sleep(1.0)
            burst, t0 = [], time.time()
            for fn in fns:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                torch.cuda.synchronize()
                burst.append(a.elapsed_time(b) * 1e-3)
            burst_clock = clocks.mean_sm(t0, time.time())
            sets, start = [], time.time()
            while time.time() - start < 3.0:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                for fn in fns:
                    fn()
                b.record()
                torch.cuda.synchronize()
                sets.append((time.time() - start, a.elapsed_time(b) * 1e-3))
            kept = [t for w, t in sets if w > 1.0]
            out.append({"layer": name, "tokens": tokens, "dtype": dtype, "shapes": shapes,
                        "flop": sum(2 * s["M"] * s["N"] * s["K"] for s in shapes), "burst": burst,
                        "burst_sm_MHz": burst_clock, "sustained_set_time": statistics.median(kept),
                        "sustained_sm_MHz": clocks.mean_sm(start + 1.0, time.time()), "sets": len(sets)})
    return out


# ---------------------------------------------------------------- attention
def section_attention(timer, clocks) -> list:
    """torch SDPA, cuDNN and FlashAttention-2 backends, BF16, (B, H, S, D) with B S = 32768 tokens, H D = 4096;
    forward, and forward + backward."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    out = []
    backends = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash2": SDPBackend.FLASH_ATTENTION}
    cases = [(d, causal, kv) for d in (128, 64) for causal in (True, False) for kv in (None,)] + [(128, True, 8)]
    for name, backend in backends.items():
        for d, causal, kv in cases:
            for s in (512, 1024, 2048, 4096, 8192, 16384, 32768):
                b, h = 32768 // s, 4096 // d
                q = randn(b, h, s, d).requires_grad_()
                k = randn(b, kv or h, s, d).requires_grad_()
                v = randn(b, kv or h, s, d).requires_grad_()
                dy = randn(b, h, s, d)
                extra = {"enable_gqa": True} if kv else {}
                row = {"backend": name, "B": b, "H": h, "KV": kv or h, "S": s, "D": d, "causal": causal}
                try:
                    with sdpa_kernel([backend]):
                        def fwd():
                            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, **extra)

                        def fwd_bwd():
                            torch.autograd.grad(fwd(), (q, k, v), dy)

                        row["fwd"] = timer(lambda: fwd().detach())
                        row["fwd_bwd"] = timer(fwd_bwd)
                        row["sm_MHz"] = timer.sm_MHz
                except Exception as exc:  # noqa: BLE001
                    row["unsupported"] = str(exc)[:200]
                out.append(row)
    return out


# ---------------------------------------------------------------- memory-bound kernels
def grad_timer(timer, fn, *inputs):
    """Time of fn's forward + backward (inputs requiring grad)."""
    ins = [x.detach().requires_grad_() for x in inputs]
    y = fn(*ins)
    dy = torch.randn_like(y)
    return timer(lambda: torch.autograd.grad(fn(*ins), ins, dy))


def rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def section_memory_bound(timer, clocks) -> list:
    """Elementwise, normalization, softmax, cast, cross-entropy and embedding kernels at 16384 tokens; `bytes` is
    each kernel's least traffic (inputs read once, outputs written once)."""
    out, t = [], 16384
    for h in (2048, 4096, 8192):
        x, r = randn(t, h), randn(t, h)
        w, bias = randn(h), randn(h)
        e = 2 * t * h  # bytes of one bf16 activation
        rows = {"add": (lambda: x + r, 3 * e), "layer_norm_fwd": (lambda: F.layer_norm(x, (h,), w, bias), 2 * e),
                "rms_norm_fwd": (lambda: F.rms_norm(x, (h,), w), 2 * e),
                "gelu_fwd": (lambda: F.gelu(x, approximate="tanh"), 2 * e),
                "gelu_erf_fwd": (lambda: F.gelu(x), 2 * e), "swiglu_fwd": (lambda: F.silu(x) * r, 3 * e),
                "dropout_fwd": (lambda: F.dropout(x, 0.1, True), 2 * e + t * h),
                "dropout_add_fwd": (lambda: F.dropout(x, 0.1, True) + r, 3 * e + t * h),
                "amax": (lambda: x.abs().amax(), e),
                "fp8_cast": (lambda: (x * 0.5).to(E4M3), e + t * h),
                "fp8_cast_transpose": (lambda: (x * 0.5).to(E4M3).t().contiguous(), e + 2 * t * h),
                "softmax_fwd": (lambda: torch.softmax(x, dim=-1), 2 * e)}
        for name, (fn, nbytes) in rows.items():
            out.append(measured({"kernel": name, "tokens": t, "hidden": h, "bytes": nbytes}, lambda: fn, timer))
        for name, fn, nbytes in (("layer_norm_fwd_bwd", lambda a: F.layer_norm(a, (h,), w, bias), 5 * e),
                                 ("rms_norm_fwd_bwd", lambda a: F.rms_norm(a, (h,), w), 5 * e),
                                 ("gelu_fwd_bwd", lambda a: F.gelu(a, approximate="tanh"), 5 * e),
                                 ("softmax_fwd_bwd", lambda a: torch.softmax(a, dim=-1), 5 * e)):
            out.append({"kernel": name, "tokens": t, "hidden": h, "bytes": nbytes, "time": grad_timer(timer, fn, x)})
    d, heads = 128, 32
    q = randn(4096, 4, heads, d)
    cos, sin = randn(4096, 1, 1, d), randn(4096, 1, 1, d)
    out.append({"kernel": "rope_unfused_fwd", "tokens": 16384, "hidden": heads * d, "bytes": 2 * q.numel() * 2,
                "time": timer(lambda: rope(q, cos, sin))})
    for vocab in (50304, 131072):
        logits, y = randn(4096, vocab), torch.randint(0, vocab, (4096,), device=DEV)
        n = 4096 * vocab
        out.append({"kernel": "cross_entropy_fp32_fwd_bwd", "tokens": 4096, "vocab": vocab, "bytes": 2 * n * 2,
                    "time": grad_timer(timer, lambda a: F.cross_entropy(a.float(), y), logits)})
        out.append({"kernel": "cross_entropy_bf16_fwd_bwd", "tokens": 4096, "vocab": vocab, "bytes": 2 * n * 2,
                    "time": grad_timer(timer, lambda a: F.cross_entropy(a, y), logits)})
    for h in (2048, 8192):
        table, ids = randn(131072, h), torch.randint(0, 131072, (16384,), device=DEV)
        out.append({"kernel": "embedding_fwd", "tokens": 16384, "hidden": h, "vocab": 131072,
                    "bytes": 2 * 2 * 16384 * h, "time": timer(lambda: F.embedding(ids, table))})
        out.append({"kernel": "embedding_fwd_bwd", "tokens": 16384, "hidden": h, "vocab": 131072,
                    "bytes": 2 * 131072 * h + 4 * 16384 * h,
                    "time": grad_timer(timer, lambda a: F.embedding(ids, a), table)})
    return out


# ---------------------------------------------------------------- optimizer
def section_optimizer(timer, clocks) -> list:
    """torch AdamW (fused and foreach) over 2^28 FP32 parameters in 64 tensors with FP32 gradients, and the
    gradient clipping (norm, then the scaling, 12 B); `bytes` is the least traffic (Adam: read p g m v, write p m v
    = 28 B a parameter)."""
    n, parts = 2**28, 64
    params = [torch.nn.Parameter(randn(n // parts, dtype=FP32)) for _ in range(parts)]
    for p in params:
        p.grad = randn(n // parts, dtype=FP32)
    out = []
    for kind in ("fused", "foreach"):
        opt = torch.optim.AdamW(params, lr=1e-4, **{kind: True})
        out.append({"kernel": f"adamw_{kind}", "params": n, "tensors": parts, "bytes": 28 * n,
                    "time": timer(opt.step, least=5, most=20)})
        del opt
    out.append({"kernel": "clip_grad_norm", "params": n, "tensors": parts, "bytes": 12 * n,
                "time": timer(lambda: torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True), least=5, most=20)})
    return out


# ---------------------------------------------------------------- launch cost
def section_launch(timer, clocks) -> list:
    """Host time per eager launch of a tiny kernel, and device time per kernel in a replayed CUDA graph."""
    x, n = torch.ones(1024, device=DEV), 2000
    for _ in range(100):
        x.add_(1e-6)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        x.add_(1e-6)
    host = (time.perf_counter() - t0) / n
    torch.cuda.synchronize()
    eager = (time.perf_counter() - t0) / n
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n):
            x.add_(1e-6)
    torch.cuda.synchronize()
    graph = timer(g.replay, least=5, most=20, flush=False) / n
    return [{"kernel": "tiny_add", "launches": n, "host_per_launch": host, "eager_per_kernel": eager,
             "graph_per_kernel": graph}]


# ---------------------------------------------------------------- a whole layer
LAYER_RUNS = (("te-gpt-4096", 4096, 16384, 32, 2048, 8), ("gpt-1.7b", 2048, 8192, 16, 4096, 1),
              ("gpt-1.7b-mbs4", 2048, 8192, 16, 4096, 4), ("gpt-7.1b-tp1", 4096, 16384, 32, 4096, 1))
"""name, hidden, ffn, heads, sequence, micro-batch of the whole layers timed"""


class Layer(torch.nn.Module):
    """A GPT layer in plain PyTorch modules: LayerNorm, QKV, causal SDPA, projection, dropout + residual, LayerNorm,
    GeLU MLP, dropout + residual (Megatron's GPT without tensor parallelism)."""

    def __init__(self, h, ffn, heads, dropout=0.1):
        super().__init__()
        self.h, self.heads, self.p = h, heads, dropout
        self.ln1, self.ln2 = torch.nn.LayerNorm(h), torch.nn.LayerNorm(h)
        self.qkv, self.proj = torch.nn.Linear(h, 3 * h), torch.nn.Linear(h, h)
        self.fc1, self.fc2 = torch.nn.Linear(h, ffn), torch.nn.Linear(ffn, h)

    def forward(self, x):  # x: [S, B, h]
        s, b, h = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(s, b, 3, self.heads, h // self.heads).permute(2, 1, 3, 0, 4)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True).permute(2, 0, 1, 3).reshape(s, b, h)
        x = x + F.dropout(self.proj(o), self.p, self.training)
        return x + F.dropout(self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh")), self.p, self.training)


def section_layer(timer, clocks) -> list:
    """Forward + backward of one layer, BF16 weights, cuDNN attention: eager, and replayed as CUDA graphs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    out = []
    for name, h, ffn, heads, s, b in LAYER_RUNS:
        layer = Layer(h, ffn, heads).to(DEV, BF16)
        x, dy = randn(s, b, h).requires_grad_(), randn(s, b, h)
        row = {"layer": name, "hidden": h, "ffn": ffn, "heads": heads, "seq": s, "micro_batch": b, "dropout": 0.1}
        try:
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                layer(x)
            backend = SDPBackend.CUDNN_ATTENTION
        except Exception as exc:  # noqa: BLE001 - cuDNN refused these strides: FlashAttention-2 instead
            backend, row["cudnn_error"] = SDPBackend.FLASH_ATTENTION, str(exc)[:200]
        row["attention_backend"] = str(backend)
        with sdpa_kernel([backend]):
            row["fwd_bwd_eager"] = timer(lambda: torch.autograd.backward(layer(x), dy), least=10, most=30)
            row["sm_MHz_eager"] = timer.sm_MHz
            row["fwd_eager"] = timer(lambda: layer(x).detach(), least=10, most=30)
            try:
                graphed = torch.cuda.make_graphed_callables(layer, (x,))
                row["fwd_bwd_graph"] = timer(lambda: torch.autograd.backward(graphed(x), dy), least=10, most=30)
                row["sm_MHz_graph"] = timer.sm_MHz
            except Exception as exc:  # noqa: BLE001
                row["graph_error"] = str(exc)[:200]
        out.append(row)
    return out


SECTIONS = {"gemm": section_gemm, "gemm_load": section_gemm_load, "attention": section_attention,
            "layer": section_layer, "memory_bound": section_memory_bound, "hbm": section_hbm,
            "optimizer": section_optimizer, "launch": section_launch, "clocks": section_clocks}


def main(path: str, names: list[str]) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    clocks = Clocks()
    timer = Timer(clocks)
    props = torch.cuda.get_device_properties(0)
    doc = {"meta": {"device": props.name, "sms": props.multi_processor_count, "memory_bytes": props.total_memory,
                    "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                    "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **clocks.meta()},
           "errors": {}}
    for name in names or list(SECTIONS):
        t0 = time.time()
        clocks.label = name
        try:
            doc[name] = SECTIONS[name](timer, clocks)
        except Exception:  # noqa: BLE001 - the other sections still run
            doc["errors"][name] = traceback.format_exc()[-1500:]
        torch.cuda.empty_cache()
        doc.setdefault("section_seconds", {})[name] = time.time() - t0
        doc["clock_samples"] = clocks.samples
        with open(path, "w") as f:
            json.dump(doc, f)
        print(f"{name}: {time.time() - t0:.1f} s{' FAILED' if name in doc['errors'] else ''}", flush=True)
    clocks.stop = True


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
