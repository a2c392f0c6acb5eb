"""KEDA mode: a ScaledObject that scales the Qwen3Deployment itself through its /scale subresource."""

from __future__ import annotations

from typing import Any

from qwenfleet.render.inputs import DeploymentInput, owned_metadata

Manifest = dict[str, Any]


def render_scaled_object(inp: DeploymentInput) -> Manifest | None:
    """The ScaledObject, or None unless autoscaling.mode is keda."""
    scaling = inp.spec.autoscaling
    if scaling is None or scaling.mode != "keda":
        return None
    name, namespace = inp.owner.name, inp.owner.namespace
    query = f'sum(vllm:num_requests_waiting{{namespace="{namespace}",pod=~"{name}-.*"}})'
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": owned_metadata(inp, name, "autoscaler"),
        "spec": {
            "scaleTargetRef": {"apiVersion": inp.owner.api_version, "kind": inp.owner.kind, "name": name},
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": 15,
            "cooldownPeriod": scaling.scale_down_delay_seconds,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": inp.capabilities.prometheus_url,
                        "query": query,
                        "threshold": str(scaling.target_queue_depth),
                        "activationThreshold": "0",
                    },
                }
            ],
        },
    }
