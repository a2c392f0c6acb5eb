"""The operator: one shared watch per kind feeding a work queue that runs the one reconcile per object.

Informers (controller/informer.py) list and watch the Qwen3Deployments, Qwen3Routers, our children and the
model-server pods. A change queues the owner's key when something relevant changed (its spec, wake annotation,
autoscaler decision, finalizers or deletion; a child or a model-server pod); a fixed pool of workers runs the
level-based reconcile, one pass per key at a time, and every pass schedules the next (the resync, a retry or a
back-off). Creation, updates, operator restarts and the periodic resync all end in the same reconcile. Nothing is
written to our objects but their status and, only on deployments that own a cluster-scoped NodePool, our finalizer.

What is kept per object is what the reconcile reads: the custom resources without managedFields, a child's
identity, labels, annotations and status (controller/applied.py), a pod's readiness and IP (PodState).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from qwenfleet.api.deployment import slo_objective
from qwenfleet.autoscale import checkpoint
from qwenfleet.autoscale.loop import CHECKPOINT_SECONDS, Memory
from qwenfleet.autoscale.loop import save as save_checkpoint
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
from qwenfleet.controller.events import EventPoster
from qwenfleet.controller.informer import Informer
from qwenfleet.controller.router import reconcile_router
from qwenfleet.controller.waiting import first_of
from qwenfleet.controller.workqueue import WorkQueue
from qwenfleet.cost.loop import CostLoop, Snapshot, register, slim_pod
from qwenfleet.kube import Kube, KubeError, make_api_client
from qwenfleet.kube.resources import RESOURCES, resource_of
from qwenfleet.render import Capabilities
from qwenfleet.render.names import GROUP, ROLE_LABEL, WAKE_ANNOTATION
from qwenfleet.render.status import ready_replicas, serving_ips

log = logging.getLogger(__name__)

DEPLOYMENTS = ("qwenfleet.dev/v1alpha1", "Qwen3Deployment")
ROUTERS = ("qwenfleet.dev/v1alpha1", "Qwen3Router")
OWNED = {"app.kubernetes.io/managed-by": "qwenfleet"}
OWNED_SELECTOR = ",".join(f"{k}={v}" for k, v in OWNED.items())
COMPONENT = "app.kubernetes.io/component"
POD_SELECTOR = f"{OWNED_SELECTOR},{COMPONENT} in (model-server,router)"
CHILD_SELECTOR = f"{OWNED_SELECTOR},{COMPONENT}!={checkpoint.COMPONENT}"
"""The children the watches cache: all we made, but for the autoscaler's checkpoints (read once, never watched)."""
"""The pods the operator reads: model servers (status, autoscaler, cost) and routers (cost)."""
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
    ("karpenter.sh", "v1", "nodepools"),  # cluster-scoped: one watch whatever the namespaces
)
CHILD_KINDS = tuple(
    (r.api_version, r.kind)
    for group, version, plural in CHILD_RESOURCES
    for r in RESOURCES.values()
    if r.api_version == (f"{group}/{version}" if group else version) and r.plural == plural
)
"""(apiVersion, kind) of each child resource above."""
OPTIONAL_GROUPS = (".x-k8s.io", ".coreos.com", "keda.sh", "karpenter.sh")
"""API groups of the child kinds that come with an optional CRD."""
WATCHED_CHILD_KINDS = frozenset(kind for _, kind in CHILD_KINDS)
RESYNC_SECONDS = 60.0
MAX_CONCURRENT_RECONCILES = 32
AUTOSCALE_INTERVAL_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 120.0
AUTOSCALE_WORKERS = 16
CHECKPOINT_FLUSH_SECONDS = 10.0
"""At most this long, of a pod's 30 s grace period, goes to checkpointing the autoscaler's memory on stop."""
Obj = dict[str, Any]
Key = tuple[str, str]
TriggerKey = tuple[str, str, str]
"""("d", namespace, name) for a Qwen3Deployment's loop, ("r", namespace, name) for a Qwen3Router's."""


@dataclass(frozen=True)
class Options:
    """How `qwenfleet run` was asked to run."""

    kubeconfig: str | None = None
    namespaces: tuple[str, ...] = ()
    """Watched namespaces; empty for all."""
    prometheus_url: str | None = None
    autoscale_interval: float = AUTOSCALE_INTERVAL_SECONDS
    checkpoint_interval: float = CHECKPOINT_SECONDS
    cost_interval: float = 10.0


