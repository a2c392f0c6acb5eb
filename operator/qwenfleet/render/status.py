"""Status, computed once: (what one reconcile observed, the previous status) -> the typed status. Pure.

The controller gathers a `DeploymentView` (or a `RouterView`) and writes what these functions return, only
when it differs from what the API server holds. Nothing else builds a status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from qwenfleet.api.deployment import CacheStatus, Qwen3DeploymentStatus
from qwenfleet.api.plan import Plan
from qwenfleet.api.router import BackendStatus, Qwen3RouterStatus
from qwenfleet.api.status import SPEC_REASONS, Cond, ConditionType, Reason, merge_conditions
from qwenfleet.render.names import ROLE_LABEL

Obj = dict[str, Any]
T = ConditionType
R = Reason


@dataclass(frozen=True)
class PodState:
    """What the reconcile needs to know about one model-server pod (kept small for the index)."""

    name: str
    phase: str
    ready: bool
    unschedulable: str | None = None
    node: str | None = None
    ip: str | None = None
    role: str | None = None
    """`leader` or `worker` for a LeaderWorkerSet's pods; None for a Deployment's."""
    terminating: bool = False
    """Being deleted (it may still pass its readiness probe while it drains): never counted as ready."""

    @property
    def serving(self) -> bool:
        """True for pods that answer HTTP: every pod of a Deployment, the leaders of a LeaderWorkerSet."""
        return self.role != "worker"

    @property
    def ready_to_serve(self) -> bool:
        """A ready replica's serving pod with an address, not terminating: what every caller counts and dials."""
        return self.ready and self.serving and bool(self.ip) and not self.terminating


def pod_state(pod: Mapping[str, Any]) -> PodState:
    """What the operator, the autoscaler and the router read of one model-server pod: the one reading of its
    readiness, scheduling and deletion."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled") or {}
    unschedulable = None
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        unschedulable = str(scheduled.get("message") or "unschedulable")
    terminating = meta.get("deletionTimestamp") is not None
    return PodState(
        name=str(meta.get("name") or ""),
        phase=str(status.get("phase") or ""),
        ready=(conditions.get("Ready") or {}).get("status") == "True" and not terminating,
        unschedulable=unschedulable,
        node=(pod.get("spec") or {}).get("nodeName"),
        ip=status.get("podIP"),
        role=(meta.get("labels") or {}).get(ROLE_LABEL),
        terminating=terminating,
    )


def ready_replicas(pods: Iterable[PodState]) -> int:
    """Ready replicas, not pods: a LeaderWorkerSet's leader and its workers are one replica, counted by its
    leader (whose readiness on the OpenAI surface needs the whole group)."""
    return sum(1 for p in pods if p.ready and p.serving and not p.terminating)


def serving_ips(pods: Iterable[PodState]) -> list[str]:
    """Pod IPs of the ready replicas' serving pods (what the autoscaler scrapes and the router dials)."""
    return [p.ip for p in pods if p.ready_to_serve and p.ip]


@dataclass(frozen=True)
class WorkloadCounts:
    """The model-server workload's own counts (a LeaderWorkerSet counts groups, i.e. replicas)."""

    replicas: int = 0
    ready: int = 0
    updated: int = 0
    observed: bool = True

    @classmethod
    def of(cls, workload: Obj) -> WorkloadCounts:
        """Counts from a Deployment or LeaderWorkerSet object."""
        st = workload.get("status") or {}
        generation = int((workload.get("metadata") or {}).get("generation") or 0)
        return cls(
            replicas=int(st.get("replicas") or 0),
            ready=int(st.get("readyReplicas") or 0),
            updated=int(st.get("updatedReplicas") or 0),
            observed=int(st.get("observedGeneration") or 0) >= generation,
        )

    def rolled_out(self, desired: int) -> bool:
        """True when every desired replica runs the current template and is ready."""
        return self.observed and self.ready >= desired and self.updated >= desired and self.replicas == desired


