"""The Qwen3Deployment reconcile: load -> plan -> check -> render -> apply -> status. Level-based, idempotent."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from qwenfleet.api.deployment import AutoscalingMode, Qwen3DeploymentSpec
from qwenfleet.api.plan import Plan
from qwenfleet.catalog import Precision
from qwenfleet.controller.applied import CachingApplier
from qwenfleet.controller.conditions import Cond, merge_conditions, now_rfc3339, status_changed
from qwenfleet.kube import Kube, KubeError
from qwenfleet.planner import PlanInfeasible, PlanRequest, plan
from qwenfleet.render import Capabilities, DeploymentInput, Owner, desired_children, endpoint, serving_selector
from qwenfleet.render.names import (
    GROUP,
    cache_pvc_name,
    download_job_name,
    nodepool_name,
    selector_string,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]
API_VERSION = "qwenfleet.dev/v1alpha1"
KIND = "Qwen3Deployment"
FINALIZER = f"{GROUP}/cleanup"
RETRY_SOON_SECONDS = 10.0


@dataclass(frozen=True)
class PodState:
    """What the reconcile needs to know about one model-server pod (kept small for the index)."""

    name: str
    phase: str
    ready: bool
    unschedulable: str | None = None
    node: str | None = None
    ip: str | None = None


@dataclass
class Outcome:
    """The result of one reconcile: the status written (if any), Events to post, and when to look again."""

    status: Obj
    wrote_status: bool
    events: list[tuple[str, str, str]] = field(default_factory=list)
    retry_after: float | None = None


class Blocked(Exception):
    """A precondition that stops the reconcile before any child is applied."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def plan_request(spec: Qwen3DeploymentSpec) -> PlanRequest:
    """The planner's view of a spec."""
    o = spec.overrides
    return PlanRequest(
        model=spec.model,
        gpu=spec.gpu,
        precision=Precision(spec.precision),
        max_model_len=spec.max_model_len,
        tensor_parallel_size=o.tensor_parallel_size if o else None,
        gpu_memory_utilization=o.gpu_memory_utilization if o and o.gpu_memory_utilization else 0.9,
        max_num_seqs=o.max_num_seqs if o and o.max_num_seqs else 256,
        kv_cache_fp8=bool(o and o.kv_cache_dtype == "fp8"),
        thinking_default=spec.thinking_by_default,
        price_per_gpu_hour_usd=spec.pricing.gpu_hour_usd if spec.pricing else None,
    )


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
            raise Blocked("SecretMissing", f"Secret {ref.name!r} (Hugging Face token) does not exist in {namespace}")
        if ref.key not in (secret.get("data") or {}):
            raise Blocked("SecretMissing", f"Secret {ref.name!r} has no key {ref.key!r}")
    pvc = spec.weights.pvc if spec.weights else None
    if pvc and await kube.get("v1", "PersistentVolumeClaim", pvc.claim_name, namespace) is None:
        raise Blocked("PVCMissing", f"PersistentVolumeClaim {pvc.claim_name!r} (weights) does not exist in {namespace}")
    needs = []
    if p.nodes_per_replica > 1:
        needs.append(("leaderworkersets.leaderworkerset.x-k8s.io", "LeaderWorkerSet", "a replica spans nodes"))
    if spec.autoscaling and spec.autoscaling.mode == AutoscalingMode.KEDA:
        needs.append(("scaledobjects.keda.sh", "KEDA", "autoscaling.mode is keda"))
    pool = spec.node_pool
    if pool and pool.provisioner == "karpenter":
        needs.append(("nodepools.karpenter.sh", "Karpenter", "nodePool.provisioner is karpenter"))
    for crd, what, why in needs:
        if not await kube.crd_exists(crd):
            raise Blocked(f"{what.replace(' ', '')}Missing", f"{what} is not installed ({crd}) but {why}")


async def _cache_state(kube: Kube, inp: DeploymentInput) -> Cond:
    if not inp.cache_enabled:
        reason = "UserVolume" if inp.user_pvc else "CacheDisabled"
        message = "weights are read from your volume" if inp.user_pvc else "each pod downloads the weights"
        return Cond("ModelCached", True, reason, message)
    job_name = download_job_name(inp.owner.name, inp.repo, inp.revision)
    job = await kube.get("batch/v1", "Job", job_name, inp.owner.namespace)
    st = (job or {}).get("status") or {}
    if st.get("succeeded"):
        return Cond(
            "ModelCached", True, "Downloaded", f"{inp.repo}@{inp.revision} is in {cache_pvc_name(inp.owner.name)}"
        )
    failed = next(
        (c for c in st.get("conditions", []) if c.get("type") == "Failed" and c.get("status") == "True"), None
    )
    if failed:
        return Cond("ModelCached", False, "DownloadFailed", f"job {job_name}: {failed.get('message', '')}")
    active = "running" if st.get("active") else "pending"
    attempts = st.get("failed", 0)
    return Cond(
        "ModelCached",
        False,
        "Downloading",
        f"job {job_name} {active} (attempt {attempts + 1}); estimated {inp.plan.download_seconds}s for "
        f"{inp.plan.weight_bytes_total / 1e9:.1f} GB",
    )


