"""Backend discovery: the backends' Qwen3Deployments (do they exist, what do they serve, how many replicas do
they want) and their ready pods (not Services), with each pod's queue depth.

A pod counts only when Kubernetes says it is Ready *and* its server answers /health, so a pod whose model
is still loading never gets a request; a new pod also once lists the model it should serve in /v1/models, so an
address that still reaches another server (a pod IP given out again) never gets one either. The served model
name comes from the deployment's current plan, so an edit of `spec.model` is seen without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from qwenfleet.adapters import loaded_adapters
from qwenfleet.api.base import API_VERSION
from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.enginemetrics.parse import parse
from qwenfleet.kube import Kube, KubeError
from qwenfleet.render.names import HTTP_PORT, PLAN_ANNOTATION, WAKE_ANNOTATION
from qwenfleet.render.status import pod_state
from qwenfleet.router.policy import BackendState, Replica, name_clashes

log = logging.getLogger(__name__)
LOAD_TRACKING = "--enable-server-load-tracking"
FULL_SCRAPE_EVERY = 5
"""Without load tracking, the full /metrics exposition is read every this many discovery passes."""
API = API_VERSION
KIND = "Qwen3Deployment"


def waiting_from_load(body: object, max_num_seqs: int | None) -> float:
    """Requests waiting at a replica from vLLM's `/load` (`{"server_load": N}`, requests in flight): those beyond
    the `--max-num-seqs` it runs at once."""
    load = body.get("server_load") if isinstance(body, dict) else None
    if not isinstance(load, int | float):
        raise ValueError(f"not a /load answer: {body!r}")
    return float(max(0, load - (max_num_seqs or 0)))


@dataclass(frozen=True)
class QueueSignal:
    """How a replica's queue is read: `/load` (with the running limit), or /metrics."""

    load_tracking: bool
    max_num_seqs: int | None


def queue_signal(plan: dict[str, Any]) -> QueueSignal:
    """What a pod's plan says about its queue signal."""
    seqs = plan.get("maxNumSeqs")
    return QueueSignal(LOAD_TRACKING in (plan.get("vllmArgs") or []), seqs if isinstance(seqs, int) else None)


def served_model(plan: dict[str, Any]) -> str:
    """The `--served-model-name` of a plan (as in status.plan or a pod's plan annotation), or ""."""
    args = plan.get("vllmArgs") or []
    if "--served-model-name" in args[:-1]:
        return str(args[args.index("--served-model-name") + 1])
    return ""


def pod_plan(pod: dict[str, Any]) -> dict[str, Any]:
    """The plan a pod was started with (its plan annotation), or {}."""
    try:
        plan = json.loads((pod["metadata"].get("annotations") or {}).get(PLAN_ANNOTATION) or "{}")
    except ValueError:
        return {}
    return plan if isinstance(plan, dict) else {}


def _new_replica(pod: dict[str, Any]) -> Replica:
    """A replica for a ready pod, with the capacity (the plan's referenceConcurrency: sequences one replica runs
    at once at typical lengths, as the autoscaler sizes on) and served name of the plan it was started with."""
    plan = pod_plan(pod)
    capacity = plan.get("referenceConcurrency") or plan.get("maxNumSeqs")  # older plans lack the first
    return Replica(
        pod["metadata"]["name"],
        f"{pod['status']['podIP']}:{HTTP_PORT}",
        capacity=capacity if isinstance(capacity, int) and capacity > 0 else None,
        served_model=served_model(plan),
    )