@dataclass(frozen=True)
class DeploymentView:
    """Everything one reconcile of a Qwen3Deployment observed and decided."""

    generation: int
    blocked: tuple[Reason, str] | None = None
    """Nothing was applied: why (reason, message)."""
    apply_error: str | None = None
    """A child the API server refused: its kind, name and the server's message."""
    plan: Plan | None = None
    desired_replicas: int = 0
    workload: WorkloadCounts | None = None
    held_for_cache: bool = False
    """The workload keeps serving the previous weights while the cache of the new ones fills."""
    pods: Sequence[PodState] = ()
    cache: Cond | None = None
    cache_pvc: str | None = None
    nodepool: Cond | None = None
    selector: str = ""
    endpoint: str = ""


def plan_summary(p: Plan) -> str:
    """One line: GPUs, nodes, TP and context per replica."""
    ep = ", expert parallel" if p.expert_parallel else ""
    return f"{p.layout} per replica, TP {p.tensor_parallel_size}{ep}, context {p.max_model_len}"


def _failed(reason: Reason, message: str) -> list[Cond]:
    return [Cond(T.READY, False, reason, message), Cond(T.PROGRESSING, False, reason, message),
            Cond(T.DEGRADED, True, reason, message)]  # fmt: skip


def _ready(counts: WorkloadCounts, desired: int) -> Cond:
    if desired == 0:
        return Cond(T.READY, True, R.SCALED_TO_ZERO, "no replicas wanted; a request through the router wakes it")
    ratio = f"{counts.ready}/{desired} replicas ready"
    return Cond(T.READY, True, R.AVAILABLE, ratio) if counts.ready >= desired else (
        Cond(T.READY, False, R.REPLICAS_NOT_READY, ratio))  # fmt: skip


def deployment_conditions(view: DeploymentView) -> list[Cond]:
    """The conditions a Qwen3Deployment's status carries after this reconcile, in display order."""
    if view.blocked is not None:
        reason, message = view.blocked
        conds = _failed(reason, message)
        if reason in SPEC_REASONS:
            conds.append(Cond(T.PLAN_FEASIBLE, False, reason, message))
        return conds
    assert view.plan is not None and view.cache is not None and view.nodepool is not None
    tail = [view.cache, view.nodepool, Cond(T.PLAN_FEASIBLE, True, R.PLANNED, plan_summary(view.plan))]
    if view.apply_error is not None:
        return _failed(R.APPLY_FAILED, view.apply_error) + tail
    counts, desired = view.workload or WorkloadCounts(), view.desired_replicas
    stuck = [p for p in view.pods if p.unschedulable]
    if stuck:
        msg = f"{len(stuck)} pod(s) cannot be scheduled: {stuck[0].unschedulable}"
        ready = Cond(T.READY, counts.ready >= desired > 0, R.UNSCHEDULABLE, msg)
        return [ready, Cond(T.PROGRESSING, False, R.UNSCHEDULABLE, msg), Cond(T.DEGRADED, True, R.UNSCHEDULABLE, msg),
                *tail]  # fmt: skip
    cache = view.cache
    if cache.status is not True:
        failed = cache.reason == R.DOWNLOAD_FAILED
        if view.held_for_cache:  # the previous weights keep serving meanwhile
            ready = _ready(counts, desired)
            msg = f"previous weights keep serving until the new cache is filled: {cache.message}"
        else:
            ready, msg = Cond(T.READY, False, R.WAITING_FOR_MODEL_CACHE, cache.message), cache.message
        return [ready, Cond(T.PROGRESSING, True, R.WAITING_FOR_MODEL_CACHE, msg),
                Cond(T.DEGRADED, failed, cache.reason if failed else R.AS_EXPECTED, cache.message if failed else ""),
                *tail]  # fmt: skip
    progressing = (
        Cond(T.PROGRESSING, False, R.ROLLOUT_COMPLETE, f"generation {view.generation} rolled out")
        if counts.rolled_out(desired)
        else Cond(
            T.PROGRESSING, True, R.ROLLING_OUT, f"{counts.updated}/{desired} updated, {counts.ready}/{desired} ready"
        )
    )
    return [_ready(counts, desired), progressing, Cond(T.DEGRADED, False, R.AS_EXPECTED, ""), *tail]


