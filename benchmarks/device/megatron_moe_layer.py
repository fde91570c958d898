"""Megatron-Core's MoE layer, eager, forward + backward on one lent GPU (never in CI): how long the host keeps the GPU
waiting. `PYTHONPATH=<Megatron-LM checkout> python3 benchmarks/device/megatron_moe_layer.py OUT.json`.

Each case builds Megatron-Core's MoELayer from its local (non-Transformer-Engine) spec: top-k router with its
auxiliary loss, the all-to-all token dispatcher (one rank: the all-to-all moves nothing, the permutations and the
token counts' trip to the host stay; the all-gather dispatcher beside it), SequentialMLP experts (one GEMM an expert
from the host). One GPU stands for an EP rank: its local experts, with top-k set so each expert gets the tokens it
would get from the whole EP group. Recorded a layer: wall seconds (CUDA-synchronized), the host's seconds for a
forward alone and for each step of it, the GPU's busy seconds (kernel and copy durations from the profiler), kernels,
device-to-host copies and synchronizations. Units: seconds.
`--cpu` checks the script on a CPU with tiny sizes and the all-gather dispatcher (the all-to-all one needs CUDA).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

CASES = (  # name, hidden, expert ffn, local experts, top-k, tokens a micro-batch
    ("qwen3-30b-ep16", 2048, 768, 8, 8, 4096), ("qwen3-235b-ep32", 4096, 1536, 4, 4, 4096),
    ("deepseek-v3-ep64", 7168, 2048, 4, 4, 4096), ("qwen3-30b-ep16-mbs2", 2048, 768, 8, 8, 8192),
    ("gpt-oss-120b-ep8", 2880, 2880, 16, 4, 4096))
GPT_OSS = {"add_bias_linear": True, "glu_linear_offset": 1.0, "activation_func_clamp_value": 7.0}
"""GPT-OSS's experts as Megatron-Core configures them: biases, quick-GeLU GLU with a linear offset of 1, clamped at 7
(with activation=quick_gelu below)."""


def setup(cpu: bool) -> None:
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed
    os.environ.setdefault("MASTER_ADDR", "localhost")
    os.environ.setdefault("MASTER_PORT", "29517")
    if not cpu:
        torch.cuda.set_device(0)
    torch.distributed.init_process_group(backend="gloo" if cpu else "nccl", world_size=1, rank=0)
    parallel_state.initialize_model_parallel(1, 1)
    if not cpu:
        model_parallel_cuda_manual_seed(123)


def layer(hidden: int, ffn: int, experts: int, topk: int, cpu: bool, dispatcher: str, oss: bool = False):
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_submodules
    from megatron.core.transformer.moe.moe_layer import MoELayer
    from megatron.core.transformer.spec_utils import get_submodules
    from megatron.core.transformer.transformer_config import TransformerConfig
    from megatron.core.activations import quick_gelu
    config = TransformerConfig(
        num_layers=1, hidden_size=hidden, num_attention_heads=16, num_moe_experts=experts, moe_ffn_hidden_size=ffn,
        moe_router_topk=topk, moe_router_load_balancing_type="aux_loss", moe_aux_loss_coeff=1e-3,
        moe_token_dispatcher_type=dispatcher, moe_grouped_gemm=False, gated_linear_unit=True,
        activation_func=quick_gelu if oss else F.silu, bf16=True, params_dtype=torch.bfloat16,
        use_cpu_initialization=cpu, **(GPT_OSS if oss else {"add_bias_linear": False}))
    spec = get_submodules(get_gpt_layer_local_submodules(num_experts=experts, moe_grouped_gemm=False).mlp)
    moe = MoELayer(config, spec)
    return moe if cpu else moe.cuda()


PARTS = ("route", "preprocess", "dispatch", "routed_experts_compute", "combine", "postprocess")
"""MoELayer's forward steps, each timed on the host under its own profiler range (Megatron-Core's CUDA-graph scopes
moe_router and moe_preprocess capture the first two)."""


def annotate(moe) -> None:
    """Wrap each of the layer's PARTS in a profiler range named moe.<part>."""
    from torch.profiler import record_function
    for name in PARTS:
        method = getattr(moe, name)

        def wrapped(*args, _method=method, _name=name, **kwargs):
            with record_function(f"moe.{_name}"):
                return _method(*args, **kwargs)

        setattr(moe, name, wrapped)


def measure(moe, hidden: int, tokens: int, device: str, iterations: int) -> dict:
    from torch.profiler import ProfilerActivity, profile
    x = torch.randn(tokens, 1, hidden, device=device, dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(tokens, 1, hidden, device=device, dtype=torch.bfloat16)

    def step():
        out, _ = moe(x)
        out.backward(dy)

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(iterations):
        step()
    sync()
    wall = (time.perf_counter() - t0) / iterations
    t0 = time.perf_counter()
    for _ in range(iterations):
        moe(x)
    forward_host = (time.perf_counter() - t0) / iterations
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            step()
        sync()
    trace = Path(tempfile.mkdtemp()) / "trace.json"
    prof.export_chrome_trace(str(trace))
    events = json.loads(trace.read_text())["traceEvents"]
    cat = lambda c: [e for e in events if e.get("cat") == c]  # noqa: E731
    kernels, copies = cat("kernel"), [e for e in cat("gpu_memcpy") if "DtoH" in e["name"]]
    syncs = [e for e in cat("cuda_runtime") if "Synchronize" in e["name"]]
    parts = {p: sum(e["dur"] for e in cat("user_annotation") if e["name"] == f"moe.{p}") * 1e-6 / 3 for p in PARTS}
    return {"wall": wall, "forward_host": forward_host, "forward_parts_host": parts,
            "gpu_busy": sum(e["dur"] for e in kernels + copies) * 1e-6 / 3,
            "kernels": len(kernels) / 3, "dtoh_copies": len(copies) / 3, "synchronizations": len(syncs) / 3,
            "synchronize_seconds": sum(e["dur"] for e in syncs) * 1e-6 / 3}


def main(path: str, cpu: bool = False) -> None:
    setup(cpu)
    rows = []
    for name, hidden, ffn, experts, topk, tokens in CASES[:1] if cpu else CASES:
        size = (hidden // 16, ffn // 16, tokens // 64) if cpu else (hidden, ffn, tokens)
        row = {"case": name, "hidden": size[0], "ffn": size[1], "experts": experts, "topk": topk, "tokens": size[2]}
        for dispatcher in ("allgather",) if cpu else ("alltoall", "allgather"):
            try:
                moe = layer(size[0], size[1], experts, topk, cpu, dispatcher, oss=name.startswith("gpt-oss"))
                annotate(moe)
                row[dispatcher] = measure(moe, size[0], size[2], "cpu" if cpu else "cuda", 2 if cpu else 10)
            except Exception as exc:  # noqa: BLE001 - one dispatcher failing leaves the other's figures
                row[f"{dispatcher}_error"] = f"{type(exc).__name__}: {exc}"[:300]
        rows.append(row)
        print(json.dumps(row), flush=True)
    meta = {"torch": torch.__version__, "megatron_core": __import__("megatron.core").core.__version__}
    with open(path, "w") as fh:
        json.dump({"meta": meta, "rows": rows}, fh)


if __name__ == "__main__":
    main(sys.argv[1], cpu="--cpu" in sys.argv)
