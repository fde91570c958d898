"""The workload part of a scenario: a training step, or a serving run (arrivals, batching, KV cache
policy, SLOs, disaggregation), and how MoE tokens choose experts."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PlainValidator, StrictBool, model_validator

from .base import NonNegInt, PosInt, Real, Recompute, RecomputeModule, StoreDtype, _auto_bool, _fill, _Frozen, _rule
from .units import Seconds


class Arrivals(_Frozen):
    """Serve: request arrivals, Poisson at `rate`, or read from a trace file."""

    rate: Annotated[Real, Field(gt=0)] | None = None
    """Mean arrival rate, requests/s (Poisson); required unless the trace gives arrival times."""
    count: PosInt | None = None
    """Requests to simulate; required without a trace (default: every row of the trace)."""
    seed: NonNegInt = 0
    """Random seed of the arrival process."""
    trace: str | None = None
    """CSV file (path relative to the scenario file) with columns prompt_len, output_len and
    optionally arrival_s; rows without arrival_s arrive as a Poisson process at `rate`."""

    @model_validator(mode="after")
    def _source(self) -> Arrivals:
        if self.trace is None:
            for name in ("rate", "count"):
                if getattr(self, name) is None:
                    _rule(name, "required without arrivals.trace")
        return self


class Disaggregation(_Frozen):
    """Serve: separate prefill and decode pools (DistServe, Splitwise); KV moves over the fabric."""

    prefill_replicas: PosInt
    """Replicas (of layout.dp) that only prefill; the others only decode."""


class SLO(_Frozen):
    """Serving latency targets (reserved)."""

    ttft: Seconds | None = None
    """Time-to-first-token target, s."""
    tpot: Seconds | None = None
    """Time-per-output-token target, s."""


class Routing(_Frozen):
    """How tokens choose experts (MoE models): a popularity pmf per layer, drawn with options.seed."""

    kind: Literal["uniform", "zipf", "counts"] = "uniform"
    """uniform; zipf (the i-th most popular expert weighs i**-skew, ranks shuffled per layer); counts
    (measured tokens per expert from counts_file)."""
    skew: Annotated[Real, Field(ge=0)] = 1.0
    """Zipf exponent s (kind zipf); 0 is uniform."""
    counts_file: str | None = None
    """Kind counts: whitespace-separated tokens per expert, one row for every MoE layer or one row per
    MoE layer; a relative path is read from the scenario file's folder."""
    capacity_factor: Annotated[Real, Field(gt=0)] | None = None
    """Expert capacity as a multiple of the mean tokens per expert; tokens over it are dropped. None: no limit."""
    affinity: Annotated[Real, Field(ge=0, lt=1)] = 0.0
    """Fraction of a token's choices made among the experts of its topic (co-activation); 0: independent."""
    topics: PosInt = 8
    """Topics (groups of experts often chosen together) when affinity > 0; experts join them at random."""
    samples: PosInt = 16
    """Routings drawn per MoE layer (micro-batch steps); the slowest rank's time is averaged over them."""
    pad_for_quantization: StrictBool = False
    """Training under a low-precision dtype: the router pads each expert's tokens to the GEMMs' alignment
    (Megatron-Core's moe_router_padding_for_quantization), so Transformer Engine's grouped MLP runs on them in place;
    false: it copies its input and output padded (cost.op_table.copy_passes)."""


