"""Sizing: (model, precision, GPU, context, overrides) -> Plan, or PlanInfeasible naming what would work.

Pure arithmetic over the catalog. The memory model follows vLLM: it pre-allocates
`gpu_memory_utilization` of each GPU for weights, activations and the KV cache; weights are split by
tensor x pipeline parallelism; KV bytes per token per GPU are 2 x layers-per-stage x max(1, kv_heads // TP)
x head_dim x dtype bytes (KV heads replicate once TP exceeds them). Throughput and cost are estimates from
memory bandwidth (decode is bandwidth-bound) and are labelled as such.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

from qwenfleet.api.deployment import Qwen3DeploymentSpec
from qwenfleet.api.plan import Plan
from qwenfleet.catalog import GPUS, GPUSpec, ModelSpec, Precision, ThinkingMode, get_gpu, get_model
from qwenfleet.catalog.models import DEFAULT_GPU_MEMORY_UTILIZATION, DEFAULT_MAX_NUM_SEQS, MIN_MODEL_LEN

GIB = 1024**3
FP8_BLOCK = 128
"""Qwen's FP8 checkpoints quantise in 128 x 128 blocks: each rank's slice must be a multiple of 128."""
PARALLEL_SIZES = (1, 2, 4, 8)
MAX_NODES_PER_REPLICA = 4
KV_BLOCK_TOKENS = 16
BANDWIDTH_EFFICIENCY = 0.35
"""Share of peak memory bandwidth a serving decode step reaches, prefill interference included (calibrated on
GPUStack's vLLM figure: 235B-A22B BF16, 8 x H100, about 4,000 output tokens/s)."""
TYPICAL_CONTEXT_TOKENS = 2048
"""Average tokens in flight per sequence when estimating throughput."""
LOAD_BYTES_PER_SECOND = 1.5e9
"""Weights read from a local or cached volume, per node (the GPUs of a node share its disk)."""
DOWNLOAD_BYTES_PER_SECOND = 0.25e9
"""One download from Hugging Face."""
ENGINE_START_SECONDS = 25
"""Process start, memory profiling and CUDA graph capture: paid on every start."""
COMPILE_SECONDS = 35
"""vLLM's torch.compile of the model on a start with no compile cache (third-party: about 39 s for a 35B MoE)."""
COMPILE_FROM_CACHE_SECONDS = 8
"""Loading the compiled graphs from a persisted compile cache (third-party: 5-20 s; on the CPU engine, measured
by `make bench-coldstart` in bench/results/coldstart.json, the cache takes most of the whole start away)."""
MULTI_NODE_START_SECONDS = 60
"""Extra time for a multi-node group to form."""


class PlanInfeasible(ValueError):
    """No plan can serve this request; the message says why and the smallest change that would work."""


@dataclass(frozen=True)
class PlanRequest:
    """Everything the planner needs to know about one deployment."""

    model: str
    gpu: str
    precision: Precision = Precision.BF16
    max_model_len: int | None = None
    tensor_parallel_size: int | None = None
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    kv_cache_fp8: bool = False
    thinking_default: bool | None = None
    price_per_gpu_hour_usd: float | None = None
    max_nodes_per_replica: int = MAX_NODES_PER_REPLICA
    served_model_name: str | None = None
    compile_cache: bool = False
    """vLLM's compile cache is persisted (on the weight cache), so a start loads the compiled graphs."""
    download_per_pod: bool = False
    """Every pod downloads the checkpoint before it loads it (no weight cache, no weights volume)."""
    lora: LoraSlots | None = None
    """LoRA on: adapter slots one batch mixes and the largest rank (None: no LoRA)."""


@dataclass(frozen=True)
class LoraSlots:
    """vLLM's `--max-loras` and `--max-lora-rank`: it pre-allocates `max_loras` adapter slots of `max_rank`."""

    max_loras: int
    max_rank: int


@dataclass(frozen=True)
class Layout:
    """A candidate placement of one replica."""

    tp: int
    pp: int
    ep: bool

    @property
    def gpus(self) -> int:
        return self.tp * self.pp


# ---------------------------------------------------------------------------------------------- memory


def weight_bytes(model: ModelSpec, precision: Precision) -> int:
    """Checkpoint bytes: BF16 2 B/param; FP8 1 B (embeddings stay BF16); AWQ 4-bit plus group scales."""
    arch = model.arch
    body = arch.params_total - arch.params_embedding
    per_param = {Precision.BF16: 2.0, Precision.FP8: 1.0, Precision.AWQ: 0.5 * 1.04}[precision]
    if precision is Precision.BF16:
        return int(arch.params_total * 2)
    return int(body * per_param + arch.params_embedding * 2)


def kv_bytes_per_token_per_gpu(model: ModelSpec, layout: Layout, kv_fp8: bool) -> int:
    """KV-cache bytes one token occupies on each GPU of the replica."""
    arch = model.arch
    kv_heads = max(1, arch.kv_heads // layout.tp)
    layers = math.ceil(arch.layers / layout.pp)
    return 2 * layers * kv_heads * arch.head_dim * (1 if kv_fp8 else 2)


def overhead_bytes(model: ModelSpec, gpu: GPUSpec) -> int:
    """Activations, sampler buffers and allocator slack inside vLLM's budget (estimate)."""
    base = 1.0 * GIB + 0.02 * gpu.memory_bytes
    return int(base + (1.0 * GIB if model.arch.is_moe else 0))


def lora_bytes_per_gpu(model: ModelSpec, layout: Layout, slots: LoraSlots | None) -> int:
    """GPU bytes of vLLM's LoRA slots on each GPU: per slot and layer, A (rank x in) and B (out x rank) in bf16
    for q/k/v, o, gate/up and down (and for every expert's projections on MoE models), the TP-split side divided."""
    if slots is None:
        return 0
    arch, tp = model.arch, layout.tp
    qkv_out = (arch.attention_heads + 2 * arch.kv_heads) * arch.head_dim
    attention = (arch.hidden_size + qkv_out / tp) + (arch.attention_heads * arch.head_dim / tp + arch.hidden_size)
    if arch.experts and arch.moe_intermediate_size:
        inter = arch.moe_intermediate_size
        mlp = arch.experts * ((arch.hidden_size + 2 * inter / tp) + (inter / tp + arch.hidden_size))
    else:
        inter = arch.intermediate_size
        mlp = (arch.hidden_size + 2 * inter / tp) + (inter / tp + arch.hidden_size)
    layers = math.ceil(arch.layers / layout.pp)
    return int(slots.max_loras * slots.max_rank * 2 * layers * (attention + mlp))


def _kv_tokens(model: ModelSpec, gpu: GPUSpec, layout: Layout, req: PlanRequest, weights: int) -> int:
    budget = gpu.memory_bytes * req.gpu_memory_utilization
    lora = lora_bytes_per_gpu(model, layout, req.lora)
    free = budget - weights / layout.gpus - overhead_bytes(model, gpu) - lora
    if free <= 0:
        return 0
    tokens = int(free // kv_bytes_per_token_per_gpu(model, layout, req.kv_cache_fp8))
    return tokens - tokens % KV_BLOCK_TOKENS


# ---------------------------------------------------------------------------------------------- rules


def _fp8_slices_ok(model: ModelSpec, layout: Layout) -> bool:
    """FP8 block-128: each rank's share of the MLP (or of each expert, without EP) must be a multiple of 128."""
    arch = model.arch
    if arch.moe_intermediate_size is not None:
        return layout.ep or (arch.moe_intermediate_size // layout.tp) % FP8_BLOCK == 0
    return arch.intermediate_size % layout.tp == 0 and (arch.intermediate_size // layout.tp) % FP8_BLOCK == 0


def _layout_problem(model: ModelSpec, precision: Precision, layout: Layout) -> str | None:
    """Why a layout cannot run, or None."""
    arch = model.arch
    if arch.attention_heads % layout.tp:
        return f"TP {layout.tp} does not divide {arch.attention_heads} attention heads"
    if layout.tp > arch.kv_heads and layout.tp % arch.kv_heads:
        return f"TP {layout.tp} cannot replicate {arch.kv_heads} KV heads evenly"
    if layout.ep and not arch.is_moe:
        return "expert parallelism needs a mixture-of-experts model"
    if layout.ep and arch.experts is not None and arch.experts % layout.tp:
        return f"{arch.experts} experts do not divide over {layout.tp} GPUs"
    if precision is Precision.FP8 and not _fp8_slices_ok(model, layout):
        size = arch.moe_intermediate_size or arch.intermediate_size
        return f"FP8 block-128 quantisation: {size} / TP {layout.tp} = {size // layout.tp} is not a multiple of 128" + (
            " (enable expert parallelism)" if arch.is_moe else ""
        )
    return None


def _check_inputs(model: ModelSpec, gpu: GPUSpec, req: PlanRequest, max_len: int) -> None:
    if req.precision not in model.repos:
        alternatives = [_plan_or_none(replace(req, precision=p)) for p in model.precisions]
        offered = " or ".join(f"{a.precision} ({_describe(a)})" for a in alternatives if a)
        raise PlanInfeasible(
            f"{model.name} has no official {req.precision.value} checkpoint (Qwen publishes AWQ only for "
            f"Qwen3-4B, Qwen3-8B, Qwen3-14B and Qwen3-32B); use {offered or 'another GPU'}"
        )
    if req.precision is Precision.FP8 and not gpu.fp8_w8a8:
        raise PlanInfeasible(
            f"fp8 (W8A8) needs compute capability 8.9 or newer (Ada, Hopper, Blackwell) or MI300X; "
            f"{gpu.name} is {gpu.architecture} {gpu.compute_capability}: use bf16"
            + (" or awq" if Precision.AWQ in model.repos else "")
        )
    if req.precision is Precision.AWQ and not gpu.awq:
        raise PlanInfeasible(f"AWQ kernels do not run on {gpu.name}; use bf16 or fp8")
    if max_len > model.context.max:
        limit = model.context.max
        if model.context.yarn_original is None and model.release == "2504":
            hint = "no YaRN extension for Qwen3-0.6B and Qwen3-1.7B; Qwen3-4B and larger reach 131072"
        else:
            hint = f"that is {model.name}'s longest context"
        raise PlanInfeasible(
            f"{model.name} supports at most {limit} tokens of context ({hint}); set maxModelLen <= {limit}"
        )
    if max_len < MIN_MODEL_LEN:
        raise PlanInfeasible(f"maxModelLen {max_len} is too short to serve chat requests; use at least {MIN_MODEL_LEN}")
    if req.tensor_parallel_size is not None and req.tensor_parallel_size not in PARALLEL_SIZES:
        raise PlanInfeasible(f"tensorParallelSize must be one of {PARALLEL_SIZES}")


# ---------------------------------------------------------------------------------------------- layouts


def _candidate_layouts(model: ModelSpec, gpu: GPUSpec, req: PlanRequest) -> list[Layout]:
    """Layouts from fewest GPUs up: one node first (TP only), then across nodes (TP x PP)."""
    per_node = gpu.max_gpus_per_node
    tps = [req.tensor_parallel_size] if req.tensor_parallel_size else [t for t in PARALLEL_SIZES if t <= per_node]
    layouts: list[Layout] = []
    for tp in tps:
        if tp > per_node:
            continue
        layouts.append(Layout(tp, 1, False))
        if model.arch.is_moe and tp > 1:
            layouts.append(Layout(tp, 1, True))
    if req.tensor_parallel_size is None or req.tensor_parallel_size == per_node:
        for nodes in range(2, req.max_nodes_per_replica + 1):
            layouts.append(Layout(per_node, nodes, False))
            if model.arch.is_moe:
                layouts.append(Layout(per_node, nodes, True))
    return sorted(layouts, key=lambda lay: (lay.gpus, lay.ep))


def _fits(model: ModelSpec, gpu: GPUSpec, req: PlanRequest, layout: Layout, max_len: int) -> bool:
    if _layout_problem(model, req.precision, layout):
        return False
    return _kv_tokens(model, gpu, layout, req, weight_bytes(model, req.precision)) >= max_len


def _choose_layout(model: ModelSpec, gpu: GPUSpec, req: PlanRequest, max_len: int) -> Layout | None:
    for layout in _candidate_layouts(model, gpu, req):
        if _fits(model, gpu, req, layout, max_len):
            return layout
    return None


def _default_context(model: ModelSpec, gpu: GPUSpec, req: PlanRequest) -> int:
    """The longest standard context that fits on the fewest GPUs able to serve 32K (or the native window)."""
    lengths = [n for n in (model.context.native, 131_072, 65_536, 32_768) if n <= model.context.native]
    floor = _choose_layout(model, gpu, req, min(32_768, model.context.native))
    if floor is None:
        return model.context.native
    same_size = replace(req, max_nodes_per_replica=floor.pp)
    for length in sorted(set(lengths), reverse=True):
        layout = _choose_layout(model, gpu, same_size, length)
        if layout and layout.gpus <= floor.gpus:
            return length
    return min(32_768, model.context.native)


# ---------------------------------------------------------------------------------------------- estimates


def _decode_tokens_per_second(model: ModelSpec, gpu: GPUSpec, layout: Layout, batch: int, req: PlanRequest) -> float:
    """Bandwidth-bound decode: each step reads the touched weights and the batch's KV on every GPU."""
    arch = model.arch
    weights = weight_bytes(model, req.precision)
    if arch.is_moe and arch.experts and arch.experts_per_token:
        touched = 1 - (1 - arch.experts_per_token / arch.experts) ** batch
        dense_share = arch.params_active / arch.params_total
        read = weights * (dense_share + (1 - dense_share) * touched)
    else:
        read = weights
    per_gpu_read = read / layout.gpus + batch * TYPICAL_CONTEXT_TOKENS * kv_bytes_per_token_per_gpu(
        model, layout, req.kv_cache_fp8
    )
    step = per_gpu_read / (gpu.memory_bandwidth_tbs * 1e12 * BANDWIDTH_EFFICIENCY)
    step *= 1 + 0.05 * math.log2(layout.gpus) + (0.1 if layout.pp > 1 else 0)
    return batch / step


def _prefill_tokens_per_second(model: ModelSpec, gpu: GPUSpec, layout: Layout) -> float:
    """Compute-bound prefill from a bandwidth-proportional FLOP estimate (2 x active params per token)."""
    flops_per_gpu = gpu.memory_bandwidth_tbs * 1e12 * 200 * 0.4
    return flops_per_gpu * layout.gpus / (2 * model.arch.params_active)


def _vllm_args(model: ModelSpec, req: PlanRequest, layout: Layout, max_len: int, yarn: float | None) -> list[str]:
    args = [
        model.repos[req.precision],
        "--served-model-name",
        req.served_model_name or model.name,
        "--tensor-parallel-size",
        str(layout.tp),
        "--max-model-len",
        str(max_len),
        "--gpu-memory-utilization",
        f"{req.gpu_memory_utilization:g}",
        "--max-num-seqs",
        str(req.max_num_seqs),
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
        # `/load` then counts requests in flight: the router's per-second queue signal costs 17 bytes instead of
        # the whole ~56 kB /metrics exposition (vLLM ignores /metrics' name[] filter); see bench/results/router.json.
        "--enable-server-load-tracking",
    ]
    if layout.pp > 1:
        args += ["--pipeline-parallel-size", str(layout.pp)]
    if layout.ep:
        args.append("--enable-expert-parallel")
    if model.thinking is ThinkingMode.HYBRID:
        args += ["--reasoning-parser", "qwen3"]
        if req.thinking_default is False:
            args += ["--default-chat-template-kwargs", json.dumps({"enable_thinking": False})]
    elif model.thinking is ThinkingMode.THINKING:
        args += ["--reasoning-parser", "deepseek_r1"]
    if req.kv_cache_fp8:
        args += ["--kv-cache-dtype", "fp8"]
    if req.lora is not None:
        args += ["--enable-lora", "--max-loras", str(req.lora.max_loras), "--max-lora-rank", str(req.lora.max_rank)]
    if yarn is not None and model.context.yarn_original is not None:
        rope = {
            "rope_type": "yarn",
            "factor": yarn,
            "original_max_position_embeddings": model.context.yarn_original,
        }
        args += ["--hf-overrides", json.dumps({"rope_scaling": rope}, separators=(",", ":"))]
    return args


def _yarn_factor(model: ModelSpec, max_len: int) -> float | None:
    """Qwen's advice: YaRN only when needed, factor 2 up to 65,536 and 4 up to 131,072."""
    base = model.context.yarn_original
    if base is None or max_len <= model.context.native:
        return None
    return 2.0 if max_len <= 2 * base else 4.0


# ---------------------------------------------------------------------------------------------- entry points


def plan(req: PlanRequest) -> Plan:
    """Size one replica; raise PlanInfeasible with the reason and the smallest change that would work."""
    model = get_model(req.model)
    gpu = get_gpu(req.gpu)
    max_len = req.max_model_len or _default_context(model, gpu, req)
    _check_inputs(model, gpu, req, max_len)
    layout = _choose_layout(model, gpu, req, max_len)
    if layout is None:
        raise PlanInfeasible(_infeasible_message(model, gpu, req, max_len))
    return _build_plan(model, gpu, req, layout, max_len)


def _plan_or_none(req: PlanRequest) -> Plan | None:
    """A plan, or None when infeasible; never builds a message (so alternatives don't recurse)."""
    model = get_model(req.model)
    gpu = get_gpu(req.gpu)
    max_len = req.max_model_len or _default_context(model, gpu, req)
    try:
        _check_inputs(model, gpu, req, max_len)
    except PlanInfeasible:
        return None
    layout = _choose_layout(model, gpu, req, max_len)
    return _build_plan(model, gpu, req, layout, max_len) if layout else None


def _cold_start_seconds(req: PlanRequest, layout: Layout, weights: float) -> float:
    """Pod start to ready: engine start, compile (or its cache), weights read per node, download if per pod."""
    cold: float = ENGINE_START_SECONDS + (COMPILE_FROM_CACHE_SECONDS if req.compile_cache else COMPILE_SECONDS)
    cold += weights / layout.pp / LOAD_BYTES_PER_SECOND
    if layout.pp > 1:
        cold += MULTI_NODE_START_SECONDS
    if req.download_per_pod:
        cold += weights / DOWNLOAD_BYTES_PER_SECOND
    return cold


def _build_plan(model: ModelSpec, gpu: GPUSpec, req: PlanRequest, layout: Layout, max_len: int) -> Plan:
    weights = weight_bytes(model, req.precision)
    kv_tokens = _kv_tokens(model, gpu, layout, req, weights)
    yarn = _yarn_factor(model, max_len)
    batch = max(1, min(req.max_num_seqs, kv_tokens // TYPICAL_CONTEXT_TOKENS))
    decode = _decode_tokens_per_second(model, gpu, layout, batch, req)
    price = req.price_per_gpu_hour_usd if req.price_per_gpu_hour_usd is not None else gpu.price_per_gpu_hour_usd
    cost_hour = price * layout.gpus
    per_gpu = weights / layout.gpus
    cold = _cold_start_seconds(req, layout, weights)
    notes = [f"{layout.gpus} x {gpu.name} is the smallest layout that holds the weights and one "
             f"{max_len}-token sequence"]  # fmt: skip
    if layout.ep:
        notes.append("expert parallelism: FP8 block-128 forbids splitting each expert at this TP")
    if layout.tp > model.arch.kv_heads:
        notes.append(f"TP {layout.tp} > {model.arch.kv_heads} KV heads: KV heads are replicated")
    if yarn:
        notes.append(f"YaRN factor {yarn:g} (context above the native {model.context.native})")
    if req.download_per_pod:
        notes.append("cold start includes each pod's download of the weights: a weight cache removes it")
    if req.compile_cache:
        notes.append("cold start loads vLLM's compiled graphs from the compile cache on the weight cache")
    lora = lora_bytes_per_gpu(model, layout, req.lora)
    if req.lora is not None:
        notes.append(f"LoRA: {req.lora.max_loras} adapter slots of rank {req.lora.max_rank} hold "
                     f"{lora / GIB:.2f} GiB per GPU, taken from the KV cache")  # fmt: skip
    notes.append("throughput, cold start and cost are estimates")
    return Plan(
        model=model.name,
        precision=req.precision.value,
        gpu=gpu.name,
        repo=model.repos[req.precision],
        gpus_per_replica=layout.gpus,
        nodes_per_replica=layout.pp,
        gpus_per_node=layout.tp,
        tensor_parallel_size=layout.tp,
        pipeline_parallel_size=layout.pp,
        expert_parallel=layout.ep,
        max_model_len=max_len,
        yarn_factor=yarn,
        gpu_memory_utilization=req.gpu_memory_utilization,
        weight_bytes_per_gpu=int(per_gpu),
        kv_cache_tokens=kv_tokens,
        lora_bytes_per_gpu=lora or None,
        max_loras=req.lora.max_loras if req.lora else None,
        max_lora_rank=req.lora.max_rank if req.lora else None,
        max_concurrent_sequences=kv_tokens // max_len,
        max_num_seqs=req.max_num_seqs,
        reference_concurrency=batch,
        vllm_args=_vllm_args(model, req, layout, max_len, yarn),
        cold_start_seconds=math.ceil(cold),
        download_seconds=math.ceil(weights / DOWNLOAD_BYTES_PER_SECOND),
        weight_bytes_total=weights,
        decode_tokens_per_second=round(decode, 1),
        prefill_tokens_per_second=round(_prefill_tokens_per_second(model, gpu, layout), 1),
        cost_per_hour_usd=round(cost_hour, 2),
        cost_per_million_output_tokens_usd=round(cost_hour / (decode * 3600) * 1e6, 3),
        notes=notes,
    )


def _describe(p: Plan) -> str:
    return p.layout


def _infeasible_message(model: ModelSpec, gpu: GPUSpec, req: PlanRequest, max_len: int) -> str:
    """Say why nothing fits and name the smallest change that would: a shorter context, another precision on
    the same GPU, then the cheapest other GPU."""
    if req.tensor_parallel_size:
        layout = Layout(req.tensor_parallel_size, 1, False)
        problem = _layout_problem(model, req.precision, layout)
        reason = problem or f"TP {layout.tp} on {gpu.name} cannot hold the weights and one {max_len}-token sequence"
        alt = _plan_or_none(replace(req, tensor_parallel_size=None))
        suffix = f"without the override: {_describe(alt)}" if alt else "remove the tensorParallelSize override"
        return f"{model.name} {req.precision.value}: {reason}; {suffix}"
    need = weight_bytes(model, req.precision) / GIB
    where = f"{req.max_nodes_per_replica} nodes of {gpu.max_gpus_per_node} x {gpu.name}"
    reason = (
        f"{model.name} in {req.precision.value} ({need:.0f} GiB of weights) with a {max_len}-token context "
        f"does not fit on up to {where}"
    )
    options: list[tuple[int, float, str]] = []
    if req.max_model_len:
        shorter = _plan_or_none(replace(req, max_model_len=None))
        if shorter:
            options.append((0, 0.0, f"{_describe(shorter)} at maxModelLen {shorter.max_model_len}"))
    for precision in model.precisions:
        for candidate in GPUS:
            alt = _plan_or_none(replace(req, precision=precision, gpu=candidate.name, price_per_gpu_hour_usd=None))
            if alt:
                tier = 1 if candidate.name == gpu.name else 2
                options.append((tier, alt.cost_per_hour_usd, f"{_describe(alt)} in {alt.precision}"))
    if not options:
        return reason
    return f"{reason}; smallest plan that fits: {min(options)[2]}"


def plan_request(spec: Qwen3DeploymentSpec) -> PlanRequest:
    """The planner's view of a spec; the planner's defaults apply to whatever the spec leaves unset."""
    o = spec.overrides
    tuning: dict[str, Any] = {}
    if o and o.gpu_memory_utilization is not None:
        tuning["gpu_memory_utilization"] = o.gpu_memory_utilization
    if o and o.max_num_seqs is not None:
        tuning["max_num_seqs"] = o.max_num_seqs
    return PlanRequest(
        model=spec.model,
        gpu=spec.gpu,
        precision=Precision(spec.precision),
        max_model_len=spec.max_model_len,
        tensor_parallel_size=o.tensor_parallel_size if o else None,
        kv_cache_fp8=bool(o and o.kv_cache_dtype == "fp8"),
        thinking_default=spec.thinking_by_default,
        price_per_gpu_hour_usd=spec.pricing.gpu_hour_usd if spec.pricing else None,
        compile_cache=bool(spec.cache and spec.cache.compiles_once),
        download_per_pod=not spec.weights_on_volume,
        lora=LoraSlots(spec.lora_limits.max_loras, spec.lora_limits.max_rank) if spec.serves_adapters else None,
        **tuning,
    )
