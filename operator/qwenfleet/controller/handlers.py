"""kopf registrations: thin shells that queue the one reconcile per Qwen3Deployment and Qwen3Router.

kopf provides only the shared watches (one per kind) and the pod index; every handler is a watch-event handler,
so kopf writes nothing to our objects (no progress or diff-base annotations, no finalizer of its own). A watch
event queues the object's key when something relevant changed (its spec, wake annotation, autoscaler decision,
finalizers or deletion; a child or a model-server pod); a fixed pool of workers runs the level-based reconcile,
one pass per key at a time, and every pass schedules the next (the resync, a retry or a back-off). Creation,
updates, operator restarts and the periodic resync all end in the same reconcile. The finalizer is ours, and
only deployments that own a cluster-scoped NodePool carry it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

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
from qwenfleet.controller.workqueue import WorkQueue
from qwenfleet.kube import Kube, KubeError, make_api_client
from qwenfleet.kube.resources import RESOURCES
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
CHILD_KINDS = tuple(
    (r.api_version, r.kind)
    for group, version, plural in CHILD_RESOURCES
    for r in RESOURCES.values()
    if r.api_version == (f"{group}/{version}" if group else version) and r.plural == plural
)
"""(apiVersion, kind) of each child resource above."""
WATCHED_CHILD_KINDS = frozenset(kind for _, kind in CHILD_KINDS)
RESYNC_SECONDS = 60.0
MAX_CONCURRENT_RECONCILES = 32
AUTOSCALE_INTERVAL_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 120.0
AUTOSCALE_WORKERS = 16
Obj = dict[str, Any]
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
    # Only watch-event handlers are registered: kopf keeps no progress, diff base or finalizer on our objects.
    # Its finalizer name differs from ours, so it never adds or removes the one the reconcile manages.
    settings.persistence.finalizer = f"{GROUP}/kopf"
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
    memo.seen = {}
    # kopf's pod index and handler context of this run, from the first handler call. Handlers get a shallow copy
    # of the memo, so what they set must go into an object shared with the queue's workers.
    memo.run = Run()
    memo.bodies = {}  # (kind, namespace, name) -> the object as last watched, slimmed
    memo.routers = {}  # namespace -> names of its Qwen3Routers
    memo.failures = {}
    memo.memories = {}  # (namespace, name) -> the builtin autoscaler's memory
    memo.session = aiohttp.ClientSession()
    memo.queue = WorkQueue(lambda key: _reconcile(memo, key), MAX_CONCURRENT_RECONCILES, "reconcile")
    memo.autoscaler = WorkQueue(lambda key: _autoscale(memo, key), AUTOSCALE_WORKERS, "autoscaler")
    memo.caps = Capabilities(
        service_monitor=await kube.crd_exists("servicemonitors.monitoring.coreos.com"),
        karpenter=await kube.crd_exists("nodepools.karpenter.sh"),
        prometheus_url=memo.get("prometheus_url") or Capabilities().prometheus_url,
    )
    await prime_applier(kube, memo.applier, memo.get("namespaces") or [])
    memo.queue.start()
    memo.autoscaler.start()


async def prime_applier(kube: Kube, applier: CachingApplier, namespaces: list[str]) -> None:
    """Show the applier every child that exists before the first reconcile runs.

    kopf's watches of the child kinds list them concurrently with the owners' watch, so an owner's first pass after
    a restart could come before its children were seen, and re-apply them. One paged list per kind (reads, no
    writes) closes that race: a restarted operator sends nothing for children that still match their intent.
    """
    selector = ",".join(f"{k}={v}" for k, v in OWNED.items())
    scopes: list[str | None] = [*namespaces] or [None]
    for api_version, kind in CHILD_KINDS:
        for namespace in scopes:
            try:
                async for page in kube.list_pages(api_version, kind, namespace, label_selector=selector):
                    for obj in page:
                        applier.observe(obj)
            except KubeError as exc:  # an optional CRD that is absent, or a kind outside our RBAC: the watch decides
                log.info("not primed with %s: %s", kind, exc)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Stop the queues, close the clients."""
    for name in ("queue", "autoscaler"):
        queue: WorkQueue[Any] | None = memo.get(name)
        if queue is not None:
            await queue.stop()
    session: aiohttp.ClientSession | None = memo.get("session")
    if session is not None:
        await session.close()
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


@dataclass
class Run:
    """What the queue's workers need from kopf, captured by the first handler call of this run."""

    pods: kopf.Index[Key, PodState] | None = None
    context: contextvars.Context | None = None

    def pods_of(self, key: Key) -> list[PodState]:
        """The model-server pods of one deployment, from kopf's index."""
        return list(self.pods.get(key, [])) if self.pods is not None else []


