"""The Qwen3Deployment reconcile: load -> plan -> check -> render -> apply -> status. Level-based, idempotent."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from qwenfleet.api.base import API_VERSION, ApiModel
from qwenfleet.api.deployment import AutoscalingMode, Qwen3DeploymentSpec
from qwenfleet.api.plan import Plan
from qwenfleet.api.status import BLOCKING_REASONS, SPEC_REASONS, Cond, ConditionType, Reason, condition_events
from qwenfleet.controller.applied import CachingApplier
from qwenfleet.controller.conditions import now_rfc3339
from qwenfleet.kube import Kube, KubeError
from qwenfleet.planner import PlanInfeasible, plan, plan_request
from qwenfleet.render import Capabilities, DeploymentInput, Owner, desired_children, endpoint, serving_selector
from qwenfleet.render.names import GROUP, download_job_name, nodepool_name, selector_string
from qwenfleet.render.nodepool import owned_pool_name, scheduling_pool_name
from qwenfleet.render.status import (
    DEPLOYMENT_STATUS_FIELDS,
    ROUTER_STATUS_FIELDS,
    DeploymentView,
    PodState,
    WorkloadCounts,
    deployment_status,
    status_patch,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]
KIND = "Qwen3Deployment"
FINALIZER = f"{GROUP}/cleanup"
RETRY_SOON_SECONDS = 10.0
STATUS_DEFER_SECONDS = 10.0
APPLY_RETRY_SECONDS = 30.0
T = ConditionType
R = Reason
WORKLOAD_KINDS = {"Deployment": "apps/v1", "LeaderWorkerSet": "leaderworkerset.x-k8s.io/v1"}
CACHE_KINDS = (("v1", "PersistentVolumeClaim"), ("batch/v1", "Job"))
NODEPOOL_API = "karpenter.sh/v1"

__all__ = [
    "FINALIZER",
    "Outcome",
    "PodState",
    "delete_owned_pool",
    "finalize_deployment",
    "owns_nodepool",
    "reconcile_deployment",
    "refused",
    "status_deferral",
    "write_status",
]


@dataclass
class Outcome:
    """The result of one reconcile: the status written (if any), Events to post, and when to look again."""

    status: Obj
    wrote_status: bool
    events: list[tuple[str, str, str]] = field(default_factory=list)
    retry_after: float | None = None


class Blocked(Exception):
    """A precondition that stops the reconcile before any child is applied."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def desired_replicas(spec: Qwen3DeploymentSpec, status: Obj) -> int:
    """Replicas the workload should have now; exactly one writer decides per autoscaling mode."""
    scaling = spec.autoscaling
    mode = scaling.mode if scaling else AutoscalingMode.NONE
    if mode == AutoscalingMode.NONE or scaling is None:
        return spec.replicas if spec.replicas is not None else 1
    if mode == AutoscalingMode.KEDA:
        return spec.replicas if spec.replicas is not None else scaling.min_replicas
    decided = (status.get("autoscaler") or {}).get("desiredReplicas")
    replicas = scaling.min_replicas if decided is None else int(decided)
    return max(0, min(scaling.max_replicas, replicas))