async def _prune(kube: Kube, inp: DeploymentInput, children: list[Obj], applier: CachingApplier | None) -> None:
    """Delete children we made earlier that the spec no longer calls for (never the user's PVC)."""
    wanted = {(c["kind"], c["metadata"]["name"]) for c in children}
    ns, name = inp.owner.namespace, inp.owner.name
    optional = [
        ("apps/v1", "Deployment", name),
        ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", name),
        ("monitoring.coreos.com/v1", "ServiceMonitor", name),
        ("keda.sh/v1alpha1", "ScaledObject", name),
    ]
    for api_version, kind, obj_name in optional:
        if (kind, obj_name) not in wanted:
            try:  # only what exists (the watch knows, else a read): the steady state sends nothing
                known = applier.exists(api_version, kind, ns, obj_name) if applier else None
                if known is False:
                    continue
                if known or await kube.get(api_version, kind, obj_name, ns) is not None:
                    await kube.delete(api_version, kind, obj_name, ns)
            except KubeError as exc:
                if exc.status != 404 and "could not find the requested resource" not in exc.message:
                    raise
    if inp.cache_enabled:
        current_job = download_job_name(name, inp.repo, inp.revision)
        for job in await kube.list("batch/v1", "Job", ns, label_selector=f"{GROUP}/deployment={name}"):
            if job["metadata"]["name"] != current_job:
                await kube.delete("batch/v1", "Job", job["metadata"]["name"], ns)


