"""Names and labels of everything qwenfleet creates for a Qwen3Deployment."""

from __future__ import annotations

import hashlib
import json
import math

from qwenfleet.api.base import API_VERSION, GROUP
from qwenfleet.api.deployment import MODEL_DIR

__all__ = ["API_VERSION", "GROUP", "MODEL_DIR"]  # re-exported: the renderer imports them from here
MANAGER = "qwenfleet"
HTTP_PORT = 8000
OPERATOR_IMAGE = "ghcr.io/qwenfleet/qwenfleet:0.1.0"
PLAN_ANNOTATION = f"{GROUP}/plan"
WAKE_ANNOTATION = f"{GROUP}/wake"
ROLE_LABEL = f"{GROUP}/role"
"""`leader` or `worker` on a LeaderWorkerSet's pods: the leader serves HTTP for the whole replica."""
CACHE_COMPLETE_MARKER = ".qwenfleet-complete"
COMPILE_CACHE_MOUNT = "/cache-rw"
"""The weight cache volume mounted writable (the weights' own mount at MODEL_DIR stays read-only)."""
COMPILE_CACHE_DIR = f"{COMPILE_CACHE_MOUNT}/.vllm"
"""vLLM's cache root (VLLM_CACHE_ROOT) on that volume, beside the checkpoints; vLLM creates it."""


def labels(name: str, component: str) -> dict[str, str]:
    """The labels on every object qwenfleet creates for deployment `name`."""
    return {
        "app.kubernetes.io/name": "qwen3",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGER,
        f"{GROUP}/deployment": name,
    }


def selector(name: str, component: str = "model-server") -> dict[str, str]:
    """The immutable subset of labels that selects a deployment's pods."""
    return {"app.kubernetes.io/instance": name, "app.kubernetes.io/component": component, f"{GROUP}/deployment": name}


def selector_string(match: dict[str, str]) -> str:
    """A label selector as the string the /scale subresource wants."""
    return ",".join(f"{k}={v}" for k, v in sorted(match.items()))


def short_hash(*parts: str, length: int = 8) -> str:
    """A stable hex digest of the parts."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:length]


def bounded(name: str, limit: int = 63) -> str:
    """`name`, shortened with a hash suffix when longer than `limit` (DNS label rules)."""
    if len(name) <= limit:
        return name
    return f"{name[: limit - 9].rstrip('-')}-{short_hash(name)}"


def checkpoint_disk_gib(weight_bytes: int, floor: int) -> int:
    """Disk for one checkpoint: its bytes plus 20% headroom, in whole GiB, at least `floor`."""
    return max(floor, math.ceil(weight_bytes * 1.2 / 1024**3))


def weights_identity(repo: str, revision: str) -> str:
    """A short digest of one checkpoint (repository and revision): one cache per identity."""
    return short_hash(repo, revision, length=6)


def cache_pvc_name(name: str, repo: str, revision: str) -> str:
    """The weight-cache PVC of one checkpoint of a deployment; a new checkpoint gets a new PVC."""
    return bounded(f"{name}-weights-{weights_identity(repo, revision)}")


def download_job_name(name: str, repo: str, revision: str) -> str:
    """The download Job that fills that PVC; a new checkpoint (repo or revision) gets a new Job."""
    return bounded(f"{name}-download-{weights_identity(repo, revision)}")


def adapter_job_name(name: str, repo: str, revision: str) -> str:
    """The Job that fetches one Hugging Face adapter into the weight cache."""
    return bounded(f"{name}-adapter-{weights_identity(repo, revision)}")


def nodepool_name(namespace: str, name: str) -> str:
    """The cluster-scoped Karpenter NodePool owned by one deployment."""
    return bounded(f"qwenfleet-{namespace}-{name}")