async def _check_preconditions(kube: Kube, spec: Qwen3DeploymentSpec, p: Plan, namespace: str) -> None:
    hf = spec.weights.hugging_face if spec.weights else None
    ref = hf.token_secret_ref if hf else None
    if ref:
        secret = await kube.get("v1", "Secret", ref.name, namespace)
        if secret is None:
            raise Blocked(R.SECRET_MISSING, f"Secret {ref.name!r} (Hugging Face token) does not exist in {namespace}")
        if ref.key not in (secret.get("data") or {}):
            raise Blocked(R.SECRET_MISSING, f"Secret {ref.name!r} has no key {ref.key!r}")
    pvc = spec.weights.pvc if spec.weights else None
    if pvc and await kube.get("v1", "PersistentVolumeClaim", pvc.claim_name, namespace) is None:
        raise Blocked(
            R.PVC_MISSING, f"PersistentVolumeClaim {pvc.claim_name!r} (weights) does not exist in {namespace}"
        )
    for claim in spec.adapter_claims:
        if await kube.get("v1", "PersistentVolumeClaim", claim, namespace) is None:
            raise Blocked(R.PVC_MISSING, f"PersistentVolumeClaim {claim!r} (adapters) does not exist in {namespace}")
    needs: list[tuple[str, Reason, str, str]] = []
    if p.workload_kind == "LeaderWorkerSet":
        needs.append(("leaderworkersets.leaderworkerset.x-k8s.io", R.LEADER_WORKER_SET_MISSING, "LeaderWorkerSet",
                      "a replica spans nodes"))  # fmt: skip
    if spec.autoscaling and spec.autoscaling.mode == AutoscalingMode.KEDA:
        needs.append(("scaledobjects.keda.sh", R.KEDA_MISSING, "KEDA", "autoscaling.mode is keda"))
    pool = spec.node_pool
    if pool and pool.provisioner == "karpenter":
        needs.append(("nodepools.karpenter.sh", R.KARPENTER_MISSING, "Karpenter", "nodePool.provisioner is karpenter"))
    for crd, reason, what, why in needs:
        if not await kube.crd_exists(crd):
            raise Blocked(reason, f"{what} is not installed ({crd}) but {why}")


async def _cache_state(kube: Kube, inp: DeploymentInput) -> Cond:
    """ModelCached: whether the cache of this checkpoint is filled (from its download Job)."""
    if not inp.cache_enabled:
        if inp.user_pvc:
            return Cond(T.MODEL_CACHED, True, R.USER_VOLUME, "weights are read from your volume")
        return Cond(T.MODEL_CACHED, True, R.CACHE_DISABLED, "each pod downloads the weights")
    job_name = download_job_name(inp.owner.name, inp.repo, inp.revision)
    job = await kube.get("batch/v1", "Job", job_name, inp.owner.namespace)
    st = (job or {}).get("status") or {}
    if st.get("succeeded"):
        return Cond(T.MODEL_CACHED, True, R.DOWNLOADED, f"{inp.repo}@{inp.revision} is in {inp.cache_pvc}")
    failed = next(
        (c for c in st.get("conditions", []) if c.get("type") == "Failed" and c.get("status") == "True"), None
    )
    if failed:
        return Cond(T.MODEL_CACHED, False, R.DOWNLOAD_FAILED, f"job {job_name}: {failed.get('message', '')}")
    active = "running" if st.get("active") else "pending"
    attempts = st.get("failed", 0)
    return Cond(
        T.MODEL_CACHED,
        False,
        R.DOWNLOADING,
        f"job {job_name} {active} (attempt {attempts + 1}) fills {inp.cache_pvc} with {inp.repo}@{inp.revision}; "
        f"estimated {inp.plan.download_seconds}s for {inp.plan.weight_bytes_total / 1e9:.1f} GB",
    )


@dataclass(frozen=True)
class Existing:
    """The model-server workload as it is in the cluster: its kind, object, weights claim and replicas."""

    kind: str
    obj: Obj
    claim: str | None
    replicas: int


def weights_claim(workload: Obj) -> str | None:
    """The PVC a workload's pods mount as their weights, if any."""
    spec = workload.get("spec") or {}
    template = spec.get("template") or (spec.get("leaderWorkerTemplate") or {}).get("leaderTemplate") or {}
    for volume in (template.get("spec") or {}).get("volumes") or []:
        if volume.get("name") == "weights":
            return (volume.get("persistentVolumeClaim") or {}).get("claimName")
    return None


async def _existing_workload(kube: Kube, inp: DeploymentInput, applier: CachingApplier | None) -> Existing | None:
    ns, name = inp.owner.namespace, inp.owner.name
    for kind, api_version in WORKLOAD_KINDS.items():
        if applier and applier.exists(api_version, kind, ns, name) is False:
            continue
        obj = await kube.get(api_version, kind, name, ns)
        if obj is not None:
            replicas = int((obj.get("spec") or {}).get("replicas") or 0)
            return Existing(kind, obj, weights_claim(obj), replicas)
    return None


