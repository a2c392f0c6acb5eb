"""The Qwen3 family as data: architecture numbers, checkpoints per precision, context limits, thinking mode.

Sources are in docs/sizing.md. Parameter counts are derived from the architecture (they match the published
figures to the precision published); the vocabulary is the padded embedding size of config.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

VOCAB_SIZE = 151_936
"""Rows of the embedding matrix (config.json `vocab_size`), used for memory arithmetic."""
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
"""vLLM's --gpu-memory-utilization unless a spec overrides it (the API, the planner and the docs read this)."""
DEFAULT_MAX_NUM_SEQS = 256
"""vLLM's --max-num-seqs unless a spec overrides it."""
MIN_MODEL_LEN = 256
"""The shortest context worth serving chat with (the API's minimum and the planner's check)."""


class Precision(StrEnum):
    """Weight precision of an official checkpoint."""

    BF16 = "bf16"
    FP8 = "fp8"
    AWQ = "awq"


class ThinkingMode(StrEnum):
    """How a model thinks: hybrid (switchable per request), instruct (never), thinking (always)."""

    HYBRID = "hybrid"
    INSTRUCT = "instruct"
    THINKING = "thinking"


@dataclass(frozen=True)
class Architecture:
    """The config.json numbers that memory and parallelism depend on."""

    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    intermediate_size: int
    params_total: float
    params_active: float
    params_embedding: float
    experts: int | None = None
    experts_per_token: int | None = None
    moe_intermediate_size: int | None = None

    @property
    def is_moe(self) -> bool:
        """True for the mixture-of-experts models (30B-A3B, 235B-A22B)."""
        return self.experts is not None


@dataclass(frozen=True)
class ContextLimits:
    """Native context (config max_position_embeddings), the most any setting reaches, and YaRN's base."""

    native: int
    max: int
    yarn_original: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One Qwen3 model with everything sizing depends on."""

    name: str
    release: str
    thinking: ThinkingMode
    arch: Architecture
    context: ContextLimits
    repos: dict[Precision, str] = field(default_factory=dict)

    @property
    def precisions(self) -> tuple[Precision, ...]:
        """Precisions with an official Qwen checkpoint."""
        return tuple(p for p in Precision if p in self.repos)


def _repos(base: str, *, awq: bool = False) -> dict[Precision, str]:
    repos = {Precision.BF16: f"Qwen/{base}", Precision.FP8: f"Qwen/{base}-FP8"}
    if awq:
        repos[Precision.AWQ] = f"Qwen/{base}-AWQ"
    return repos


def _dense(layers: int, hidden: int, heads: int, inter: int, total: float, embedding: float) -> Architecture:
    return Architecture(layers, hidden, heads, 8, 128, inter, total, total, embedding)


# Parameter counts derived from the architecture (embedding V*H, doubled when untied); they match the
# published 0.6B ... 235B figures. The MoE models have 128 experts, top-8 routing, 4 KV heads.
ARCH_0_6B = _dense(28, 1024, 16, 3072, 0.596e9, 0.1556e9)
ARCH_1_7B = _dense(28, 2048, 16, 6144, 1.721e9, 0.3112e9)
ARCH_4B = _dense(36, 2560, 32, 9728, 4.022e9, 0.389e9)
ARCH_8B = _dense(36, 4096, 32, 12288, 8.191e9, 1.2447e9)
ARCH_14B = _dense(40, 5120, 40, 17408, 14.768e9, 1.5558e9)
ARCH_32B = _dense(64, 5120, 64, 25600, 32.762e9, 1.5558e9)
ARCH_30B_A3B = Architecture(48, 2048, 32, 4, 128, 6144, 30.532e9, 3.353e9, 0.6223e9, 128, 8, 768)
ARCH_235B_A22B = Architecture(94, 4096, 64, 4, 128, 12288, 235.094e9, 22.191e9, 1.2447e9, 128, 8, 1536)

# The 2504 checkpoints ship max_position_embeddings 40,960 (32,768 pre-training plus room for output);
# 4B and up reach 131,072 with YaRN (factor 4 over 32,768); 0.6B and 1.7B stop at their native window.
# The 2507 checkpoints are natively 262,144.
SHORT_2504 = ContextLimits(native=40_960, max=40_960)
LONG_2504 = ContextLimits(native=40_960, max=131_072, yarn_original=32_768)
NATIVE_2507 = ContextLimits(native=262_144, max=262_144)

_HYBRID = ThinkingMode.HYBRID


def _m2504(size: str, arch: Architecture, context: ContextLimits, *, awq: bool = False) -> ModelSpec:
    name = f"Qwen3-{size}"
    return ModelSpec(name, "2504", _HYBRID, arch, context, _repos(name, awq=awq))


def _m2507(size: str, mode: ThinkingMode, arch: Architecture) -> ModelSpec:
    name = f"Qwen3-{size}-{mode.value.capitalize()}-2507"
    return ModelSpec(name, "2507", mode, arch, NATIVE_2507, _repos(name))


MODELS: tuple[ModelSpec, ...] = (
    _m2504("0.6B", ARCH_0_6B, SHORT_2504),
    _m2504("1.7B", ARCH_1_7B, SHORT_2504),
    _m2504("4B", ARCH_4B, LONG_2504, awq=True),
    _m2504("8B", ARCH_8B, LONG_2504, awq=True),
    _m2504("14B", ARCH_14B, LONG_2504, awq=True),
    _m2504("32B", ARCH_32B, LONG_2504, awq=True),
    _m2504("30B-A3B", ARCH_30B_A3B, LONG_2504),
    _m2504("235B-A22B", ARCH_235B_A22B, LONG_2504),
    _m2507("4B", ThinkingMode.INSTRUCT, ARCH_4B),
    _m2507("4B", ThinkingMode.THINKING, ARCH_4B),
    _m2507("30B-A3B", ThinkingMode.INSTRUCT, ARCH_30B_A3B),
    _m2507("30B-A3B", ThinkingMode.THINKING, ARCH_30B_A3B),
    _m2507("235B-A22B", ThinkingMode.INSTRUCT, ARCH_235B_A22B),
    _m2507("235B-A22B", ThinkingMode.THINKING, ARCH_235B_A22B),
)

MODEL_NAMES: tuple[str, ...] = tuple(m.name for m in MODELS)
THINKING_ONLY_MODELS: tuple[str, ...] = tuple(m.name for m in MODELS if m.thinking is ThinkingMode.THINKING)
"""Models that always think: thinking cannot be turned off by default."""
_BY_NAME = {m.name.lower(): m for m in MODELS}


class UnknownModelError(KeyError):
    """A model name that is not in the catalog."""

    def __str__(self) -> str:
        return str(self.args[0])


def get_model(name: str) -> ModelSpec:
    """Look a model up by name (case-insensitive, with or without the `Qwen/` prefix)."""
    key = name.removeprefix("Qwen/").removeprefix("qwen/").lower()
    try:
        return _BY_NAME[key]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}") from None
