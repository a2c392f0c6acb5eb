"""The cost loop: take the model-server pods, scrape vLLM's token counters, advance each ledger, patch `status.cost`.

One task for the fleet. It reads the deployments, routers and their pods from a `Fleet`: the operator's own
watches (nothing listed per pass), or lists when run on its own. It owns `status.cost` and writes nothing else.
The ledger lives in status, so the totals survive an operator restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import REGISTRY, Collector

from qwenfleet.api.base import API_VERSION
from qwenfleet.api.deployment import slo_objective
from qwenfleet.catalog import UnknownGPUError, get_gpu
from qwenfleet.cost import ledger as lg
from qwenfleet.cost import routing
from qwenfleet.enginemetrics.scrape import Scraper
from qwenfleet.kube import Kube, KubeError
from qwenfleet.render.names import GROUP
from qwenfleet.render.router import ROUTER_PORT

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 10.0
WRITE_EVERY_SECONDS = 30.0
"""How often, at most, a deployment's status.cost is written while it serves (its token counts move)."""
IDLE_WRITE_EVERY_SECONDS = 300.0
"""How often status.cost is refreshed when only the clock moved (GPU time of idle replicas). Nothing is lost in
between: the ledger accounts each pod up to `accountedUntil`, and a restarted operator counts the rest from the pod's
own lifecycle; only the visible GPU-hours of an idle deployment lag by up to this much (one ledger bucket)."""
SCRAPE_TIMEOUT_SECONDS = 2.0
POD_SELECTOR = "app.kubernetes.io/managed-by=qwenfleet,app.kubernetes.io/component=model-server"
ROUTER_SELECTOR = "app.kubernetes.io/managed-by=qwenfleet,app.kubernetes.io/component=router"
ROUTER_TOKENS = "qwenfleet_router_tokens_total"
ADAPTER_TOKENS = "qwenfleet_router_adapter_tokens_total"
OVERFLOW = "qwenfleet_router_overflow_requests_total"
BUDGET_GAUGE = "qwenfleet_router_external_budget_exhausted"
Key = tuple[str, str]
Obj = dict[str, Any]


@dataclass
class Snapshot:
    """What one pass reads of a namespace: deployments, routers and the pods of each (pods as the API has them,
    or slimmed to their metadata, node, GPU limits, phase, IP, start time and conditions)."""

    deployments: list[Obj]
    pods: list[Obj]
    routers: list[Obj]
    router_pods: list[Obj]


class Fleet(Protocol):
    """Where the cost loop reads the fleet from."""

    async def snapshot(self, namespace: str | None) -> Snapshot:
        """The deployments, routers and their pods of one namespace (None: all)."""
        ...


class ListedFleet:
    """A fleet read by listing, for a cost loop that runs without the operator's watches."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def snapshot(self, namespace: str | None) -> Snapshot:
        """Four lists."""
        return Snapshot(
            deployments=await self.kube.list(API_VERSION, "Qwen3Deployment", namespace),
            pods=await self.kube.list("v1", "Pod", namespace, label_selector=POD_SELECTOR),
            routers=await self.kube.list(API_VERSION, "Qwen3Router", namespace),
            router_pods=await self.kube.list("v1", "Pod", namespace, label_selector=ROUTER_SELECTOR),
        )


def slim_pod(pod: Obj) -> Obj:
    """What the cost loop reads of a pod."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    limits = [{"resources": {"limits": (c.get("resources") or {}).get("limits") or {}}}
              for c in spec.get("containers") or []]  # fmt: skip
    return {
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "labels")},
        "spec": {"nodeName": spec.get("nodeName"), "containers": limits},
        "status": {k: status.get(k) for k in ("phase", "podIP", "startTime", "conditions") if k in status},
    }


@dataclass
class Book:
    """One deployment's ledger in memory, and what was last written to its status."""

    uid: str
    ledger: lg.Ledger
    written: dict[str, Any] = field(default_factory=dict)
    written_at: float = 0.0
    price: float = 0.0
    objective: tuple[float, float] | None = None
    """(ttftSeconds, attainment) of spec.autoscaling.slo, when set."""


