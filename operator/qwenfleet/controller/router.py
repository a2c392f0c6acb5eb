"""The Qwen3Router reconcile: routes ConfigMap, RBAC, router Deployment, Service and PDB, the InferencePools of
its Endpoint Picker; status."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from pydantic import ValidationError

from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.controller.applied import OWNER_LABEL, CachingApplier
from qwenfleet.controller.conditions import now_rfc3339
from qwenfleet.controller.deployment import APPLY_RETRY_SECONDS, Outcome, apply_until_refused, write_status
from qwenfleet.kube import Kube, KubeError
from qwenfleet.render import Owner
from qwenfleet.render.names import selector, selector_string
from qwenfleet.render.router import POOL_API, render_inference_pools, render_router, router_names
from qwenfleet.render.status import RouterView, router_status

KIND = "Qwen3Router"
Obj = dict[str, Any]


async def reconcile_router(
    kube: Kube,
    body: Obj,
    ready_by_backend: Mapping[str, int],
    existing: Collection[str],
    applier: CachingApplier | None = None,
    *,
    pools_installed: bool = False,
    multi_node: frozenset[str] = frozenset(),
) -> Outcome:
    """Bring one Qwen3Router's children and status to the desired state.

    `ready_by_backend` counts ready replicas (not pods) per backend; `existing` names the Qwen3Deployments
    of the namespace, so backends without one are reported (the router keeps serving the others).
    `pools_installed`: the InferencePool CRD exists; `multi_node`: backends whose replicas span nodes (their
    pools select leaders only).
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
    pools = render_inference_pools(owner, spec, multi_node) if pools_installed else []
    applied, refusal = await apply_until_refused(kube, applier, render_router(owner, spec) + pools)
    if refusal is None and pools_installed:
        await _prune_pools(kube, applier, owner, {p["metadata"]["name"] for p in pools})
    if refusal is not None:
        view = RouterView(generation=generation, apply_error=refusal)
        outcome = await write_status(kube, KIND, body, *router_status(view, status, now_rfc3339()))
        outcome.retry_after = APPLY_RETRY_SECONDS
        return outcome
    workload = applied["Deployment"].get("status") or {}
    spent = bool((status.get("cost") or {}).get("externalBudgetExhausted"))  # the cost loop reads the router pods
    view = RouterView(
        generation=generation,
        desired=spec.replicas,
        replicas=int(workload.get("replicas") or 0),
        ready=int(workload.get("readyReplicas") or 0),
        endpoint=f"http://{router_names(owner)['service']}.{namespace}.svc/v1",
        selector=selector_string(selector(name, "router")),
        backends=[(b.name, ready_by_backend.get(b.name, 0)) for b in spec.backends],
        missing=[b.name for b in spec.backends if b.external is None and b.name not in existing],
        pools=sorted(p["metadata"]["name"] for p in pools),
        pools_crd_missing=spec.endpoint_picker.enabled and spec.endpoint_picker.inference_pools and not pools_installed,
        budget_exhausted=spec.external_daily_budget_usd if spent else None,
    )
    return await write_status(kube, KIND, body, *router_status(view, status, now_rfc3339()))


async def _prune_pools(kube: Kube, applier: CachingApplier | None, owner: Owner, wanted: set[str]) -> None:
    """Delete this router's InferencePools that the spec no longer calls for (a backend removed, the picker off)."""
    match = {OWNER_LABEL: owner.name, "app.kubernetes.io/component": "router"}
    names = applier.known(POOL_API, "InferencePool", owner.namespace, match) if applier else None
    if names is None:
        selector_text = ",".join(f"{k}={v}" for k, v in match.items())
        found = await kube.list(POOL_API, "InferencePool", owner.namespace, label_selector=selector_text)
        names = [o["metadata"]["name"] for o in found]
    for name in names:
        if name not in wanted:
            try:
                await kube.delete(POOL_API, "InferencePool", name, owner.namespace)
            except KubeError as exc:
                if exc.status != 404:
                    raise