class Workload(_Frozen):
    """What runs: a training step (or, reserved, a serving run)."""

    kind: Literal["train", "serve"] = "train"
    """train, or serve (schema only for now)."""
    seq_len: PosInt | None = None
    """Tokens per sequence; required for train; serve default prompt_len + output_len."""
    global_batch: PosInt | None = None
    """Sequences per optimizer step; required for train."""
    micro_batch: PosInt = 1
    """Sequences per micro-batch."""
    dtype: Literal["bf16", "fp16", "fp8", "fp8-block", "mxfp8", "nvfp4", "mxfp4"] = "bf16"
    """Compute dtype of the matrix multiplies: bf16, fp16; fp8 (per-tensor scaling, Transformer
    Engine), fp8-block (DeepSeek's 1x128 / 128x128 block scaling), mxfp8 (OCP, 32-element blocks); nvfp4
    and mxfp4 (Blackwell). Attention, the router and the LM head stay in 16 bits."""
    fp8_scaling: Literal["delayed", "current"] = "delayed"
    """Train, dtype fp8: how per-tensor scales are set. delayed (Transformer Engine's DelayedScaling): from past
    amaxes, each cast computing its tensor's amax as it goes; current (Float8CurrentScaling, NeMo's FP8-CS
    recipes): from the tensor's own amax, which a separate kernel reads first (TE's compute_amax), so every cast
    reads its 16-bit input twice."""
    recompute: Recompute = "selective"
    """Activation recomputation: none, selective (attention core; recompute_modules), full (whole layer)."""
    recompute_modules: list[RecomputeModule] | None = None
    """Train: the modules selective recompute runs again in the backward pass instead of keeping their outputs
    (Megatron-Core's recompute_modules; ignored under recompute none or full): core_attn (the attention core),
    layernorm (both norms: their outputs, the QKV and FC1 inputs, are not kept), mla_up_proj (MLA's query and key-value
    up-projections and their norms), mlp (a dense FFN), moe_act (the routed experts' activation: FC2's input not kept),
    shared_experts. Default: core_attn, or with MLA layernorm and mla_up_proj (DeepSeek-V3's)."""
    attention: Literal["auto", "flash", "flash2", "unfused"] = "auto"
    """Attention kernel: flash (fused, never writes the s*s score matrix, skips masked blocks; the newest kernel
    measured on the device's generation: FlashAttention-2 on A100, FlashAttention-3 on Hopper, FlashAttention-4
    and CUTLASS on Blackwell), flash2 (FlashAttention-2 or the fused kernels of its time, e.g. runs before July
    2024 on Hopper; A100 and Hopper only), unfused (materializes scores, as Megatron-LM of 2022 did), or auto (the
    default): serving runs flash; training the kernel most published training on the generation ran (unfused on
    A100, flash2 on Hopper, flash on Blackwell: scenario.defaults.TRAINING_ATTENTION, Scenario.attention_kernel)."""
    fp8_attention: StrictBool = False
    """Train, dtype fp8 or mxfp8: the attention core in that format (Transformer Engine's fp8_dot_product_attention,
    cuDNN's FP8 fused attention) at the generation's measured FP8-over-BF16 speed of each pass, its windowed backward
    as the whole causal triangle where the kernel does that work (calibration.fp8_attention). Default false: BF16."""
    cross_entropy: Literal["auto", "fused", "unfused"] = "auto"
    """Train: how the loss over the vocabulary runs. fused: one pass over the logits each way (Megatron-Core's
    cross_entropy_loss_fusion, Transformer Engine's and Apex's fused kernels; NeMo's recipes); unfused: Megatron's
    vocab-parallel cross-entropy in PyTorch ops (Megatron-LM of 2021-2024 by default): the logits cast to fp32, then
    max, subtract, exp, sum and normalize, each a pass over them, and two more backward (ops.CROSS_ENTROPY_BYTES).
    auto (the default): unfused on Ampere, whose published training ran Megatron-LM of 2021-2022, fused elsewhere
    (scenario.defaults.MEGATRON_2021, Scenario.cross_entropy)."""
    activation: Literal["fused", "unfused"] = "fused"
    """Train: how the FFN's activation runs. fused: one kernel each way (Megatron-Core's bias_activation_fusion and
    its compiled squared ReLU); unfused: PyTorch's ops one kernel each (cost.op_table.UNFUSED_ACTIVATION), as NeMo
    runs squared ReLU (its own torch.pow(relu(x), 2), Nemotron's) and Megatron-Core runs SwiGLU without fusion."""
    grad_accumulation_fusion: Annotated[bool | Literal["auto"], PlainValidator(_auto_bool)] = "auto"
    """Train: the weight-gradient GEMMs add each micro-batch's gradient into the main gradient themselves (Megatron-LM's
    gradient_accumulation_fusion: from February 2022 in BF16, September 2022 in FP16; every Megatron-Core), no pass
    of its own; false: a separate add a micro-batch reads the GEMM's 16-bit gradient and reads and writes the main
    gradient (fp32 with layout.grad_reduce_fp32, else 16-bit): 6 or 10 bytes a weight (op_table.with_grad_accumulation).
    false for dense models only. auto (the default): false for a dense model on Ampere (Megatron-LM of 2021-2022), true
    elsewhere (scenario.defaults.MEGATRON_2021, Scenario.grad_accumulation_fusion)."""
    prompt_len: PosInt | None = None
    """Serve: prompt tokens per request."""
    output_len: PosInt | None = None
    """Serve: generated tokens per request."""
    batch: PosInt | None = None
    """Serve: most requests running at once on one replica (vLLM max_num_seqs); default 256. With an
    MoE model each of the ep attention replicas of an EP unit runs this many (the unit ep times)."""
    arrivals: Arrivals | None = None
    """Serve: request arrival process; default `batch` requests at time 0 (offline batch)."""
    slo: SLO | None = None
    """Serve: latency targets."""
    weight_dtype: StoreDtype | None = None
    """Serve: storage of the weights (bf16, fp16, fp8, int8, int4); default `dtype`. Weight-only
    quantization reads fewer bytes; the matrix multiplies still run at `dtype`'s peak."""
    kv_dtype: StoreDtype | None = None
    """Serve: storage of the KV cache; default `dtype`."""
    max_num_tokens: PosInt | None = None
    """Serve: the token budget of a step, most tokens one step processes (TensorRT-LLM max_num_tokens, vLLM
    max_num_batched_tokens), per attention replica as `batch`; a longer prompt runs alone. Default 8192."""
    max_batch_tokens: PosInt | None = None
    """Serve: the former name of max_num_tokens (either may be given; both, only if equal)."""
    kv_block: PosInt = 16
    """Serve: tokens per KV cache block (vLLM block_size 16; TensorRT-LLM tokens_per_block 32; SGLang 1): the cache
    is allocated in whole blocks, so each sequence's last block is partly empty."""
    chunked_prefill: StrictBool = False
    """Serve: split prompts into chunks that share steps with decodes, up to max_num_tokens a step
    (Sarathi-Serve, vLLM V1, SGLang); false runs whole prompts in prefill-only steps first (vLLM's default of 2024)."""
    cuda_graphs: StrictBool | None = None
    """Kernels launched from captured CUDA graphs. Serve: ~0.5 us a kernel instead of ~2.5 us; default true (vLLM,
    SGLang and TensorRT-LLM capture decode steps up to 512 sequences). Train: the routed experts' GEMMs captured too
    (Megatron-Core's full-iteration scope, or graphs of each layer where its shapes are static, as with tokens padded
    to capacity), so they cost no host time (expert_gemm); default false, as where only attention or the router is
    captured."""
    cuda_graph_scope: list[Literal["attn", "mlp", "moe", "moe_router", "moe_preprocess"]] = []
    """Train, cuda_graphs false: the parts of each layer captured in CUDA graphs (Megatron-Core's per-layer graphs,
    --cuda-graph-scope): attn, mlp (a dense layer's MLP), moe (an MoE layer's whole FFN, experts included: needs
    static shapes, routing.capacity_factor), moe_router, moe_preprocess (with moe_router). Where an MoE layer's
    attention, router and dispatch preprocessing are not all captured, its forward pays the host time the
    dispatcher's sync leaves exposed (calibration.eager_moe_host); with moe, its experts cost no host launches.
    Default none: every part eager."""
    expert_gemm: Literal["multi_stream", "single_kernel"] | None = None
    """MoE: how a rank's routed-expert GEMMs are launched. multi_stream: one cuBLASLt GEMM an expert, each issued from
    the host (Transformer Engine's grouped GEMM, Megatron-Core's default), so outside CUDA graphs a rank's experts take
    at least the host's ~33 us an expert and GEMM (calibration.expert_gemm_host); single_kernel: one grouped kernel
    for all (DeepGEMM, CUTLASS and cuDNN grouped GEMMs, serving engines' fused MoE kernels). Default multi_stream for
    train, single_kernel for serve."""
    two_batch_overlap: StrictBool = False
    """Serve, MoE: split each step's sequences into two micro-batches, each one's all-to-alls
    overlapping the other's compute (DeepSeek-V3's decode, SGLang's two-batch overlap)."""
    admission: Literal["reserve", "preempt"] = "reserve"
    """Serve: KV cache policy: reserve prompt + output at admission (no eviction), or admit on the
    prompt alone and preempt the newest request (recomputing it later) when the cache fills (vLLM)."""
    disaggregated: Disaggregation | None = None
    """Serve: prefill and decode on separate replicas; None runs both on every replica."""
    routing: Routing | None = None
    """MoE routing; None means uniform (MoE models only)."""

    def _check_graph_scope(self) -> None:
        """Megatron-Core's rules for per-layer graphs: training without whole-iteration graphs, moe_preprocess only
        with moe_router, moe only where experts see static shapes (tokens padded to a capacity)."""
        scope = set(self.cuda_graph_scope)
        if scope and (self.kind == "serve" or self.cuda_graphs):
            _rule("cuda_graph_scope", "partial CUDA graphs are for training with cuda_graphs false "
                  "(cuda_graphs true captures whole layers)")
        if "moe_preprocess" in scope and "moe_router" not in scope:
            _rule("cuda_graph_scope", "moe_preprocess is captured together with moe_router (Megatron-Core's rule)")
        if "moe" in scope and (self.routing is None or self.routing.capacity_factor is None):
            _rule("cuda_graph_scope", "moe captures the routed experts, which needs static shapes: set "
                  "routing.capacity_factor (tokens dropped and padded to a capacity)")

    @model_validator(mode="after")
    def _required(self) -> Workload:
        needed = ("seq_len", "global_batch") if self.kind == "train" else ("prompt_len", "output_len")
        for name in needed:
            if getattr(self, name) is None:
                _rule(name, f"required when kind is {self.kind}")
        if self.seq_len is None:
            _fill(self, seq_len=self.prompt_len + self.output_len)
        if self.cuda_graphs is None:
            _fill(self, cuda_graphs=self.kind == "serve")
        self._check_graph_scope()
        if self.expert_gemm is None:
            _fill(self, expert_gemm="multi_stream" if self.kind == "train" else "single_kernel")
        elif self.kind == "serve" and self.expert_gemm == "multi_stream":
            _rule("expert_gemm", "multi_stream is modelled for training only (serving runs fused MoE kernels)")
        if self.kind == "serve" and self.cross_entropy == "unfused":
            _rule("cross_entropy", "a training setting (serving samples from the logits, no loss)")
        if self.kind == "serve" and self.activation != "fused":
            _rule("activation", "a training setting (serving engines fuse the activation)")
        if self.kind == "serve" and self.grad_accumulation_fusion is False:
            _rule("grad_accumulation_fusion", "a training setting (serving computes no gradients)")
        if self.kind == "serve":
            _fill(self, batch=self.batch or 256, weight_dtype=self.weight_dtype or self.dtype,
                  kv_dtype=self.kv_dtype or self.dtype)
        given = {x for x in (self.max_num_tokens, self.max_batch_tokens) if x is not None}
        if len(given) > 1:
            _rule("max_num_tokens", f"{self.max_num_tokens} differs from max_batch_tokens {self.max_batch_tokens} "
                                    "(its former name): give one")
        budget = given.pop() if given else 8192
        _fill(self, max_num_tokens=budget, max_batch_tokens=budget)
        return self