async def _owned_names(
    kube: Kube, applier: CachingApplier | None, api_version: str, kind: str, namespace: str, deployment: str
) -> list[str]:
    """Our model-cache objects of one kind for a deployment: from the watch when it knows, else a list."""
    match = {f"{GROUP}/deployment": deployment, "app.kubernetes.io/component": "model-cache"}
    known = applier.known(api_version, kind, namespace, match) if applier else None
    if known is not None:
        return known
    selector = ",".join(f"{k}={v}" for k, v in match.items())
    return [o["metadata"]["name"] for o in await kube.list(api_version, kind, namespace, label_selector=selector)]


async def _delete_if_present(kube: Kube, applier: CachingApplier | None, api_version: str, kind: str, ns: str,
                             name: str) -> None:  # fmt: skip
    try:  # only what exists (the watch knows, else a read): the steady state sends nothing
        known = applier.exists(api_version, kind, ns, name) if applier else None
        if known is False:
            return
        if known or await kube.get(api_version, kind, name, ns) is not None:
            await kube.delete(api_version, kind, name, ns)
    except KubeError as exc:
        if exc.status != 404 and "could not find the requested resource" not in exc.message:
            raise


async def _prune(
    kube: Kube,
    inp: DeploymentInput,
    children: list[Obj],
    applier: CachingApplier | None,
    *,
    keep_kind: str | None,
    rolled_out: bool,
    generation: int,
) -> None:
    """Delete children we made earlier that the spec no longer calls for (never the user's PVC).

    A workload kept serving the previous weights (`keep_kind`) stays; caches of other checkpoints go only once
    the rollout onto the current one is complete.
    """
    wanted = {(c["kind"], c["metadata"]["name"]) for c in children}
    ns, name = inp.owner.namespace, inp.owner.name
    optional = [(api, kind) for kind, api in WORKLOAD_KINDS.items()]
    optional += [("monitoring.coreos.com/v1", "ServiceMonitor"), ("keda.sh/v1alpha1", "ScaledObject")]
    for api_version, kind in optional:
        if (kind, name) not in wanted and kind != keep_kind:
            await _delete_if_present(kube, applier, api_version, kind, ns, name)
    if rolled_out:
        current = {c["metadata"]["name"] for c in children}
        for api_version, kind in CACHE_KINDS:
            for old in await _owned_names(kube, applier, api_version, kind, ns, name):
                if old not in current:
                    await kube.delete(api_version, kind, old, ns)
    if inp.capabilities.karpenter and owned_pool_name(inp.spec, ns, name) is None:
        # the watch of our NodePools knows whether one is left; unwatched, look once per generation (and after a
        # restart), not on every resync
        known = applier.exists(NODEPOOL_API, "NodePool", "", nodepool_name(ns, name)) if applier else None
        what = ("NodePool", ns, name)
        if known or (known is None and (applier is None or not applier.checked(what, generation))):
            await delete_owned_pool(kube, ns, name)
            if applier is not None:
                applier.remember(what, generation)


async def delete_owned_pool(kube: Kube, namespace: str, name: str) -> None:
    """Delete the NodePool this deployment owned, if it exists and carries our labels (never a shared pool)."""
    pool_name = nodepool_name(namespace, name)
    pool = await kube.get(NODEPOOL_API, "NodePool", pool_name)
    pool_labels = ((pool or {}).get("metadata") or {}).get("labels") or {}
    if pool_labels.get(f"{GROUP}/deployment") == name and pool_labels.get(f"{GROUP}/namespace") == namespace:
        await kube.delete(NODEPOOL_API, "NodePool", pool_name)