def _trigger(memo: Any, key: Key, *, routers: bool = False) -> None:
    """Queue the Qwen3Deployment `key`, and with `routers` every Qwen3Router in its namespace."""
    queue: WorkQueue[TriggerKey] | None = memo.get("queue")
    if queue is None:
        return
    if ("d", *key) in memo.bodies:
        queue.add(("d", *key))
    if routers:
        for router in memo.routers.get(key[0], ()):
            queue.add(("r", key[0], router))


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
    if labels.get("app.kubernetes.io/component") == "router" and owner[1] in memo.routers.get(owner[0], ()):
        memo.queue.add(("r", *owner))


for _group, _version, _plural in CHILD_RESOURCES:
    kopf.on.event(_group, _version, _plural, labels=OWNED, id=f"child-{_plural}")(_child_changed)


def _slim(body: kopf.Body) -> Obj:
    """The object as the reconcile reads it: without managedFields and kubectl's copy of the last apply."""
    meta = {k: v for k, v in body.get("metadata", {}).items() if k != "managedFields"}
    annotations = meta.get("annotations")
    if annotations and "kubectl.kubernetes.io/last-applied-configuration" in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items()
                               if k != "kubectl.kubernetes.io/last-applied-configuration"}  # fmt: skip
    return {**{k: v for k, v in body.items() if k != "metadata"}, "metadata": meta}


def _remember_indexes(memo: Any, kwargs: Mapping[str, Any]) -> None:
    """kopf hands its indexes to handlers only; the queue's passes read them from here."""
    run: Run = memo.run
    if run.pods is None and "model_server_pods" in kwargs:
        run.pods = kwargs["model_server_pods"]
        run.context = contextvars.copy_context()


@kopf.on.event(*DEPLOYMENTS)
def deployment_changed(
    namespace: str | None,
    name: str,
    body: kopf.Body,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: Any,
    type: str | None,
    **kwargs: Any,
) -> None:
    """Queue the deployment when its spec, wake annotation, autoscaler decision, finalizers or deletion changed,
    and the namespace's routers when a deployment appears or goes (their backends may exist now, or no longer).

    Other status writes (our own) do not queue a reconcile.
    """
    _remember_indexes(memo, kwargs)
    key = (namespace or "", name)
    if type == "DELETED":
        memo.seen.pop(key, None)
        memo.bodies.pop(("d", *key), None)
        memo.queue.forget(("d", *key))
        memo.autoscaler.forget(key)
        memo.memories.pop(key, None)
        metrics.forget(key[0], name)
        _trigger(memo, key, routers=True)
        return
    memo.bodies[("d", *key)] = _slim(body)
    decided = (status.get("autoscaler") or {}).get("desiredReplicas")
    seen = (meta.get("generation"), (meta.get("annotations") or {}).get(WAKE_ANNOTATION), decided,
            meta.get("deletionTimestamp") is not None, FINALIZER in (meta.get("finalizers") or []))  # fmt: skip
    if memo.seen.get(key) != seen:
        new = key not in memo.seen
        memo.seen[key] = seen
        _trigger(memo, key, routers=new)
    if key not in memo.memories and _builtin(body.get("spec") or {}):
        memo.memories[key] = Memory()
        memo.autoscaler.add(key)


def _event(body: Obj, kind: str, reason: str, message: str, memo: Any) -> None:
    """Post an Event about the object through kopf's poster, in the context of kopf's handlers (which holds the
    poster's queue; the queue's workers run outside it)."""
    context = memo.run.context
    if context is None:
        log.info("%s %s: %s", kind, reason, message)
        return
    context.run(kopf.event, cast(kopf.Body, body), type=kind, reason=reason, message=message[:1024])


async def _post_events(body: Obj, events: list[tuple[str, str, str]], memo: Any) -> None:
    for kind, reason, message in events:
        _event(body, kind, reason, message, memo)


async def _set_finalizer(kube: Kube, body: Obj, present: bool) -> None:
    """Add or remove our finalizer; the resourceVersion makes a concurrent change of the list a conflict."""
    meta = body["metadata"]
    finalizers = [f for f in meta.get("finalizers") or [] if f != FINALIZER] + ([FINALIZER] if present else [])
    patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
    await kube.merge_patch(body["apiVersion"], body["kind"], meta["name"], meta["namespace"], patch)


async def _finalizer_pass(kube: Kube, body: Obj, wanted: bool) -> bool:
    """Keep our finalizer exactly where a NodePool is owned; at deletion clean up, then let go.

    True when the object is being deleted (nothing else to do for it).
    """
    meta = body["metadata"]
    has = FINALIZER in (meta.get("finalizers") or [])
    if meta.get("deletionTimestamp"):
        if has:
            if body["kind"] == "Qwen3Deployment":
                await finalize_deployment(kube, body)
            await _set_finalizer(kube, body, present=False)
        return True
    if has != wanted:
        await _set_finalizer(kube, body, present=wanted)
    return False


