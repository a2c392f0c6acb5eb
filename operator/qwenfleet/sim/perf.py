"""How long one engine step of a replica takes, derived from its Plan. Pure arithmetic, no I/O.

A step of a vLLM engine runs one forward pass over every token scheduled in it (decode tokens and prefill
chunks alike). Its time is modelled as

    t = o + W(tokens) + kv_s * context + c * tokens

- o: a fixed per-step overhead (scheduling, input preparation, kernel launches with CUDA graphs).
- W: reading the weights once (decode is memory-bound). For a mixture-of-experts model only the experts the
  step's tokens route to are read: W(n) = W_all * (d + (1 - d) * (1 - (1 - k/E) ** n)), with d the share of
  weights every token uses, k experts per token out of E (the planner's model).
- kv_s * context: reading the KV cache of every scheduled sequence (its computed tokens plus the new ones);
  this is the term that makes a decode step slower as the batch grows.
- c * tokens: compute, one over the plan's prefill rate per token; it dominates large prefill chunks.

Calibration: bytes per weight and per KV token come from the catalog; one seconds-per-byte factor is chosen so
that at the planner's reference batch (min(maxNumSeqs, KV tokens / 2048) sequences of 2,048 tokens) the
throughput equals the plan's `decodeTokensPerSecond`.
"""

from __future__ import annotations

from dataclasses import dataclass

from qwenfleet.api.plan import Plan
from qwenfleet.catalog import get_gpu, get_model
from qwenfleet.planner import KV_BLOCK_TOKENS, TYPICAL_CONTEXT_TOKENS, Layout, kv_bytes_per_token_per_gpu

BLOCK_TOKENS = KV_BLOCK_TOKENS
"""vLLM's default KV block size (tokens per page)."""
STEP_OVERHEAD_SECONDS = 0.002
"""CPU-side cost of every step; it caps a tiny model's single-stream speed at a few hundred tokens/s."""
MIN_MEMORY_SHARE = 0.5
"""Lower bound of the memory-bound share of the reference step, should a plan's rates be inconsistent."""
LARGE_GPU_BYTES = 70 * 1024**3


def default_max_num_batched_tokens(gpu_name: str) -> int:
    """vLLM's default token budget per step for the OpenAI server: 8192 on >= 70 GiB GPUs except A100, else 2048."""
    gpu = get_gpu(gpu_name)
    return 8192 if gpu.memory_bytes >= LARGE_GPU_BYTES and "a100" not in gpu.name.lower() else 2048


