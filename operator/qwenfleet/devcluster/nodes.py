"""Simulated nodes as data: the GPU node profiles and Karpenter's instance types, labelled as real clusters are."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from qwenfleet.catalog import GPUS, GPUSpec, get_gpu

Manifest = dict[str, Any]

INSTANCE_SHAPES: dict[str, tuple[int, int]] = {
    "p5.4xlarge": (16, 256),
    "p5.48xlarge": (192, 2048),
    "p5e.48xlarge": (192, 2048),
    "p6-b200.48xlarge": (192, 2048),
    "p4d.24xlarge": (96, 1152),
    "p4de.24xlarge": (96, 1152),
    "g6e.xlarge": (4, 32),
    "g6e.12xlarge": (48, 384),
    "g6e.48xlarge": (192, 1536),
    "g6.xlarge": (4, 16),
    "g6.12xlarge": (48, 192),
    "g6.48xlarge": (192, 768),
    "g5.xlarge": (4, 16),
    "g5.12xlarge": (48, 192),
    "g5.48xlarge": (192, 768),
}
"""vCPUs and GiB of memory of each instance type (AWS), for node capacity."""
ZONE = "test-zone-a"
FAMILY = {"hopper": "hopper", "blackwell": "blackwell", "ampere": "ampere", "ada-lovelace": "ada-lovelace"}
GFD_MEMORY_MIB = {"H100-80GB": 81_559, "L4-24GB": 23_034}
"""`nvidia.com/gpu.memory` as GPU Feature Discovery reports it (NVML's total, MiB) where it differs from the catalog."""
AWS_GPU_MEMORY_MIB = {"h100": 81_920, "l4": 22_888}
"""`karpenter.k8s.aws/instance-gpu-memory` as AWS describes the instance's GPU (MiB), where it differs from NVML."""


@dataclass(frozen=True)
class NodeGroup:
    """`count` nodes with `gpus` GPUs of type `gpu` (None: a CPU node)."""

    count: int
    gpu: str | None
    gpus: int = 0


PROFILES: dict[str, tuple[NodeGroup, ...]] = {
    "default": (NodeGroup(2, "H100-80GB", 8), NodeGroup(2, "L4-24GB", 1), NodeGroup(1, None)),
    "karpenter": (NodeGroup(1, None),),
    "large": (
        NodeGroup(4, "H100-80GB", 8),
        NodeGroup(2, "A100-40GB", 8),
        NodeGroup(4, "L4-24GB", 1),
        NodeGroup(2, "L40S-48GB", 4),
        NodeGroup(2, None),
    ),
}


def gpu_labels(gpu: GPUSpec, count: int, instance_type: str) -> dict[str, str]:
    """GPU Feature Discovery and Karpenter labels a node carrying `count` GPUs of this type has."""
    labels = {
        "node.kubernetes.io/instance-type": instance_type,
        "karpenter.k8s.aws/instance-gpu-name": gpu.karpenter_gpu_name,
        "karpenter.k8s.aws/instance-gpu-count": str(count),
        "karpenter.k8s.aws/instance-gpu-memory": str(AWS_GPU_MEMORY_MIB.get(gpu.karpenter_gpu_name, gpu.memory_mib)),
        "karpenter.k8s.aws/instance-gpu-manufacturer": gpu.vendor,
    }
    if gpu.vendor == "nvidia":
        labels |= {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": gpu.product_label,
            "nvidia.com/gpu.count": str(count),
            "nvidia.com/gpu.memory": str(GFD_MEMORY_MIB.get(gpu.name, gpu.memory_mib)),
            "nvidia.com/gpu.family": FAMILY.get(gpu.architecture, gpu.architecture),
        }
    else:
        labels |= {"amd.com/gpu.product-name": gpu.product_label}
    return labels


def pod_network() -> str:
    """The /16 of loopback the dev cluster's pod IPs come from: `127.1` unless `QWENFLEET_DEV_POD_NET` names another
    (`127.N`), so that two dev clusters on one machine never hand out the same pod IP."""
    net = os.environ.get("QWENFLEET_DEV_POD_NET", "127.1")
    parts = net.split(".")
    if len(parts) != 2 or parts[0] != "127" or not parts[1].isdigit() or not 1 <= int(parts[1]) <= 254:
        raise ValueError(f"QWENFLEET_DEV_POD_NET must look like 127.N, not {net!r}")
    return net


def node(name: str, index: int, group: NodeGroup) -> Manifest:
    """One kwok node; pods on it get IPs from its own 127.1.<index>.0/24 (see `pod_network`)."""
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "topology.kubernetes.io/zone": ZONE,
        "type": "kwok",
    }
    spec: Manifest = {"podCIDR": f"{pod_network()}.{index}.0/24"}
    if group.gpu:
        gpu = get_gpu(group.gpu)
        instance = gpu.instance_types.get(group.gpus, f"{gpu.karpenter_gpu_name}-{group.gpus}gpu")
        cpu, memory = INSTANCE_SHAPES.get(instance, (8 * group.gpus, 64 * group.gpus))
        labels |= gpu_labels(gpu, group.gpus, instance)
        extra = {gpu.resource_name: str(group.gpus)}
        spec["taints"] = [{"key": gpu.resource_name, "value": "true", "effect": "NoSchedule"}]
    else:
        cpu, memory, extra = 32, 128, {}
        labels["node.kubernetes.io/instance-type"] = "m6i.8xlarge"
    capacity = {"cpu": str(cpu), "memory": f"{memory}Gi", "pods": "110", **extra}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": spec,
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def profile_nodes(profile: str) -> list[Manifest]:
    """Every node of a profile, named by GPU type (e.g. `h100-80gb-0`, `cpu-0`)."""
    nodes = []
    index = 1
    for group in PROFILES[profile]:
        prefix = group.gpu.lower() if group.gpu else "cpu"
        for i in range(group.count):
            nodes.append(node(f"{prefix}-{i}", index, group))
            index += 1
    return nodes


def karpenter_instance_types() -> list[Manifest]:
    """Karpenter kwok provider instance types (v1.14 format) for every GPU node shape in the catalog."""
    types = []
    for gpu in GPUS:
        for count, name in sorted(gpu.instance_types.items()):
            cpu, memory = INSTANCE_SHAPES[name]
            requirements = [
                {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [ZONE]},
            ]
            types.append(
                {
                    "name": name,
                    "offerings": [
                        {
                            "Price": round(gpu.price_per_gpu_hour_usd * count, 2),
                            "Available": True,
                            "Requirements": requirements,
                        }
                    ],
                    "architecture": "amd64",
                    "operatingSystems": ["linux"],
                    "resources": {
                        "cpu": str(cpu),
                        "memory": f"{memory}Gi",
                        "ephemeral-storage": "2000Gi",
                        "pods": "110",
                        gpu.resource_name: str(count),
                    },
                }
            )
    return types
