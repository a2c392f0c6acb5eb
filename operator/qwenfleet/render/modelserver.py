"""The vLLM model-server workload: a Deployment when one node holds a replica, a LeaderWorkerSet otherwise."""

from __future__ import annotations

import math
import shlex
from typing import Any

from qwenfleet.api.deployment import ADAPTER_CLAIMS_DIR
from qwenfleet.catalog.engine import VLLM_IMAGE
from qwenfleet.render.inputs import DeploymentInput, owned_metadata
from qwenfleet.render.names import (
    COMPILE_CACHE_MOUNT,
    HTTP_PORT,
    MODEL_DIR,
    PLAN_ANNOTATION,
    ROLE_LABEL,
    checkpoint_disk_gib,
    labels,
    selector,
)
from qwenfleet.render.nodepool import scheduling_pool_name

Manifest = dict[str, Any]
GIB = 1024**3
PROBE_PERIOD_SECONDS = 10
DRAIN_SECONDS = 10
TERMINATION_GRACE_SECONDS = 120
RAY_PORT = 6379
MULTI_NODE_SCRIPT = "/vllm-workspace/examples/online_serving/multi-node-serving.sh"


def vllm_args(inp: DeploymentInput) -> list[str]:
    """The planner's arguments with the model path, the server address and the user's allowed extras."""
    args = [inp.model_path, *inp.plan.vllm_args[1:], "--host", "0.0.0.0", "--port", str(HTTP_PORT)]
    if inp.plan.multi_node:
        args += ["--distributed-executor-backend", "ray"]
    for extra in inp.spec.overrides.extra_args if inp.spec.overrides else []:
        args.append(extra.name)
        if extra.value is not None:
            args.append(extra.value)
    return args


def _env(inp: DeploymentInput) -> list[Manifest]:
    env: list[Manifest] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": "/tmp/hf"},
        {"name": "XDG_CACHE_HOME", "value": "/tmp/cache"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
    ]
    if inp.weights_volume_claim:
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    if inp.compile_cache_dir:
        env.append({"name": "VLLM_CACHE_ROOT", "value": inp.compile_cache_dir})
    if inp.spec.serves_adapters:  # the operator loads and unloads adapters on running replicas
        env.append({"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"})
    secret = inp.token_secret
    if secret:
        ref = {"secretKeyRef": {"name": secret[0], "key": secret[1]}}
        env.append({"name": "HF_TOKEN", "valueFrom": ref})
    return env


def _resources(inp: DeploymentInput) -> Manifest:
    plan = inp.plan
    per_pod_weights = plan.weight_bytes_total / plan.nodes_per_replica
    memory_gib = max(8, math.ceil(per_pod_weights / GIB) + 4)
    cpu = max(2, 2 * plan.gpus_per_node)
    gpus = {inp.gpu.resource_name: str(plan.gpus_per_node)}
    return {"requests": {"cpu": str(cpu), "memory": f"{memory_gib}Gi", **gpus}, "limits": gpus}


def _volumes(inp: DeploymentInput) -> tuple[list[Manifest], list[Manifest]]:
    shm_gib = min(16, 2 * inp.plan.gpus_per_node)
    scratch_gib = 16 if inp.weights_volume_claim else checkpoint_disk_gib(inp.plan.weight_bytes_total, floor=16)
    volumes: list[Manifest] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm_gib}Gi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": f"{scratch_gib}Gi"}},
    ]
    mounts: list[Manifest] = [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}]
    claim = inp.weights_volume_claim
    if claim:
        writable = inp.compile_cache_dir is not None  # for the compile cache; the weights stay read-only
        volumes.append({"name": "weights", "persistentVolumeClaim": {"claimName": claim, "readOnly": not writable}})
        mounts.append({"name": "weights", "mountPath": MODEL_DIR, "readOnly": True})
        if writable:
            mounts.append({"name": "weights", "mountPath": COMPILE_CACHE_MOUNT})
    for claim_name in inp.spec.adapter_claims:
        volume = f"adapters-{claim_name}"[:63].rstrip("-.")
        volumes.append({"name": volume, "persistentVolumeClaim": {"claimName": claim_name, "readOnly": True}})
        mounts.append({"name": volume, "mountPath": f"{ADAPTER_CLAIMS_DIR}/{claim_name}", "readOnly": True})
    return volumes, mounts


def _startup_budget_seconds(inp: DeploymentInput) -> int:
    """Twice the planner's cold-start estimate (which holds each pod's download when there is no cache)."""
    return 2 * inp.plan.cold_start_seconds + 120


def _probes(inp: DeploymentInput) -> Manifest:
    budget = _startup_budget_seconds(inp)
    return {
        "startupProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": PROBE_PERIOD_SECONDS,
            "failureThreshold": math.ceil(budget / PROBE_PERIOD_SECONDS),
        },
        "readinessProbe": {
            "httpGet": {"path": "/v1/models", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 15,
            "timeoutSeconds": 10,
            "failureThreshold": 4,
        },
    }