def _workload_conditions(
    workload: Obj, replicas: int, pods: list[PodState], cache: Cond, generation: int
) -> tuple[list[Cond], Obj]:
    st = workload.get("status") or {}
    ready = int(st.get("readyReplicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    current = int(st.get("replicas") or 0)
    observed = int(st.get("observedGeneration") or 0) >= int(workload["metadata"].get("generation") or 0)
    unschedulable = [p for p in pods if p.unschedulable]
    counts = {"replicas": current, "readyReplicas": ready, "updatedReplicas": updated, "desiredReplicas": replicas}
    if unschedulable:
        msg = f"{len(unschedulable)} pod(s) cannot be scheduled: {unschedulable[0].unschedulable}"
        return [
            Cond("Ready", ready >= replicas > 0, "Unschedulable", msg),
            Cond("Progressing", False, "Unschedulable", msg),
            Cond("Degraded", True, "Unschedulable", msg),
        ], counts
    if cache.status is not True:
        return [
            Cond("Ready", False, "WaitingForModelCache", cache.message),
            Cond("Progressing", True, "WaitingForModelCache", cache.message),
            Cond("Degraded", cache.reason == "DownloadFailed", cache.reason, cache.message),
        ], counts
    done = observed and ready >= replicas and updated >= replicas and current == replicas
    if replicas == 0:
        ready_cond = Cond("Ready", True, "ScaledToZero", "no replicas wanted; a request through the router wakes it")
    elif ready >= replicas:
        ready_cond = Cond("Ready", True, "Available", f"{ready}/{replicas} replicas ready")
    else:
        ready_cond = Cond("Ready", False, "ReplicasNotReady", f"{ready}/{replicas} replicas ready")
    progressing = (
        Cond("Progressing", False, "RolloutComplete", f"generation {generation} rolled out")
        if done
        else Cond("Progressing", True, "RollingOut", f"{updated}/{replicas} updated, {ready}/{replicas} ready")
    )
    return [ready_cond, progressing, Cond("Degraded", False, "AsExpected", "")], counts


async def _nodepool_condition(kube: Kube, inp: DeploymentInput) -> Cond:
    pool = inp.spec.node_pool
    if pool is None or pool.provisioner == "none":
        return Cond("NodePoolReady", True, "ExistingNodes", f"scheduling on nodes labelled {inp.gpu.product_label}")
    name = pool.shared_pool_name or nodepool_name(inp.owner.namespace, inp.owner.name)
    obj = await kube.get("karpenter.sh/v1", "NodePool", name)
    if obj is None:
        return Cond("NodePoolReady", False, "NodePoolMissing", f"NodePool {name} does not exist")
    ready = next((c for c in (obj.get("status") or {}).get("conditions", []) if c.get("type") == "Ready"), None)
    if ready is None:
        return Cond("NodePoolReady", None, "Pending", f"NodePool {name} has no Ready condition yet")
    return Cond("NodePoolReady", ready.get("status") == "True", str(ready.get("reason") or "Ready"), f"NodePool {name}")


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
        return await _blocked(kube, body, status, "InvalidSpec", f"spec.{where}: {first.get('msg')}", generation)
    except PlanInfeasible as exc:
        return await _blocked(kube, body, status, "PlanInfeasible", str(exc), generation)
    except Blocked as exc:
        return await _blocked(kube, body, status, exc.reason, exc.message, generation)

    replicas = desired_replicas(spec, status)
    probe = DeploymentInput(owner=owner, spec=spec, plan=the_plan, replicas=replicas, capabilities=caps)
    cache = await _cache_state(kube, probe)
    cache_ready = cache.status is True
    inp = DeploymentInput(
        owner=owner,
        spec=spec,
        plan=the_plan,
        replicas=replicas if cache_ready else 0,
        cache_ready=cache_ready,
        capabilities=caps,
    )
    children = desired_children(inp)
    applied: dict[str, Obj] = {}
    apply = applier.apply if applier else kube.apply
    for child in children:
        applied[child["kind"]] = await apply(child)
    await _prune(kube, inp, children, applier)

    workload = applied["LeaderWorkerSet" if the_plan.nodes_per_replica > 1 else "Deployment"]
    conds, counts = _workload_conditions(workload, replicas, pods, cache, generation)
    conds += [cache, await _nodepool_condition(kube, inp), Cond("PlanFeasible", True, "Planned", _plan_line(the_plan))]
    desired_status: Obj = {
        "observedGeneration": generation,
        "plan": the_plan.to_wire(),
        **counts,
        "readySummary": f"{counts['readyReplicas']}/{replicas}",
        "selector": selector_string(serving_selector(inp)),
        "endpoint": endpoint(inp),
    }
    if inp.cache_enabled:
        desired_status["cache"] = {
            "phase": {"Downloaded": "Ready", "DownloadFailed": "Failed"}.get(cache.reason, "Downloading"),
            "message": cache.message,
            "pvcName": cache_pvc_name(name),
        }
    return await write_status(kube, KIND, body, status, desired_status, conds, generation)


def _plan_line(p: Plan) -> str:
    ep = ", expert parallel" if p.expert_parallel else ""
    nodes = f" across {p.nodes_per_replica} nodes" if p.nodes_per_replica > 1 else ""
    return (
        f"{p.gpus_per_replica} x {p.gpu}{nodes} per replica, TP {p.tensor_parallel_size}{ep}, context {p.max_model_len}"
    )


async def _blocked(kube: Kube, body: Obj, status: Obj, reason: str, message: str, generation: int) -> Outcome:
    """Nothing is applied: the children stay as they were; status says why."""
    conds = [
        Cond("Ready", False, reason, message),
        Cond("Progressing", False, reason, message),
        Cond("Degraded", True, reason, message),
    ]
    if reason in ("PlanInfeasible", "InvalidSpec"):
        conds.append(Cond("PlanFeasible", False, reason, message))
    outcome = await write_status(kube, KIND, body, status, {"observedGeneration": generation}, conds, generation)
    outcome.retry_after = None if reason in ("PlanInfeasible", "InvalidSpec") else RETRY_SOON_SECONDS
    return outcome


async def write_status(
    kube: Kube, kind: str, body: Obj, status: Obj, desired: Obj, conds: list[Cond], generation: int
) -> Outcome:
    """Merge conditions, patch status if anything we own changed, and list Events for condition flips."""
    old_conditions: list[Obj] = list(status.get("conditions") or [])
    desired["conditions"] = merge_conditions(old_conditions, conds, generation, now_rfc3339())
    events: list[tuple[str, str, str]] = []
    old = {c.get("type"): (c.get("status"), c.get("reason")) for c in old_conditions}
    for cond in conds:
        flipped = old.get(cond.type) != (cond.status_text, cond.reason)
        # Ready from its first value on; the others only when they change (their first value is no news).
        if flipped and (cond.type == "Ready" or (cond.type in ("ModelCached", "NodePoolReady") and cond.type in old)):
            event_type = "Normal" if cond.status is not False else "Warning"
            events.append((event_type, cond.reason, f"{cond.type}={cond.status_text}: {cond.message}"))
    if not status_changed(status, desired):
        return Outcome(status=status, wrote_status=False, events=events)
    meta = body["metadata"]
    await kube.patch_status(API_VERSION, kind, meta["namespace"], meta["name"], desired)
    return Outcome(status={**status, **desired}, wrote_status=True, events=events)


async def finalize_deployment(kube: Kube, body: Obj) -> None:
    """Delete what owner references cannot: our cluster-scoped NodePool. Never a user's PVC or a shared pool."""
    meta = body["metadata"]
    spec = body.get("spec") or {}
    pool = spec.get("nodePool") or {}
    if pool.get("provisioner") == "karpenter" and not pool.get("sharedPoolName"):
        await kube.delete("karpenter.sh/v1", "NodePool", nodepool_name(meta["namespace"], meta["name"]))
