"""A Karpenter NodePool of GPU nodes for one deployment (cluster-scoped: cleaned up by a finalizer)."""

from __future__ import annotations

from typing import Any

from qwenfleet.api.deployment import Qwen3DeploymentSpec
from qwenfleet.render.inputs import DeploymentInput
from qwenfleet.render.names import GROUP, labels, nodepool_name

Manifest = dict[str, Any]


def gpu_limit(gpus_needed: int, node_sizes: list[int]) -> int:
    """The pool's GPU cap: enough whole nodes of any allowed size to hold every replica.

    Karpenter counts a node's whole capacity against the limit, so a cap of exactly maxReplicas x GPUs per
    replica would forbid an 8-GPU node for a 1-GPU replica; round up to whole nodes of the largest size.
    """
    largest = max(node_sizes)
    return -(-gpus_needed // largest) * largest


def owned_pool_name(spec: Qwen3DeploymentSpec, namespace: str, name: str) -> str | None:
    """The NodePool this deployment owns (rendered, pruned and finalized by qwenfleet), or None."""
    pool = spec.node_pool
    return nodepool_name(namespace, name) if pool is not None and pool.owned else None


def scheduling_pool_name(spec: Qwen3DeploymentSpec, namespace: str, name: str) -> str | None:
    """The Karpenter NodePool the pods land on: our own or the shared one; None without Karpenter."""
    pool = spec.node_pool
    if pool is None or pool.provisioner != "karpenter":
        return None
    return pool.shared_pool_name or owned_pool_name(spec, namespace, name)


def render_nodepool(inp: DeploymentInput) -> Manifest | None:
    """The NodePool, or None when the deployment uses existing nodes or a shared pool."""
    pool = inp.spec.node_pool
    own = owned_pool_name(inp.spec, inp.owner.namespace, inp.owner.name)
    if pool is None or pool.node_class_ref is None or own is None:
        return None
    gpu = inp.gpu
    per_pod = inp.plan.gpus_per_node
    sizes = sorted(n for n in gpu.instance_types if n >= per_pod) or [gpu.max_gpus_per_node]
    instance_types = [gpu.instance_types[n] for n in sizes if n in gpu.instance_types]
    max_replicas = inp.spec.autoscaling.max_replicas if inp.spec.autoscaling else max(1, inp.replicas)
    requirements: list[Manifest] = [
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": list(pool.capacity_types)},
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
    ]
    if instance_types:
        requirements.append({"key": "node.kubernetes.io/instance-type", "operator": "In", "values": instance_types})
    node_labels = {
        "nvidia.com/gpu.product" if gpu.vendor == "nvidia" else "amd.com/gpu.product-name": gpu.product_label,
        f"{GROUP}/gpu": gpu.name,
    }
    meta_labels = labels(inp.owner.name, "node-pool") | {f"{GROUP}/namespace": inp.owner.namespace}
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": own, "labels": meta_labels},
        "spec": {
            "template": {
                "metadata": {"labels": node_labels},
                "spec": {
                    "nodeClassRef": pool.node_class_ref.to_wire(),
                    "requirements": requirements,
                    "taints": [{"key": gpu.resource_name, "value": "true", "effect": "NoSchedule"}],
                    "expireAfter": "720h",
                },
            },
            "limits": {gpu.resource_name: str(gpu_limit(max_replicas * inp.plan.gpus_per_replica, sizes))},
            "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5m"},
        },
    }