async def _nodepool_condition(kube: Kube, inp: DeploymentInput, applier: CachingApplier | None) -> Cond:
    pool_name = scheduling_pool_name(inp.spec, inp.owner.namespace, inp.owner.name)
    if pool_name is None:
        return Cond(T.NODE_POOL_READY, True, R.EXISTING_NODES, f"scheduling on nodes labelled {inp.gpu.product_label}")
    obj = applier.seen(NODEPOOL_API, "NodePool", "", pool_name) if applier else None
    if obj is None:  # not ours (a shared pool), or not seen yet: read it
        obj = await kube.get(NODEPOOL_API, "NodePool", pool_name)
    if obj is None:
        return Cond(T.NODE_POOL_READY, False, R.NODE_POOL_MISSING, f"NodePool {pool_name} does not exist")
    ready = next((c for c in (obj.get("status") or {}).get("conditions", []) if c.get("type") == "Ready"), None)
    if ready is None:
        return Cond(T.NODE_POOL_READY, None, R.NODE_POOL_PENDING, f"NodePool {pool_name} has no Ready condition yet")
    if ready.get("status") == "True":
        return Cond(T.NODE_POOL_READY, True, R.NODE_POOL_READY, f"NodePool {pool_name} is ready")
    detail = ": ".join(str(x) for x in (ready.get("reason"), ready.get("message")) if x)
    return Cond(T.NODE_POOL_READY, False, R.NODE_POOL_NOT_READY, f"NodePool {pool_name} is not ready: {detail}")


def refused(exc: KubeError) -> bool:
    """A refusal retrying will not fix: invalid, forbidden, unprocessable (not conflicts, throttling or 404s)."""
    return 400 <= exc.status < 500 and exc.status not in (404, 409, 429)


async def apply_until_refused(
    kube: Kube, applier: CachingApplier | None, children: Iterable[Obj]
) -> tuple[dict[str, Obj], str | None]:
    """Apply `children` in order (through `applier` if given) until the API server refuses one.

    Returns the applied objects by kind and what was refused and why (None if nothing was); other errors raise.
    """
    applied: dict[str, Obj] = {}
    apply = applier.apply if applier else kube.apply
    for child in children:
        try:
            applied[child["kind"]] = await apply(child)
        except KubeError as exc:
            if not refused(exc):
                raise
            return applied, f"{child['kind']} {child['metadata']['name']}: {exc.message}"
    return applied, None


