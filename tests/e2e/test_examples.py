"""Every example in manifests/ is accepted by the API server and reported as its comment promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from qwenfleet.kube import Kube
from tests.e2e.operator_proc import OperatorProcess, wait_for

ROOT = Path(__file__).resolve().parents[2]
API = "qwenfleet.dev/v1alpha1"
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
# (kind, name) -> (condition type, status, reason or None): what each example must report.
EXPECTED: dict[str, tuple[str, str, str | None]] = {
    "qwen3-235b-on-l4": ("PlanFeasible", "False", "PlanInfeasible"),
    "qwen3": ("Ready", "True", "Available"),  # the router
}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _condition(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == ctype:
            return dict(cond)
    return None


def test_every_size_that_fits_a_common_gpu_has_an_example() -> None:
    models = {d["spec"]["model"] for p in EXAMPLES for d in _docs(p) if d["kind"] == "Qwen3Deployment"}
    for size in ("0.6B", "1.7B", "4B", "8B", "14B", "32B", "30B-A3B", "235B-A22B"):
        assert f"Qwen3-{size}" in models, size
    kinds = {(d["kind"], (d["spec"].get("autoscaling") or {}).get("mode")) for p in EXAMPLES for d in _docs(p)}
    assert ("Qwen3Router", None) in kinds and ("Qwen3Deployment", "keda") in kinds
    assert ("HTTPRoute", None) in kinds  # an inference gateway's route to a router's InferencePool


async def test_every_example_is_accepted_and_reports_as_promised(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    objects = []
    for path in [*EXAMPLES, ROOT / "manifests" / "demo" / "fleet.yaml"]:
        for doc in _docs(path):
            name = doc["metadata"]["name"]
            if path.parent.name == "demo":
                name = doc["metadata"]["name"] = f"demo-{name}"
                for backend in doc["spec"].get("backends", []):
                    backend["name"] = f"demo-{backend['name']}"
                    for key in ("spilloverTo", "fallback"):
                        if key in backend:
                            backend[key] = f"demo-{backend[key]}"
                for key in ("defaultBackend",):
                    if key in doc["spec"]:
                        doc["spec"][key] = f"demo-{doc['spec'][key]}"
                for rule in doc["spec"].get("rules", []):
                    rule["backend"] = f"demo-{rule['backend']}"
            doc["metadata"]["namespace"] = namespace
            await kube.apply(doc)  # the API server's schema and CEL rules accept it (Gateway API kinds too)
            if doc["apiVersion"] == API:
                objects.append((doc["kind"], name))

    missing: list[str] = []

    async def reported() -> bool:
        missing.clear()
        for kind, name in objects:
            obj = await kube.get(API, kind, name, namespace)
            ctype, status, reason = EXPECTED.get(name, ("PlanFeasible", "True", None))
            if kind == "Qwen3Router" and name not in EXPECTED:
                ctype, status, reason = "Ready", "True", "Available"
            cond = _condition(obj, ctype)
            if not cond or cond["status"] != status or (reason and cond["reason"] != reason):
                missing.append(f"{kind}/{name}: {ctype}={cond and cond['status']} ({cond and cond['reason']})")
        return not missing

    try:
        await wait_for(reported, 120, "every example reporting as expected", detail=lambda: missing)
    finally:
        for kind, name in objects:
            await kube.delete(API, kind, name, namespace)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_files_say_what_they_show(path: Path) -> None:
    assert path.read_text().startswith("#"), f"{path.name} should open with a comment saying what it shows"
