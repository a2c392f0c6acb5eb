"""The operator's state and work: the reconcile and autoscaler queues, the cost loop and Events, fed by kopf.

kopf (controller/handlers.py) watches the Qwen3Deployments, Qwen3Routers, our children and the model-server pods,
and keeps an index of each: the custom resources without managedFields, each child's identity, labels,
annotations and status (controller/applied.py), each pod's readiness and IP (PodState). Its event handlers call
the `*_changed` methods here, which queue the owner's key when something relevant changed (its spec, wake
annotation, autoscaler decision, finalizers or deletion; a child or a model-server pod). A fixed pool of workers
runs the level-based reconcile, one pass per key at a time, and every pass schedules the next (the resync, a
retry or a back-off). Creation, updates, operator restarts and the periodic resync all end in the same
reconcile. Nothing is written to our objects but their status and, only on deployments that own a cluster-scoped
NodePool, our finalizer.

The work runs only while this replica leads (`lead` / `stand_down`); kopf's watches and indexes run on every
replica, so a standby that takes over knows every object before its first pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from qwenfleet.api.deployment import slo_objective
from qwenfleet.autoscale.loop import CHECKPOINT_SECONDS, Memory
from qwenfleet.autoscale.loop import save as save_checkpoint
from qwenfleet.autoscale.loop import tick as autoscale_tick
from qwenfleet.controller import metrics
from qwenfleet.controller.adapters import INTERVAL_SECONDS as ADAPTER_INTERVAL_SECONDS
from qwenfleet.controller.adapters import sync_adapters
from qwenfleet.controller.applied import CachingApplier, owner_of
from qwenfleet.controller.deployment import (
    FINALIZER,
    PodState,
    delete_owned_pool,
    finalize_deployment,
    owns_nodepool,
    reconcile_deployment,
)
from qwenfleet.controller.events import EventPoster
from qwenfleet.controller.health import WatchHealth
from qwenfleet.controller.indexes import COMPONENT, OPTIONAL_CRDS, Indexes
from qwenfleet.controller.router import reconcile_router
from qwenfleet.controller.workqueue import WorkQueue
from qwenfleet.cost.loop import INTERVAL_SECONDS as COST_INTERVAL_SECONDS
from qwenfleet.cost.loop import CostLoop, Snapshot, register, running_pods, scrape_router
from qwenfleet.enginemetrics.scrape import Scraper
from qwenfleet.kube import Kube, KubeError
from qwenfleet.render import Capabilities
from qwenfleet.render.names import WAKE_ANNOTATION
from qwenfleet.render.router import POOL_CRD
from qwenfleet.render.status import ready_replicas, serving_ips

log = logging.getLogger(__name__)

RESYNC_SECONDS = 60.0
MAX_CONCURRENT_RECONCILES = 32
AUTOSCALE_INTERVAL_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 120.0
AUTOSCALE_WORKERS = 16
CHECKPOINT_FLUSH_SECONDS = 10.0
"""At most this long, of a pod's 30 s grace period, goes to checkpointing the autoscaler's memory on stop."""
NEW_KIND_SETTLE_SECONDS = 10.0
"""After a CRD appears, kopf resolves its kind and lists it within moments (a few retries while the API server
initialises its storage); then the cache, not the answers of applies sent before, decides."""
Obj = dict[str, Any]
Key = tuple[str, str]
TriggerKey = tuple[str, str, str]
"""("d", namespace, name) for a Qwen3Deployment, ("r", ...) for a Qwen3Router, ("o", "", name) for a NodePool whose
owner is not known (an orphan to prune)."""


@dataclass(frozen=True)
class Options:
    """How `qwenfleet run` was asked to run."""

    kubeconfig: str | None = None
    namespaces: tuple[str, ...] = ()
    """Watched namespaces; empty for all."""
    prometheus_url: str | None = None
    autoscale_interval: float = AUTOSCALE_INTERVAL_SECONDS
    checkpoint_interval: float = CHECKPOINT_SECONDS
    cost_interval: float = COST_INTERVAL_SECONDS


def slim(body: Mapping[str, Any]) -> Obj:
    """The object as the reconcile reads it: without managedFields and kubectl's copy of the last apply."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    annotations = meta.get("annotations")
    if annotations and "kubectl.kubernetes.io/last-applied-configuration" in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items()
                               if k != "kubectl.kubernetes.io/last-applied-configuration"}  # fmt: skip
    return {**{k: v for k, v in body.items() if k != "metadata"}, "metadata": meta}


