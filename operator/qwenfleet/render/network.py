"""How the model servers are reached: Service, PodDisruptionBudget, NetworkPolicy, ServiceMonitor."""

from __future__ import annotations

from typing import Any

from qwenfleet.render.inputs import DeploymentInput, owned_metadata
from qwenfleet.render.names import HTTP_PORT, ROLE_LABEL, labels, selector

Manifest = dict[str, Any]


def serving_selector(inp: DeploymentInput) -> dict[str, str]:
    """Pods that answer HTTP: every pod of a Deployment, only leaders of a LeaderWorkerSet."""
    match = selector(inp.owner.name)
    if inp.plan.multi_node:
        match[ROLE_LABEL] = "leader"
    return match


def render_service(inp: DeploymentInput) -> Manifest:
    """A ClusterIP Service over the serving pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owned_metadata(inp, inp.owner.name, "model-server"),
        "spec": {
            "type": "ClusterIP",
            "selector": serving_selector(inp),
            "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def endpoint(inp: DeploymentInput) -> str:
    """The in-cluster OpenAI base URL of the Service."""
    return f"http://{inp.owner.name}.{inp.owner.namespace}.svc:{HTTP_PORT}/v1"


def render_pdb(inp: DeploymentInput) -> Manifest:
    """At most one replica down at a time for voluntary disruptions (node drains, consolidation)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": owned_metadata(inp, inp.owner.name, "model-server"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": serving_selector(inp)}},
    }


GATEWAY_LABEL = "qwenfleet.dev/inference-gateway"
"""Put `qwenfleet.dev/inference-gateway: "true"` on an inference gateway's pods (in any namespace) to let it reach
the model servers an InferencePool selects."""


def render_network_policy(inp: DeploymentInput) -> Manifest:
    """Only routers, inference gateways (by label), monitoring, the operator and the replica's own group may reach
    the model servers."""
    peers: list[Manifest] = [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "router"}}},
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {GATEWAY_LABEL: "true"}}},
        {
            "namespaceSelector": {},
            "podSelector": {
                "matchLabels": {"app.kubernetes.io/name": "qwenfleet", "app.kubernetes.io/component": "operator"}
            },
        },
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": inp.capabilities.monitoring_namespace}}},
    ]
    ingress: list[Manifest] = [{"from": peers, "ports": [{"port": HTTP_PORT, "protocol": "TCP"}]}]
    if inp.plan.multi_node:
        ingress.append({"from": [{"podSelector": {"matchLabels": selector(inp.owner.name)}}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": owned_metadata(inp, inp.owner.name, "model-server"),
        "spec": {
            "podSelector": {"matchLabels": selector(inp.owner.name)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def render_service_monitor(inp: DeploymentInput) -> Manifest:
    """A Prometheus Operator ServiceMonitor scraping vLLM's /metrics."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": owned_metadata(inp, inp.owner.name, "model-server"),
        "spec": {
            "selector": {"matchLabels": labels(inp.owner.name, "model-server")},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
        },
    }
