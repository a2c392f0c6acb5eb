"""Security: workloads admitted under Pod Security `restricted`, secret values never in logs, Events or status,
and no wildcard in any role qwenfleet ships or creates."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.devcluster import install, tools
from qwenfleet.kube import Kube
from qwenfleet.render import Owner
from qwenfleet.render.router import render_router
from tests.e2e.operator_proc import OperatorProcess, wait_for
from tests.e2e.test_reconciler import API, KIND, _wait_ready

SENTINEL_TOKEN = "hf_SENTINEL_" + uuid.uuid4().hex
SENTINEL_KEY = "sk-SENTINEL-" + uuid.uuid4().hex


@pytest.fixture
async def restricted(kube: Kube) -> AsyncIterator[str]:
    """A namespace that enforces the restricted Pod Security level."""
    name = f"r-{uuid.uuid4().hex[:8]}"
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    yield name
    await kube.delete("v1", "Namespace", name)


def _secret(name: str, namespace: str, key: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque", "data": {key: base64.b64encode(value.encode()).decode()}}  # fmt: skip


async def test_workloads_run_under_restricted_and_secrets_never_leak(
    kube: Kube, restricted: str, operator: OperatorProcess
) -> None:
    ns = restricted
    await kube.apply(_secret("hf", ns, "token", SENTINEL_TOKEN))
    await kube.apply(_secret("router-keys", ns, "keys", SENTINEL_KEY))
    await kube.apply({"apiVersion": API, "kind": KIND, "metadata": {"name": "small", "namespace": ns}, "spec": {
        "model": "Qwen3-0.6B", "gpu": "L4-24GB", "replicas": 1, "cache": {"mode": "pvc", "size": "5Gi"},
        "weights": {"huggingFace": {"repo": "Qwen/Qwen3-0.6B", "tokenSecretRef": {"name": "hf", "key": "token"}}},
    }})  # fmt: skip
    await kube.apply({"apiVersion": API, "kind": "Qwen3Router", "metadata": {"name": "front", "namespace": ns},
                      "spec": {"replicas": 1, "backends": [{"name": "small"}], "defaultBackend": "small",
                               "apiKeySecretRef": {"name": "router-keys", "key": "keys"}}})  # fmt: skip
    # The download Job's pod, the model-server pod and the router pod are all admitted under `restricted`.
    await _wait_ready(kube, ns, "small", timeout=120)

    async def router_ready() -> bool:
        obj = await kube.get(API, "Qwen3Router", "front", ns)
        conds = ((obj or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    await wait_for(router_ready, 60, "the router admitted and ready under restricted")
    events = await kube.list("v1", "Event", ns)
    assert not [e for e in events if "PodSecurity" in (e.get("message") or "")], "a pod was refused"

    # The values are referenced, never copied: not in the children, status, Events or the operator's log.
    children = [await kube.get("apps/v1", "Deployment", "small", ns), await kube.get(API, KIND, "small", ns),
                await kube.get(API, "Qwen3Router", "front", ns)]  # fmt: skip
    children += await kube.list("batch/v1", "Job", ns)
    visible = json.dumps(children) + json.dumps(events) + operator.log_path.read_text()
    assert SENTINEL_TOKEN not in visible and SENTINEL_KEY not in visible
    deployment = json.dumps(children[0])
    assert '"secretKeyRef": {"name": "hf", "key": "token"}' in deployment


def _rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for d in docs if d and d["kind"] in ("Role", "ClusterRole") for rule in d["rules"]]


def test_no_role_has_a_wildcard() -> None:
    helm = tools.ensure_helm()
    rendered = install.helm_template(helm, values=["leaderElection.enabled=true", "replicaCount=2"])
    namespaced = install.helm_template(helm, values=["watchNamespaces={a,b}"])
    spec = Qwen3RouterSpec.model_validate({"backends": [{"name": "b"}], "defaultBackend": "b"})
    router = render_router(Owner(name="r", namespace="n", uid="u", kind="Qwen3Router"), spec)
    rules = _rules(list(yaml.safe_load_all(rendered))) + _rules(list(yaml.safe_load_all(namespaced))) + _rules(router)
    assert len(rules) > 10
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
    secrets = [r for r in rules if "secrets" in r["resources"]]
    assert secrets and all(r["verbs"] == ["get"] for r in secrets), "Secrets: get by name only, never list"


def test_every_granted_resource_is_one_the_operator_uses() -> None:
    """A grant for a resource no code names is a grant nobody needs."""
    helm = tools.ensure_helm()
    rules = _rules(list(yaml.safe_load_all(install.helm_template(helm, values=["leaderElection.enabled=true"]))))
    source = "\n".join(
        p.read_text() for p in (Path(__file__).resolve().parents[2] / "operator" / "qwenfleet").rglob("*.py")
    )
    for rule in rules:
        for resource in rule["resources"]:
            base, _, sub = resource.partition("/")
            assert f'"{base}"' in source, f"{resource} is granted but never used"
            if sub == "status":
                assert "patch_status" in source
    delete_kinds = {r for rule in rules if "delete" in rule["verbs"] for r in rule["resources"]}
    assert delete_kinds == {"deployments", "leaderworkersets", "jobs", "scaledobjects", "servicemonitors", "nodepools",
                            "persistentvolumeclaims", "inferencepools"}  # fmt: skip
