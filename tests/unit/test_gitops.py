"""The Argo CD health checks (Lua, run here with a real Lua runtime) on the statuses the operator writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml

ARGOCD = Path(__file__).resolve().parents[2] / "manifests" / "gitops" / "argocd"


def _health(script: str, obj: dict[str, Any]) -> tuple[str, str]:
    lua = lupa.LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    return str(result["status"]), str(result["message"])


def _q3d(conditions: list[dict[str, str]] | None, generation: int = 2, observed: int = 2) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "x", "generation": generation}, "spec": {}}
    if conditions is not None:
        obj["status"] = {"observedGeneration": observed, "conditions": conditions}
    return obj


def _cond(type_: str, status: str, reason: str, message: str = "m") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


DEPLOYMENT_CASES = [
    (_q3d(None), "Progressing"),
    (_q3d([_cond("Ready", "True", "Available")], generation=3, observed=2), "Progressing"),
    (_q3d([_cond("Ready", "True", "Available", "2/2 replicas ready")]), "Healthy"),
    (_q3d([_cond("Ready", "True", "ScaledToZero")]), "Healthy"),
    (_q3d([_cond("Ready", "False", "ReplicasNotReady"), _cond("Degraded", "False", "AsExpected")]), "Progressing"),
    (_q3d([_cond("Ready", "False", "WaitingForModelCache")]), "Progressing"),
    (_q3d([_cond("Ready", "False", "Unschedulable", "0/5 nodes: Insufficient nvidia.com/gpu")]), "Progressing"),
    (
        _q3d([_cond("Ready", "False", "PlanInfeasible"), _cond("PlanFeasible", "False", "PlanInfeasible", "no fit")]),
        "Degraded",
    ),
    (_q3d([_cond("Ready", "False", "SecretMissing")]), "Degraded"),
    (_q3d([_cond("Ready", "False", "ReplicasNotReady"), _cond("Degraded", "True", "DownloadFailed")]), "Degraded"),
]


@pytest.mark.parametrize(("obj", "expected"), DEPLOYMENT_CASES)
def test_qwen3deployment_health(obj: dict[str, Any], expected: str) -> None:
    status, message = _health((ARGOCD / "health-qwen3deployment.lua").read_text(), obj)
    assert status == expected
    assert message


def test_deployment_health_message_carries_the_operator_message() -> None:
    obj = _q3d(
        [_cond("Ready", "False", "PlanInfeasible"), _cond("PlanFeasible", "False", "PlanInfeasible", "use H100")]
    )
    assert _health((ARGOCD / "health-qwen3deployment.lua").read_text(), obj) == ("Degraded", "use H100")


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (_q3d(None), "Progressing"),
        (_q3d([_cond("Ready", "True", "Available")]), "Healthy"),
        (_q3d([_cond("Ready", "False", "RouterNotReady")]), "Progressing"),
        (_q3d([_cond("Ready", "False", "InvalidSpec"), _cond("Degraded", "True", "InvalidSpec")]), "Degraded"),
    ],
)
def test_qwen3router_health(obj: dict[str, Any], expected: str) -> None:
    assert _health((ARGOCD / "health-qwen3router.lua").read_text(), obj)[0] == expected


def test_argocd_configmap_embeds_the_tested_lua() -> None:
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    data = cm["data"]
    for kind, file in (("Qwen3Deployment", "health-qwen3deployment.lua"), ("Qwen3Router", "health-qwen3router.lua")):
        assert data[f"resource.customizations.health.qwenfleet.dev_{kind}"] == (ARGOCD / file).read_text()
    assert ".spec.replicas" in data["resource.customizations.ignoreDifferences.qwenfleet.dev_Qwen3Deployment"]
