"""The framework's rails on the real control plane: a forbidden watch stops the operator and names the kind; a KEDA
CRD, and an InferencePool CRD, installed after the operator started is used and its kind watched, and its objects
pruned."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from qwenfleet.kube import Kube
from qwenfleet.render.router import POOL_API, POOL_CRD
from tests.e2e.operator_proc import OperatorProcess, free_port, wait_for
from tests.e2e.test_reconciler import API, KIND

KEDA_CRD = "scaledobjects.keda.sh"
CRD_API = "apiextensions.k8s.io/v1"
EVERYTHING_BUT_SERVICES = [
    "pods", "configmaps", "serviceaccounts", "secrets", "events", "persistentvolumeclaims", "namespaces",
    "deployments", "jobs", "poddisruptionbudgets", "networkpolicies", "roles", "rolebindings", "leases",
    "qwen3deployments", "qwen3deployments/status", "qwen3routers", "qwen3routers/status",
    "customresourcedefinitions", "scaledobjects", "nodepools", "servicemonitors", "leaderworkersets", "inferencepools",
]  # fmt: skip


async def _health(port: int) -> tuple[int, str]:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as r:
            return r.status, await r.text()
    except aiohttp.ClientError as exc:
        return 0, str(exc)


async def _limited_kubeconfig(kube: Kube, kubeconfig: Path, namespace: str, tmp_path: Path) -> Path:
    """A kubeconfig for a service account that may do everything the operator does, but list and watch Services."""
    sa = "limited"
    await kube.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": namespace}})
    role = f"qwenfleet-limited-{namespace}"
    await kube.apply({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": role},
        "rules": [{"apiGroups": ["*"], "resources": EVERYTHING_BUT_SERVICES, "verbs": ["*"]},
                  {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create", "patch"]}],
    })  # fmt: skip
    await kube.apply({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
    })  # fmt: skip
    answer = await kube._call("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token",
                              body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                    "spec": {"expirationSeconds": 3600}})  # fmt: skip
    admin = yaml.safe_load(kubeconfig.read_text())
    cluster = admin["clusters"][0]
    limited = {"apiVersion": "v1", "kind": "Config", "clusters": [cluster],
               "users": [{"name": sa, "user": {"token": answer["status"]["token"]}}],
               "contexts": [{"name": sa, "context": {"cluster": cluster["name"], "user": sa}}],
               "current-context": sa}  # fmt: skip
    path = tmp_path / "limited.kubeconfig"
    path.write_text(yaml.safe_dump(limited))
    return path


async def test_a_forbidden_watch_stops_the_operator_and_names_the_kind(
    kube: Kube, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    """kopf retries a refused watch for 15 s (its backoffs), then gives up on it and stops the operator: the
    process exits with 1 and its last words name the kind and the 403, so the pod restarts visibly
    (CrashLoopBackOff) instead of serving a healthy /healthz while one kind goes unwatched."""
    limited = await _limited_kubeconfig(kube, kubeconfig, namespace, tmp_path)
    op = OperatorProcess(limited, tmp_path, args=(f"--namespace={namespace}",), name="limited")
    op.health_port = free_port()
    op.start()
    try:
        assert op.proc is not None
        proc = op.proc

        async def exited() -> tuple[int] | None:
            code = proc.poll()
            return None if code is None else (code,)

        (code,) = await wait_for(exited, 90, "the operator stopping", lambda: op.log_path.read_text()[-2000:])
        assert code == 1
        log = op.log_path.read_text()
        failed = [line for line in log.splitlines() if "watch of services" in line and "failed" in line]
        assert failed, log[-3000:]
        assert "403" in failed[0] and "forbidden" in failed[0].lower()
        last = [line for line in log.splitlines() if "stopping:" in line]
        assert last and "watch of services" in last[-1], log[-3000:]
        assert not [line for line in log.splitlines() if "watch of" in line and "services" not in line]
    finally:
        op.stop()
        await kube.delete("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", f"qwenfleet-limited-{namespace}")
        await kube.delete("rbac.authorization.k8s.io/v1", "ClusterRole", f"qwenfleet-limited-{namespace}")


def _crd_manifest(crd: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": crd["metadata"]["name"], "labels": crd["metadata"].get("labels") or {},
            "annotations": crd["metadata"].get("annotations") or {}}  # fmt: skip
    return {"apiVersion": CRD_API, "kind": "CustomResourceDefinition", "metadata": meta, "spec": crd["spec"]}


async def _established(kube: Kube, name: str = KEDA_CRD) -> bool:
    crd = await kube.get(CRD_API, "CustomResourceDefinition", name)
    conds = {c["type"]: c["status"] for c in ((crd or {}).get("status") or {}).get("conditions") or []}
    return conds.get("Established") == "True"


@contextlib.asynccontextmanager
async def _late_crd(kube: Kube, kubeconfig: Path, namespace: str, tmp_path: Path, crd: str, name: str) -> AsyncIterator[
        tuple[OperatorProcess, dict[str, Any]]]:  # fmt: skip
    """An operator started while the CRD `crd` is not installed; yields it and the CRD's manifest to install. The
    CRD is back (established) for the other tests afterwards."""
    saved = await kube.get(CRD_API, "CustomResourceDefinition", crd)
    assert saved is not None
    manifest = _crd_manifest(saved)
    op = OperatorProcess(kubeconfig, tmp_path, args=(f"--namespace={namespace}",), name=name)
    op.health_port = free_port()
    try:
        await kube.delete(CRD_API, "CustomResourceDefinition", crd)

        async def gone() -> bool:
            return await kube.get(CRD_API, "CustomResourceDefinition", crd) is None

        await wait_for(gone, 60, f"the CRD {crd} removed")
        op.start()
        yield op, manifest
    finally:
        op.stop()
        if await kube.get(CRD_API, "CustomResourceDefinition", crd) is None:
            await kube.apply(manifest)
        await wait_for(lambda: _established(kube, crd), 60, f"the CRD {crd} back for the other tests")
        await asyncio.sleep(0)


async def test_a_keda_crd_installed_after_start_is_used_watched_and_pruned(
    kube: Kube, kubeconfig: Path, namespace: str, session_operator_paused: None, tmp_path: Path
) -> None:
    async with _late_crd(kube, kubeconfig, namespace, tmp_path, KEDA_CRD, "late-crd") as (op, manifest):
        scaling = {"mode": "keda", "minReplicas": 0, "maxReplicas": 2}
        body: dict[str, Any] = {"apiVersion": API, "kind": KIND, "metadata": {"name": "late", "namespace": namespace},
                                "spec": {"model": "Qwen3-0.6B", "gpu": "L4-24GB", "autoscaling": scaling}}  # fmt: skip
        await kube.apply(body)

        async def keda_missing() -> bool:
            obj = await kube.get(API, KIND, "late", namespace)
            conds = {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}
            return conds.get("Ready", {}).get("reason") == "KEDAMissing"

        await wait_for(keda_missing, 60, "Ready=False KEDAMissing")
        status, text = await _health(op.health_port)
        assert status == 200 and '"watches"' in text, text

        await kube.apply(manifest)  # KEDA installed while the operator runs
        await wait_for(lambda: _established(kube), 60, "the KEDA CRD established")

        async def scaled() -> dict[str, Any] | None:
            return await kube.get("keda.sh/v1alpha1", "ScaledObject", "late", namespace)

        await wait_for(scaled, 60, "the ScaledObject, once KEDA is installed", lambda: op.log_path.read_text()[-2000:])
        await kube.delete("keda.sh/v1alpha1", "ScaledObject", "late", namespace)  # watched: restored at once
        await wait_for(scaled, 30, "the deleted ScaledObject restored (its kind is watched now)")

        body["spec"]["autoscaling"] = {"mode": "none"}
        body["spec"]["replicas"] = 0
        await kube.apply(body)

        async def pruned() -> bool:
            return await scaled() is None

        await wait_for(pruned, 60, "the ScaledObject pruned when the spec leaves keda mode")


async def test_an_inference_pool_crd_installed_after_start_brings_the_routers_pools(
    kube: Kube, kubeconfig: Path, namespace: str, session_operator_paused: None, tmp_path: Path
) -> None:
    async with _late_crd(kube, kubeconfig, namespace, tmp_path, POOL_CRD, "late-pools") as (op, manifest):
        small = {"apiVersion": API, "kind": KIND, "metadata": {"name": "small", "namespace": namespace},
                 "spec": {"model": "Qwen3-0.6B", "gpu": "L4-24GB", "replicas": 0}}  # fmt: skip
        await kube.apply(small)  # the backend exists (else Degraded says BackendMissing first)
        spec = {"backends": [{"name": "small"}], "defaultBackend": "small", "endpointPicker": {"enabled": True}}
        meta = {"name": "edge", "namespace": namespace}
        await kube.apply({"apiVersion": API, "kind": "Qwen3Router", "metadata": meta, "spec": spec})

        async def degraded() -> bool:
            obj = await kube.get(API, "Qwen3Router", "edge", namespace)
            conds = {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}
            return conds.get("Degraded", {}).get("reason") == "InferencePoolCRDMissing"

        await wait_for(degraded, 60, "Degraded=True InferencePoolCRDMissing")
        await kube.apply(manifest)  # the Gateway API Inference Extension installed while the operator runs
        await wait_for(lambda: _established(kube, POOL_CRD), 60, "the InferencePool CRD established")

        async def pool() -> dict[str, Any] | None:
            return await kube.get(POOL_API, "InferencePool", "edge-small", namespace)

        await wait_for(pool, 60, "the router's InferencePool, once the CRD is installed",
                       lambda: op.log_path.read_text()[-2000:])  # fmt: skip
        await kube.delete(POOL_API, "InferencePool", "edge-small", namespace)  # watched: restored at once
        await wait_for(pool, 30, "the deleted InferencePool restored (its kind is watched now)")

        async def healthy() -> bool:
            obj = await kube.get(API, "Qwen3Router", "edge", namespace)
            conds = {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}
            return conds.get("Degraded", {}).get("status") == "False"

        await wait_for(healthy, 30, "Degraded=False once the pools exist")
