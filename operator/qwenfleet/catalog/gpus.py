"""GPU types as data: memory, FP8 support, node shapes, the labels that select them, indicative prices.

Prices are indicative on-demand list prices per GPU-hour (see `PRICE_SOURCE`); every Qwen3Deployment and
`qwenfleet plan --price` can override them. Memory is what the device reports (MiB), not the marketing GB.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICE_SOURCE = (
    "indicative on-demand list price per GPU-hour, us-east-1, from the AWS instance that carries the GPU "
    "(p5, p5e, p6-b200, p4d, p4de, g6e, g6, g5); MI300X from public neocloud list prices. Estimates: "
    "override with spec.pricing.gpuHourUSD or `qwenfleet plan --price`."
)


@dataclass(frozen=True)
class GPUSpec:
    """One accelerator type and how Kubernetes nodes that carry it are labelled."""

    name: str
    vendor: str
    memory_mib: int
    architecture: str
    compute_capability: str
    fp8_w8a8: bool
    awq: bool
    gpus_per_node: tuple[int, ...]
    memory_bandwidth_tbs: float
    product_label: str
    karpenter_gpu_name: str
    instance_types: dict[int, str]
    price_per_gpu_hour_usd: float

    @property
    def memory_bytes(self) -> int:
        """Device memory in bytes."""
        return self.memory_mib * 1024 * 1024

    @property
    def resource_name(self) -> str:
        """The extended resource the device plugin advertises."""
        return "amd.com/gpu" if self.vendor == "amd" else "nvidia.com/gpu"

    @property
    def max_gpus_per_node(self) -> int:
        """The most GPUs of this type one node carries."""
        return max(self.gpus_per_node)


GPUS: tuple[GPUSpec, ...] = (
    GPUSpec(
        "H100-80GB", "nvidia", 81_559, "hopper", "9.0", True, True, (1, 8), 3.35,
        "NVIDIA-H100-80GB-HBM3", "h100", {1: "p5.4xlarge", 8: "p5.48xlarge"}, 6.88,
    ),
    GPUSpec(
        "H200-141GB", "nvidia", 143_771, "hopper", "9.0", True, True, (8,), 4.8,
        "NVIDIA-H200", "h200", {8: "p5e.48xlarge"}, 7.91,
    ),
    GPUSpec(
        "B200-192GB", "nvidia", 183_359, "blackwell", "10.0", True, True, (8,), 8.0,
        "NVIDIA-B200", "b200", {8: "p6-b200.48xlarge"}, 14.24,
    ),
    GPUSpec(
        "A100-40GB", "nvidia", 40_960, "ampere", "8.0", False, True, (8,), 1.555,
        "NVIDIA-A100-SXM4-40GB", "a100", {8: "p4d.24xlarge"}, 2.74,
    ),
    GPUSpec(
        "A100-80GB", "nvidia", 81_920, "ampere", "8.0", False, True, (8,), 2.039,
        "NVIDIA-A100-SXM4-80GB", "a100", {8: "p4de.24xlarge"}, 3.43,
    ),
    GPUSpec(
        "L40S-48GB", "nvidia", 45_776, "ada-lovelace", "8.9", True, True, (1, 4, 8), 0.864,
        "NVIDIA-L40S", "l40s", {1: "g6e.xlarge", 4: "g6e.12xlarge", 8: "g6e.48xlarge"}, 1.86,
    ),
    GPUSpec(
        "L4-24GB", "nvidia", 22_888, "ada-lovelace", "8.9", True, True, (1, 4, 8), 0.3,
        "NVIDIA-L4", "l4", {1: "g6.xlarge", 4: "g6.12xlarge", 8: "g6.48xlarge"}, 0.80,
    ),
    GPUSpec(
        "A10G-24GB", "nvidia", 22_888, "ampere", "8.6", False, True, (1, 4, 8), 0.6,
        "NVIDIA-A10G", "a10g", {1: "g5.xlarge", 4: "g5.12xlarge", 8: "g5.48xlarge"}, 1.01,
    ),
    GPUSpec(
        "MI300X-192GB", "amd", 196_592, "cdna3", "gfx942", True, False, (8,), 5.3,
        "AMD-Instinct-MI300X", "mi300x", {}, 3.99,
    ),
)  # fmt: skip

GPU_NAMES: tuple[str, ...] = tuple(g.name for g in GPUS)
_BY_NAME = {g.name.lower(): g for g in GPUS}


class UnknownGPUError(KeyError):
    """A GPU name that is not in the catalog."""

    def __str__(self) -> str:
        return str(self.args[0])


def get_gpu(name: str) -> GPUSpec:
    """Look a GPU type up by name (case-insensitive)."""
    try:
        return _BY_NAME[name.lower()]
    except KeyError:
        raise UnknownGPUError(f"unknown GPU {name!r}; known GPUs: {', '.join(GPU_NAMES)}") from None