def pod_state(name: str, status: Mapping[str, Any], role: str | None = None) -> PodState:
    """What the reconcile and the autoscaler read of a model-server pod."""
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled") or {}
    unschedulable = None
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        unschedulable = str(scheduled.get("message") or "unschedulable")
    ready = (conditions.get("Ready") or {}).get("status") == "True"
    phase = str(status.get("phase") or "")
    return PodState(name=name, phase=phase, ready=ready, unschedulable=unschedulable, ip=status.get("podIP"), role=role)


def slim(body: Obj) -> Obj:
    """The object as the reconcile reads it: without managedFields and kubectl's copy of the last apply."""
    meta = {k: v for k, v in body.get("metadata", {}).items() if k != "managedFields"}
    annotations = meta.get("annotations")
    if annotations and "kubectl.kubernetes.io/last-applied-configuration" in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items()
                               if k != "kubectl.kubernetes.io/last-applied-configuration"}  # fmt: skip
    return {**{k: v for k, v in body.items() if k != "metadata"}, "metadata": meta}


def _owner(obj: Obj) -> Key:
    """(namespace, name) of the Qwen3Deployment an object belongs to (a cluster-scoped one names it in labels)."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    return str(meta.get("namespace") or labels.get(f"{GROUP}/namespace", "")), str(
        labels.get(f"{GROUP}/deployment", "")
    )


def _collect(memory: Memory) -> None:
    """Count the autoscaler's checkpoint events in the metrics."""
    for result, count in memory.checkpoint_events.items():
        metrics.CHECKPOINTS.labels(result=result).inc(count)
    memory.checkpoint_events.clear()


def _builtin(spec: Mapping[str, Any]) -> bool:
    return bool((spec.get("autoscaling") or {}).get("mode") == "builtin")


