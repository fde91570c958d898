"""Where one GPT layer's forward + backward spends its time, kernel by kernel, on a lent GPU (never in CI).

`python3 benchmarks/device/profile_layer.py OUT_DIR`: for each layer of measure_kernels.LAYER_RUNS, the PyTorch
profiler's CUDA kernels over five eager iterations (OUT_DIR/<layer>.trace.json, Chrome trace format) and a summary
(OUT_DIR/layers.json): each kernel's launches and seconds an iteration, the iterations' mean time (s) with the SM
clock (MHz) sampled meanwhile, and the same layer run back to back for 3 s (the last 2 s kept), as a training step
loads the GPU. `python3 profile_layer.py --summarize DIR` adds the kernel tables to an earlier run's layers.json.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from measure_kernels import BF16, DEV, LAYER_RUNS, Clocks, Layer, randn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile


def iterate(layer, x, dy, n: int) -> float:
    """Mean seconds of n forward + backward iterations (CUDA events around all n)."""
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        torch.autograd.backward(layer(x), dy)
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) * 1e-3 / n


def kernel_table(trace: Path, iterations: int) -> dict:
    """{kernel name without template arguments: [launches, seconds]} per iteration, from a Chrome trace."""
    table = defaultdict(lambda: [0.0, 0.0])
    for e in json.loads(trace.read_text())["traceEvents"]:
        if e.get("cat") == "kernel":
            row = table[re.sub(r"<.*", "", e["name"])[:100]]
            row[0] += 1 / iterations
            row[1] += e["dur"] * 1e-6 / iterations
    return dict(sorted(table.items(), key=lambda kv: -kv[1][1]))


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    clocks, rows = Clocks(), []
    for name, h, ffn, heads, s, b in LAYER_RUNS:
        layer = Layer(h, ffn, heads).to(DEV, BF16)
        x, dy = randn(s, b, h).requires_grad_(), randn(s, b, h)
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            iterate(layer, x, dy, 5)
            time.sleep(1.0)
            t0 = time.time()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                mean = iterate(layer, x, dy, 5)
            row = {"layer": name, "hidden": h, "ffn": ffn, "heads": heads, "seq": s, "micro_batch": b,
                   "profiled_iterations": 5, "profiled_mean": mean, "profiled_sm_MHz": clocks.mean_sm(t0, time.time())}
            prof.export_chrome_trace(str(out / f"{name}.trace.json"))
            row["kernels"] = kernel_table(out / f"{name}.trace.json", 5)
            start, times = time.time(), []
            while time.time() - start < 3.0:
                times.append((time.time() - start, iterate(layer, x, dy, 3)))
            row["sustained_mean"] = statistics.median(t for w, t in times if w > 1.0)
            row["sustained_sm_MHz"] = clocks.mean_sm(start + 1.0, time.time())
        rows.append(row)
        print(name, f"{mean * 1e3:.3f} ms @ {row['profiled_sm_MHz']:.0f} MHz, sustained "
              f"{row['sustained_mean'] * 1e3:.3f} ms @ {row['sustained_sm_MHz']:.0f} MHz", flush=True)
    props = torch.cuda.get_device_properties(0)
    meta = {"device": props.name, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), **clocks.meta()}
    (out / "layers.json").write_text(json.dumps({"meta": meta, "layers": rows}))
    clocks.stop = True


def summarize(folder: Path) -> None:
    """Add each layer's kernel table, read from its trace, to folder/layers.json."""
    doc = json.loads((folder / "layers.json").read_text())
    for row in doc["layers"]:
        row["kernels"] = kernel_table(folder / f"{row['layer']}.trace.json", row["profiled_iterations"])
    (folder / "layers.json").write_text(json.dumps(doc))


if __name__ == "__main__":
    summarize(Path(sys.argv[2])) if sys.argv[1] == "--summarize" else main(Path(sys.argv[1]))
