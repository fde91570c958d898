"""Routed-expert GEMMs on a lent GPU (never in CI), as a check of simrack's MoE expert costs.

`python3 benchmarks/device/measure_moe_gemm.py OUT.json`: for the expert shapes of five MoE models, E local experts
each given T tokens (balanced), the forward FC1 (gated: 2 x ffn outputs) and FC2 run three ways: one grouped kernel
(`torch._grouped_mm`, BF16), one grouped kernel in FP8 with per-row scales (`torch._scaled_grouped_mm`), and one
`torch.mm` an expert issued from the host (eager, as a multi-stream grouped GEMM falls back to outside CUDA graphs).
Device seconds by CUDA events (median of repeats, L2 cleared before each), the loop's host seconds beside them;
each kernel is checked against a float32 product first. Units in the file: seconds, FLOP.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch
from measure_kernels import BF16, DEV, E4M3, FP32, Clocks, Timer, randn

MODELS = (("deepseek-v3", 7168, 2048), ("qwen3-235b", 4096, 1536), ("qwen3-30b", 2048, 768),
          ("gpt-oss-120b", 2880, 2880), ("mixtral-8x7b", 4096, 14336))  # name, hidden, expert ffn (gated)
EXPERTS, TOKENS = (4, 8, 32), (128, 512, 2048)  # local experts, tokens an expert


def grouped(a, w, offs):
    """BF16 grouped product: a (E T, K) by w (E, K, N) column-major per expert."""
    return torch._grouped_mm(a, w, offs=offs, out_dtype=BF16)


def scaled_grouped(a8, w8, sa, sw, offs):
    return torch._scaled_grouped_mm(a8, w8, sa, sw, offs=offs, out_dtype=BF16)


def case(timer, e, t, k, n) -> dict:
    """One expert GEMM set: E experts, T tokens each, K in, N out."""
    a = randn(e * t, k)
    w = randn(e, n, k).transpose(-2, -1)  # (E, K, N) with K contiguous, as the kernels want
    offs = torch.arange(t, e * t + 1, t, device=DEV, dtype=torch.int32)
    ref = torch.cat([a[i * t:(i + 1) * t].float() @ w[i].float() for i in range(e)])
    row = {"experts": e, "tokens": t, "K": k, "N": n, "flop": 2.0 * e * t * k * n}
    try:
        err = float((grouped(a, w, offs).float() - ref).norm() / ref.norm())
        row["grouped_bf16_err"] = err
        row["grouped_bf16"] = timer(lambda: grouped(a, w, offs))
    except Exception as exc:  # noqa: BLE001 - an API this PyTorch lacks is recorded, not fatal
        row["grouped_bf16_error"] = str(exc)[:200]
    try:
        a8, w8 = a.to(E4M3), w.to(E4M3)
        sa = torch.ones(e * t, device=DEV, dtype=FP32)
        sw = torch.ones(e, n, device=DEV, dtype=FP32)
        ref8 = torch.cat([a8[i * t:(i + 1) * t].float() @ w8[i].float() for i in range(e)])
        row["grouped_fp8_err"] = float((scaled_grouped(a8, w8, sa, sw, offs).float() - ref8).norm() / ref8.norm())
        row["grouped_fp8"] = timer(lambda: scaled_grouped(a8, w8, sa, sw, offs))
    except Exception as exc:  # noqa: BLE001
        row["grouped_fp8_error"] = str(exc)[:200]
    parts = [a[i * t:(i + 1) * t] for i in range(e)]

    def loop():
        for i in range(e):
            torch.mm(parts[i], w[i])

    row["loop_bf16"] = timer(loop)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(20):
        loop()
    row["loop_host"] = (time.perf_counter() - t0) / 20
    torch.cuda.synchronize()
    row["loop_wall"] = (time.perf_counter() - t0) / 20
    return row


def main(path: str) -> None:
    torch.manual_seed(0)
    clocks = Clocks()
    timer = Timer(clocks)
    rows = []
    for name, h, f in MODELS:
        for e in EXPERTS:
            for t in TOKENS:
                for gemm, (k, n) in (("fc1", (h, 2 * f)), ("fc2", (f, h))):
                    rows.append({"model": name, "gemm": gemm, **case(timer, e, t, k, n)})
        print(name, len(rows), flush=True)
    props = torch.cuda.get_device_properties(0)
    meta = {"device": props.name, "torch": torch.__version__, "cuda": torch.version.cuda, **clocks.meta()}
    with open(path, "w") as fh:
        json.dump({"meta": meta, "rows": rows}, fh)
    ok = [r for r in rows if "grouped_bf16" in r]
    print(f"{len(rows)} rows, grouped BF16 {len(ok)}, FP8 {sum('grouped_fp8' in r for r in rows)}; median BF16 "
          f"grouped over loop {statistics.median(r['grouped_bf16'] / r['loop_bf16'] for r in ok) if ok else 0:.2f}")
    clocks.stop = True


if __name__ == "__main__":
    main(sys.argv[1])
