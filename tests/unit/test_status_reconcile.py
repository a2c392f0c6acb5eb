"""The Qwen3Deployment reconcile against an in-memory API: live checkpoint changes, refused children, pools."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

from qwenfleet.controller.deployment import finalize_deployment, owns_nodepool, reconcile_deployment
from qwenfleet.kube import KubeError
from qwenfleet.render import Capabilities
from qwenfleet.render.names import cache_pvc_name, download_job_name, nodepool_name
from tests.unit.test_applied import make

Obj = dict[str, Any]
Key = tuple[str, str, str, str]


class FakeKube:
    """Just enough of Kube: objects in a dict, applies that can be refused, status patches recorded."""

    def __init__(self, refuse: Callable[[Obj], str | None] = lambda _: None) -> None:
        self.objects: dict[Key, Obj] = {}
        self.refuse = refuse
        self.applied: list[Key] = []
        self.deleted: list[Key] = []
        self.status_patches: list[Obj] = []
        self.gets: list[Key] = []

    @staticmethod
    def key(api_version: str, kind: str, name: str, namespace: str | None) -> Key:
        return (api_version, kind, namespace or "", name)

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        self.gets.append(self.key(api_version, kind, name, namespace))
        return copy.deepcopy(self.objects.get(self.key(api_version, kind, name, namespace)))

    async def apply(self, manifest: Obj) -> Obj:
        message = self.refuse(manifest)
        if message:
            raise KubeError(422, "Invalid", message)
        meta = manifest["metadata"]
        key = self.key(manifest["apiVersion"], manifest["kind"], meta["name"], meta.get("namespace"))
        old = self.objects.get(key) or {}
        obj = copy.deepcopy(manifest)
        generation = int((old.get("metadata") or {}).get("generation") or 0)
        obj["metadata"]["generation"] = generation + (old.get("spec") != manifest.get("spec"))
        obj["status"] = old.get("status") or {}
        self.objects[key] = obj
        self.applied.append(key)
        return copy.deepcopy(obj)

    async def list(self, api_version: str, kind: str, namespace: str | None = None, *,
                   label_selector: str | None = None) -> list[Obj]:  # fmt: skip
        match = dict(part.split("=") for part in (label_selector or "").split(",") if part)
        return [copy.deepcopy(o) for k, o in self.objects.items() if k[:3] == (api_version, kind, namespace or "")
                and all(o["metadata"].get("labels", {}).get(a) == b for a, b in match.items())]  # fmt: skip

    async def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        key = self.key(api_version, kind, name, namespace)
        self.deleted.append(key)
        return self.objects.pop(key, None) is not None

    async def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: Obj) -> Obj:
        self.status_patches.append(status)
        return {}

    async def crd_exists(self, name: str) -> bool:
        return True

    def settle(self, kind: str, name: str, namespace: str = "ns") -> None:
        """What the workload controller and kubelet would do: every replica updated and ready."""
        api = {"Deployment": "apps/v1", "Job": "batch/v1"}[kind]
        obj = self.objects[(api, kind, namespace, name)]
        if kind == "Job":
            obj["status"] = {"succeeded": 1}
            return
        n = obj["spec"]["replicas"]
        obj["status"] = {"replicas": n, "readyReplicas": n, "updatedReplicas": n,
                         "observedGeneration": obj["metadata"]["generation"]}  # fmt: skip


def _body(spec: Obj, status: Obj | None = None, generation: int = 1) -> Obj:
    meta = {"name": "q", "namespace": "ns", "uid": "u1", "generation": generation}
    return {"apiVersion": "qwenfleet.dev/v1alpha1", "kind": "Qwen3Deployment", "metadata": meta, "spec": spec,
            "status": status or {}}  # fmt: skip


def _run(kube: FakeKube, body: Obj) -> Obj:
    outcome = asyncio.run(reconcile_deployment(kube, body, [], Capabilities(), None))  # type: ignore[arg-type]
    return outcome.status


def _claim(kube: FakeKube) -> str:
    dep = kube.objects[("apps/v1", "Deployment", "ns", "q")]
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    return str(volumes["weights"]["persistentVolumeClaim"]["claimName"])


def _cond(status: Obj, ctype: str) -> tuple[str, str, str]:
    c = next(c for c in status["conditions"] if c["type"] == ctype)
    return c["status"], c["reason"], c["message"]


def test_a_precision_change_fills_a_new_cache_before_the_rollout_and_then_drops_the_old_one() -> None:
    kube = FakeKube()
    spec = {"model": "Qwen3-8B", "gpu": "L40S-48GB", "precision": "bf16", "replicas": 1, "cache": {"mode": "pvc"}}
    status = _run(kube, _body(spec))
    kube.settle("Job", download_job_name("q", "Qwen/Qwen3-8B", "main"))
    status = _run(kube, _body(spec, status))
    kube.settle("Deployment", "q")
    status = _run(kube, _body(spec, status))
    old_pvc = cache_pvc_name("q", "Qwen/Qwen3-8B", "main")
    assert _claim(kube) == old_pvc and _cond(status, "Ready")[:2] == ("True", "Available")

    fp8 = spec | {"precision": "fp8"}
    new_pvc = cache_pvc_name("q", "Qwen/Qwen3-8B-FP8", "main")
    status = _run(kube, _body(fp8, status, generation=2))
    assert ("v1", "PersistentVolumeClaim", "ns", new_pvc) in kube.objects, "a new cache for the new checkpoint"
    assert _claim(kube) == old_pvc, "the replicas keep the old weights while the new cache fills"
    assert kube.objects[("apps/v1", "Deployment", "ns", "q")]["spec"]["replicas"] == 1
    assert _cond(status, "Ready")[:2] == ("True", "Available")
    assert _cond(status, "Progressing")[:2] == ("True", "WaitingForModelCache")
    assert status["observedGeneration"] == 2 and status["plan"]["precision"] == "fp8"

    kube.settle("Job", download_job_name("q", "Qwen/Qwen3-8B-FP8", "main"))
    status = _run(kube, _body(fp8, status, generation=2))
    assert _claim(kube) == new_pvc, "the rollout switches once the new cache is filled"
    assert ("v1", "PersistentVolumeClaim", "ns", old_pvc) in kube.objects, "the old cache stays during the rollout"
    kube.settle("Deployment", "q")
    status = _run(kube, _body(fp8, status, generation=2))
    assert ("v1", "PersistentVolumeClaim", "ns", old_pvc) not in kube.objects, "removed after the rollout"
    assert [k[3] for k in kube.objects if k[1] == "Job"] == [download_job_name("q", "Qwen/Qwen3-8B-FP8", "main")]
    assert _cond(status, "Progressing")[:2] == ("False", "RolloutComplete")


def test_a_refused_child_is_reported_with_the_api_servers_message() -> None:
    refusal = "spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"
    kube = FakeKube(refuse=lambda m: refusal if m["kind"] == "PersistentVolumeClaim" else None)
    spec = {"model": "Qwen3-8B", "gpu": "L40S-48GB", "replicas": 1, "cache": {"mode": "pvc", "size": "1Gi"}}
    status = _run(kube, _body(spec, {"conditions": [], "plan": {"model": "old"}}))
    ready = _cond(status, "Ready")
    assert ready[:2] == ("False", "ApplyFailed") and refusal in ready[2] and "PersistentVolumeClaim" in ready[2]
    assert _cond(status, "Degraded")[:2] == ("True", "ApplyFailed")
    assert not [k for k in kube.applied if k[1] == "Deployment"], "nothing after the refused child is applied"


def test_an_infeasible_edit_withdraws_the_plan_from_status() -> None:
    kube = FakeKube()
    spec = {"model": "Qwen3-8B", "gpu": "L40S-48GB", "replicas": 1}
    status = _run(kube, _body(spec))
    assert "plan" in status
    _run(kube, _body(spec | {"model": "Qwen3-235B-A22B", "gpu": "L4-24GB",
                             "overrides": {"tensorParallelSize": 1}}, status, 2))  # fmt: skip
    patch = kube.status_patches[-1]
    assert patch["plan"] is None and _cond(patch, "Ready")[1] == "PlanInfeasible"


def test_nodepool_ownership_is_one_rule_for_render_finalizer_and_prune() -> None:
    node_class = {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"}
    own = {"model": "Qwen3-8B", "gpu": "L40S-48GB", "replicas": 1,
           "nodePool": {"provisioner": "karpenter", "nodeClassRef": node_class}}  # fmt: skip
    shared = own | {"nodePool": {"provisioner": "karpenter", "sharedPoolName": "gpus"}}
    assert owns_nodepool(own, "ns", "q") and not owns_nodepool(shared, "ns", "q")
    kube = FakeKube()
    caps = Capabilities(karpenter=True)
    asyncio.run(reconcile_deployment(kube, _body(own), [], caps, None))  # type: ignore[arg-type]
    pool = ("karpenter.sh/v1", "NodePool", "", nodepool_name("ns", "q"))
    assert pool in kube.objects
    asyncio.run(reconcile_deployment(kube, _body(shared, generation=2), [], caps, None))  # type: ignore[arg-type]
    assert pool not in kube.objects, "a pool the spec no longer asks for is pruned"
    kube.objects[("karpenter.sh/v1", "NodePool", "", "gpus")] = {"metadata": {"name": "gpus"}}
    asyncio.run(finalize_deployment(kube, _body(shared)))  # type: ignore[arg-type]
    assert ("karpenter.sh/v1", "NodePool", "", "gpus") in kube.objects, "a shared pool is never deleted"


def test_a_pool_no_longer_owned_is_looked_for_once_per_generation() -> None:
    kube = FakeKube()
    applier = make(kube, frozenset())
    spec = {"model": "Qwen3-8B", "gpu": "L40S-48GB", "replicas": 1}
    pool = ("karpenter.sh/v1", "NodePool", "", nodepool_name("ns", "q"))
    for generation in (1, 1, 1, 2):
        body = _body(spec, generation=generation)
        asyncio.run(reconcile_deployment(kube, body, [], Capabilities(karpenter=True), applier))  # type: ignore[arg-type]
    assert kube.gets.count(pool) == 2, "a resync of the same generation sends no read for the pool"