def _security_context() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _scheduling(inp: DeploymentInput) -> Manifest:
    gpu = inp.gpu
    tolerations: list[Manifest] = [{"key": gpu.resource_name, "operator": "Exists", "effect": "NoSchedule"}]
    node_selector: dict[str, str] = {}
    scheduling = inp.spec.scheduling
    if scheduling:
        tolerations += [t.to_wire() for t in scheduling.tolerations]
        node_selector.update(scheduling.node_selector)
    pool = scheduling_pool_name(inp.spec, inp.owner.namespace, inp.owner.name)
    if pool:
        node_selector["karpenter.sh/nodepool"] = pool
    product = {"key": "nvidia.com/gpu.product", "operator": "In", "values": [gpu.product_label]}
    if gpu.vendor == "amd":
        product = {"key": "amd.com/gpu.product-name", "operator": "In", "values": [gpu.product_label]}
    out: Manifest = {
        "tolerations": tolerations,
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [product]}]
                }
            }
        },
    }
    if node_selector:
        out["nodeSelector"] = node_selector
    if scheduling and scheduling.priority_class_name:
        out["priorityClassName"] = scheduling.priority_class_name
    return out


def _container(inp: DeploymentInput, *, command: list[str], args: list[str], serving: bool) -> Manifest:
    volumes_mounts = _volumes(inp)[1]
    image = inp.spec.overrides.image if inp.spec.overrides and inp.spec.overrides.image else VLLM_IMAGE
    container: Manifest = {
        "name": "vllm",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "args": args,
        "env": _env(inp),
        "resources": _resources(inp),
        "volumeMounts": volumes_mounts,
        "securityContext": _security_context(),
    }
    if serving:
        container["ports"] = [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}]
        container.update(_probes(inp))
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}}
    return container


def _pod_spec(inp: DeploymentInput, containers: list[Manifest]) -> Manifest:
    return {
        "containers": containers,
        "volumes": _volumes(inp)[0],
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "fsGroup": 1000,
            "fsGroupChangePolicy": "OnRootMismatch",  # never chown a whole checkpoint on each start
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        **_scheduling(inp),
    }


def _template_metadata(inp: DeploymentInput, extra_labels: dict[str, str] | None = None) -> Manifest:
    return {
        "labels": {**labels(inp.owner.name, "model-server"), **(extra_labels or {})},
        "annotations": {PLAN_ANNOTATION: inp.plan.model_dump_json(by_alias=True, exclude_none=True)},
    }


def render_deployment(inp: DeploymentInput) -> Manifest:
    """A Deployment of single-node replicas that rolls without needing a spare GPU (maxSurge 0)."""
    container = _container(inp, command=["vllm", "serve"], args=vllm_args(inp), serving=True)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owned_metadata(inp, inp.owner.name, "model-server"),
        "spec": {
            "replicas": inp.replicas,
            "selector": {"matchLabels": selector(inp.owner.name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": _template_metadata(inp),
                "spec": _pod_spec(inp, [container]),
            },
        },
    }


def render_leader_worker_set(inp: DeploymentInput) -> Manifest:
    """A LeaderWorkerSet: one group per replica; TP inside each node, pipeline parallel across the group's nodes.

    The leader starts the Ray head and then `vllm serve`; workers join the leader's Ray cluster.
    """
    serve = shlex.join(["vllm", "serve", *vllm_args(inp)])
    leader_cmd = f"bash {MULTI_NODE_SCRIPT} leader --ray_cluster_size=$(LWS_GROUP_SIZE) && exec {serve}"
    worker_cmd = f"bash {MULTI_NODE_SCRIPT} worker --ray_address=$(LWS_LEADER_ADDRESS)"
    leader = _container(inp, command=["/bin/sh", "-c"], args=[leader_cmd], serving=True)
    worker = _container(inp, command=["/bin/sh", "-c"], args=[worker_cmd], serving=False)
    worker["ports"] = [{"name": "ray", "containerPort": RAY_PORT, "protocol": "TCP"}]
    leader["ports"].append({"name": "ray", "containerPort": RAY_PORT, "protocol": "TCP"})
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": owned_metadata(inp, inp.owner.name, "model-server"),
        "spec": {
            "replicas": inp.replicas,
            "startupPolicy": "LeaderCreated",
            "rolloutStrategy": {
                "type": "RollingUpdate",
                "rollingUpdateConfiguration": {"maxUnavailable": 1, "maxSurge": 0},
            },
            "leaderWorkerTemplate": {
                "size": inp.plan.nodes_per_replica,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {
                    "metadata": _template_metadata(inp, {ROLE_LABEL: "leader"}),
                    "spec": _pod_spec(inp, [leader]),
                },
                "workerTemplate": {
                    "metadata": _template_metadata(inp, {ROLE_LABEL: "worker"}),
                    "spec": _pod_spec(inp, [worker]),
                },
            },
        },
    }


def render_workload(inp: DeploymentInput) -> Manifest:
    """The model-server workload the plan calls for."""
    if inp.plan.workload_kind == "LeaderWorkerSet":
        return render_leader_worker_set(inp)
    return render_deployment(inp)
