"""The Qwen3Router reconcile: routes ConfigMap, RBAC, router Deployment, Service and PDB; status."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from pydantic import ValidationError

from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.controller.applied import CachingApplier
from qwenfleet.controller.conditions import now_rfc3339
from qwenfleet.controller.deployment import APPLY_RETRY_SECONDS, Outcome, apply_until_refused, write_status
from qwenfleet.kube import Kube
from qwenfleet.render import Owner
from qwenfleet.render.names import selector, selector_string
from qwenfleet.render.router import render_router, router_names
from qwenfleet.render.status import RouterView, router_status

KIND = "Qwen3Router"
Obj = dict[str, Any]


async def reconcile_router(
    kube: Kube,
    body: Obj,
    ready_by_backend: Mapping[str, int],
    existing: Collection[str],
    applier: CachingApplier | None = None,
) -> Outcome:
    """Bring one Qwen3Router's children and status to the desired state.

    `ready_by_backend` counts ready replicas (not pods) per backend; `existing` names the Qwen3Deployments
    of the namespace, so backends without one are reported (the router keeps serving the others).
    """
    meta = body["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], int(meta.get("generation") or 0)
    status: Obj = dict(body.get("status") or {})
    try:
        spec = Qwen3RouterSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        message = f"spec.{'.'.join(str(x) for x in first.get('loc', ()))}: {first.get('msg')}"
        view = RouterView(generation=generation, invalid=message)
        return await write_status(kube, KIND, body, *router_status(view, status, now_rfc3339()))
    owner = Owner(name=name, namespace=namespace, uid=meta["uid"], kind=KIND)
    applied, refusal = await apply_until_refused(kube, applier, render_router(owner, spec))
    if refusal is not None:
        view = RouterView(generation=generation, apply_error=refusal)
        outcome = await write_status(kube, KIND, body, *router_status(view, status, now_rfc3339()))
        outcome.retry_after = APPLY_RETRY_SECONDS
        return outcome
    workload = applied["Deployment"].get("status") or {}
    view = RouterView(
        generation=generation,
        desired=spec.replicas,
        replicas=int(workload.get("replicas") or 0),
        ready=int(workload.get("readyReplicas") or 0),
        endpoint=f"http://{router_names(owner)['service']}.{namespace}.svc/v1",
        selector=selector_string(selector(name, "router")),
        backends=[(b.name, ready_by_backend.get(b.name, 0)) for b in spec.backends],
        missing=[b.name for b in spec.backends if b.name not in existing],
    )
    return await write_status(kube, KIND, body, *router_status(view, status, now_rfc3339()))