def gpu_hour_price(body: dict[str, Any]) -> float:
    """Price of one GPU-hour: the plan's (which already applied spec.pricing), else spec.pricing, else catalog."""
    plan = (body.get("status") or {}).get("plan") or {}
    if plan.get("costPerHourUSD") is not None and plan.get("gpusPerReplica"):
        return float(plan["costPerHourUSD"]) / int(plan["gpusPerReplica"])
    spec = body.get("spec") or {}
    override = (spec.get("pricing") or {}).get("gpuHourUSD")
    if override is not None:
        return float(override)
    try:
        return get_gpu(str(spec.get("gpu", ""))).price_per_gpu_hour_usd
    except UnknownGPUError:
        return 0.0


@dataclass
class RouterBook:
    """One router's token counters in memory, and what was last written to its status."""

    uid: str
    totals: routing.Counters
    pods: dict[str, routing.Counters]
    written: dict[str, Any] = field(default_factory=dict)
    written_at: float = 0.0


@dataclass(frozen=True)
class RouterSample:
    """What the cost loop reads of one router pod: its token counters, and whether its share of the external APIs'
    daily budget is spent."""

    tokens: routing.Counters
    budget_exhausted: bool = False
    overflow: dict[str, float] = field(default_factory=dict)
    """Requests meant for each backend (by target) that another backend served, since the pod started."""


def parse_router_tokens(text: str) -> routing.Counters:
    """`backend/type/mode` -> value of the router's qwenfleet_router_tokens_total."""
    return parse_router(text).tokens


def parse_router(text: str) -> RouterSample:
    """A router pod's /metrics as the cost loop reads it."""
    out: routing.Counters = {}
    exhausted = False
    overflow: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == OVERFLOW:
                target = sample.labels.get("target", "")
                overflow[target] = overflow.get(target, 0.0) + sample.value
            if sample.name == ROUTER_TOKENS:
                key = f"{sample.labels.get('backend')}/{sample.labels.get('type')}/{sample.labels.get('mode')}"
                out[key] = out.get(key, 0.0) + sample.value
            elif sample.name == ADAPTER_TOKENS:
                labels = sample.labels
                key = routing.adapter_key(labels.get("backend", ""), labels.get("adapter", ""), labels.get("type", ""))
                out[key] = out.get(key, 0.0) + sample.value
            elif sample.name == BUDGET_GAUGE and sample.value >= 1:
                exhausted = True
    return RouterSample(out, exhausted, overflow)


def running_pods(pods: list[Obj]) -> list[Obj]:
    """The pods among `pods` that are Running with an IP (router pods to scrape)."""
    return [p for p in pods if (p.get("status") or {}).get("podIP") and p["status"].get("phase") == "Running"]


async def scrape_router(session: aiohttp.ClientSession, ip: str) -> RouterSample | None:
    """A router pod's token counters and budget state, or None if it did not answer."""
    try:
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_SECONDS)
        async with session.get(f"http://{ip}:{ROUTER_PORT}/metrics", timeout=timeout) as response:
            if response.status != 200:
                return None
            return parse_router(await response.text())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


def backend_price(body: dict[str, Any]) -> routing.BackendPrice:
    """A backend's realised USD per 1M output tokens since creation (else the planner's estimate), and its plan's
    size, hourly price and throughput."""
    status = body.get("status") or {}
    plan = status.get("plan") or {}
    realised = ((status.get("cost") or {}).get("sinceCreation") or {}).get("usdPerMillionOutputTokens")
    rate = realised if realised is not None else plan.get("costPerMillionOutputTokensUSD")
    return routing.BackendPrice(rate, int(plan.get("gpusPerReplica") or 0), float(plan.get("costPerHourUSD") or 0),
                                plan.get("decodeTokensPerSecond"), plan.get("prefillTokensPerSecond"))  # fmt: skip


def external_prices(spec: dict[str, Any]) -> dict[str, routing.BackendPrice]:
    """The external API backends of a router spec, at their list prices."""
    out = {}
    for backend in spec.get("backends") or []:
        prices = (backend.get("external") or {}).get("prices")
        if prices:
            out[str(backend["name"])] = routing.BackendPrice(
                float(prices.get("outputPerMillionUSD") or 0), 0, 0.0,
                usd_per_million_input=float(prices.get("inputPerMillionUSD") or 0), external=True,
            )  # fmt: skip
    return out


