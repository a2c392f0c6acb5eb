"""A Karpenter NodePool of GPU nodes for one deployment (cluster-scoped: cleaned up by a finalizer)."""

from __future__ import annotations

from typing import Any

from qwenfleet.render.inputs import DeploymentInput
from qwenfleet.render.names import GROUP, labels, nodepool_name

Manifest = dict[str, Any]


def render_nodepool(inp: DeploymentInput) -> Manifest | None:
    """The NodePool, or None when the deployment uses existing nodes or a shared pool."""
    pool = inp.spec.node_pool
    if pool is None or pool.provisioner != "karpenter" or pool.node_class_ref is None:
        return None
    gpu = inp.gpu
    per_pod = inp.plan.gpus_per_node
    instance_types = sorted(t for n, t in gpu.instance_types.items() if n >= per_pod)
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
        "metadata": {"name": nodepool_name(inp.owner.namespace, inp.owner.name), "labels": meta_labels},
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
            "limits": {gpu.resource_name: str(max_replicas * inp.plan.gpus_per_replica)},
            "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5m"},
        },
    }