def _collect(memory: Memory) -> None:
    """Count the autoscaler's checkpoint events in the metrics."""
    for result, count in memory.checkpoint_events.items():
        metrics.CHECKPOINTS.labels(result=result).inc(count)
    memory.checkpoint_events.clear()


def _lora(body: Mapping[str, Any]) -> bool:
    """The deployment serves adapters, or still reports some (their status goes once they are all removed)."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    return bool(spec.get("adapters") or spec.get("lora") or status.get("adapters"))


def _builtin(spec: Mapping[str, Any]) -> bool:
    return bool((spec.get("autoscaling") or {}).get("mode") == "builtin")


def back_off(failures: int, rng: random.Random | None = None) -> float:
    """Seconds before the next try after `failures` failures in a row: doubling up to MAX_BACKOFF_SECONDS, with
    up to a fifth of jitter so that objects failing together do not retry together."""
    base = min(MAX_BACKOFF_SECONDS, 2.0**failures)
    return base * (1.0 + 0.2 * (rng or random).random())


class Operator:
    """The queues and the reconcile passes of one running operator, over kopf's indexes."""

    def __init__(self, kube: Kube, options: Options) -> None:
        self.kube = kube
        self.options = options
        self.idx = Indexes()
        self.applier = CachingApplier(kube, self.idx)
        self.events = EventPoster(kube)
        self.health = WatchHealth()
        self.caps = Capabilities()
        self.indexed = asyncio.Event()
        """Set by the first handler kopf runs: from then on every index is complete."""
        self.seen: dict[Any, tuple[Any, ...]] = {}  # what of each custom resource queues a reconcile
        self.failures: dict[TriggerKey, int] = {}
        self.memories: dict[Key, Memory] = {}  # the builtin autoscaler's memory per deployment
        self.slots = asyncio.Semaphore(MAX_CONCURRENT_RECONCILES)
        self.queue: WorkQueue[TriggerKey] = WorkQueue(self._reconcile, MAX_CONCURRENT_RECONCILES, "reconcile")
        self.autoscaler: WorkQueue[Key] = WorkQueue(self._autoscale, AUTOSCALE_WORKERS, "autoscaler")
        self.adapters: WorkQueue[Key] = WorkQueue(self._sync_adapters, AUTOSCALE_WORKERS, "adapters")
        """The live LoRA adapter sync of deployments that serve adapters."""
        self._overflow_cache: dict[str, tuple[float, dict[str, dict[str, float]]]] = {}
        """Per namespace: when its router pods were read, and each pod's overflow counts by target."""
        self.session: aiohttp.ClientSession | None = None
        self.scraper: Scraper | None = None
        """The model-server pods' /metrics, scraped once per tick for the autoscaler and the cost loop."""
        self.cost: CostLoop | None = None
        self._cost_task: asyncio.Task[None] | None = None
        self.leading = False
        self.on_cleanup: Callable[[], Awaitable[None]] | None = None
        """Called by kopf's cleanup after the work has stopped (main.py gives the Lease up there)."""

    def pods_of(self, key: Key) -> list[PodState]:
        """The model-server pods of one deployment."""
        return self.idx.pods_of(key)

    async def snapshot(self, namespace: str | None) -> Snapshot:
        """The fleet as the indexes last saw it, for the cost loop (a Fleet): nothing is listed."""
        mine = [b for b in self.idx.all_deployments() if namespace is None or b["metadata"]["namespace"] == namespace]
        routers = [b for b in self.idx.all_routers() if namespace is None or b["metadata"]["namespace"] == namespace]
        pods = [r for r in self.idx.all_pods() if namespace is None or r.slim["metadata"]["namespace"] == namespace]
        return Snapshot(
            deployments=mine,
            pods=[r.slim for r in pods if r.component == "model-server"],
            routers=routers,
            router_pods=[r.slim for r in pods if r.component == "router"],
        )

    # -- capabilities -------------------------------------------------------------------------------------------

    async def discover(self) -> None:
        """Which optional CRDs are installed now (kopf's CRD events keep it current afterwards)."""
        for crd in OPTIONAL_CRDS:
            if await self.kube.crd_exists(crd):
                self.idx.installed.add(crd)
        self._caps_changed()

    def _caps_changed(self) -> None:
        self.caps = Capabilities(
            service_monitor="servicemonitors.monitoring.coreos.com" in self.idx.installed,
            karpenter="nodepools.karpenter.sh" in self.idx.installed,
            prometheus_url=self.options.prometheus_url or Capabilities().prometheus_url,
        )

    def crd_changed(self, name: str, present: bool) -> None:
        """An optional CRD was installed or removed: every deployment renders anew (a ServiceMonitor, a NodePool,
        a ScaledObject may be wanted, or possible, now)."""
        if name not in OPTIONAL_CRDS or (name in self.idx.installed) == present:
            return
        (self.idx.installed.add if present else self.idx.installed.discard)(name)
        self._caps_changed()
        log.info("CRD %s %s; reconciling every deployment and router", name, "installed" if present else "removed")
        self._reconcile_all()
        if present:
            # and again once kopf's new watch of the kind has listed: an object of the kind that changed before the
            # list (the watch saw none of its events) is then compared with what the list found, not with the answer
            # of an apply sent before it
            asyncio.get_running_loop().call_later(NEW_KIND_SETTLE_SECONDS, self._new_kind_listed, OPTIONAL_CRDS[name])

    def _new_kind_listed(self, kind: str) -> None:
        self.applier.forget_answers(kind)
        self._reconcile_all()

    def _reconcile_all(self) -> None:
        for body in self.idx.all_deployments():
            self.queue.add(("d", body["metadata"]["namespace"], body["metadata"]["name"]))
        for body in self.idx.all_routers():  # an InferencePool CRD: the routers' pools
            self.queue.add(("r", body["metadata"]["namespace"], body["metadata"]["name"]))

    def _status_plan(self, namespace: str, name: str) -> dict[str, Any]:
        """status.plan of a Qwen3Deployment as the index last saw it ({} when unknown)."""
        body = self.idx.deployment(namespace, name) or {}
        plan = (body.get("status") or {}).get("plan")
        return plan if isinstance(plan, dict) else {}

    # -- what the watches hand over -----------------------------------------------------------------------------

    def _trigger(self, key: Key, *, routers: bool = False) -> None:
        """Queue the Qwen3Deployment `key`, and with `routers` every Qwen3Router in its namespace."""
        if self.idx.deployment(*key) is not None:
            self.queue.add(("d", *key))
        if routers:
            for body in self.idx.all_routers():
                if body["metadata"]["namespace"] == key[0]:
                    self.queue.add(("r", key[0], body["metadata"]["name"]))

    def pod_changed(self, namespace: str, owner: str, component: str) -> None:
        """One of our pods changed: a model server's deployment (status) and its routers (backend counts), and
        its adapters (a replica that became ready loads them now)."""
        self.indexed.set()
        self._trigger((namespace, owner), routers=component == "model-server")
        body = self.idx.deployment(namespace, owner)
        if component == "model-server" and body is not None and _lora(body):
            self.adapters.add((namespace, owner))

    def child_changed(self, obj: Mapping[str, Any], deleted: bool) -> None:
        """A child changed or vanished: restore it now, not at the next resync."""
        self.indexed.set()
        self.applier.noticed(dict(obj), deleted=deleted)
        owner = owner_of(dict(obj))
        if obj.get("kind") == "NodePool" and not deleted and self.idx.deployment(*owner) is None:
            self.queue.add(("o", "", str(obj["metadata"]["name"])))
            return
        self._trigger(owner)
        component = ((obj.get("metadata") or {}).get("labels") or {}).get(COMPONENT)
        if component == "router" and self.idx.router(*owner) is not None:
            self.queue.add(("r", *owner))

    def deployment_changed(self, body: Mapping[str, Any], deleted: bool) -> None:
        """Queue the deployment when its spec, wake annotation, autoscaler decision, finalizers or deletion changed,
        and the namespace's routers when a deployment appears or goes (their backends may exist now, or no longer).

        Other status writes (our own) do not queue a reconcile.
        """
        self.indexed.set()
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name")))
        if deleted:
            self.seen.pop(key, None)
            self.queue.forget(("d", *key))
            self.autoscaler.forget(key)
            self.adapters.forget(key)
            self.memories.pop(key, None)
            metrics.forget(*key)
            self._trigger(key, routers=True)
            return
        decided = ((body.get("status") or {}).get("autoscaler") or {}).get("desiredReplicas")
        seen = (meta.get("generation"), (meta.get("annotations") or {}).get(WAKE_ANNOTATION), decided,
                meta.get("deletionTimestamp") is not None, FINALIZER in (meta.get("finalizers") or []))  # fmt: skip
        if self.seen.get(key) != seen:
            new = key not in self.seen
            changed = new or self.seen[key][0] != seen[0]
            self.seen[key] = seen
            self._trigger(key, routers=new)
            if changed and _lora(body):
                self.adapters.add(key)  # a spec change loads or unloads adapters now, not at the next tick
        if key not in self.memories and _builtin(body.get("spec") or {}):
            self.memories[key] = Memory()
            self.autoscaler.add(key)

    def router_changed(self, body: Mapping[str, Any], deleted: bool) -> None:
        """Queue the router when its spec, finalizers or deletion changed."""
        self.indexed.set()
        meta = body.get("metadata") or {}
        key = ("r", str(meta.get("namespace") or ""), str(meta.get("name")))
        if deleted:
            self.seen.pop(key, None)
            self.queue.forget(key)
            return
        seen = (meta.get("generation"), meta.get("deletionTimestamp") is not None,
                FINALIZER in (meta.get("finalizers") or []))  # fmt: skip
        if self.seen.get(key) != seen:
            self.seen[key] = seen
            self.queue.add(key)

    # -- leading ------------------------------------------------------------------------------------------------

    async def lead(self) -> None:
        """Start the work (once every index is complete): queue every object, run the autoscaler, the cost loop
        and the Event senders."""
        await self.indexed.wait()
        self.leading = True
        metrics.LEADER.set(1)
        if self.session is None:
            self.session = aiohttp.ClientSession()
            self.scraper = Scraper(self.session)
        self.events.start()
        self.queue.start()
        self.autoscaler.start()
        self.adapters.start()
        deployments = list(self.idx.all_deployments())
        routers = list(self.idx.all_routers())
        log.info("leading: %d Qwen3Deployments and %d Qwen3Routers in %s", len(deployments), len(routers),
                 ", ".join(self.options.namespaces) or "all namespaces")  # fmt: skip
        for body in deployments:
            self.queue.add(("d", body["metadata"]["namespace"], body["metadata"]["name"]))
            if _lora(body):
                self.adapters.add((body["metadata"]["namespace"], body["metadata"]["name"]))
        for body in routers:
            self.queue.add(("r", body["metadata"]["namespace"], body["metadata"]["name"]))
        for key in list(self.memories):
            self.autoscaler.add(key)
        self.cost = CostLoop(self.kube, list(self.options.namespaces), self.options.cost_interval, fleet=self,
                             scraper=self.scraper)  # fmt: skip
        register(self.cost)
        self._cost_task = asyncio.ensure_future(self.cost.run())

    async def stand_down(self, drain_seconds: float, checkpoint: bool) -> None:
        """Stop the work: the passes that run may finish within `drain_seconds`; with `checkpoint`, SLO mode's
        memory is saved (a shutdown; not after a lost Lease, when the new leader owns the checkpoints)."""
        if not self.leading:
            return
        self.leading = False
        metrics.LEADER.set(0)
        if self._cost_task is not None:
            self._cost_task.cancel()
            await asyncio.gather(self._cost_task, return_exceptions=True)
            self._cost_task = None
        await asyncio.gather(self.queue.stop(drain_seconds), self.autoscaler.stop(drain_seconds),
                             self.adapters.stop(drain_seconds))  # fmt: skip
        if checkpoint:
            await self._checkpoint_all()
        await self.events.stop(drain_seconds)
        self.failures.clear()

    async def close(self) -> None:
        """Close the HTTP session and the API client."""
        if self.session is not None:
            await self.session.close()
            self.session, self.scraper = None, None
        with contextlib.suppress(Exception):
            await self.kube.close()

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
        existing = {
            b["metadata"]["name"] for b in self.idx.all_deployments() if b["metadata"]["namespace"] == namespace
        }
        multi_node = frozenset(
            b for b in backends if int(self._status_plan(namespace, b).get("nodesPerReplica") or 1) > 1
        )
        pools = POOL_CRD in self.idx.installed
        outcome = await reconcile_router(
            self.kube, body, ready, existing, self.applier, pools_installed=pools, multi_node=multi_node
        )
        if outcome.wrote_status:
            body["status"] = outcome.status
        await self._post(body, outcome.events)
        return outcome.retry_after

    async def _orphan_pass(self, pool: str) -> None:
        """A NodePool of ours whose Qwen3Deployment is gone (in a namespace this operator serves): delete it."""
        view = self.idx.get("NodePool", "", pool)
        if view is None:
            return
        namespace, owner = owner_of(view)
        served = not self.options.namespaces or namespace in self.options.namespaces
        if served and owner and self.idx.deployment(namespace, owner) is None:
            log.info("NodePool %s belongs to %s/%s, which no longer exists: deleting it", pool, namespace, owner)
            await delete_owned_pool(self.kube, namespace, owner)

    async def _reconcile(self, key: TriggerKey) -> float | None:
        """One pass of the one reconcile for the object `key`; when to look again (resync, retry or back-off)."""
        if key[0] == "o":
            await self._orphan_pass(key[2])
            return None
        body = self.idx.deployment(key[1], key[2]) if key[0] == "d" else self.idx.router(key[1], key[2])
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

    def _back_off(self, key: TriggerKey) -> float:
        self.failures[key] = self.failures.get(key, 0) + 1
        return back_off(self.failures[key])

    async def _autoscale(self, key: Key) -> float | None:
        """The builtin autoscaler, one tick: scrape ready replicas, decide, record in status, queue the reconcile."""
        body = self.idx.deployment(*key)
        memory = self.memories.get(key)
        if body is None or memory is None or not _builtin(body.get("spec") or {}):
            self.memories.pop(key, None)
            return None  # gone, or no longer builtin: a later change back adds it again
        if body["metadata"].get("deletionTimestamp"):
            return None
        assert self.scraper is not None
        try:
            overflow = await self._overflow(key) if slo_objective(body) is not None else None  # SLO mode's arrivals
            decision = await autoscale_tick(self.kube, self.scraper, body, serving_ips(self.pods_of(key)), memory,
                                            self.options.checkpoint_interval, overflow)  # fmt: skip
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

    async def _sync_adapters(self, key: Key) -> float | None:
        """Load and unload one deployment's adapters on its ready replicas; again every few seconds while it has
        any (a replica that restarted, a load that failed)."""
        body = self.idx.deployment(*key)
        if body is None or body["metadata"].get("deletionTimestamp") or self.session is None:
            return None
        try:
            keep = await sync_adapters(self.kube, self.session, body, serving_ips(self.pods_of(key)))
        except KubeError as exc:
            log.warning("adapters %s/%s: %s", *key, exc)
            keep = True
        except Exception:
            log.exception("adapters %s/%s: sync crashed; continuing", *key)
            keep = True
        return ADAPTER_INTERVAL_SECONDS if keep else None

    async def _overflow(self, key: Key) -> dict[str, float]:
        """Per running router pod of the namespace: its count of requests meant for deployment `key` that another
        backend served (read at most once a second per namespace, for every deployment there)."""
        namespace, name = key
        cached = self._overflow_cache.get(namespace)
        if cached is None or time.monotonic() - cached[0] >= 1.0:
            pods = [r.slim for r in self.idx.all_pods() if r.component == "router"
                    and r.slim.get("metadata", {}).get("namespace") == namespace]  # fmt: skip
            running = [str(p["status"]["podIP"]) for p in running_pods(pods)]
            assert self.session is not None
            samples = await asyncio.gather(*(scrape_router(self.session, ip) for ip in running))
            cached = (time.monotonic(), {ip: s.overflow for ip, s in zip(running, samples, strict=True) if s})
            self._overflow_cache[namespace] = cached
        return {ip: counts.get(name, 0.0) for ip, counts in cached[1].items()}

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