def parse_deployment_status(raw: Obj) -> Qwen3DeploymentStatus:
    """The status the API server holds, typed (an unreadable one counts as empty, conditions kept)."""
    try:
        return Qwen3DeploymentStatus.model_validate(raw)
    except ValidationError:
        return Qwen3DeploymentStatus()


CARRIED_WHEN_NOT_APPLIED = (
    "replicas", "ready_replicas", "updated_replicas", "desired_replicas", "ready_summary", "selector", "endpoint",
)  # fmt: skip


def deployment_status(view: DeploymentView, previous: Obj, now: str) -> tuple[Qwen3DeploymentStatus, list[Cond]]:
    """The whole status of a Qwen3Deployment, and the conditions decided (for Events).

    When nothing could be applied the plan is withdrawn (the autoscaler sizes on it) and the replica counts
    are carried over: the children stay as they were. `autoscaler` belongs to the autoscaler and is kept.
    """
    before = parse_deployment_status(previous)
    conds = deployment_conditions(view)
    conditions = merge_conditions(list(previous.get("conditions") or []), conds, view.generation, now)
    common: dict[str, Any] = {
        "observed_generation": view.generation,
        "conditions": conditions,
        "autoscaler": before.autoscaler,
    }
    if view.blocked is not None or view.workload is None:
        carried = {k: getattr(before, k) for k in CARRIED_WHEN_NOT_APPLIED}
        plan = None if view.blocked is not None else view.plan
        return Qwen3DeploymentStatus.model_validate({**common, **carried, "plan": plan}), conds
    counts, desired = view.workload, view.desired_replicas
    cache = None
    if view.cache_pvc is not None and view.cache is not None:
        phase = {R.DOWNLOADED: "Ready", R.DOWNLOAD_FAILED: "Failed"}.get(view.cache.reason, "Downloading")
        cache = CacheStatus(phase=phase, message=view.cache.message, pvc_name=view.cache_pvc)
    status = Qwen3DeploymentStatus.model_validate(
        {
            **common,
            "plan": view.plan,
            "replicas": counts.replicas,
            "ready_replicas": counts.ready,
            "updated_replicas": counts.updated,
            "desired_replicas": desired,
            "ready_summary": f"{counts.ready}/{desired}",
            "selector": view.selector,
            "endpoint": view.endpoint,
            "cache": cache,
        }
    )
    return status, conds


@dataclass(frozen=True)
class RouterView:
    """Everything one reconcile of a Qwen3Router observed."""

    generation: int
    invalid: str | None = None
    apply_error: str | None = None
    """A child the API server refused: its kind, name and the server's message."""
    desired: int = 0
    replicas: int = 0
    ready: int = 0
    endpoint: str = ""
    selector: str = ""
    backends: Sequence[tuple[str, int]] = ()
    """(backend name, ready replicas) in spec order."""
    missing: Sequence[str] = field(default_factory=tuple)
    """Backends whose Qwen3Deployment does not exist."""
    pools: Sequence[str] = ()
    """The InferencePools applied for this router's Endpoint Picker."""
    pools_crd_missing: bool = False
    """The spec asks for InferencePools but their CRD is not installed."""
    budget_exhausted: float | None = None
    """Today's externalDailyBudgetUSD, when status.cost says a replica has spent its share."""


