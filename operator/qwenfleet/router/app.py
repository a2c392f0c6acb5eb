"""The router's data plane: an OpenAI-compatible aiohttp proxy that streams without buffering."""

from __future__ import annotations

import hmac
import json
import random
import time
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.router.discovery import Discovery
from qwenfleet.router.policy import (
    PrefixHomes,
    Replica,
    Route,
    UnknownModel,
    choose_backend,
    choose_replica,
    model_names,
)
from qwenfleet.router.requests import BadRequest, route_request

ROUTE_HEADER = "x-qwenfleet-route"
MAX_ATTEMPTS = 3
WHOLE_BODY_BYTES = 256 * 1024  # non-streaming answers up to this size are sent in one write
HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "host"}


class RouterMetrics:
    """The router's own Prometheus metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("qwenfleet_router_requests", "Requests by backend, route reason and status.",
                                ["backend", "reason", "status"], registry=r)  # fmt: skip
        self.ttfb = Histogram("qwenfleet_router_time_to_first_byte_seconds", "Upstream time to first byte.",
                              ["backend"], registry=r)  # fmt: skip
        buckets = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
        help_text = "Time spent in the router before the upstream request is sent."
        self.overhead = Histogram("qwenfleet_router_added_latency_seconds", help_text, buckets=buckets, registry=r)
        self.inflight = Gauge("qwenfleet_router_inflight_requests", "Requests in flight.", ["backend"], registry=r)


def _error(status: int, message: str, kind: str, route: str | None = None) -> web.Response:
    headers = {ROUTE_HEADER: route} if route else None
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return web.json_response(body, status=status, headers=headers)


class Router:
    """Routes OpenAI requests to backend replicas discovered by `discovery`."""

    def __init__(self, spec: Qwen3RouterSpec, discovery: Discovery, api_keys: set[str] | None = None) -> None:
        self.spec = spec
        self.discovery = discovery
        self.api_keys = [k.encode() for k in api_keys or set()]
        self.rng = random.Random()
        self.prefix_homes: dict[str, PrefixHomes] = {}  # per backend
        self.metrics = RouterMetrics()
        self.session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=self.spec.limits.max_body_bytes)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_view)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _: web.Application) -> None:
        timeout = aiohttp.ClientTimeout(total=self.spec.limits.upstream_timeout_seconds,
                                        sock_connect=self.spec.limits.connect_timeout_seconds)  # fmt: skip
        # Bytes pass through as the replica sent them (no decompression, so Content-Encoding stays true).
        self.session = aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        )

    async def _stop(self, _: web.Application) -> None:
        if self.session:
            await self.session.close()

    def _authorized(self, request: web.Request) -> bool:
        if not self.api_keys:
            return True
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip().encode()
        return any(hmac.compare_digest(given, key) for key in self.api_keys)

    async def health(self, _: web.Request) -> web.Response:
        """Ready once discovery has a first view of the backends (before that, every backend looks empty and a
        request would needlessly wake it)."""
        if not self.discovery.refreshed:
            return web.json_response({"status": "starting"}, status=503)
        return web.json_response({"status": "ok"})

    async def metrics_view(self, _: web.Request) -> web.Response:
        """Prometheus text."""
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def models(self, request: web.Request) -> web.Response:
        """The union of aliases, served model names and `auto`."""
        if not self._authorized(request):
            return _error(401, "invalid API key", "AuthenticationError")
        names = model_names(self.spec, self.discovery.states)
        data = [{"id": n, "object": "model", "owned_by": "qwenfleet", "backend": b or "auto"} for n, b in names.items()]
        return web.json_response({"object": "list", "data": data})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """/v1/chat/completions."""
        return await self._proxy(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """/v1/completions."""
        return await self._proxy(request, chat=False)

    async def _backend(self, route: Route) -> Route | None:
        """The route once its backend has a ready replica: wake it from zero and hold, or take the fallback."""
        states = self.discovery.states
        if states[route.backend].replicas:
            return route
        if self.spec.scale_from_zero.enabled:
            await self.discovery.wake(route.backend)
            if await self.discovery.wait_ready(route.backend, self.spec.scale_from_zero.hold_seconds):
                return Route(route.backend, f"{route.reason}>woken")
        backend = next(b for b in self.spec.backends if b.name == route.backend)
        if backend.fallback and states[backend.fallback].replicas:
            return Route(backend.fallback, f"{route.reason}>fallback")
        return None

    async def _proxy(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        started = time.perf_counter()
        if not self._authorized(request):
            return _error(401, "invalid API key", "AuthenticationError")
        try:
            raw = await request.read()
            body = json.loads(raw)
            parsed = route_request(body, {k.lower(): v for k, v in request.headers.items()}, chat=chat)
            route = choose_backend(parsed, self.spec, self.discovery.states)
        except BadRequest as exc:
            return _error(400, str(exc), "BadRequestError")
        except ValueError as exc:  # malformed JSON or bytes that are not UTF-8
            return _error(400, f"invalid JSON body: {exc}", "BadRequestError")
        except UnknownModel as exc:
            known = ", ".join(sorted(model_names(self.spec, self.discovery.states)))
            return _error(404, f"The model `{exc}` does not exist. Known models: {known}", "NotFoundError")
        ready = await self._backend(route)
        if ready is None:
            self.metrics.requests.labels(route.backend, route.reason, "503").inc()
            return _error(503, f"no ready replica of {route.backend} within the hold time", "ServiceUnavailableError",
                          f"{route.backend};{route.reason}")  # fmt: skip
        route = ready
        state = self.discovery.states[route.backend]
        upstream_model = state.served_model or body["model"]
        if upstream_model == body["model"]:
            payload = raw  # nothing to rewrite: forward the client's bytes as they are
        else:
            body["model"] = upstream_model
            payload = json.dumps(body).encode()
        tried: set[str] = set()
        last_error = "no replica"
        affinity = self.spec.prefix_affinity
        prefix_chars = affinity.prefix_chars if affinity.enabled else 0
        homes = self.prefix_homes.setdefault(route.backend, PrefixHomes()) if affinity.enabled else None
        for _ in range(MAX_ATTEMPTS):
            replica = choose_replica(
                state, self.rng, prefix=parsed.prefix, prefix_chars=prefix_chars, homes=homes,
                load_bound=affinity.load_bound, exclude=frozenset(tried),
            )  # fmt: skip
            if replica is None:
                break
            tried.add(replica.id)
            self.metrics.overhead.observe(time.perf_counter() - started)
            result = await self._forward(request, route, replica, payload)
            if isinstance(result, web.StreamResponse):
                return result
            last_error = result
        self.metrics.requests.labels(route.backend, route.reason, "502").inc()
        return _error(502, f"upstream failed before responding: {last_error}", "BadGatewayError",
                      f"{route.backend};{route.reason}")  # fmt: skip

    async def _forward(
        self, request: web.Request, route: Route, replica: Replica, payload: bytes
    ) -> web.StreamResponse | str:
        """Send to one replica; before the first byte a failure returns a reason (the caller retries elsewhere)."""
        assert self.session is not None
        url = f"http://{replica.address}{request.path}"
        replica.outstanding += 1
        self.metrics.inflight.labels(route.backend).inc()
        sent = time.perf_counter()
        streaming = False
        try:
            async with self.session.post(url, data=payload, headers={"Content-Type": "application/json"}) as upstream:
                if upstream.status >= 500:
                    return f"{replica.id} answered {upstream.status}"
                self.metrics.ttfb.labels(route.backend).observe(time.perf_counter() - sent)
                headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
                headers[ROUTE_HEADER] = f"{route.backend};{route.reason};{replica.id}"
                length = upstream.content_length
                if length is not None and length <= WHOLE_BODY_BYTES:  # a complete JSON answer: one write
                    whole = web.Response(status=upstream.status, headers=headers, body=await upstream.read())
                    self.metrics.requests.labels(route.backend, route.reason, str(upstream.status)).inc()
                    return whole
                response = web.StreamResponse(status=upstream.status, headers=headers)
                await response.prepare(request)
                streaming = True
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)  # a client that went away raises here; upstream is closed
                await response.write_eof()
                self.metrics.requests.labels(route.backend, route.reason, str(upstream.status)).inc()
                return response
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            if streaming:
                raise  # after the first byte: no retry, the client sees the stream end
            return f"{replica.id}: {type(exc).__name__}"
        finally:
            replica.outstanding -= 1
            self.metrics.inflight.labels(route.backend).dec()


def load_spec(path: str) -> Qwen3RouterSpec:
    """A router spec from a JSON or YAML file (the operator mounts the Qwen3Router's spec)."""
    import yaml

    with open(path) as f:
        raw: Any = yaml.safe_load(f)
    spec = raw.get("spec", raw) if isinstance(raw, dict) else raw
    return Qwen3RouterSpec.model_validate(spec)
