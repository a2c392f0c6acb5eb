"""Facts as data: the Qwen3 family and the GPU types. No I/O, no logic beyond lookups."""

from qwenfleet.catalog.gpus import GPU_NAMES, GPUS, PRICE_SOURCE, GPUSpec, UnknownGPUError, get_gpu
from qwenfleet.catalog.models import (
    MODEL_NAMES,
    MODELS,
    VOCAB_SIZE,
    Architecture,
    ContextLimits,
    ModelSpec,
    Precision,
    ThinkingMode,
    UnknownModelError,
    get_model,
)

__all__ = [
    "GPUS",
    "GPU_NAMES",
    "MODELS",
    "MODEL_NAMES",
    "PRICE_SOURCE",
    "VOCAB_SIZE",
    "Architecture",
    "ContextLimits",
    "GPUSpec",
    "ModelSpec",
    "Precision",
    "ThinkingMode",
    "UnknownGPUError",
    "UnknownModelError",
    "get_gpu",
    "get_model",
]
