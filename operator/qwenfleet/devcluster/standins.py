"""Stand-ins for two controllers a real cluster has and the simulated fleet cannot run.

- LeaderWorkerSet: the real controller needs its admission webhooks, which cannot run out of cluster. For every
  LeaderWorkerSet this keeps one leader pod and size-1 worker pods per group, with LWS's names, labels and
  environment, recreates a group whose template changed, and writes status.
- A storage provisioner: every PVC of the `standard` StorageClass (the dev cluster's default) gets a hostPath
  PersistentVolume of its size under the run directory, so weight caches bind.

Dev-cluster machinery only; production clusters run the real controllers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import hashlib
import json
import logging
from typing import Any

from qwenfleet.kube import Kube, KubeError, make_api_client

log = logging.getLogger(__name__)
LWS = "leaderworkerset.x-k8s.io/v1"
PREFIX = "leaderworkerset.sigs.k8s.io"
Obj = dict[str, Any]


def _template_hash(lws: Obj) -> str:
    template = lws["spec"]["leaderWorkerTemplate"]
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def group_pods(lws: Obj, group: int) -> list[Obj]:
    """The pods of one group: the leader `<name>-<g>` and workers `<name>-<g>-<i>`."""
    meta, spec = lws["metadata"], lws["spec"]
    template = spec["leaderWorkerTemplate"]
    size = int(template.get("size", 1))
    name, namespace = meta["name"], meta["namespace"]
    leader_address = f"{name}-{group}.{name}.{namespace}"
    pods = []
    for index in range(size):
        source = template.get("leaderTemplate") if index == 0 and template.get("leaderTemplate") else None
        pod_template = copy.deepcopy(source or template["workerTemplate"])
        pod_name = f"{name}-{group}" if index == 0 else f"{name}-{group}-{index}"
        labels = {
            **(pod_template.get("metadata", {}).get("labels") or {}),
            f"{PREFIX}/name": name,
            f"{PREFIX}/group-index": str(group),
            f"{PREFIX}/worker-index": str(index),
            f"{PREFIX}/template-revision-hash": _template_hash(lws),
        }
        pod_spec = pod_template["spec"]
        env = [
            {"name": "LWS_LEADER_ADDRESS", "value": leader_address},
            {"name": "LWS_GROUP_SIZE", "value": str(size)},
            {"name": "LWS_WORKER_INDEX", "value": str(index)},
        ]
        for container in pod_spec.get("containers", []):
            container["env"] = [*env, *(container.get("env") or [])]
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "namespace": namespace,
                    "labels": labels,
                    "annotations": pod_template.get("metadata", {}).get("annotations") or {},
                    "ownerReferences": [
                        {
                            "apiVersion": LWS,
                            "kind": "LeaderWorkerSet",
                            "name": name,
                            "uid": meta["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {**pod_spec, "hostname": pod_name, "subdomain": name},
            }
        )
    return pods


def _ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def sync_one(kube: Kube, lws: Obj) -> None:
    """Make one LeaderWorkerSet's pods and status match its spec."""
    meta = lws["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    replicas = int(lws["spec"].get("replicas", 1))
    current = await kube.list("v1", "Pod", namespace, label_selector=f"{PREFIX}/name={name}")
    by_name = {p["metadata"]["name"]: p for p in current}
    revision = _template_hash(lws)
    wanted: set[str] = set()
    ready_groups = 0
    for group in range(replicas):
        desired = group_pods(lws, group)
        group_ready = True
        for pod in desired:
            pod_name = pod["metadata"]["name"]
            wanted.add(pod_name)
            live = by_name.get(pod_name)
            stale = live and live["metadata"]["labels"].get(f"{PREFIX}/template-revision-hash") != revision
            if live and stale and not live["metadata"].get("deletionTimestamp"):
                await kube.delete("v1", "Pod", pod_name, namespace)
                live = None
            if live is None:
                try:
                    await kube.apply(pod)
                except KubeError as exc:
                    if not exc.conflict:
                        raise
            group_ready = group_ready and bool(live) and _ready(live or {}) and not stale
        ready_groups += int(group_ready)
    for pod_name, pod in by_name.items():
        if pod_name not in wanted and not pod["metadata"].get("deletionTimestamp"):
            await kube.delete("v1", "Pod", pod_name, namespace)
    status = {
        "replicas": replicas,
        "readyReplicas": ready_groups,
        "updatedReplicas": replicas,
        "hpaPodSelector": f"{PREFIX}/name={name},{PREFIX}/worker-index=0",
    }
    if any((lws.get("status") or {}).get(k) != v for k, v in status.items()):
        await kube.patch_status(LWS, "LeaderWorkerSet", namespace, name, status)


STORAGE_CLASS = "standard"


def volume_for(pvc: Obj, root: str) -> Obj:
    """A hostPath PersistentVolume pre-bound to `pvc`."""
    meta, spec = pvc["metadata"], pvc["spec"]
    name = f"pv-{meta['uid']}"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"qwenfleet.dev/dev-provisioned": "true"}},
        "spec": {
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "storageClassName": STORAGE_CLASS,
            "persistentVolumeReclaimPolicy": "Delete",
            "hostPath": {"path": f"{root}/{name}", "type": "DirectoryOrCreate"},
            "claimRef": {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]},
        },
    }


async def provision(kube: Kube, root: str) -> None:
    """A volume for every pending PVC of the default class."""
    for pvc in await kube.list("v1", "PersistentVolumeClaim"):
        phase = (pvc.get("status") or {}).get("phase")
        if phase == "Pending" and pvc["spec"].get("storageClassName") == STORAGE_CLASS:
            try:
                await kube.apply(volume_for(pvc, root))
            except KubeError as exc:
                log.warning("provisioner: %s", exc)


async def run(kube: Kube, stop: asyncio.Event, storage_root: str, interval: float = 1.0) -> None:
    """Sync every LeaderWorkerSet and provision volumes until `stop` is set."""
    while not stop.is_set():
        try:
            await provision(kube, storage_root)
            for lws in await kube.list(LWS, "LeaderWorkerSet"):
                await sync_one(kube, lws)
        except KubeError as exc:
            if not exc.not_found:
                log.warning("lws emulator: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


async def _main(kubeconfig: str, storage_root: str) -> None:
    kube = Kube(await make_api_client(kubeconfig))
    try:
        await run(kube, asyncio.Event(), storage_root)
    finally:
        await kube.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="LeaderWorkerSet and storage stand-ins for the simulated fleet")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--storage-root", required=True)
    args = parser.parse_args()
    asyncio.run(_main(args.kubeconfig, args.storage_root))