class CostLoop(Collector):
    """The fleet's cost ledgers, advanced every `interval` seconds; also a Prometheus collector of them."""

    def __init__(
        self,
        kube: Kube,
        namespaces: list[str] | None,
        interval: float = INTERVAL_SECONDS,
        fleet: Fleet | None = None,
        scraper: Scraper | None = None,
    ) -> None:
        self.kube = kube
        self.scraper = scraper
        """The model-server pods' samples, shared with the autoscaler (whose fresher sample a pass reuses)."""
        self.fleet: Fleet = fleet or ListedFleet(kube)
        self.namespaces: list[str | None] = list(namespaces) if namespaces else [None]
        self.interval = interval
        self.books: dict[Key, Book] = {}
        self.routers: dict[Key, RouterBook] = {}

    async def run(self) -> None:
        """Pass after pass until cancelled; an error skips one pass."""
        async with aiohttp.ClientSession() as session:
            if self.scraper is None:
                self.scraper = Scraper(session)
            while True:
                try:
                    await self.pass_once(session)
                except KubeError as exc:
                    log.warning("cost: %s", exc)
                except Exception:
                    log.exception("cost loop pass failed; continuing")
                await asyncio.sleep(self.interval)

    async def pass_once(self, session: aiohttp.ClientSession) -> None:
        """One pass over every watched namespace."""
        seen: set[Key] = set()
        for namespace in self.namespaces:
            snapshot = await self.fleet.snapshot(namespace)
            deployments, pods = snapshot.deployments, snapshot.pods
            by_owner: dict[Key, list[dict[str, Any]]] = {}
            for pod in pods:
                meta = pod.get("metadata") or {}
                owner = (meta.get("namespace", ""), (meta.get("labels") or {}).get(f"{GROUP}/deployment", ""))
                by_owner.setdefault(owner, []).append(pod)
            ips = {
                p["metadata"]["name"]: p["status"]["podIP"]
                for p in pods
                if (p.get("status") or {}).get("podIP") and p["status"].get("phase") == "Running"
            }
            assert self.scraper is not None
            by_ip = await self.scraper.samples(ips.values(), max_age=self.interval)
            counters = {name: by_ip[ip] for name, ip in ips.items() if ip in by_ip}
            for body in deployments:
                meta = body["metadata"]
                key = (meta["namespace"], meta["name"])
                seen.add(key)
                await self.account(body, by_owner.get(key, []), counters)
            await self.routers_pass(session, snapshot, seen)
        for gone in set(self.books) - seen:
            del self.books[gone]
        for gone in set(self.routers) - seen:
            del self.routers[gone]

    async def routers_pass(self, session: aiohttp.ClientSession, snapshot: Snapshot, seen: set[Key]) -> None:
        """Advance every router's token counters in a namespace; patch status.cost when due and changed."""
        routers, pods = snapshot.routers, snapshot.router_pods
        if not routers:
            return
        deployments = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in snapshot.deployments}
        running = running_pods(pods)
        scraped = await asyncio.gather(*(scrape_router(session, p["status"]["podIP"]) for p in running))
        for body in routers:
            meta, status = body["metadata"], body.get("status") or {}
            key = (meta["namespace"], meta["name"])
            seen.add(key)
            book = self.routers.get(key)
            if book is None or book.uid != meta.get("uid"):
                stored = (status.get("cost") or {}).get("ledger") or {}
                pods_seen = {k: dict(v) for k, v in (stored.get("pods") or {}).items()}
                book = RouterBook(
                    str(meta.get("uid")), dict(stored.get("totals") or {}), pods_seen, status.get("cost") or {}
                )
                self.routers[key] = book
            mine = {
                p["metadata"]["name"]: c
                for p, c in zip(running, scraped, strict=True)
                if (p["metadata"].get("labels") or {}).get(f"{GROUP}/deployment") == meta["name"]
                and p["metadata"].get("namespace") == key[0]
            }
            counters = {pod: None if c is None else c.tokens for pod, c in mine.items()}
            book.totals, book.pods = routing.advance_counters(book.totals, book.pods, counters)
            exhausted = any(c is not None and c.budget_exhausted for c in mine.values())
            spec = body.get("spec") or {}
            names = [b.get("name") for b in spec.get("backends") or []]
            prices = {n: backend_price(deployments[(key[0], n)]) for n in names if (key[0], n) in deployments}
            prices.update(external_prices(spec))
            cost = routing.report(book.totals, prices, spec.get("costReference"), book.pods)
            cost.external_budget_exhausted = True if exhausted else None
            record = cost.to_patch()
            now = time.time()
            if book.written and now - book.written_at < WRITE_EVERY_SECONDS:
                continue
            if _strip_ledger(record) == _strip_ledger(book.written) and book.written_at:
                continue
            await self.kube.patch_status(API_VERSION, "Qwen3Router", key[0], key[1], {"cost": record})
            book.written, book.written_at = record, now

    async def account(self, body: dict[str, Any], pods: Iterable[dict[str, Any]], counters: dict[str, Any]) -> None:
        """Advance one deployment's ledger; patch status.cost when due and changed."""
        meta, status = body["metadata"], body.get("status") or {}
        key = (meta["namespace"], meta["name"])
        book = self.books.get(key)
        if book is None or book.uid != meta.get("uid"):
            stored = status.get("cost") or {}
            ledger = lg.load(stored.get("ledger"))
            # After a restart the stored ledger says when it was last written: keep that cadence, so a restart
            # does not add a write of its own.
            written = {"cost": stored, "slo": status.get("slo")} if stored else {}
            book = Book(uid=str(meta.get("uid")), ledger=ledger, written=written, written_at=ledger.updated)
            self.books[key] = book
        now = time.time()
        mine = list(pods)
        scraped = [c for p in mine if (c := counters.get(p["metadata"]["name"])) is not None]
        objective = book.objective = slo_objective(body)
        bound = None if objective is None else lg.slo_bound(objective[0], scraped)
        if objective is not None and bound is None:
            bound = book.ledger.bound  # no replica answered with the histogram now: keep the bucket in use
        observations = [lg.observe(p, counters.get(p["metadata"]["name"]), bound) for p in mine]
        book.ledger = lg.advance(book.ledger, now, observations, bound)
        book.price = gpu_hour_price(body)
        estimate = ((status.get("plan") or {}).get("costPerMillionOutputTokensUSD")) or None
        slo = None if objective is None else lg.slo_report(book.ledger, now, *objective)
        patch: dict[str, Any] = {"cost": lg.report(book.ledger, now, book.price, estimate).to_patch(),
                                 "slo": None if slo is None else slo.to_patch()}  # fmt: skip
        if not write_due(patch, book.written, now - book.written_at):
            return
        if patch["slo"] is None and not status.get("slo"):
            del patch["slo"]  # nothing to remove
        await self.kube.patch_status(API_VERSION, "Qwen3Deployment", key[0], key[1], patch)
        book.written, book.written_at = patch, now

    def collect(self) -> Iterable[Metric]:
        """Prometheus series of the ledgers (collected at scrape time)."""
        labels = ["namespace", "deployment"]
        gpu = CounterMetricFamily("qwenfleet_deployment_gpu_seconds", "GPU-seconds held by replicas.", labels=labels)
        serving = CounterMetricFamily(
            "qwenfleet_deployment_serving_gpu_seconds", "GPU-seconds of replicas that were serving.", labels=labels
        )
        tokens = CounterMetricFamily(
            "qwenfleet_deployment_tokens", "Tokens served (from vLLM's counters).", labels=[*labels, "type"]
        )
        usd = CounterMetricFamily("qwenfleet_deployment_cost_usd", "Cost of the GPU time held, USD.", labels=labels)
        price = GaugeMetricFamily("qwenfleet_deployment_gpu_hour_usd", "Price of one GPU-hour, USD.", labels=labels)
        requests = CounterMetricFamily(
            "qwenfleet_deployment_requests",
            "Requests that got their first token (vLLM's TTFT histogram).",
            labels=labels,
        )
        timed = CounterMetricFamily(
            "qwenfleet_deployment_slo_requests",
            "Requests timed against spec.autoscaling.slo, by whether their first token came within ttftSeconds.",
            labels=[*labels, "result"],
        )
        target = GaugeMetricFamily(
            "qwenfleet_deployment_slo_target",
            "spec.autoscaling.slo.attainment: the share of requests that should get their first token in time "
            "(1 - target is the error budget the chart's burn-rate alerts divide by).",
            labels=labels,
        )
        for (namespace, name), book in sorted(self.books.items()):
            total = book.ledger.total
            requests.add_metric([namespace, name], total.requests)
            if total.timed:
                timed.add_metric([namespace, name, "on_time"], total.on_time)
                timed.add_metric([namespace, name, "late"], total.timed - total.on_time)
            if book.objective is not None:
                target.add_metric([namespace, name], book.objective[1])
            gpu.add_metric([namespace, name], total.gpu_seconds)
            serving.add_metric([namespace, name], total.serving_gpu_seconds)
            tokens.add_metric([namespace, name, "prompt"], total.prompt_tokens)
            tokens.add_metric([namespace, name, "output"], total.output_tokens)
            usd.add_metric([namespace, name], total.gpu_seconds / lg.HOUR * book.price)
            price.add_metric([namespace, name], book.price)
        routed = CounterMetricFamily(
            "qwenfleet_router_cost_usd",
            "Cost of a router's answers at each backend's realised price, USD.",
            labels=["namespace", "router", "backend"],
        )
        largest = GaugeMetricFamily(
            "qwenfleet_router_on_largest_usd",
            "The same answers at the largest backend's price, USD.",
            labels=["namespace", "router"],
        )
        reference = GaugeMetricFamily(
            "qwenfleet_router_reference_usd",
            "The same tokens at spec.costReference's prices, USD.",
            labels=["namespace", "router"],
        )
        for (namespace, name), rbook in sorted(self.routers.items()):
            for row in rbook.written.get("backends") or []:
                routed.add_metric([namespace, name, row["name"]], row["usd"])
            if rbook.written.get("onLargestUSD") is not None:
                largest.add_metric([namespace, name], rbook.written["onLargestUSD"])
            if rbook.written.get("referenceUSD") is not None:
                reference.add_metric([namespace, name], rbook.written["referenceUSD"])
        yield from (gpu, serving, tokens, usd, price, requests, timed, target, routed, largest, reference)


