"""kopf registrations: thin shells that trigger the one reconcile per Qwen3Deployment.

Every Qwen3Deployment has one daemon that reconciles it, then sleeps until something relevant happens (its own
spec or wake annotation changed, a child or a model-server pod changed) or the resync period passes. Creation,
updates, operator restarts (resume) and the periodic resync all end in the same level-based reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from typing import Any

import aiohttp
import kopf

from qwenfleet.autoscale.loop import Memory
from qwenfleet.autoscale.loop import tick as autoscale_tick
from qwenfleet.controller import metrics
from qwenfleet.controller.applied import CachingApplier
from qwenfleet.controller.deployment import (
    FINALIZER,
    PodState,
    finalize_deployment,
    owns_nodepool,
    reconcile_deployment,
)
from qwenfleet.controller.router import reconcile_router
from qwenfleet.controller.waiting import first_of
from qwenfleet.kube import Kube, KubeError, make_api_client
from qwenfleet.render import Capabilities
from qwenfleet.render.names import GROUP, ROLE_LABEL, WAKE_ANNOTATION
from qwenfleet.render.status import ready_replicas, serving_ips

log = logging.getLogger(__name__)

DEPLOYMENTS = ("qwenfleet.dev", "v1alpha1", "qwen3deployments")
ROUTERS = ("qwenfleet.dev", "v1alpha1", "qwen3routers")
OWNED = {"app.kubernetes.io/managed-by": "qwenfleet"}
CHILD_RESOURCES = (
    ("", "v1", "configmaps"),
    ("", "v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ("apps", "v1", "deployments"),
    ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets"),
    ("", "v1", "services"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("batch", "v1", "jobs"),
    ("", "v1", "persistentvolumeclaims"),
    ("monitoring.coreos.com", "v1", "servicemonitors"),  # optional CRDs: not watched when absent at start-up
    ("keda.sh", "v1alpha1", "scaledobjects"),
)
WATCHED_CHILD_KINDS = frozenset(
    {"ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Deployment", "LeaderWorkerSet", "Service",
     "PodDisruptionBudget", "NetworkPolicy", "Job", "PersistentVolumeClaim", "ServiceMonitor", "ScaledObject"}
)  # fmt: skip
RESYNC_SECONDS = 60.0
MAX_CONCURRENT_RECONCILES = 32
AUTOSCALE_INTERVAL_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 120.0
Key = tuple[str, str]
TriggerKey = tuple[str, str, str]
"""("d", namespace, name) for a Qwen3Deployment's loop, ("r", namespace, name) for a Qwen3Router's."""


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Credentials for kopf's own watches: the same kubeconfig or service account as our client."""
    try:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    except Exception:  # kopf raises its own LoginError types; fall back to kubeconfig
        return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Production settings and the one API client."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300  # reconnect watches periodically (kopf#585, #698)
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.queueing.worker_limit = None  # indexes must be complete before handlers run
    # No cluster-wide scanning of namespaces and CRDs: the watched namespaces are given, and the kinds are
    # discovered once at start-up. This is what lets the RBAC stay at exactly the verbs the reconciler uses.
    settings.scanning.disabled = True
    kube = Kube(await make_api_client(memo.get("kubeconfig")))
    memo.kube = kube
    memo.reconcile_slots = asyncio.Semaphore(MAX_CONCURRENT_RECONCILES)
    memo.applier = CachingApplier(kube, WATCHED_CHILD_KINDS)
    memo.triggers = {}
    memo.seen = {}
    memo.caps = Capabilities(
        service_monitor=await kube.crd_exists("servicemonitors.monitoring.coreos.com"),
        karpenter=await kube.crd_exists("nodepools.karpenter.sh"),
        prometheus_url=memo.get("prometheus_url") or Capabilities().prometheus_url,
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Close the API client."""
    kube: Kube | None = memo.get("kube")
    if kube:
        await kube.close()


def _pod_state(name: str, status: dict[str, Any], role: str | None = None) -> PodState:
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled") or {}
    unschedulable = None
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        unschedulable = str(scheduled.get("message") or "unschedulable")
    ready = (conditions.get("Ready") or {}).get("status") == "True"
    phase = str(status.get("phase") or "")
    return PodState(name=name, phase=phase, ready=ready, unschedulable=unschedulable, ip=status.get("podIP"), role=role)


@kopf.index("pods", labels={**OWNED, "app.kubernetes.io/component": "model-server"})
def model_server_pods(
    namespace: str | None, name: str, labels: Mapping[str, str], status: kopf.Status, **_: Any
) -> dict[Key, PodState]:
    """Model-server pods by (namespace, deployment): phase, readiness, role, why unschedulable."""
    key = (namespace or "", labels.get(f"{GROUP}/deployment", ""))
    return {key: _pod_state(name, dict(status), labels.get(ROLE_LABEL))}


@kopf.index(*DEPLOYMENTS)
def deployment_names(namespace: str | None, name: str, **_: Any) -> dict[str, str]:
    """Qwen3Deployments by namespace: which backends of a router exist."""
    return {namespace or "": name}


def _trigger(memo: Any, key: Key, *, routers: bool = False) -> None:
    """Wake the loop of the Qwen3Deployment `key`, and with `routers` every router loop in its namespace."""
    for trigger_key, event in list(memo.triggers.items()):
        if trigger_key == ("d", *key) or (routers and trigger_key[0] == "r" and trigger_key[1] == key[0]):
            event.set()


@kopf.on.event("pods", labels={**OWNED, "app.kubernetes.io/component": "model-server"})
def pod_changed(namespace: str | None, labels: Mapping[str, str], memo: Any, **_: Any) -> None:
    """A model-server pod changed: its deployment's status, and its routers' backend counts, may have too."""
    _trigger(memo, (namespace or "", labels.get(f"{GROUP}/deployment", "")), routers=True)


def _child_changed(
    namespace: str | None, labels: Mapping[str, str], memo: Any, body: kopf.Body, type: str | None, **_: Any
) -> None:
    """A child changed or vanished: restore it now, not at the next resync."""
    applier: CachingApplier | None = memo.get("applier")
    if applier is not None:
        applier.observe(dict(body), deleted=type == "DELETED")
    owner = (namespace or "", labels.get(f"{GROUP}/deployment", ""))
    _trigger(memo, owner)
    router = memo.triggers.get(("r", *owner))
    if router is not None and labels.get("app.kubernetes.io/component") == "router":
        router.set()


for _group, _version, _plural in CHILD_RESOURCES:
    kopf.on.event(_group, _version, _plural, labels=OWNED, id=f"child-{_plural}")(_child_changed)


@kopf.on.event(*DEPLOYMENTS)
def deployment_changed(
    namespace: str | None,
    name: str,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: Any,
    type: str | None,
    **_: Any,
) -> None:
    """Wake the deployment's daemon when its spec, wake annotation or autoscaler decision changed, and the
    namespace's routers when a deployment appears or goes (their backends may exist now, or no longer).

    Other status writes (our own) do not trigger a reconcile.
    """
    key = (namespace or "", name)
    if type == "DELETED":
        memo.seen.pop(key, None)
        _trigger(memo, key, routers=True)
        return
    decided = (status.get("autoscaler") or {}).get("desiredReplicas")
    seen = (meta.get("generation"), (meta.get("annotations") or {}).get(WAKE_ANNOTATION), decided)
    if memo.seen.get(key) != seen:
        new = key not in memo.seen
        memo.seen[key] = seen
        _trigger(memo, key, routers=new)


async def _post_events(body: kopf.Body, events: list[tuple[str, str, str]]) -> None:
    for kind, reason, message in events:
        kopf.event(body, type=kind, reason=reason, message=message[:1024])


async def _reconcile_once(body: kopf.Body, memo: Any, pods: list[PodState]) -> float | None:
    started = time.perf_counter()
    outcome = await reconcile_deployment(memo.kube, dict(body), pods, memo.caps, memo.applier)
    meta = body["metadata"]
    metrics.observe_reconcile(meta["namespace"], meta["name"], time.perf_counter() - started, outcome.status)
    await _post_events(body, outcome.events)
    return outcome.retry_after


async def _reconcile_router_once(
    body: kopf.Body, memo: Any, pods: kopf.Index[Key, PodState], deployments: kopf.Index[str, str]
) -> float | None:
    namespace = body["metadata"]["namespace"]
    backends = [b.get("name", "") for b in (body.get("spec") or {}).get("backends") or []]
    ready = {b: ready_replicas(pods.get((namespace, b), [])) for b in backends}
    existing = set(deployments.get(namespace, []))
    outcome = await reconcile_router(memo.kube, dict(body), ready, existing, memo.applier)
    await _post_events(body, outcome.events)
    return outcome.retry_after


async def _reconcile_loop(
    key: TriggerKey,
    body: kopf.Body,
    memo: Any,
    stopped: kopf.DaemonStopped,
    once: Callable[[], Awaitable[float | None]],
) -> None:
    """Reconcile now, then whenever triggered, at least every RESYNC_SECONDS; back off on errors."""
    trigger: asyncio.Event = memo.triggers.setdefault(key, asyncio.Event())
    failures = 0
    try:
        while not stopped:
            trigger.clear()
            try:
                async with memo.reconcile_slots:  # bounded: a thousand objects do not all reconcile at once
                    retry = await once()
                failures = 0
                wait = retry or RESYNC_SECONDS
            except KubeError as exc:
                failures += 1
                wait = min(MAX_BACKOFF_SECONDS, 2.0**failures)
                metrics.ERRORS.labels(reason=exc.reason or str(exc.status)).inc()
                log.warning("reconcile %s failed (%s); retrying in %.0fs", key, exc, wait)
                kopf.event(body, type="Warning", reason="ApplyFailed", message=str(exc)[:1024])
            except Exception as exc:  # a bug must not kill the daemon or loop hot
                failures += 1
                wait = min(MAX_BACKOFF_SECONDS, 2.0**failures)
                metrics.ERRORS.labels(reason=type(exc).__name__).inc()
                log.exception("reconcile %s crashed; retrying in %.0fs", key, wait)
            with suppress(TimeoutError):
                await asyncio.wait_for(first_of(trigger.wait(), stopped.wait()), timeout=wait)
    finally:
        memo.triggers.pop(key, None)


@kopf.daemon(*DEPLOYMENTS, cancellation_timeout=10.0)
async def deployment_daemon(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: Any,
    stopped: kopf.DaemonStopped,
    **kwargs: Any,
) -> None:
    """One reconcile loop per Qwen3Deployment."""
    key = (namespace or "", name)
    index: kopf.Index[Key, PodState] = kwargs["model_server_pods"]
    try:
        await _reconcile_loop(
            ("d", *key), body, memo, stopped, lambda: _reconcile_once(body, memo, list(index.get(key, [])))
        )
    finally:
        metrics.forget(key[0], name)


@kopf.daemon(*ROUTERS, cancellation_timeout=10.0)
async def router_daemon(
    body: kopf.Body, namespace: str | None, name: str, memo: Any, stopped: kopf.DaemonStopped, **kwargs: Any
) -> None:
    """One reconcile loop per Qwen3Router."""
    index: kopf.Index[Key, PodState] = kwargs["model_server_pods"]
    deployments: kopf.Index[str, str] = kwargs["deployment_names"]
    key = ("r", namespace or "", name)
    await _reconcile_loop(key, body, memo, stopped, lambda: _reconcile_router_once(body, memo, index, deployments))


@kopf.on.event(*ROUTERS)
def router_changed(namespace: str | None, name: str, meta: kopf.Meta, memo: Any, **_: Any) -> None:
    """Wake the router's loop when its spec changed."""
    key = ("r", namespace or "", name)
    if memo.seen.get(key) != meta.get("generation"):
        memo.seen[key] = meta.get("generation")
        event = memo.triggers.get(key)
        if event is not None:
            event.set()


def _builtin(spec: kopf.Spec, **_: Any) -> bool:
    return bool((spec.get("autoscaling") or {}).get("mode") == "builtin")


@kopf.daemon(*DEPLOYMENTS, when=_builtin, cancellation_timeout=5.0)
async def autoscaler_daemon(
    body: kopf.Body, namespace: str | None, name: str, memo: Any, stopped: kopf.DaemonStopped, **kwargs: Any
) -> None:
    """The builtin autoscaler: scrape ready replicas, decide, record in status, wake the reconcile."""
    key = (namespace or "", name)
    pods_index: kopf.Index[Key, PodState] = kwargs["model_server_pods"]
    memory = Memory()
    async with aiohttp.ClientSession() as session:
        while not stopped:
            try:
                ips = serving_ips(pods_index.get(key, []))
                decision = await autoscale_tick(memo.kube, session, dict(body), ips, memory)
                if decision is not None:
                    kind = "Normal"
                    kopf.event(
                        body, type=kind, reason="Scaled", message=f"{decision.desired} replicas: {decision.reason}"
                    )
                    _trigger(memo, key)
            except KubeError as exc:
                log.warning("autoscaler %s/%s: %s", namespace, name, exc)
            except Exception:
                log.exception("autoscaler %s/%s crashed; continuing", namespace, name)
            await stopped.wait(memo.get("autoscale_interval") or AUTOSCALE_INTERVAL_SECONDS)


def _owns_nodepool(spec: kopf.Spec, namespace: str | None, name: str | None, **_: Any) -> bool:
    return owns_nodepool(dict(spec), namespace or "", name or "")


@kopf.on.delete(*DEPLOYMENTS, when=_owns_nodepool)  # only these get a finalizer: others cost no extra writes
async def deployment_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Remove the cluster-scoped NodePool we own; namespaced children go by owner references."""
    try:
        await finalize_deployment(memo.kube, dict(body))
    except KubeError as exc:
        raise kopf.TemporaryError(f"cannot delete the NodePool yet: {exc}", delay=10) from exc