class Discovery:
    """Keeps `states` current: per backend, its Qwen3Deployment and ready replicas, by polling and scraping."""

    def __init__(self, kube: Kube, namespace: str, spec: Qwen3RouterSpec, interval: float = 1.0) -> None:
        self.kube = kube
        self.namespace = namespace
        self.spec = spec
        self.interval = interval
        self.states: dict[str, BackendState] = {b.name: BackendState(b.name) for b in spec.backends}
        for b in spec.backends:
            if b.external is not None:  # one pseudo-replica, the API, for its whole life: its in-flight count is kept
                api = Replica("api", b.external.base_url, capacity=b.external.max_concurrency,
                              served_model=b.external.model, confirmed=True)  # fmt: skip
                self.states[b.name] = BackendState(b.name, replicas=[api], desired=1, external=True)
        self.external = frozenset(b.name for b in spec.backends if b.external is not None)
        self.changed = asyncio.Event()
        self._woken: dict[str, float] = {}
        self._clashes: list[str] = []
        self._signals: dict[str, QueueSignal] = {}
        self._passes = 0
        self.refreshed = False  # true after the first complete view of the backends

    async def refresh(self, session: aiohttp.ClientSession) -> None:
        """One pass: list the backends' Qwen3Deployments and model-server pods, keep ready pods, scrape queues."""
        deployments = {d["metadata"]["name"]: d for d in await self.kube.list(API, KIND, self.namespace)}
        names = ",".join(sorted(set(self.states) - self.external))
        selector = f"app.kubernetes.io/component=model-server,qwenfleet.dev/deployment in ({names})"
        pods = await self.kube.list("v1", "Pod", self.namespace, label_selector=selector) if names else []
        signals: dict[str, QueueSignal] = {}
        for name, state in self.states.items():
            if name in self.external:
                continue
            deployment = deployments.get(name)
            status = (deployment or {}).get("status") or {}
            state.exists = deployment is not None
            state.desired = int(status.get("desiredReplicas") or 0)
            previous = {r.id: r for r in state.replicas}
            replicas = []
            for pod in pods:
                labels = pod["metadata"].get("labels") or {}
                if labels.get("qwenfleet.dev/deployment") != name:
                    continue
                if pod_state(pod).ready_to_serve:
                    replicas.append(previous.get(pod["metadata"]["name"]) or _new_replica(pod))
                    pod_name = pod["metadata"]["name"]
                    signals[pod_name] = self._signals.get(pod_name) or queue_signal(pod_plan(pod))
            state.served_model = served_model(status.get("plan") or {}) if deployment else ""
            spec_adapters = ((deployment or {}).get("spec") or {}).get("adapters") or []
            state.adapters = tuple(str(a.get("name")) for a in spec_adapters if isinstance(a, dict))
            if deployment and not state.served_model:  # not planned yet: what the pods serve
                state.served_model = next((r.served_model for r in replicas if r.served_model), "")
            self._signals.update(signals)
            lora = bool(state.adapters)
            healthy = await asyncio.gather(*(self._scrape(session, r, lora) for r in replicas))
            state.replicas = [r for r, ok in zip(replicas, healthy, strict=True) if ok]
        clashes = name_clashes(self.spec, self.states)
        if clashes != self._clashes:
            for clash in clashes:
                log.warning("routing: %s; that name reaches the backend serving it", clash)
            self._clashes = clashes
        self._signals = signals
        self._passes += 1
        self.refreshed = True
        self.changed.set()
        self.changed = asyncio.Event()

    async def _scrape(self, session: aiohttp.ClientSession, replica: Replica, adapters: bool = False) -> bool:
        """True when the replica's server answers /health; also refreshes its queue depth from the cheap signal.

        Real vLLM's /metrics ignores `name[]` and renders its whole exposition (about 56 kB, milliseconds of the
        engine's time) at every call, so the queue comes from `/load` (17 bytes; the planner renders
        `--enable-server-load-tracking`): requests in flight beyond the replica's `--max-num-seqs` are waiting.
        Pods started without load tracking are scraped from /metrics, but only every `FULL_SCRAPE_EVERY` passes.
        With `adapters` (its deployment declares LoRA adapters) /v1/models is read each pass: the adapters loaded
        there, which the operator loads and unloads live.
        """
        signal = self._signals.get(replica.id) or QueueSignal(False, None)
        try:
            timeout = aiohttp.ClientTimeout(total=1.0)
            async with session.get(f"http://{replica.address}/health", timeout=timeout) as response:
                if response.status != 200:
                    return False
            if not replica.confirmed and replica.served_model:
                async with session.get(f"http://{replica.address}/v1/models", timeout=timeout) as response:
                    listed = (await response.json(content_type=None)).get("data") or []
                    if response.status != 200 or replica.served_model not in {m.get("id") for m in listed}:
                        return False
                replica.confirmed = True
            if adapters:
                async with session.get(f"http://{replica.address}/v1/models", timeout=timeout) as response:
                    models = await response.json(content_type=None) if response.status == 200 else {}
                replica.adapters = frozenset(loaded_adapters(models))
            elif replica.adapters:
                replica.adapters = frozenset()
            if signal.load_tracking:
                async with session.get(f"http://{replica.address}/load", timeout=timeout) as response:
                    replica.waiting = waiting_from_load(await response.json(content_type=None), signal.max_num_seqs)
            elif self._passes % FULL_SCRAPE_EVERY == 0:
                async with session.get(f"http://{replica.address}/metrics", timeout=timeout) as response:
                    replica.waiting = parse(await response.text()).waiting
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
            return False
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh every `interval` until `stop`."""
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                try:
                    await self.refresh(session)
                except KubeError as exc:  # API server unreachable too: keep the last view, retry
                    log.warning("discovery: %s", exc)
                except Exception:  # a bug here must not freeze routing on a stale view
                    log.exception("discovery: refresh failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.interval)

    async def wake(self, backend: str) -> None:
        """Ask the operator to scale a backend from zero (at most once every 10 s)."""
        now = time.time()
        if now - self._woken.get(backend, 0) < 10:
            return
        self._woken[backend] = now
        patch = {"metadata": {"annotations": {WAKE_ANNOTATION: str(int(now))}}}
        try:
            await self.kube.merge_patch(API_VERSION, "Qwen3Deployment", backend, self.namespace, patch)
        except KubeError as exc:
            log.warning("cannot wake %s: %s", backend, exc)

    async def wait_changed(self, within: float) -> bool:
        """Wait for the next refresh, up to `within` seconds; true when one happened."""
        try:
            await asyncio.wait_for(self.changed.wait(), timeout=max(0.0, within))
        except TimeoutError:
            return False
        return True