def vllm_arg(args: list[str], flag: str) -> str | None:
    """The value of `--flag value` or `--flag=value` in a vLLM command line, or None."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


@dataclass(frozen=True)
class PerfModel:
    """Capacity limits and step-time coefficients of one replica."""

    max_num_seqs: int
    kv_tokens: int
    max_model_len: int
    weight_seconds: float
    """Reading every weight once."""
    kv_seconds_per_token: float
    """Reading one token of KV cache."""
    prefill_tokens_per_second: float
    """Compute rate: each scheduled token costs 1 / this."""
    max_num_batched_tokens: int = 8192
    """Tokens one step may schedule (vLLM's chunked-prefill budget)."""
    dense_share: float = 1.0
    """Share of the weights every token reads (1 for dense models)."""
    expert_fraction: float = 0.0
    """Experts per token over experts (0 for dense models)."""
    overhead_seconds: float = STEP_OVERHEAD_SECONDS
    """Fixed cost of every step."""

    @classmethod
    def from_plan(
        cls, plan: Plan, max_num_seqs: int | None = None, *, max_num_batched_tokens: int | None = None
    ) -> PerfModel:
        """Calibrate on the plan: at its reference batch, decode throughput is `plan.decode_tokens_per_second`."""
        model = get_model(plan.model)
        arch = model.arch
        kv_fp8 = vllm_arg(plan.vllm_args, "--kv-cache-dtype") == "fp8"
        layout = Layout(plan.tensor_parallel_size, plan.pipeline_parallel_size, plan.expert_parallel)
        kv_bytes = kv_bytes_per_token_per_gpu(model, layout, kv_fp8)
        moe = arch.experts is not None and arch.experts_per_token is not None
        dense_share = arch.params_active / arch.params_total if moe else 1.0
        expert_fraction = (arch.experts_per_token or 0) / (arch.experts or 1) if moe else 0.0
        budget = max_num_batched_tokens or int(
            vllm_arg(plan.vllm_args, "--max-num-batched-tokens") or default_max_num_batched_tokens(plan.gpu)
        )
        shape = cls(
            max_num_seqs=max_num_seqs or plan.max_num_seqs,
            kv_tokens=plan.kv_cache_tokens,
            max_model_len=plan.max_model_len,
            weight_seconds=float(plan.weight_bytes_per_gpu),
            kv_seconds_per_token=float(kv_bytes),
            prefill_tokens_per_second=plan.prefill_tokens_per_second,
            max_num_batched_tokens=budget,
            dense_share=dense_share,
            expert_fraction=expert_fraction,
        )
        # `shape` holds bytes instead of seconds: its memory time is the bytes a reference step reads.
        batch = max(1, min(plan.max_num_seqs, plan.kv_cache_tokens // TYPICAL_CONTEXT_TOKENS))
        step = batch / max(plan.decode_tokens_per_second, 1e-9)
        compute_seconds = batch / plan.prefill_tokens_per_second + STEP_OVERHEAD_SECONDS
        memory_seconds = max(step - compute_seconds, MIN_MEMORY_SHARE * step)
        seconds_per_byte = memory_seconds / shape.memory_seconds(batch, batch * TYPICAL_CONTEXT_TOKENS)
        return cls(
            max_num_seqs=shape.max_num_seqs,
            kv_tokens=shape.kv_tokens,
            max_model_len=shape.max_model_len,
            weight_seconds=shape.weight_seconds * seconds_per_byte,
            kv_seconds_per_token=shape.kv_seconds_per_token * seconds_per_byte,
            prefill_tokens_per_second=shape.prefill_tokens_per_second,
            max_num_batched_tokens=budget,
            dense_share=dense_share,
            expert_fraction=expert_fraction,
        )

    @property
    def kv_blocks(self) -> int:
        """KV cache pages of BLOCK_TOKENS tokens."""
        return max(1, self.kv_tokens // BLOCK_TOKENS)

    def weight_read_seconds(self, tokens: int) -> float:
        """Reading the weights a step of `tokens` tokens touches (all of them for a dense model)."""
        if tokens <= 0:
            return 0.0
        touched = 1.0 - (1.0 - self.expert_fraction) ** tokens if self.expert_fraction else 1.0
        return self.weight_seconds * (self.dense_share + (1.0 - self.dense_share) * touched)

    def memory_seconds(self, tokens: int, context_tokens: int) -> float:
        """Memory-bound part of a step: weights plus the KV cache of the scheduled sequences."""
        return self.weight_read_seconds(tokens) + self.kv_seconds_per_token * context_tokens

    def batch_seconds(self, tokens: int, context_tokens: int) -> float:
        """One step computing `tokens` new tokens over sequences holding `context_tokens` tokens in all."""
        if tokens <= 0:
            return 0.0
        compute = tokens / self.prefill_tokens_per_second
        return self.overhead_seconds + self.memory_seconds(tokens, context_tokens) + compute

    def step_seconds(self, decoding: int, prefill_tokens: int = 0, context_tokens: int | None = None) -> float:
        """A step decoding `decoding` sequences and prefilling `prefill_tokens`; the context defaults to the
        planner's typical 2,048 tokens per decoding sequence."""
        if context_tokens is None:
            context_tokens = decoding * TYPICAL_CONTEXT_TOKENS + prefill_tokens
        return self.batch_seconds(decoding + prefill_tokens, context_tokens)