def router_conditions(view: RouterView) -> list[Cond]:
    """Ready and Degraded of a Qwen3Router."""
    if view.invalid is not None:
        return [
            Cond(T.READY, False, R.INVALID_SPEC, view.invalid),
            Cond(T.DEGRADED, True, R.INVALID_SPEC, view.invalid),
        ]
    if view.apply_error is not None:
        return [
            Cond(T.READY, False, R.APPLY_FAILED, view.apply_error),
            Cond(T.DEGRADED, True, R.APPLY_FAILED, view.apply_error),
        ]
    serving = [name for name, ready in view.backends if ready and name not in view.missing]
    if view.ready >= view.desired > 0:
        ready = Cond(T.READY, True, R.AVAILABLE, f"{view.ready}/{view.desired} router pods; backends ready: "
                     f"{', '.join(serving) or 'none (requests wake them)'}")  # fmt: skip
    else:
        ready = Cond(T.READY, False, R.ROUTER_NOT_READY, f"{view.ready}/{view.desired} router pods ready")
    if view.missing:
        names = ", ".join(view.missing)
        message = f"no Qwen3Deployment named {names} in this namespace; the other backends keep serving"
        degraded = Cond(T.DEGRADED, True, R.BACKEND_MISSING, message)
    elif view.budget_exhausted is not None:
        message = (
            f"today's external API budget ({view.budget_exhausted:g} USD) is spent; the external backends "
            "are no longer chosen for spillover or fallback until 00:00 UTC (requests that name one are served)"
        )
        degraded = Cond(T.DEGRADED, True, R.EXTERNAL_BUDGET_EXHAUSTED, message)
    elif view.pools_crd_missing:
        message = (
            "endpointPicker.inferencePools is on but the InferencePool CRD (inferencepools.inference."
            "networking.k8s.io) is not installed; the Endpoint Picker serves, no InferencePool is rendered"
        )
        degraded = Cond(T.DEGRADED, True, R.INFERENCE_POOL_CRD_MISSING, message)
    else:
        degraded = Cond(T.DEGRADED, False, R.AS_EXPECTED, "")
    return [ready, degraded]


def router_status(view: RouterView, previous: Obj, now: str) -> tuple[Qwen3RouterStatus, list[Cond]]:
    """The whole status of a Qwen3Router, and the conditions decided (for Events)."""
    conds = router_conditions(view)
    conditions = merge_conditions(list(previous.get("conditions") or []), conds, view.generation, now)
    if view.invalid is not None or view.apply_error is not None:  # the counts stay as they were
        try:
            kept = Qwen3RouterStatus.model_validate(previous).to_wire()
        except ValidationError:
            kept = {}
        fresh = {**kept, "observedGeneration": view.generation, "conditions": conditions}
        return Qwen3RouterStatus.model_validate(fresh), conds
    backends = [BackendStatus(name=name, ready_replicas=ready) for name, ready in view.backends]
    status = Qwen3RouterStatus.model_validate(
        {
            "observed_generation": view.generation,
            "conditions": conditions,
            "replicas": view.replicas,
            "ready_replicas": view.ready,
            "endpoint": view.endpoint,
            "selector": view.selector,
            "backends": backends,
            "inference_pools": list(view.pools),
        }
    )
    return status, conds


def _wire_fields(model: type[BaseModel], exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(f.alias or n for n, f in model.model_fields.items() if n not in exclude)


DEPLOYMENT_STATUS_FIELDS = _wire_fields(
    Qwen3DeploymentStatus, exclude=("autoscaler", "cost", "slo", "adapters", "adapter_summary")
)
"""The status fields the reconcile owns (`autoscaler` is the autoscaler's, `cost` and `slo` the cost ledger's,
`adapters` the adapter sync's)."""
ROUTER_STATUS_FIELDS = _wire_fields(Qwen3RouterStatus, exclude=("cost",))  # the cost loop owns status.cost


def status_patch(current: Obj, desired: Obj, owned: Iterable[str]) -> Obj | None:
    """The merge patch that makes the fields we own equal `desired` (None removes a field), or None when
    nothing would change."""
    patch = {key: desired.get(key) for key in owned if current.get(key) != desired.get(key)}
    return patch or None