class Operator:
    """The watches, the queues and the reconcile passes of one running operator."""

    def __init__(self, kube: Kube, watcher: Kube, options: Options) -> None:
        self.kube = kube
        self.watcher = watcher  # its own connections: a watch holds one for minutes
        self.options = options
        self.applier = CachingApplier(kube, WATCHED_CHILD_KINDS)
        self.events = EventPoster(kube)
        self.caps = Capabilities()
        self.bodies: dict[TriggerKey, Obj] = {}  # the custom resources as last watched, slimmed
        self.seen: dict[Any, tuple[Any, ...]] = {}  # what of each custom resource queues a reconcile
        self.routers: dict[str, set[str]] = {}  # namespace -> names of its Qwen3Routers
        self.pods: dict[Key, dict[str, PodState]] = {}  # (namespace, deployment) -> pod name -> state
        self.pod_bodies: dict[Key, Obj] = {}  # (namespace, pod name) -> what the cost loop reads of the pod
        self.failures: dict[TriggerKey, int] = {}
        self.memories: dict[Key, Memory] = {}  # the builtin autoscaler's memory per deployment
        self.slots = asyncio.Semaphore(MAX_CONCURRENT_RECONCILES)
        self.queue: WorkQueue[TriggerKey] = WorkQueue(self._reconcile, MAX_CONCURRENT_RECONCILES, "reconcile")
        self.autoscaler: WorkQueue[Key] = WorkQueue(self._autoscale, AUTOSCALE_WORKERS, "autoscaler")
        self.informers: list[Informer] = []
        self.session: aiohttp.ClientSession | None = None
        self.checkpoint_on_stop = True
        """Whether stopping checkpoints the autoscaler's memory: yes on a shutdown, no once leadership is lost
        (the new leader writes them then)."""

    @classmethod
    async def connect(cls, options: Options) -> Operator:
        """An operator with its API clients: one pool for requests, one for the watches."""
        kube = Kube(await make_api_client(options.kubeconfig))
        watches = (2 + 1 + len(CHILD_RESOURCES)) * max(1, len(options.namespaces))
        return cls(kube, Kube(await make_api_client(options.kubeconfig, connections=watches + 2)), options)

    def pods_of(self, key: Key) -> list[PodState]:
        """The model-server pods of one deployment."""
        return list(self.pods.get(key, {}).values())

    async def snapshot(self, namespace: str | None) -> Snapshot:
        """The fleet as the watches last saw it, for the cost loop (a Fleet): nothing is listed."""
        mine = [b for k, b in self.bodies.items() if namespace is None or k[1] == namespace]
        pods = [p for (ns, _), p in self.pod_bodies.items() if namespace is None or ns == namespace]
        return Snapshot(
            deployments=[b for b in mine if b["kind"] == DEPLOYMENTS[1]],
            pods=[p for p in pods if p["metadata"]["labels"].get(COMPONENT) == "model-server"],
            routers=[b for b in mine if b["kind"] == ROUTERS[1]],
            router_pods=[p for p in pods if p["metadata"]["labels"].get(COMPONENT) == "router"],
        )

    # -- what the watches hand over ---------------------------------------------------------------------------

    def _trigger(self, key: Key, *, routers: bool = False) -> None:
        """Queue the Qwen3Deployment `key`, and with `routers` every Qwen3Router in its namespace."""
        if ("d", *key) in self.bodies:
            self.queue.add(("d", *key))
        if routers:
            for router in self.routers.get(key[0], ()):
                self.queue.add(("r", key[0], router))

    def pod_changed(self, kind: str, obj: Obj) -> None:
        """A model-server pod changed: its deployment's status, and its routers' backend counts, may have too."""
        key = _owner(obj)
        meta = obj.get("metadata") or {}
        name = str(meta.get("name"))
        if kind == "DELETED":
            self.pod_bodies.pop((key[0], name), None)
        else:
            self.pod_bodies[(key[0], name)] = slim_pod(obj)
        if (meta.get("labels") or {}).get(COMPONENT) != "model-server":
            return
        if kind == "DELETED":
            states = self.pods.get(key, {})
            states.pop(name, None)
            if not states:
                self.pods.pop(key, None)
        else:
            role = (meta.get("labels") or {}).get(ROLE_LABEL)
            self.pods.setdefault(key, {})[name] = pod_state(name, obj.get("status") or {}, role)
        self._trigger(key, routers=True)

    def child_changed(self, kind: str, obj: Obj) -> None:
        """A child changed or vanished: restore it now, not at the next resync."""
        self.applier.observe(obj, deleted=kind == "DELETED")
        owner = _owner(obj)
        self._trigger(owner)
        component = ((obj.get("metadata") or {}).get("labels") or {}).get(COMPONENT)
        if component == "router" and owner[1] in self.routers.get(owner[0], ()):
            self.queue.add(("r", *owner))

    def deployment_changed(self, kind: str, obj: Obj) -> None:
        """Queue the deployment when its spec, wake annotation, autoscaler decision, finalizers or deletion changed,
        and the namespace's routers when a deployment appears or goes (their backends may exist now, or no longer).

        Other status writes (our own) do not queue a reconcile.
        """
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name")))
        if kind == "DELETED":
            self.seen.pop(key, None)
            self.bodies.pop(("d", *key), None)
            self.queue.forget(("d", *key))
            self.autoscaler.forget(key)
            self.memories.pop(key, None)
            metrics.forget(*key)
            self._trigger(key, routers=True)
            return
        body = self.bodies[("d", *key)] = slim(obj)
        decided = ((body.get("status") or {}).get("autoscaler") or {}).get("desiredReplicas")
        seen = (meta.get("generation"), (meta.get("annotations") or {}).get(WAKE_ANNOTATION), decided,
                meta.get("deletionTimestamp") is not None, FINALIZER in (meta.get("finalizers") or []))  # fmt: skip
        if self.seen.get(key) != seen:
            new = key not in self.seen
            self.seen[key] = seen
            self._trigger(key, routers=new)
        if key not in self.memories and _builtin(body.get("spec") or {}):
            self.memories[key] = Memory()
            self.autoscaler.add(key)

    def router_changed(self, kind: str, obj: Obj) -> None:
        """Queue the router when its spec, finalizers or deletion changed."""
        meta = obj.get("metadata") or {}
        key = ("r", str(meta.get("namespace") or ""), str(meta.get("name")))
        if kind == "DELETED":
            self.seen.pop(key, None)
            self.bodies.pop(key, None)
            self.queue.forget(key)
            self.routers.get(key[1], set()).discard(key[2])
            return
        self.bodies[key] = slim(obj)
        self.routers.setdefault(key[1], set()).add(key[2])
        seen = (meta.get("generation"), meta.get("deletionTimestamp") is not None,
                FINALIZER in (meta.get("finalizers") or []))  # fmt: skip
        if self.seen.get(key) != seen:
            self.seen[key] = seen
            self.queue.add(key)

    # -- the reconcile passes -----------------------------------------------------------------------------------

    async def _set_finalizer(self, body: Obj, present: bool) -> None:
        """Add or remove our finalizer; the resourceVersion makes a concurrent change of the list a conflict."""
        meta = body["metadata"]
        finalizers = [f for f in meta.get("finalizers") or [] if f != FINALIZER] + ([FINALIZER] if present else [])
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
        await self.kube.merge_patch(body["apiVersion"], body["kind"], meta["name"], meta["namespace"], patch)

    async def _finalizer_pass(self, body: Obj, wanted: bool) -> bool:
        """Keep our finalizer exactly where a NodePool is owned; at deletion clean up, then let go.

        True when the object is being deleted (nothing else to do for it).
        """
        meta = body["metadata"]
        has = FINALIZER in (meta.get("finalizers") or [])
        if meta.get("deletionTimestamp"):
            if has:
                if body["kind"] == "Qwen3Deployment":
                    await finalize_deployment(self.kube, body)
                await self._set_finalizer(body, present=False)
            return True
        if has != wanted:
            await self._set_finalizer(body, present=wanted)
        return False

    async def _post(self, body: Obj, events: list[tuple[str, str, str]]) -> None:
        for type_, reason, message in events:
            await self.events.post(body, type_, reason, message)

    async def _deployment_pass(self, body: Obj) -> float | None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if await self._finalizer_pass(body, owns_nodepool(body.get("spec") or {}, namespace, name)):
            return None
        started = time.perf_counter()
        outcome = await reconcile_deployment(self.kube, body, self.pods_of((namespace, name)), self.caps, self.applier)
        metrics.observe_reconcile(namespace, name, time.perf_counter() - started, outcome.status)
        if outcome.wrote_status:  # the watch brings the new status soon; meanwhile, do not write it again
            body["status"] = outcome.status
        await self._post(body, outcome.events)
        return outcome.retry_after

    async def _router_pass(self, body: Obj) -> float | None:
        if await self._finalizer_pass(body, wanted=False):
            return None
        namespace = body["metadata"]["namespace"]
        backends = [b.get("name", "") for b in (body.get("spec") or {}).get("backends") or []]
        ready = {b: ready_replicas(self.pods_of((namespace, b))) for b in backends}
        existing = {k[2] for k in self.bodies if k[0] == "d" and k[1] == namespace}
        outcome = await reconcile_router(self.kube, body, ready, existing, self.applier)
        if outcome.wrote_status:
            body["status"] = outcome.status
        await self._post(body, outcome.events)
        return outcome.retry_after

    def _back_off(self, key: TriggerKey) -> float:
        failures = self.failures.get(key, 0) + 1
        self.failures[key] = failures
        return min(MAX_BACKOFF_SECONDS, 2.0**failures)

    async def _reconcile(self, key: TriggerKey) -> float | None:
        """One pass of the one reconcile for the object `key`; when to look again (resync, retry or back-off)."""
        body = self.bodies.get(key)
        if body is None:
            self.failures.pop(key, None)
            return None  # gone
        try:
            async with self.slots:
                retry = await (self._deployment_pass if key[0] == "d" else self._router_pass)(body)
            self.failures.pop(key, None)
            return retry or RESYNC_SECONDS
        except KubeError as exc:
            wait = self._back_off(key)
            metrics.ERRORS.labels(reason=exc.reason or str(exc.status)).inc()
            log.warning("reconcile %s failed (%s); retrying in %.0fs", key, exc, wait)
            if exc.status != 409:  # a conflict on our finalizer patch is not worth an Event
                await self.events.post(body, "Warning", "ApplyFailed", str(exc))
            return wait
        except Exception as exc:  # a bug must not stop the queue or loop hot
            wait = self._back_off(key)
            metrics.ERRORS.labels(reason=type(exc).__name__).inc()
            log.exception("reconcile %s crashed; retrying in %.0fs", key, wait)
            return wait

    async def _autoscale(self, key: Key) -> float | None:
        """The builtin autoscaler, one tick: scrape ready replicas, decide, record in status, queue the reconcile."""
        body = self.bodies.get(("d", *key))
        memory = self.memories.get(key)
        if body is None or memory is None or not _builtin(body.get("spec") or {}):
            self.memories.pop(key, None)
            return None  # gone, or no longer builtin: a later change back adds it again
        if body["metadata"].get("deletionTimestamp"):
            return None
        assert self.session is not None
        try:
            decision = await autoscale_tick(self.kube, self.session, body, serving_ips(self.pods_of(key)), memory,
                                            self.options.checkpoint_interval)  # fmt: skip
            _collect(memory)
            if slo_objective(body) is not None and memory.state is not None:
                f = memory.state.forecast
                metrics.observe_slo(*key, f.level(), f.period, f.sequences_per_replica())
            if decision is not None:
                await self.events.post(body, "Normal", "Scaled", f"{decision.desired} replicas: {decision.reason}")
                self._trigger(key)
        except KubeError as exc:
            log.warning("autoscaler %s/%s: %s", *key, exc)
        except Exception:
            log.exception("autoscaler %s/%s crashed; continuing", *key)
        return self.options.autoscale_interval

    # -- running ------------------------------------------------------------------------------------------------

    async def _watched_children(self) -> list[tuple[str, str]]:
        """The child kinds to watch: all, but optional CRDs only when installed."""
        kinds = []
        for (group, _, plural), (api_version, kind) in zip(CHILD_RESOURCES, CHILD_KINDS, strict=True):
            optional = group.endswith(OPTIONAL_GROUPS)
            if optional and not await self.kube.crd_exists(f"{plural}.{group}"):
                continue
            kinds.append((api_version, kind))
        return kinds

    def _informers(self, children: list[tuple[str, str]]) -> list[Informer]:
        scopes: list[str | None] = [*self.options.namespaces] or [None]
        made = [Informer(self.watcher, api_version, kind, None, self.child_changed, label_selector=CHILD_SELECTOR)
                for api_version, kind in children if not resource_of(api_version, kind).namespaced]  # fmt: skip
        for namespace in scopes:
            for api_version, kind in children:
                if resource_of(api_version, kind).namespaced:
                    made.append(Informer(self.watcher, api_version, kind, namespace, self.child_changed,
                                         label_selector=CHILD_SELECTOR))  # fmt: skip
            made.append(Informer(self.watcher, "v1", "Pod", namespace, self.pod_changed, label_selector=POD_SELECTOR))
            made.append(Informer(self.watcher, *DEPLOYMENTS, namespace, self.deployment_changed))
            made.append(Informer(self.watcher, *ROUTERS, namespace, self.router_changed))
        return made

    async def run(self, stop: asyncio.Event) -> None:
        """Watch and reconcile until `stop` is set; then stop everything and close the clients.

        The queues start only once every watch has listed its kind: a first pass never re-applies a child it has
        not yet seen (after a restart, an unchanged child costs no write).
        """
        self.session = aiohttp.ClientSession()
        tasks: list[asyncio.Task[None]] = []
        cost = CostLoop(self.kube, list(self.options.namespaces), self.options.cost_interval, fleet=self)
        try:
            if not await self._discover(stop):
                return
            tasks = [asyncio.ensure_future(informer.run()) for informer in self.informers]
            await first_of(asyncio.gather(*(i.synced.wait() for i in self.informers)), stop.wait())
            if not stop.is_set():
                log.info("%d watches listed in %s; %d custom resources", len(self.informers),
                         ", ".join(self.options.namespaces) or "all namespaces", len(self.bodies))  # fmt: skip
                self.events.start()
                self.queue.start()
                self.autoscaler.start()
                register(cost)
                tasks.append(asyncio.ensure_future(cost.run()))
                await stop.wait()
        finally:
            await self._shutdown(tasks)

    async def _checkpoint_all(self) -> None:
        """Checkpoint every SLO deployment's memory that grew since its last checkpoint, a few at a time, for at
        most CHECKPOINT_FLUSH_SECONDS (a stop must not wait on an API server that does not answer)."""
        turns = asyncio.Semaphore(MAX_CONCURRENT_RECONCILES)

        async def one(memory: Memory) -> bool:
            async with turns:
                return await save_checkpoint(self.kube, memory)

        memories = list(self.memories.values())
        flush = asyncio.gather(*(one(m) for m in memories))
        try:
            written = await asyncio.wait_for(flush, CHECKPOINT_FLUSH_SECONDS)
            if any(written):
                log.info("autoscaler: %d checkpoints written on stop", sum(written))
        except TimeoutError:
            log.warning("autoscaler: checkpoints on stop took over %.0fs; the rest are lost", CHECKPOINT_FLUSH_SECONDS)
        for memory in memories:
            _collect(memory)

    async def _discover(self, stop: asyncio.Event) -> bool:
        """Which optional CRDs are installed (capabilities, kinds to watch); retried while the API server cannot
        answer, never a crash. False when stopped first."""
        backoff = 1.0
        while not stop.is_set():
            try:
                self.caps = Capabilities(
                    service_monitor=await self.kube.crd_exists("servicemonitors.monitoring.coreos.com"),
                    karpenter=await self.kube.crd_exists("nodepools.karpenter.sh"),
                    prometheus_url=self.options.prometheus_url or Capabilities().prometheus_url,
                )
                self.informers = self._informers(await self._watched_children())
                return True
            except KubeError as exc:
                log.warning("start-up: %s; retrying in %.0fs", exc, backoff)
                await first_of(asyncio.sleep(backoff), stop.wait())
                backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)
        return False

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.queue.stop()
        await self.autoscaler.stop()
        if self.checkpoint_on_stop:
            await self._checkpoint_all()
        await self.events.stop()
        if self.session is not None:
            await self.session.close()
        for kube in (self.kube, self.watcher):
            with contextlib.suppress(Exception):
                await kube.close()