async def _reconcile_deployment_pass(memo: Any, body: Obj) -> float | None:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if await _finalizer_pass(memo.kube, body, owns_nodepool(body.get("spec") or {}, namespace, name)):
        return None
    pods = list(memo.run.pods_of((namespace, name)))
    started = time.perf_counter()
    outcome = await reconcile_deployment(memo.kube, body, pods, memo.caps, memo.applier)
    metrics.observe_reconcile(namespace, name, time.perf_counter() - started, outcome.status)
    if outcome.wrote_status:  # the watch brings the new status soon; meanwhile, do not write it again
        body["status"] = outcome.status
    await _post_events(body, outcome.events, memo)
    return outcome.retry_after


async def _reconcile_router_pass(memo: Any, body: Obj) -> float | None:
    if await _finalizer_pass(memo.kube, body, wanted=False):
        return None
    namespace = body["metadata"]["namespace"]
    backends = [b.get("name", "") for b in (body.get("spec") or {}).get("backends") or []]
    ready = {b: ready_replicas(memo.run.pods_of((namespace, b))) for b in backends}
    existing = {k[2] for k in memo.bodies if k[0] == "d" and k[1] == namespace}
    outcome = await reconcile_router(memo.kube, body, ready, existing, memo.applier)
    if outcome.wrote_status:
        body["status"] = outcome.status
    await _post_events(body, outcome.events, memo)
    return outcome.retry_after


async def _reconcile(memo: Any, key: TriggerKey) -> float | None:
    """One pass of the one reconcile for the object `key`; when to look again (resync, retry or back-off)."""
    body = memo.bodies.get(key)
    if body is None:
        memo.failures.pop(key, None)
        return None  # gone
    try:
        async with memo.reconcile_slots:
            retry = await (_reconcile_deployment_pass if key[0] == "d" else _reconcile_router_pass)(memo, body)
        memo.failures.pop(key, None)
        return retry or RESYNC_SECONDS
    except KubeError as exc:
        failures: int = memo.failures.get(key, 0) + 1
        memo.failures[key] = failures
        wait = min(MAX_BACKOFF_SECONDS, 2.0**failures)
        metrics.ERRORS.labels(reason=exc.reason or str(exc.status)).inc()
        log.warning("reconcile %s failed (%s); retrying in %.0fs", key, exc, wait)
        if exc.status != 409:  # a conflict on our finalizer patch is not worth an Event
            _event(body, "Warning", "ApplyFailed", str(exc), memo)
        return wait
    except Exception as exc:  # a bug must not stop the queue or loop hot
        failures = memo.failures.get(key, 0) + 1
        memo.failures[key] = failures
        wait = min(MAX_BACKOFF_SECONDS, 2.0**failures)
        metrics.ERRORS.labels(reason=type(exc).__name__).inc()
        log.exception("reconcile %s crashed; retrying in %.0fs", key, wait)
        return wait


@kopf.on.event(*ROUTERS)
def router_changed(
    namespace: str | None, name: str, body: kopf.Body, meta: kopf.Meta, memo: Any, type: str | None, **kwargs: Any
) -> None:
    """Queue the router when its spec, finalizers or deletion changed."""
    _remember_indexes(memo, kwargs)
    key = ("r", namespace or "", name)
    if type == "DELETED":
        memo.seen.pop(key, None)
        memo.bodies.pop(key, None)
        memo.queue.forget(key)
        memo.routers.get(key[1], set()).discard(name)
        return
    memo.bodies[key] = _slim(body)
    memo.routers.setdefault(key[1], set()).add(name)
    seen = (meta.get("generation"), meta.get("deletionTimestamp") is not None,
            FINALIZER in (meta.get("finalizers") or []))  # fmt: skip
    if memo.seen.get(key) != seen:
        memo.seen[key] = seen
        memo.queue.add(key)


def _builtin(spec: Mapping[str, Any], **_: Any) -> bool:
    return bool((spec.get("autoscaling") or {}).get("mode") == "builtin")


async def _autoscale(memo: Any, key: Key) -> float | None:
    """The builtin autoscaler, one tick: scrape ready replicas, decide, record in status, queue the reconcile."""
    body = memo.bodies.get(("d", *key))
    memory = memo.memories.get(key)
    if body is None or memory is None or not _builtin(body.get("spec") or {}):
        memo.memories.pop(key, None)
        return None  # gone, or no longer builtin: a later change back adds it again
    if body["metadata"].get("deletionTimestamp"):
        return None
    namespace, name = key
    try:
        pods = memo.run.pods_of(key)
        decision = await autoscale_tick(memo.kube, memo.session, body, serving_ips(pods), memory)
        if decision is not None:
            _event(body, "Normal", "Scaled", f"{decision.desired} replicas: {decision.reason}", memo)
            _trigger(memo, key)
    except KubeError as exc:
        log.warning("autoscaler %s/%s: %s", namespace, name, exc)
    except Exception:
        log.exception("autoscaler %s/%s crashed; continuing", namespace, name)
    return float(memo.get("autoscale_interval") or AUTOSCALE_INTERVAL_SECONDS)
