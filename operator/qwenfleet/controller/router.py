"""The Qwen3Router reconcile: routes ConfigMap, RBAC, router Deployment, Service and PDB; status."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.controller.applied import CachingApplier
from qwenfleet.controller.conditions import Cond
from qwenfleet.controller.deployment import Outcome, write_status
from qwenfleet.kube import Kube
from qwenfleet.render import Owner
from qwenfleet.render.names import selector, selector_string
from qwenfleet.render.router import render_router, router_names

KIND = "Qwen3Router"
Obj = dict[str, Any]


async def reconcile_router(
    kube: Kube, body: Obj, ready_by_backend: dict[str, int], applier: CachingApplier | None = None
) -> Outcome:
    """Bring one Qwen3Router's children and status to the desired state."""
    meta = body["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], int(meta.get("generation") or 0)
    status: Obj = dict(body.get("status") or {})
    try:
        spec = Qwen3RouterSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        message = f"spec.{'.'.join(str(x) for x in first.get('loc', ()))}: {first.get('msg')}"
        conds = [Cond("Ready", False, "InvalidSpec", message), Cond("Degraded", True, "InvalidSpec", message)]
        return await write_status(kube, KIND, body, status, {"observedGeneration": generation}, conds, generation)
    owner = Owner(name=name, namespace=namespace, uid=meta["uid"], kind=KIND)
    applied = {}
    apply = applier.apply if applier else kube.apply
    for child in render_router(owner, spec):
        applied[child["kind"]] = await apply(child)
    workload = applied["Deployment"].get("status") or {}
    ready = int(workload.get("readyReplicas") or 0)
    backends = [{"name": b.name, "readyReplicas": ready_by_backend.get(b.name, 0)} for b in spec.backends]
    serving = [b.name for b in spec.backends if ready_by_backend.get(b.name, 0)]
    if ready >= spec.replicas and spec.replicas > 0:
        ready_cond = Cond("Ready", True, "Available", f"{ready}/{spec.replicas} router pods; backends ready: "
                          f"{', '.join(serving) or 'none (requests wake them)'}")  # fmt: skip
    else:
        ready_cond = Cond("Ready", False, "RouterNotReady", f"{ready}/{spec.replicas} router pods ready")
    conds = [ready_cond, Cond("Degraded", False, "AsExpected", "")]
    desired = {
        "observedGeneration": generation,
        "replicas": int(workload.get("replicas") or 0),
        "readyReplicas": ready,
        "endpoint": f"http://{router_names(owner)['service']}.{namespace}.svc/v1",
        "selector": selector_string(selector(name, "router")),
        "backends": backends,
    }
    return await write_status(kube, KIND, body, status, desired, conds, generation)