async def reconcile_deployment(
    kube: Kube, body: Obj, pods: list[PodState], caps: Capabilities, applier: CachingApplier | None = None
) -> Outcome:
    """Bring one Qwen3Deployment's children and status to the desired state."""
    meta = body["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], int(meta.get("generation") or 0)
    status: Obj = dict(body.get("status") or {})
    owner = Owner(name=name, namespace=namespace, uid=meta["uid"])
    try:
        spec = Qwen3DeploymentSpec.model_validate(body.get("spec") or {})
        the_plan = plan(plan_request(spec))
        await _check_preconditions(kube, spec, the_plan, namespace)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        return await _blocked(kube, body, R.INVALID_SPEC, f"spec.{where}: {first.get('msg')}", generation)
    except PlanInfeasible as exc:
        return await _blocked(kube, body, R.PLAN_INFEASIBLE, str(exc), generation)
    except Blocked as exc:
        return await _blocked(kube, body, exc.reason, exc.message, generation)

    replicas = desired_replicas(spec, status)
    probe = DeploymentInput(owner=owner, spec=spec, plan=the_plan, replicas=replicas, capabilities=caps)
    cache = await _cache_state(kube, probe)
    cache_ready = cache.status is True
    existing = None if cache_ready else await _existing_workload(kube, probe, applier)
    # A new checkpoint is downloaded before the rollout switches to it: the workload keeps the old weights.
    held = existing if existing and existing.claim != probe.cache_pvc and existing.replicas > 0 else None
    inp = DeploymentInput(owner=owner, spec=spec, plan=the_plan, replicas=replicas if cache_ready else 0,
                          cache_ready=cache_ready, capabilities=caps)  # fmt: skip
    children = [c for c in desired_children(inp) if not (held and c["kind"] == the_plan.workload_kind)]
    applied, refusal = await apply_until_refused(kube, applier, children)
    if refusal is not None:
        log.warning("%s/%s: the API server refused %s", namespace, name, refusal)
    view = DeploymentView(
        generation=generation,
        plan=the_plan,
        desired_replicas=replicas,
        pods=pods,
        cache=cache,
        cache_pvc=inp.cache_pvc,
        nodepool=await _nodepool_condition(kube, inp, applier),
        selector=selector_string(serving_selector(inp)),
        endpoint=endpoint(inp),
        apply_error=refusal,
        held_for_cache=held is not None,
    )
    if refusal is not None:
        outcome = await write_status(kube, KIND, body, *deployment_status(view, status, now_rfc3339()))
        outcome.retry_after = APPLY_RETRY_SECONDS
        return outcome
    counts = WorkloadCounts.of(held.obj if held else applied[the_plan.workload_kind])
    rolled_out = held is None and cache_ready and counts.rolled_out(replicas)
    await _prune(kube, inp, children, applier, keep_kind=held.kind if held else None, rolled_out=rolled_out,
                 generation=generation)  # fmt: skip
    view = replace(view, workload=counts)
    if held is None and applier is not None:
        api_version = WORKLOAD_KINDS[the_plan.workload_kind]
        wait = status_deferral(
            counts.observed, applier.since_sent(api_version, the_plan.workload_kind, namespace, name)
        )
        if wait is not None:  # the workload's controller reports within moments: one status write, not two
            return Outcome(status=status, wrote_status=False, retry_after=wait)
    return await write_status(kube, KIND, body, *deployment_status(view, status, now_rfc3339()))


def status_deferral(workload_observed: bool, since_applied: float | None) -> float | None:
    """Seconds to hold the status write back, or None to write now.

    Right after we applied a new workload generation its controller has not reported on it yet; a status
    written now would be superseded moments later by the one that sees the rollout. Wait for that report (its
    watch event triggers the next pass), but never longer than STATUS_DEFER_SECONDS after the apply.
    """
    if workload_observed or since_applied is None or since_applied >= STATUS_DEFER_SECONDS:
        return None
    return STATUS_DEFER_SECONDS - since_applied


async def _blocked(kube: Kube, body: Obj, reason: Reason, message: str, generation: int) -> Outcome:
    """Nothing is applied: the children stay as they were; status says why and withdraws the plan."""
    assert reason in BLOCKING_REASONS
    view = DeploymentView(generation=generation, blocked=(reason, message))
    outcome = await write_status(
        kube, KIND, body, *deployment_status(view, dict(body.get("status") or {}), now_rfc3339())
    )
    outcome.retry_after = None if reason in SPEC_REASONS else RETRY_SOON_SECONDS
    return outcome


async def write_status(kube: Kube, kind: str, body: Obj, desired: ApiModel, conds: list[Cond]) -> Outcome:
    """Patch the fields of status we own if any changed, and list Events for condition flips."""
    current: Obj = dict(body.get("status") or {})
    wire = desired.to_wire()
    events = condition_events(list(current.get("conditions") or []), conds)
    owned = ROUTER_STATUS_FIELDS if kind == "Qwen3Router" else DEPLOYMENT_STATUS_FIELDS
    patch = status_patch(current, wire, owned)
    if patch is None:
        return Outcome(status=current, wrote_status=False, events=events)
    meta = body["metadata"]
    await kube.patch_status(API_VERSION, kind, meta["namespace"], meta["name"], patch)
    return Outcome(status={**current, **wire}, wrote_status=True, events=events)


def _spec_or_none(spec: Obj) -> Qwen3DeploymentSpec | None:
    try:
        return Qwen3DeploymentSpec.model_validate(spec)
    except ValidationError:
        return None


def owns_nodepool(spec: Obj, namespace: str, name: str) -> bool:
    """Whether this deployment owns a NodePool (and so needs the finalizer): the render rule, on a raw spec."""
    parsed = _spec_or_none(spec)
    return parsed is not None and owned_pool_name(parsed, namespace, name) is not None


async def finalize_deployment(kube: Kube, body: Obj) -> None:
    """Delete what owner references cannot: our cluster-scoped NodePool. Never a user's PVC or a shared pool."""
    meta = body["metadata"]
    if owns_nodepool(body.get("spec") or {}, meta["namespace"], meta["name"]):
        await delete_owned_pool(kube, meta["namespace"], meta["name"])
