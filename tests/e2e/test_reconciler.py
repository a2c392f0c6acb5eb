"""The Qwen3Deployment reconciler on a real control plane with kwok GPU nodes."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from qwenfleet.kube import Kube
from tests.e2e.operator_proc import OperatorProcess, wait_for

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
API = "qwenfleet.dev/v1alpha1"
KIND = "Qwen3Deployment"


def _example(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return doc


async def _create(kube: Kube, namespace: str, doc: dict[str, Any]) -> dict[str, Any]:
    doc = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
    return await kube.apply(doc)


async def _condition(kube: Kube, namespace: str, name: str, ctype: str = "Ready") -> dict[str, Any] | None:
    obj = await kube.get(API, KIND, name, namespace)
    for cond in ((obj or {}).get("status") or {}).get("conditions", []):
        if cond["type"] == ctype:
            return dict(cond)
    return None


async def _wait_ready(kube: Kube, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    async def ready() -> dict[str, Any] | None:
        cond = await _condition(kube, namespace, name)
        return cond if cond and cond["status"] == "True" else None

    return await wait_for(ready, timeout, f"{namespace}/{name} Ready=True")


async def _create_ready(kube: Kube, namespace: str, example: str) -> str:
    """Create the example manifest `example` in `namespace` and wait until it is Ready; its name."""
    doc = _example(example)
    name: str = doc["metadata"]["name"]
    await _create(kube, namespace, doc)
    await _wait_ready(kube, namespace, name)
    return name


async def _pods(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    selector = f"qwenfleet.dev/deployment={name},app.kubernetes.io/component=model-server"
    return [p for p in await kube.list("v1", "Pod", namespace, label_selector=selector)
            if not p["metadata"].get("deletionTimestamp")]  # fmt: skip


async def _node_product(kube: Kube, node: str) -> str:
    obj = await kube.get("v1", "Node", node)
    return str(((obj or {}).get("metadata") or {}).get("labels", {}).get("nvidia.com/gpu.product"))


@pytest.mark.parametrize(
    ("example", "product", "gpus"),
    [
        ("qwen3-0.6b-l4.yaml", "NVIDIA-L4", "1"),
        ("qwen3-30b-a3b-h100.yaml", "NVIDIA-H100-80GB-HBM3", "1"),
        ("qwen3-235b-fp8-h100.yaml", "NVIDIA-H100-80GB-HBM3", "4"),
    ],
)
async def test_example_reaches_ready_on_the_right_gpus(
    kube: Kube, namespace: str, operator: OperatorProcess, kubeconfig: Path, example: str, product: str, gpus: str
) -> None:
    name = await _create_ready(kube, namespace, example)
    pods = await _pods(kube, namespace, name)
    assert pods and all(p["status"]["phase"] == "Running" for p in pods)
    for pod in pods:
        assert await _node_product(kube, pod["spec"]["nodeName"]) == product
        assert pod["status"]["podIP"].startswith("127.1.")
        assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == gpus
    obj = await kube.get(API, KIND, name, namespace)
    assert obj is not None
    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["plan"]["gpusPerReplica"] == int(gpus) and status["readySummary"] == "1/1"
    assert status["endpoint"] == f"http://{name}.{namespace}.svc:8000/v1"
    for kind, api in (
        ("Service", "v1"),
        ("PodDisruptionBudget", "policy/v1"),
        ("NetworkPolicy", "networking.k8s.io/v1"),
    ):
        assert await kube.get(api, kind, name, namespace) is not None, kind
    table = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", "-n", namespace, "get", "q3d", name],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    header = table.splitlines()[0].split()
    assert header[:7] == ["NAME", "MODEL", "GPU", "TP", "REPLICAS", "QUEUE", "READY"]
    assert "1/1" in table.splitlines()[1]


async def test_infeasible_plan_is_reported_and_nothing_is_applied(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    doc = _example("qwen3-235b-infeasible-l4.yaml")
    name = doc["metadata"]["name"]
    await _create(kube, namespace, doc)

    async def infeasible() -> dict[str, Any] | None:
        cond = await _condition(kube, namespace, name)
        return cond if cond and cond["reason"] == "PlanInfeasible" else None

    cond = await wait_for(infeasible, 60, "PlanInfeasible")
    assert cond["status"] == "False" and "without the override" in cond["message"]
    assert await kube.get("apps/v1", "Deployment", name, namespace) is None
    assert await kube.get("v1", "Service", name, namespace) is None

    async def event_posted() -> bool:
        return any(e.get("reason") == "PlanInfeasible" for e in await kube.list("v1", "Event", namespace))

    await wait_for(event_posted, 30, "a PlanInfeasible Event")


async def test_changing_the_gpu_rolls_the_workload(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    name = await _create_ready(kube, namespace, "qwen3-0.6b-l4.yaml")
    await kube.merge_patch(API, KIND, name, namespace, {"spec": {"gpu": "H100-80GB"}})

    async def rolled() -> bool:
        pods = await _pods(kube, namespace, name)
        if len(pods) != 1 or pods[0]["status"].get("phase") != "Running":
            return False
        return await _node_product(kube, pods[0]["spec"]["nodeName"]) == "NVIDIA-H100-80GB-HBM3"

    await wait_for(rolled, 90, "pod moved to an H100 node")

    async def replanned() -> bool:  # the status is written after the children, so it may trail the pod
        obj = await kube.get(API, KIND, name, namespace)
        return obj is not None and obj["status"]["plan"]["gpu"] == "H100-80GB"

    await wait_for(replanned, 30, "status.plan on H100")
    await _wait_ready(kube, namespace, name)


async def test_deleted_and_edited_children_come_back(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    name = await _create_ready(kube, namespace, "qwen3-0.6b-l4.yaml")
    service = await kube.get("v1", "Service", name, namespace)
    assert service is not None
    await kube.delete("v1", "Service", name, namespace)

    async def recreated() -> bool:
        again = await kube.get("v1", "Service", name, namespace)
        return again is not None and again["metadata"]["uid"] != service["metadata"]["uid"]

    await wait_for(recreated, 20, "Service recreated")
    await kube.merge_patch("policy/v1", "PodDisruptionBudget", name, namespace, {"spec": {"maxUnavailable": 5}})

    async def restored() -> bool:
        pdb = await kube.get("policy/v1", "PodDisruptionBudget", name, namespace)
        return pdb is not None and pdb["spec"]["maxUnavailable"] == 1

    await wait_for(restored, 20, "PodDisruptionBudget restored")


async def test_missing_secret_blocks_then_recovers(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    doc = _example("qwen3-0.6b-l4.yaml")
    doc["spec"]["weights"] = {"huggingFace": {"tokenSecretRef": {"name": "hf-token", "key": "token"}}}
    name = doc["metadata"]["name"]
    await _create(kube, namespace, doc)

    async def blocked() -> dict[str, Any] | None:
        cond = await _condition(kube, namespace, name)
        return cond if cond and cond["reason"] == "SecretMissing" else None

    cond = await wait_for(blocked, 60, "SecretMissing")
    assert "hf-token" in cond["message"]
    assert await kube.get("apps/v1", "Deployment", name, namespace) is None
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf-token", "namespace": namespace},
              "stringData": {"token": "hf_sentinel_value"}}  # fmt: skip
    await kube.apply(secret)
    await _wait_ready(kube, namespace, name, timeout=90)
    dep = await kube.get("apps/v1", "Deployment", name, namespace)
    assert dep is not None
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert "hf_sentinel_value" not in json.dumps(dep)


async def test_delete_removes_children_and_keeps_the_users_pvc(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    meta = {"name": "my-weights", "namespace": namespace}
    spec = {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "5Gi"}}}
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}
    await kube.apply(pvc)
    doc = _example("qwen3-0.6b-l4.yaml")
    doc["spec"]["weights"] = {"pvc": {"claimName": "my-weights", "path": "/qwen3-0.6b"}}
    name = doc["metadata"]["name"]
    await _create(kube, namespace, doc)

    async def deployed() -> bool:
        return await kube.get("apps/v1", "Deployment", name, namespace) is not None

    await wait_for(deployed, 60, "Deployment created")
    await kube.delete(API, KIND, name, namespace)

    async def gone() -> bool:
        for api, kind in (("apps/v1", "Deployment"), ("v1", "Service"), ("policy/v1", "PodDisruptionBudget"),
                          ("networking.k8s.io/v1", "NetworkPolicy"), (API, KIND)):  # fmt: skip
            if await kube.get(api, kind, name, namespace) is not None:
                return False
        return True

    await wait_for(gone, 60, "children garbage-collected")
    kept = await kube.get("v1", "PersistentVolumeClaim", "my-weights", namespace)
    assert kept is not None and not kept["metadata"].get("deletionTimestamp")


async def _ensure_a100_nodes(kube: Kube) -> None:
    """Two 8 x A100-40GB kwok nodes (not in the default profile) for the multi-node example."""
    for i in range(2):
        name = f"a100-40gb-{i}"
        labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "type": "kwok", "nvidia.com/gpu.present": "true", "nvidia.com/gpu.count": "8",
                  "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB", "nvidia.com/gpu.memory": "40960"}  # fmt: skip
        resources = {"cpu": "96", "memory": "1152Gi", "pods": "110", "nvidia.com/gpu": "8"}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels,
                         "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"podCIDR": f"127.1.{240 + i}.0/24",
                     "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]},
            "status": {"capacity": resources, "allocatable": resources},
        }  # fmt: skip
        if await kube.get("v1", "Node", name) is None:
            await kube.apply(node)


async def test_multi_node_replica_runs_as_a_leader_worker_set(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    await _ensure_a100_nodes(kube)
    name = await _create_ready(kube, namespace, "qwen3-235b-bf16-a100-multinode.yaml")
    obj = await kube.get("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", name, namespace)
    assert obj is not None
    template = obj["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2
    assert template["leaderTemplate"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert await kube.get("apps/v1", "Deployment", name, namespace) is None
    pods = await _pods(kube, namespace, name)
    assert sorted(p["metadata"]["name"] for p in pods) == [f"{name}-0", f"{name}-0-1"]
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert len(nodes) == 2
    for node in nodes:
        assert await _node_product(kube, node) == "NVIDIA-A100-SXM4-40GB"


async def test_restart_with_nothing_changed_writes_nothing(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = await _create_ready(kube, namespace, "qwen3-0.6b-l4.yaml")
    await asyncio.sleep(2)  # let the last status patch settle before sampling versions

    async def versions() -> dict[str, str]:
        out = {}
        for api, kind in ((API, KIND), ("apps/v1", "Deployment"), ("v1", "Service"),
                          ("policy/v1", "PodDisruptionBudget"), ("networking.k8s.io/v1", "NetworkPolicy")):  # fmt: skip
            obj = await kube.get(api, kind, name, namespace)
            assert obj is not None
            out[kind] = obj["metadata"]["resourceVersion"]
            if kind == KIND:  # the cost loop's measured status.cost moves with the clock; nothing else may change
                obj["status"].pop("cost", None)
                out[kind] = json.dumps({**obj, "metadata": {**obj["metadata"], "resourceVersion": None,
                                                            "managedFields": None}}, sort_keys=True)  # fmt: skip
        return out

    before = await versions()
    await operator.restart()

    async def reconciled_again() -> bool:
        return operator.reconcile_count() >= 1

    await wait_for(reconciled_again, 60, "operator reconciled after restart")
    assert await versions() == before


async def test_karpenter_pool_and_weight_cache(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    doc = _example("qwen3-32b-karpenter-cache.yaml")
    name = doc["metadata"]["name"]
    await _create(kube, namespace, doc)
    obj = await _wait_ready(kube, namespace, name, timeout=120)
    assert obj["reason"] == "Available"
    cached = await _condition(kube, namespace, name, "ModelCached")
    assert cached is not None and cached["status"] == "True" and cached["reason"] == "Downloaded"
    jobs = await kube.list("batch/v1", "Job", namespace)
    assert len(jobs) == 1 and jobs[0]["status"].get("succeeded") == 1
    cache = (await kube.get(API, KIND, name, namespace) or {})["status"]["cache"]
    assert cache["phase"] == "Ready" and cache["pvcName"].startswith(f"{name}-weights-")
    pvc = await kube.get("v1", "PersistentVolumeClaim", cache["pvcName"], namespace)
    assert pvc is not None and pvc["status"]["phase"] == "Bound"
    pool_name = f"qwenfleet-{namespace}-{name}"
    pool = await kube.get("karpenter.sh/v1", "NodePool", pool_name)
    assert pool is not None
    pods = await _pods(kube, namespace, name)
    assert len(pods) == 1
    node = await kube.get("v1", "Node", pods[0]["spec"]["nodeName"])
    assert node is not None and node["metadata"]["labels"]["karpenter.sh/nodepool"] == pool_name
    volumes = {v["name"]: v for v in pods[0]["spec"]["volumes"]}
    # the weights are mounted read-only; the same volume, writable elsewhere, keeps vLLM's compile cache
    claim = volumes["weights"]["persistentVolumeClaim"]
    assert claim["claimName"] == cache["pvcName"] and not claim.get("readOnly", False)
    vllm = pods[0]["spec"]["containers"][0]
    assert {"name": "weights", "mountPath": "/models", "readOnly": True} in [
        {k: m[k] for k in ("name", "mountPath", "readOnly") if k in m} for m in vllm["volumeMounts"]
    ]
    assert {"name": "VLLM_CACHE_ROOT", "value": "/cache-rw/.vllm"} in vllm["env"]
    planned = (await kube.get(API, KIND, name, namespace) or {})["status"]["plan"]
    assert any("compile cache" in note for note in planned["notes"])

    await kube.delete(API, KIND, name, namespace)

    async def pool_gone() -> bool:
        return await kube.get("karpenter.sh/v1", "NodePool", pool_name) is None

    await wait_for(pool_gone, 60, "NodePool removed by the finalizer")


async def test_unschedulable_replicas_are_reported_with_the_gpu_shortfall(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    doc = _example("qwen3-235b-fp8-h100.yaml")
    doc["spec"]["replicas"] = 5  # 5 x 4 H100s; the cluster has 16
    name = doc["metadata"]["name"]
    await _create(kube, namespace, doc)

    async def unschedulable() -> dict[str, Any] | None:
        cond = await _condition(kube, namespace, name)
        return cond if cond and cond["reason"] == "Unschedulable" else None

    cond = await wait_for(unschedulable, 60, "Ready=False Unschedulable")
    assert "nvidia.com/gpu" in cond["message"]
    degraded = await _condition(kube, namespace, name, "Degraded")
    assert degraded is not None and degraded["status"] == "True"
    await kube.merge_patch(API, KIND, name, namespace, {"spec": {"replicas": 1}})
    await _wait_ready(kube, namespace, name)


def _claim(workload: dict[str, Any] | None) -> str | None:
    """The weights PVC a Deployment's or a Job's pods mount."""
    for volume in ((workload or {}).get("spec", {}).get("template", {}).get("spec", {}).get("volumes")) or []:
        if volume["name"] == "weights":
            return str(volume["persistentVolumeClaim"]["claimName"])
    return None


def _cached_spec(**cache: Any) -> dict[str, Any]:
    return {"model": "Qwen3-8B", "gpu": "H100-80GB", "replicas": 1, "cache": {"mode": "pvc", **cache}}


@pytest.mark.parametrize(
    "patch",
    [{"precision": "fp8"}, {"model": "Qwen3-14B"}, {"weights": {"huggingFace": {"revision": "v2"}}}],
    ids=["precision", "model", "revision"],
)
async def test_a_live_checkpoint_change_fills_a_new_cache_before_switching(
    kube: Kube, namespace: str, operator: OperatorProcess, patch: dict[str, Any]
) -> None:
    name = "live"
    doc = {"apiVersion": API, "kind": KIND, "metadata": {"name": name}, "spec": _cached_spec()}
    await _create(kube, namespace, doc)
    await _wait_ready(kube, namespace, name, timeout=120)
    obj = await kube.get(API, KIND, name, namespace)
    assert obj is not None
    old_pvc = obj["status"]["cache"]["pvcName"]
    assert _claim(await kube.get("apps/v1", "Deployment", name, namespace)) == old_pvc
    await kube.merge_patch(API, KIND, name, namespace, {"spec": patch})
    problems: list[str] = []

    async def switched() -> bool:
        cr = await kube.get(API, KIND, name, namespace) or {}
        status = cr.get("status") or {}
        conds = {c["type"]: c for c in status.get("conditions", [])}
        if conds.get("Ready", {}).get("reason") == "ApplyFailed":
            problems.append(f"ApplyFailed: {conds['Ready']['message']}")
        claim = _claim(await kube.get("apps/v1", "Deployment", name, namespace))
        if claim != old_pvc:  # the workload switched: the cache it reads must be filled already
            jobs = [j for j in await kube.list("batch/v1", "Job", namespace) if _claim(j) == claim]
            if not jobs or not jobs[0].get("status", {}).get("succeeded"):
                problems.append(f"pods read {claim} before its download Job succeeded")
        old = await kube.get("v1", "PersistentVolumeClaim", old_pvc, namespace)
        return (
            status.get("observedGeneration") == cr["metadata"]["generation"] == 2
            and claim == (status.get("cache") or {}).get("pvcName") != old_pvc
            and conds.get("Ready", {}).get("status") == "True"
            and conds.get("Progressing", {}).get("reason") == "RolloutComplete"
            and (old is None or bool(old["metadata"].get("deletionTimestamp")))
        )

    await wait_for(switched, 150, "rolled onto the new cache, the old one removed", detail=lambda: problems[-3:])
    assert not problems, problems
    jobs = await kube.list("batch/v1", "Job", namespace)
    assert [_claim(j) for j in jobs] == [_claim(await kube.get("apps/v1", "Deployment", name, namespace))]


async def test_a_refused_child_is_a_condition_with_the_api_servers_message(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "shrink"
    doc = {"apiVersion": API, "kind": KIND, "metadata": {"name": name}, "spec": _cached_spec(size="40Gi")}
    await _create(kube, namespace, doc)
    await _wait_ready(kube, namespace, name, timeout=120)
    await kube.merge_patch(API, KIND, name, namespace, {"spec": {"cache": {"size": "20Gi"}}})

    async def refused() -> dict[str, Any] | None:
        cond = await _condition(kube, namespace, name)
        return cond if cond and cond["reason"] == "ApplyFailed" and cond["observedGeneration"] == 2 else None

    cond = await wait_for(refused, 60, "Ready=False ApplyFailed")
    assert cond["status"] == "False" and "PersistentVolumeClaim" in cond["message"], cond
    assert "less than" in cond["message"], cond
    degraded = await _condition(kube, namespace, name, "Degraded")
    assert degraded is not None and degraded["status"] == "True" and degraded["reason"] == "ApplyFailed"
    await kube.merge_patch(API, KIND, name, namespace, {"spec": {"cache": {"size": "40Gi"}}})

    async def recovered() -> bool:
        cond = await _condition(kube, namespace, name)
        return bool(cond and cond["status"] == "True" and cond["observedGeneration"] == 3)

    await wait_for(recovered, 60, "Ready again once the spec is fixed")


async def test_an_infeasible_edit_withdraws_the_plan(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    name = await _create_ready(kube, namespace, "qwen3-0.6b-l4.yaml")
    patch = {"spec": {"model": "Qwen3-235B-A22B", "overrides": {"tensorParallelSize": 1}}}
    await kube.merge_patch(API, KIND, name, namespace, patch)

    async def infeasible() -> dict[str, Any] | None:
        obj = await kube.get(API, KIND, name, namespace) or {}
        conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}
        ready = conds.get("Ready") or {}
        return obj if ready.get("reason") == "PlanInfeasible" and ready.get("observedGeneration") == 2 else None

    obj = await wait_for(infeasible, 60, "PlanInfeasible for generation 2")
    assert "plan" not in obj["status"], "the old plan must not look current"
    assert obj["status"]["readyReplicas"] == 1, "the replica that still runs is still counted"


async def test_router_counts_replicas_not_pods_and_names_missing_backends(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    await _ensure_a100_nodes(kube)
    big = _example("qwen3-235b-bf16-a100-multinode.yaml")
    name = big["metadata"]["name"]
    await _create(kube, namespace, big)
    spec = {"backends": [{"name": name, "aliases": ["big"]}, {"name": "ghost", "aliases": ["ghost"]}],
            "defaultBackend": name, "replicas": 1}  # fmt: skip
    await kube.apply({"apiVersion": API, "kind": "Qwen3Router", "metadata": {"name": "front", "namespace": namespace},
                      "spec": spec})  # fmt: skip

    async def group_ready() -> bool:
        pods = await _pods(kube, namespace, name)
        ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                        for c in p["status"].get("conditions", []))]  # fmt: skip
        return len(pods) == len(ready) == 2

    await wait_for(group_ready, 90, "leader and worker ready")

    async def router_status() -> dict[str, Any] | None:
        obj = await kube.get(API, "Qwen3Router", "front", namespace) or {}
        status = obj.get("status") or {}
        return status if {b["name"]: b["readyReplicas"] for b in status.get("backends", [])}.get(name) else None

    await wait_for(router_status, 60, "the multi-node backend counted")
    await asyncio.sleep(3)  # any later pod event would have been counted by now
    status = await router_status()
    assert status is not None
    assert {b["name"]: b["readyReplicas"] for b in status["backends"]} == {name: 1, "ghost": 0}
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Degraded"]["status"] == "True" and conds["Degraded"]["reason"] == "BackendMissing"
    assert "ghost" in conds["Degraded"]["message"] and name not in conds["Degraded"]["message"]

    ghost = {"apiVersion": API, "kind": KIND, "metadata": {"name": "ghost"},
             "spec": {"model": "Qwen3-0.6B", "gpu": "L4-24GB", "replicas": 0}}  # fmt: skip
    await _create(kube, namespace, ghost)

    async def healed() -> bool:
        obj = await kube.get(API, "Qwen3Router", "front", namespace) or {}
        conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}
        return bool(conds.get("Degraded", {}).get("reason") == "AsExpected")

    await wait_for(healed, 30, "Degraded cleared once the backend exists")


async def test_a_nodepool_the_spec_no_longer_asks_for_is_removed(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "pooled"
    node_class = {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"}
    spec = {"model": "Qwen3-8B", "gpu": "H100-80GB", "replicas": 1,
            "nodePool": {"provisioner": "karpenter", "nodeClassRef": node_class}}  # fmt: skip
    await _create(kube, namespace, {"apiVersion": API, "kind": KIND, "metadata": {"name": name}, "spec": spec})
    pool_name = f"qwenfleet-{namespace}-{name}"

    async def pool_exists() -> bool:
        return await kube.get("karpenter.sh/v1", "NodePool", pool_name) is not None

    await wait_for(pool_exists, 60, "the deployment's own NodePool")
    patch = {"spec": {"nodePool": {"provisioner": "none", "nodeClassRef": None}}}
    await kube.merge_patch(API, KIND, name, namespace, patch)

    async def pool_gone() -> bool:
        return await kube.get("karpenter.sh/v1", "NodePool", pool_name) is None

    await wait_for(pool_gone, 60, "the NodePool removed once the spec no longer asks for it")
    await _wait_ready(kube, namespace, name)
    nodepool = await _condition(kube, namespace, name, "NodePoolReady")
    assert nodepool is not None and nodepool["reason"] == "ExistingNodes"
