"""Pure renderers: (custom resource, Plan, decisions) -> Kubernetes manifests as dicts."""

from __future__ import annotations

from typing import Any

from qwenfleet.render.cache import render_adapter_jobs, render_cache_pvc, render_download_job
from qwenfleet.render.inputs import Capabilities, DeploymentInput, Owner
from qwenfleet.render.keda import render_scaled_object
from qwenfleet.render.modelserver import render_workload
from qwenfleet.render.network import (
    endpoint,
    render_network_policy,
    render_pdb,
    render_service,
    render_service_monitor,
    serving_selector,
)
from qwenfleet.render.nodepool import render_nodepool

Manifest = dict[str, Any]

__all__ = [
    "Capabilities",
    "DeploymentInput",
    "Manifest",
    "Owner",
    "desired_children",
    "endpoint",
    "serving_selector",
]


def desired_children(inp: DeploymentInput) -> list[Manifest]:
    """Every child of a Qwen3Deployment, in apply order: node pool and cache before the workload."""
    children: list[Manifest] = []
    nodepool = render_nodepool(inp)
    if nodepool:
        children.append(nodepool)
    if inp.cache_enabled:
        children += [render_cache_pvc(inp), render_download_job(inp), *render_adapter_jobs(inp)]
    children += [render_service(inp), render_pdb(inp), render_network_policy(inp)]
    if inp.capabilities.service_monitor:
        children.append(render_service_monitor(inp))
    scaled = render_scaled_object(inp)
    if scaled:
        children.append(scaled)
    children.append(render_workload(inp))
    return children
