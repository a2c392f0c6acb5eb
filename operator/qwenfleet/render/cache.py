"""The weight cache: one PVC and exactly one download Job that fills it, resumably, before any pod starts."""

from __future__ import annotations

import shlex
from typing import Any

from qwenfleet.catalog.engine import VLLM_IMAGE
from qwenfleet.render.inputs import DeploymentInput, owned_metadata
from qwenfleet.render.names import (
    CACHE_COMPLETE_MARKER,
    MODEL_DIR,
    adapter_job_name,
    checkpoint_disk_gib,
    download_job_name,
    labels,
)

Manifest = dict[str, Any]
DOWNLOAD_BACKOFF_LIMIT = 6


def cache_size(inp: DeploymentInput) -> str:
    """The PVC size: the user's, or the checkpoint plus 20%."""
    if inp.spec.cache and inp.spec.cache.size:
        return inp.spec.cache.size
    return f"{checkpoint_disk_gib(inp.plan.weight_bytes_total, floor=10)}Gi"


def render_cache_pvc(inp: DeploymentInput) -> Manifest:
    """The shared volume the weights are downloaded into."""
    cache = inp.spec.cache
    assert cache is not None
    spec: Manifest = {"accessModes": [cache.access_mode], "resources": {"requests": {"storage": cache_size(inp)}}}
    if cache.storage_class_name:
        spec["storageClassName"] = cache.storage_class_name
    assert inp.cache_pvc is not None
    metadata = owned_metadata(inp, inp.cache_pvc, "model-cache")
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}


def download_deadline_seconds(inp: DeploymentInput) -> int:
    """Bounded run time: three times the estimated download, at least an hour."""
    return max(3600, 3 * inp.plan.download_seconds)


def render_download_job(inp: DeploymentInput) -> Manifest:
    """Download the checkpoint into the cache, resuming partial files, then write a completion marker."""
    job_name = download_job_name(inp.owner.name, inp.repo, inp.revision)
    return _download_job(inp, job_name, inp.repo, inp.revision, f"{MODEL_DIR}/{inp.repo}")


def render_adapter_jobs(inp: DeploymentInput) -> list[Manifest]:
    """One download Job per Hugging Face adapter, into the same cache at its pinned revision (once each)."""
    jobs = []
    for adapter in inp.spec.adapters:
        hf = adapter.hugging_face
        if hf is not None:
            name = adapter_job_name(inp.owner.name, hf.repo, hf.revision)
            jobs.append(_download_job(inp, name, hf.repo, hf.revision, adapter.pod_path()))
    return jobs


def _download_job(inp: DeploymentInput, job_name: str, repo: str, revision: str, target: str) -> Manifest:
    script = " && ".join(
        [
            f"mkdir -p {shlex.quote(target)}",
            shlex.join(["hf", "download", repo, "--revision", revision, "--local-dir", target]),
            f"touch {shlex.quote(target + '/' + CACHE_COMPLETE_MARKER)}",
        ]
    )
    env: list[Manifest] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": f"{MODEL_DIR}/.hf"},
        {"name": "HF_HUB_ENABLE_HF_TRANSFER", "value": "0"},
    ]
    secret = inp.token_secret
    if secret:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret[0], "key": secret[1]}}})
    container: Manifest = {
        "name": "download",
        "image": inp.spec.overrides.image if inp.spec.overrides and inp.spec.overrides.image else VLLM_IMAGE,
        "command": ["/bin/sh", "-c", script],
        "env": env,
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "8Gi"}},
        "volumeMounts": [{"name": "weights", "mountPath": MODEL_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": owned_metadata(inp, job_name, "model-cache"),
        "spec": {
            "backoffLimit": DOWNLOAD_BACKOFF_LIMIT,
            "activeDeadlineSeconds": download_deadline_seconds(inp),
            "template": {
                "metadata": {"labels": labels(inp.owner.name, "model-cache")},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "fsGroup": 1000,
                        "fsGroupChangePolicy": "OnRootMismatch",
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "weights", "persistentVolumeClaim": {"claimName": inp.cache_pvc}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }
