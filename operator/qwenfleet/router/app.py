"""The router's data plane: an OpenAI-compatible aiohttp proxy that streams without buffering.

It carries out `policy.decide`: wakes a backend, holds a request (bounded; SSE keep-alives for streams),
serves from the backend the policy names, or answers the policy's refusal.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from qwenfleet.api.cost import ApiPrices
from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.router.discovery import Discovery
from qwenfleet.router.external import DailySpend, UsageFilter, api_error, api_payload, api_url, host_of, price
from qwenfleet.router.openai import ROUTE_HEADER, error_body
from qwenfleet.router.policy import (
    BackendState,
    PrefixHomes,
    Refusal,
    Replica,
    Route,
    RouteRequest,
    UnknownModel,
    adapter_of,
    choose_replica,
    decide,
    model_names,
)
from qwenfleet.router.policy import (
    upstream_model as upstream_model_of,
)
from qwenfleet.router.requests import BadRequest, route_request
from qwenfleet.router.usage import TAIL_BYTES, Usage, usage_of_body, usage_of_stream_tail

MAX_ATTEMPTS = 3
SHUTDOWN_SECONDS = 5.0
"""On SIGTERM, how long requests in flight may take before the router stops (within Kubernetes' 30 s grace)."""
WHOLE_BODY_BYTES = 256 * 1024  # non-streaming answers up to this size are sent in one write
HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "host"}
KEEPALIVE = b": keep-alive\n\n"
HOLD_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Cold starts run from seconds (a cached small model) to minutes (235B-A22B across nodes); the objectives' common
values (1, 2.5, 5 s) are boundaries, as in vLLM's time-to-first-token histogram."""


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
        self.held = Gauge("qwenfleet_router_held_requests", "Requests held until their backend is ready.",
                          ["backend"], registry=r)  # fmt: skip
        self.tokens = Counter("qwenfleet_router_tokens", "Tokens of answers by backend, type and thinking mode.",
                              ["backend", "type", "mode"], registry=r)  # fmt: skip
        self.adapter_tokens = Counter("qwenfleet_router_adapter_tokens", "Tokens of answers by backend, LoRA "
                                      "adapter and type (also counted in qwenfleet_router_tokens).",
                                      ["backend", "adapter", "type"], registry=r)  # fmt: skip
        self.overflow = Counter("qwenfleet_router_overflow_requests", "Requests meant for a backend (target) that "
                                "another served: spillover, or a fallback while it woke.", ["target"],
                                registry=r)  # fmt: skip
        self.gateway = Counter("qwenfleet_router_gateway_requests", "Requests an inference gateway asked this "
                               "router's Endpoint Picker about, by backend and answer status.", ["backend", "status"],
                               registry=r)  # fmt: skip
        self.external_usd = Counter("qwenfleet_router_external_usd", "USD of the external API backends' answers at "
                                    "their list prices.", ["backend"], registry=r)  # fmt: skip
        self.budget_exhausted = Gauge("qwenfleet_router_external_budget_exhausted", "1 while today's share of the "
                                      "external APIs' daily budget is spent on this replica.", registry=r)  # fmt: skip
        self.hold = Histogram(
            "qwenfleet_router_hold_seconds",
            "Seconds a request was held while its backend woke, whether then served, refused or given up: time "
            "before its first token that the engines' time-to-first-token histograms (status.slo) do not see.",
            ["backend"], buckets=HOLD_BUCKETS, registry=r,
        )  # fmt: skip

    def count_overflow(self, route: Route) -> None:
        """A request meant for one backend that another serves (spillover, or a fallback meanwhile): counted for
        its target, whose autoscaler adds it to the arrivals its own replicas saw."""
        if route.target and route.backend != route.target:
            self.overflow.labels(route.target).inc()

    def count_usage(self, backend: str, use: Usage | None, adapter: str | None = None) -> None:
        """Add one answer's tokens (prompt, output, reasoning) under its backend and mode, and under its LoRA
        adapter too when it named one (vLLM's own token counters carry no adapter)."""
        if use is None:
            return
        for kind, value in (("prompt", use.prompt), ("output", use.output), ("reasoning", use.reasoning)):
            self.tokens.labels(backend, kind, use.mode).inc(value)
            if adapter is not None:
                self.adapter_tokens.labels(backend, adapter, kind).inc(value)


def _error(status: int, message: str, route: str | None = None, retry_after: int | None = None) -> web.Response:
    headers = {ROUTE_HEADER: route} if route else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return web.json_response(error_body(status, message), status=status, headers=headers)


def _sse_error(status: int, message: str) -> bytes:
    """An error as an SSE event, for a stream whose headers are already sent (a held stream)."""
    return b"data: " + json.dumps(error_body(status, message)).encode() + b"\n\ndata: [DONE]\n\n"


class Router:
    """Routes OpenAI requests to backend replicas discovered by `discovery`."""

    def __init__(
        self,
        spec: Qwen3RouterSpec,
        discovery: Discovery,
        api_keys: set[str] | None = None,
        *,
        keepalive_seconds: float = 10.0,
        external_keys: dict[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.discovery = discovery
        self.api_keys = [k.encode() for k in api_keys or set()]
        self.keepalive_seconds = keepalive_seconds
        self._waking: set[asyncio.Task[None]] = set()
        self.rng = random.Random()
        self.prefix_homes: dict[str, PrefixHomes] = {}  # per backend
        self.metrics = RouterMetrics()
        self.session: aiohttp.ClientSession | None = None
        self.external_keys = dict(external_keys or {})
        """API key per external backend (read from its mounted Secret)."""
        budget = spec.external_daily_budget_usd
        self.spend = DailySpend(None if budget is None else budget / max(1, spec.replicas))

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

    def server_options(self) -> dict[str, Any]:
        """Options of the HTTP server: a connection that has not sent a request's headers within the header
        timeout is closed (aiohttp's keep-alive timer also covers a request head still arriving)."""
        return {"keepalive_timeout": self.spec.limits.header_timeout_seconds, "access_log": None}

    def runner(self) -> web.AppRunner:
        """An AppRunner for `app()` with `server_options()`; on shutdown, requests in flight get
        SHUTDOWN_SECONDS to finish."""
        return web.AppRunner(self.app(), shutdown_timeout=SHUTDOWN_SECONDS, **self.server_options())

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
        return self.authorized(request.headers.get("Authorization", ""))

    def authorized(self, authorization: str) -> bool:
        """Whether an Authorization header value carries an accepted API key (any value when none is set)."""
        if not self.api_keys:
            return True
        given = authorization.removeprefix("Bearer ").strip().encode()
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
            return _error(401, "invalid API key")
        return web.json_response(self.models_list())

    def models_list(self) -> dict[str, Any]:
        """/v1/models: the union of aliases, served model names and `auto`."""
        states = self.discovery.states
        data = []
        for name, backend in model_names(self.spec, states).items():
            entry = {"id": name, "object": "model", "owned_by": "qwenfleet", "backend": backend or "auto"}
            state = states.get(backend)
            if state is not None and adapter_of(name, state) is not None:
                entry["parent"] = state.served_model  # a LoRA adapter, as vLLM lists it
            data.append(entry)
        return {"object": "list", "data": data}

    def unknown_model_message(self, model: str) -> str:
        """The 404 message for a model name no backend answers to, with the names that do."""
        known = ", ".join(sorted(model_names(self.spec, self.discovery.states)))
        return f"The model `{model}` does not exist. Known models: {known}"

    def homes(self, backend: str) -> PrefixHomes | None:
        """The prefix homes of one backend (None when prefix affinity is off)."""
        if not self.spec.prefix_affinity.enabled:
            return None
        return self.prefix_homes.setdefault(backend, PrefixHomes())

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """/v1/chat/completions."""
        return await self._proxy(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """/v1/completions."""
        return await self._proxy(request, chat=False)

    def wake(self, backend: str) -> None:
        """Wake a backend in the background (discovery rate-limits the patches)."""
        task = asyncio.create_task(self.discovery.wake(backend))
        self._waking.add(task)
        task.add_done_callback(self._waking.discard)

    async def hold(
        self,
        parsed: RouteRequest,
        route: Route,
        gone: Callable[[], bool],
        tick: Callable[[Route], Awaitable[None]] | None = None,
    ) -> Route:
        """Hold a request until the policy no longer says hold (its target is ready, or a fallback is), up to
        holdSeconds or until `gone()` (the client went away). `tick` runs every `keepalive_seconds` meanwhile (a
        stream's keep-alive). Returns the route that serves it, or one that still says hold (time is up)."""
        held = route
        state = self.discovery.states[route.target]
        state.held += 1
        self.metrics.held.labels(route.target).inc()
        started = time.monotonic()
        deadline = started + self.spec.scale_from_zero.hold_seconds
        last_sign = started
        try:
            while route.hold:
                now = time.monotonic()
                if now >= deadline or gone():
                    break
                wait = deadline - now
                if tick is not None:
                    wait = min(wait, last_sign + self.keepalive_seconds - now)
                await self.discovery.wait_changed(wait)
                if tick is not None and time.monotonic() - last_sign >= self.keepalive_seconds:
                    await tick(route)
                    last_sign = time.monotonic()
                try:
                    route = decide(parsed, self.spec, self.discovery.states, already_held=True)
                except UnknownModel:  # the served model name it asked for went away while it was held
                    gone_model = Refusal(404, f"The model `{parsed.model}` does not exist any more")
                    route = Route(route.backend, route.reason, route.target, refusal=gone_model)
                if route.wake:
                    self.wake(route.target)
        finally:
            state.held -= 1
            self.metrics.held.labels(state.name).dec()
            self.metrics.hold.labels(state.name).observe(time.monotonic() - started)
        if not route.hold and route.refusal is None:  # served now: by the target that woke, or a fallback
            reason = f"{held.reason}>held" if route.backend == held.target else f"{route.reason}>held"
            route = Route(route.backend, reason, route.target, meanwhile=route.meanwhile)
        return route

    async def _hold(
        self, request: web.Request, parsed: RouteRequest, route: Route, stream: bool
    ) -> tuple[Route, web.StreamResponse | None]:
        """`hold` for an HTTP request. A streaming request gets SSE keep-alive comments every
        `keepalive_seconds`, so its headers are sent then; the prepared response is returned to write into."""
        prepared: web.StreamResponse | None = None

        async def keepalive(held: Route) -> None:
            nonlocal prepared
            if prepared is None:
                headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                           ROUTE_HEADER: f"{held.target};{held.reason}>held"}  # fmt: skip
                prepared = web.StreamResponse(status=200, headers=headers)
                await prepared.prepare(request)
            await prepared.write(KEEPALIVE)

        def gone() -> bool:
            return request.transport is None or request.transport.is_closing()

        route = await self.hold(parsed, route, gone, keepalive if stream else None)
        return route, prepared

    async def _refuse(
        self, route: Route, status: int, message: str, prepared: web.StreamResponse | None, retry: int | None = None
    ) -> web.StreamResponse:
        self.metrics.requests.labels(route.backend, route.reason, str(status)).inc()
        if prepared is not None:
            await prepared.write(_sse_error(status, message))
            await prepared.write_eof()
            return prepared
        return _error(status, message, f"{route.backend};{route.reason}", retry)

    async def _proxy(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        started = time.perf_counter()
        if not self._authorized(request):
            return _error(401, "invalid API key")
        try:
            raw = await asyncio.wait_for(request.read(), self.spec.limits.body_timeout_seconds)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"the request body is larger than {self.spec.limits.max_body_bytes} bytes")
        except TimeoutError:
            late = _error(408, f"the request body did not arrive within {self.spec.limits.body_timeout_seconds:g}s")
            await late.prepare(request)
            await late.write_eof()
            if request.protocol is not None:
                request.protocol.force_close()  # no lingering for the rest of a body that trickles
            return late
        try:
            body = json.loads(raw)
            parsed = route_request(body, {k.lower(): v for k, v in request.headers.items()}, chat=chat)
            self.check_budget()
            route = decide(parsed, self.spec, self.discovery.states)
        except BadRequest as exc:
            return _error(400, str(exc))
        except ValueError as exc:  # malformed JSON or bytes that are not UTF-8
            return _error(400, f"invalid JSON body: {exc}")
        except RecursionError:
            return _error(400, "invalid JSON body: nested too deeply")
        except UnknownModel as exc:
            return _error(404, self.unknown_model_message(str(exc)))
        if route.wake:
            self.wake(route.target)
        prepared = None
        if route.hold:
            route, prepared = await self._hold(request, parsed, route, stream=body.get("stream") is True)
            if route.hold:
                message = f"no ready replica of {route.target} within {self.spec.scale_from_zero.hold_seconds}s"
                return await self._refuse(route, 503, message, prepared)
        if route.refusal is not None:
            refusal = route.refusal
            return await self._refuse(route, refusal.status, refusal.message, prepared, refusal.retry_after)
        self.metrics.count_overflow(route)
        state = self.discovery.states[route.backend]
        if state.external:
            return await self._external(request, route, state, body, prepared)
        tried: set[str] = set()
        last_error = "no replica"
        affinity = self.spec.prefix_affinity
        prefix_chars = affinity.prefix_chars if affinity.enabled else 0
        homes = self.homes(route.backend)
        payloads: dict[str, bytes] = {}
        for _ in range(MAX_ATTEMPTS):
            replica = choose_replica(
                state, self.rng, prefix=parsed.prefix, prefix_chars=prefix_chars, homes=homes,
                load_bound=affinity.load_bound, exclude=frozenset(tried), adapter=route.adapter,
            )  # fmt: skip
            if replica is None:
                break
            tried.add(replica.id)
            upstream_model = upstream_model_of(route, replica, state, body["model"])
            if upstream_model not in payloads:
                try:
                    payloads[upstream_model] = with_model(raw, body, upstream_model)
                except RecursionError:
                    return await self._refuse(route, 400, "invalid JSON body: nested too deeply", prepared)
            self.metrics.overhead.observe(time.perf_counter() - started)
            result = await self._forward(request, route, replica, payloads[upstream_model], prepared)
            if isinstance(result, web.StreamResponse):
                return result
            last_error = result
        return await self._refuse(route, 502, f"upstream failed before responding: {last_error}", prepared)

    async def _external(
        self, request: web.Request, route: Route, state: BackendState, body: dict[str, Any],
        prepared: web.StreamResponse | None,
    ) -> web.StreamResponse:  # fmt: skip
        """Serve from an external API backend: its model name and key, usage asked for (and kept from a client that
        did not ask), its errors as the router's, its cost counted against the daily budget."""
        assert self.session is not None
        backend = next(b for b in self.spec.backends if b.name == route.backend)
        api = backend.external
        assert api is not None
        replica = state.replicas[0]
        payload, injected = api_payload(body, api.model)
        headers = {"Content-Type": "application/json"}
        if route.backend in self.external_keys:
            headers["Authorization"] = f"Bearer {self.external_keys[route.backend]}"
        secret = f"{api.api_key_secret_ref.name}/{api.api_key_secret_ref.key}" if api.api_key_secret_ref else None
        timeout = aiohttp.ClientTimeout(total=api.timeout_seconds, sock_connect=api.connect_timeout_seconds)
        replica.outstanding += 1
        self.metrics.inflight.labels(route.backend).inc()
        sent = time.perf_counter()
        use: Usage | None = None
        response: web.StreamResponse | None = prepared
        try:
            url = api_url(api.base_url, request.path)
            async with self.session.post(url, data=payload, headers=headers, timeout=timeout) as upstream:
                if upstream.status != 200:
                    status, message = api_error(upstream.status, route.backend, api.base_url, secret,
                                                await upstream.read())  # fmt: skip
                    retry = upstream.headers.get("Retry-After")
                    return await self._refuse(route, status, message, prepared,
                                              int(retry) if retry and retry.isdigit() else None)  # fmt: skip
                self.metrics.ttfb.labels(route.backend).observe(time.perf_counter() - sent)
                route_header = f"{route.backend};{route.reason};{replica.id}"
                if body.get("stream") is not True:
                    answer = await upstream.read()
                    use = usage_of_body(answer)
                    self.metrics.requests.labels(route.backend, route.reason, "200").inc()
                    return web.Response(status=200, body=answer, content_type="application/json",
                                        headers={ROUTE_HEADER: route_header})  # fmt: skip
                if response is None:
                    response = web.StreamResponse(
                        status=200,
                        headers={
                            "Content-Type": "text/event-stream",
                            "Cache-Control": "no-cache",
                            ROUTE_HEADER: route_header,
                        },
                    )
                    await response.prepare(request)  # fmt: skip
                events = UsageFilter(strip=injected)
                async for chunk in upstream.content.iter_any():
                    out = events.feed(chunk)
                    if out:
                        await response.write(out)  # a client that went away raises here; the API call is closed
                rest = events.close()
                if rest:
                    await response.write(rest)
                use = events.usage
                await response.write_eof()
                self.metrics.requests.labels(route.backend, route.reason, "200").inc()
                return response
        except TimeoutError:
            if response is not None and response.prepared and prepared is None:
                raise
            message = f"the API backend {route.backend} did not answer within {api.timeout_seconds:g}s"
            return await self._refuse(route, 504, message, prepared)
        except aiohttp.ClientConnectionError as exc:
            if response is not None and response.prepared and prepared is None:
                raise
            message = f"the API backend {route.backend} is unreachable ({host_of(api.base_url)}: {type(exc).__name__})"
            return await self._refuse(route, 502, message, prepared)
        finally:
            replica.outstanding -= 1
            self.metrics.inflight.labels(route.backend).dec()
            self._count_external(route.backend, use, api.prices)

    def check_budget(self) -> None:
        """Mark the external backends over budget while today's share is spent (a new UTC day clears it)."""
        if not self.discovery.external:
            return
        exhausted = self.spend.exhausted(time.time())
        self.metrics.budget_exhausted.set(1 if exhausted else 0)
        for name in self.discovery.external:
            self.discovery.states[name].over_budget = exhausted

    def _count_external(self, backend: str, use: Usage | None, prices: ApiPrices) -> None:
        """Count an external answer's tokens and cost; past the budget, the APIs are no longer chosen as
        alternates."""
        self.metrics.count_usage(backend, use)
        usd = price(use, prices)
        now = time.time()
        self.spend.add(usd, now)
        self.metrics.external_usd.labels(backend).inc(usd)
        self.check_budget()

    async def _forward(
        self,
        request: web.Request,
        route: Route,
        replica: Replica,
        payload: bytes,
        prepared: web.StreamResponse | None = None,
    ) -> web.StreamResponse | str:
        """Send to one replica; before the first byte a failure returns a reason (the caller retries elsewhere).
        With `prepared` (a held stream whose headers are sent), the replica's answer is written into it."""
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
                status = str(upstream.status)
                if prepared is not None:
                    streaming = True
                    if upstream.status != 200:
                        message = (await upstream.read()).decode(errors="replace")
                        await prepared.write(_sse_error(upstream.status, message))
                    else:
                        tail = b""
                        async for chunk in upstream.content.iter_any():
                            await prepared.write(chunk)
                            tail = (tail + chunk)[-TAIL_BYTES:]
                        self.metrics.count_usage(route.backend, usage_of_stream_tail(tail), route.adapter)
                    await prepared.write_eof()
                    self.metrics.requests.labels(route.backend, route.reason, status).inc()
                    return prepared
                headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
                headers[ROUTE_HEADER] = f"{route.backend};{route.reason};{replica.id}"
                length = upstream.content_length
                if length is not None and length <= WHOLE_BODY_BYTES:  # a complete JSON answer: one write
                    answer = await upstream.read()
                    whole = web.Response(status=upstream.status, headers=headers, body=answer)
                    if upstream.status == 200:
                        self.metrics.count_usage(route.backend, usage_of_body(answer), route.adapter)
                    self.metrics.requests.labels(route.backend, route.reason, status).inc()
                    return whole
                response = web.StreamResponse(status=upstream.status, headers=headers)
                await response.prepare(request)
                streaming = True
                tail = b""
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)  # a client that went away raises here; upstream is closed
                    tail = (tail + chunk)[-TAIL_BYTES:]
                if upstream.status == 200:
                    self.metrics.count_usage(route.backend, usage_of_stream_tail(tail), route.adapter)
                await response.write_eof()
                self.metrics.requests.labels(route.backend, route.reason, status).inc()
                return response
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            if streaming:
                raise  # after the first byte: no retry, the client sees the stream end
            return f"{replica.id}: {type(exc).__name__}"
        finally:
            replica.outstanding -= 1
            self.metrics.inflight.labels(route.backend).dec()


def with_model(raw: bytes, body: dict[str, Any], model: str) -> bytes:
    """The request body for a replica serving `model`: the client's bytes when the name is already right."""
    if body["model"] == model:
        return raw
    return json.dumps({**body, "model": model}).encode()


def load_spec(path: str) -> Qwen3RouterSpec:
    """A router spec from a JSON or YAML file (the operator mounts the Qwen3Router's spec)."""
    import yaml

    with open(path) as f:
        raw: Any = yaml.safe_load(f)
    spec = raw.get("spec", raw) if isinstance(raw, dict) else raw
    return Qwen3RouterSpec.model_validate(spec)