def _no_nulls(value: Any) -> Any:
    """A patch as the API server stores it: a null removes a field, so it compares equal to the field's absence."""
    if isinstance(value, dict):
        return {k: _no_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_nulls(v) for v in value]
    return value


def _strip_ledger(record: dict[str, Any]) -> dict[str, Any]:
    return {k: _no_nulls(v) for k, v in record.items() if k != "ledger" and v is not None}


def _without_ledger(patch: dict[str, Any]) -> dict[str, Any]:
    return {"cost": _strip_ledger(patch.get("cost") or {}), "slo": _no_nulls(patch.get("slo"))}


def _activity(patch: dict[str, Any]) -> tuple[Any, ...]:
    """What moves only when the deployment serves, its replicas change or its objective does: tokens, the pods in
    the ledger, the objective."""
    cost, slo = patch.get("cost") or {}, patch.get("slo") or {}
    total = cost.get("sinceCreation") or {}
    pods = tuple(sorted(p.get("name", "") for p in ((cost.get("ledger") or {}).get("pods")) or []))
    return (
        total.get("promptTokens"),
        total.get("outputTokens"),
        pods,
        slo.get("ttftSeconds"),
        slo.get("attainmentTarget"),
    )


def write_due(patch: dict[str, Any], written: dict[str, Any], since_write: float) -> bool:
    """Whether a deployment's new status.cost and status.slo are worth a write: not before it has held a GPU or
    served a token, never within WRITE_EVERY_SECONDS of the last one, never when nothing changed, and when only
    the clock moved, every IDLE_WRITE_EVERY_SECONDS."""
    if not written:  # the first record, once there is something to report (a deployment at zero has nothing)
        served = any(_activity(patch)[:3])  # tokens or pods, not merely an objective
        return bool(((patch.get("cost") or {}).get("sinceCreation") or {}).get("gpuHours")) or served
    if since_write < WRITE_EVERY_SECONDS or _without_ledger(patch) == _without_ledger(written):
        return False
    return _activity(patch) != _activity(written) or since_write >= IDLE_WRITE_EVERY_SECONDS


_registered: list[Collector] = []


def register(loop: CostLoop) -> None:
    """Export `loop`'s ledgers on the operator's /metrics (replacing a previous loop's)."""
    for old in _registered:
        REGISTRY.unregister(old)
    _registered.clear()
    REGISTRY.register(loop)
    _registered.append(loop)
