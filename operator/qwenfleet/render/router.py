"""A Qwen3Router's children: routes ConfigMap, ServiceAccount and Role, router Deployment, Service, PDB, and with
an Endpoint Picker one InferencePool per backend."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.render.inputs import Owner
from qwenfleet.render.names import HTTP_PORT, OPERATOR_IMAGE, ROLE_LABEL, bounded, labels, selector

Manifest = dict[str, Any]
ROUTER_PORT = 8080
CONFIG_KEY = "routes.json"
CONFIG_DIR = "/etc/qwenfleet"
KEYS_DIR = "/etc/qwenfleet/api-keys"
EXTERNAL_KEYS_DIR = "/etc/qwenfleet/external"
"""Each external API backend's key is mounted at <dir>/<backend>/key."""
POOL_API = "inference.networking.k8s.io/v1"
POOL_CRD = "inferencepools.inference.networking.k8s.io"


def _meta(owner: Owner, name: str) -> Manifest:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner.name, "router"),
        "ownerReferences": [owner.reference()],
    }


def router_names(owner: Owner) -> dict[str, str]:
    """Names of the router's children."""
    base = bounded(f"{owner.name}-router")
    return {"deployment": base, "service": owner.name, "config": bounded(f"{owner.name}-routes"), "account": base}


def routes_json(spec: Qwen3RouterSpec) -> str:
    """The spec as the router reads it (stable key order, so its hash only changes with the routes)."""
    return json.dumps({"spec": spec.to_wire()}, sort_keys=True, indent=1)


def render_router(owner: Owner, spec: Qwen3RouterSpec, image: str = OPERATOR_IMAGE) -> list[Manifest]:
    """Every child of a Qwen3Router, in apply order."""
    names = router_names(owner)
    config = routes_json(spec)
    config_hash = hashlib.sha256(config.encode()).hexdigest()[:16]
    match = selector(owner.name, "router")
    args = ["router", f"--config={CONFIG_DIR}/{CONFIG_KEY}", f"--namespace={owner.namespace}",
            f"--port={ROUTER_PORT}"]  # fmt: skip
    volumes: list[Manifest] = [{"name": "routes", "configMap": {"name": names["config"]}}]
    mounts: list[Manifest] = [{"name": "routes", "mountPath": CONFIG_DIR, "readOnly": True}]
    if spec.api_key_secret_ref:
        ref = spec.api_key_secret_ref
        volumes.append({"name": "api-keys", "secret": {"secretName": ref.name,
                                                       "items": [{"key": ref.key, "path": "keys"}]}})  # fmt: skip
        mounts.append({"name": "api-keys", "mountPath": KEYS_DIR, "readOnly": True})
        args.append(f"--api-keys-file={KEYS_DIR}/keys")
    for backend in spec.backends:
        key_ref = backend.external.api_key_secret_ref if backend.external else None
        if key_ref is not None:
            volume = bounded(f"external-{backend.name}")
            volumes.append({"name": volume, "secret": {"secretName": key_ref.name, "items": [{"key": key_ref.key,
                                                                                     "path": "key"}]}})  # fmt: skip
            mounts.append({"name": volume, "mountPath": f"{EXTERNAL_KEYS_DIR}/{backend.name}", "readOnly": True})
    ports = [{"name": "http", "containerPort": ROUTER_PORT, "protocol": "TCP"}]
    service_ports = [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    picker = spec.endpoint_picker
    if picker.enabled:
        args.append(f"--epp-port={picker.port}")
        ports.append({"name": "grpc-epp", "containerPort": picker.port, "protocol": "TCP"})
        service_ports.append({"name": "grpc-epp", "port": picker.port, "targetPort": "grpc-epp", "protocol": "TCP",
                              "appProtocol": "kubernetes.io/h2c"})  # fmt: skip
    container: Manifest = {
        "name": "router",
        "image": spec.image or image,
        "args": args,
        "ports": ports,
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    pod_labels = labels(owner.name, "router")
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(owner, names["deployment"]),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": match},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {"qwenfleet.dev/routes-hash": config_hash}},
                "spec": {
                    "serviceAccountName": names["account"],
                    "containers": [container],
                    "volumes": volumes,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                },
            },
        },
    }
    role_rules = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["qwenfleet.dev"], "resources": ["qwen3deployments"], "verbs": ["get", "list", "watch", "patch"]},
    ]
    service_type = spec.service_type
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(owner, names["config"]),
            "data": {CONFIG_KEY: config},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(owner, names["account"])},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(owner, names["account"]),
            "rules": role_rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(owner, names["account"]),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names["account"]},
            "subjects": [{"kind": "ServiceAccount", "name": names["account"], "namespace": owner.namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(owner, names["service"]),
            "spec": {
                "type": service_type,
                "selector": match,
                "ports": service_ports,
            },
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(owner, names["deployment"]),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": match}},
        },
        deployment,
    ]


def pool_name(router: str, backend: str) -> str:
    """The InferencePool of one backend of a router: one per (router, backend), since a pool names one picker."""
    return bounded(f"{router}-{backend}")


def render_inference_pools(owner: Owner, spec: Qwen3RouterSpec, multi_node: frozenset[str] = frozenset()) -> list[
        Manifest]:  # fmt: skip
    """One InferencePool per backend, over the pods that answer HTTP (leaders only where a replica spans nodes),
    picked by this router's Endpoint Picker; none unless the picker and its pools are on."""
    picker = spec.endpoint_picker
    if not (picker.enabled and picker.inference_pools):
        return []
    pools = []
    for backend in spec.backends:
        if backend.external is not None:  # an API has no pods to pool
            continue
        match = selector(backend.name)
        if backend.name in multi_node:
            match[ROLE_LABEL] = "leader"
        pools.append({
            "apiVersion": POOL_API,
            "kind": "InferencePool",
            "metadata": _meta(owner, pool_name(owner.name, backend.name)),
            "spec": {
                "selector": {"matchLabels": match},
                "targetPorts": [{"number": HTTP_PORT}],
                "endpointPickerRef": {
                    "group": "",
                    "kind": "Service",
                    "name": router_names(owner)["service"],
                    "port": {"number": picker.port},
                    "failureMode": picker.failure_mode,
                },
            },
        })  # fmt: skip
    return pools
