"""The router's policy as an inference gateway's Endpoint Picker (Gateway API Inference Extension): Envoy's ext_proc.

One ext_proc stream is one HTTP request. In Envoy's FULL_DUPLEX_STREAMED mode:

1. Request headers are kept, unanswered: the decision needs the body.
2. Request body chunks are buffered up to the router's body limit (413 beyond). At its end the body is parsed and
   `policy.decide` runs exactly as for the router's HTTP endpoint: a backend may be woken, the request held (up to
   holdSeconds), served by a spillover or fallback backend, or refused.
3. The headers are answered with the pick: the `x-gateway-destination-endpoint` header (the chosen replica) and the
   `envoy.lb` dynamic metadata (the chosen replica, then the backend's other replicas as the ordered retry list),
   `clear_route_cache`, the body's new length. Then the body goes back in chunks of at most 62,000 bytes, its
   model name the one the replica serves.
4. Response headers get `x-qwenfleet-route`; response body chunks are echoed, the model name written back to the
   one the client asked for (not for `auto`: the size that served is the answer), usage counted from the tail.

A subset hint from the gateway (`envoy.lb.subset_hint`) limits the pick to those endpoints. Refusals are immediate
responses with the router's OpenAI-shaped error bodies: 400, 404 (known names listed), 413, 429 with Retry-After
while too many requests are held, 503 with no ready replica. The picker keeps no state between requests beyond the
router's own (live load, prefix homes), so several replicas serve one gateway at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from qwenfleet.router.app import MAX_ATTEMPTS, Router, with_model
from qwenfleet.router.extproc import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    DESTINATION,
    HEALTH_SERVICES,
    LB_NAMESPACE,
    MODELS_PATH,
    ModelRewriter,
    body_response,
    chunks,
    header,
    headers_of,
    immediate,
    subset_of,
)
from qwenfleet.router.openai import ROUTE_HEADER
from qwenfleet.router.policy import AUTO, Replica, Route, RouteRequest, UnknownModel, choose_replica, decide
from qwenfleet.router.policy import upstream_model as upstream_model_of
from qwenfleet.router.requests import BadRequest, route_request
from qwenfleet.router.usage import TAIL_BYTES, usage_of_stream_tail


class Exchange:
    """One request through the gateway: the ext_proc state machine over the router's policy and live state."""

    def __init__(self, router: Router, gone: Any = None) -> None:
        self.router = router
        self.gone = gone or (lambda: False)
        self.headers: dict[str, str] = {}
        self.subset: set[str] | None = None
        self.body = bytearray()
        self.replica: Replica | None = None
        self.route: Route | None = None
        self.rewriter: ModelRewriter | None = None
        self.status = ""
        self.tail = b""
        self.finished = False
        self.started = 0.0

    async def handle(self, request: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        """The answers to one message from Envoy (none while the request headers wait for the body)."""
        which = request.WhichOneof("request")
        if which == "request_headers":
            self.started = time.perf_counter()
            self.headers = headers_of(request.request_headers)
            self.subset = subset_of(request)
            if request.request_headers.end_of_stream:
                return await self._decide(body_ended=False)
            return []
        if which == "request_body":
            self.body += request.request_body.body
            if len(self.body) > self.router.spec.limits.max_body_bytes:
                return [self._refuse(413, f"the request body is larger than {self.router.spec.limits.max_body_bytes}"
                                          " bytes")]  # fmt: skip
            return await self._decide(body_ended=True) if request.request_body.end_of_stream else []
        if which == "response_headers":
            return [self._response_headers(request.response_headers)]
        if which == "response_body":
            return [self._response_body(request.response_body.body, request.response_body.end_of_stream)]
        if which == "request_trailers":
            return [pb.ProcessingResponse(request_trailers=pb.TrailersResponse())]
        if which == "response_trailers":
            self.finish()
            return [pb.ProcessingResponse(response_trailers=pb.TrailersResponse())]
        return []

    def _refuse(self, status: int, message: str, route: Route | None = None,
                retry_after: int | None = None) -> pb.ProcessingResponse:  # fmt: skip
        backend, reason = (route.backend, route.reason) if route else ("", "refused")
        self.router.metrics.requests.labels(backend, reason, str(status)).inc()
        self.router.metrics.gateway.labels(backend, str(status)).inc()
        self.finished = True
        return immediate(status, message, f"{backend};{reason}" if route else None, retry_after)

    async def _decide(self, *, body_ended: bool) -> list[pb.ProcessingResponse]:
        router = self.router
        if not router.authorized(self.headers.get("authorization", "")):
            return [self._refuse(401, "invalid API key")]
        path = self.headers.get(":path", "").split("?", 1)[0]
        if path == MODELS_PATH and not body_ended:
            return [immediate(200, "", body=router.models_list())]
        raw = bytes(self.body)
        try:
            body = json.loads(raw) if body_ended else {"model": AUTO}
            if path in (CHAT_PATH, COMPLETIONS_PATH):
                parsed = route_request(body, self.headers, chat=path == CHAT_PATH)
            elif isinstance(body, dict) and isinstance(body.get("model"), str):
                parsed = RouteRequest(model=body["model"])
            else:
                raise BadRequest("model is required")
            router.check_budget()
            route = decide(parsed, router.spec, router.discovery.states)
        except BadRequest as exc:
            return [self._refuse(400, str(exc))]
        except (ValueError, RecursionError) as exc:
            return [self._refuse(400, f"invalid JSON body: {exc}")]
        except UnknownModel as exc:
            return [self._refuse(404, router.unknown_model_message(str(exc)))]
        if route.wake:
            router.wake(route.target)
        if route.hold:
            route = await router.hold(parsed, route, self.gone)
            if route.hold:
                message = f"no ready replica of {route.target} within {router.spec.scale_from_zero.hold_seconds}s"
                return [self._refuse(503, message, route)]
        if route.refusal is not None:
            return [self._refuse(route.refusal.status, route.refusal.message, route, route.refusal.retry_after)]
        router.metrics.count_overflow(route)
        return self._pick(route, parsed, raw, body, body_ended)

    def _pick(self, route: Route, parsed: RouteRequest, raw: bytes, body: Any,
              body_ended: bool) -> list[pb.ProcessingResponse]:  # fmt: skip
        router = self.router
        state = router.discovery.states[route.backend]
        if state.external:  # an API is no endpoint of a pool: the gateway routes to it with its own route
            message = (f"backend {route.backend} is an external API, which a gateway reaches through its own route, "
                       "not an InferencePool's endpoint picker")  # fmt: skip
            return [self._refuse(503, message, route)]
        outside = frozenset(r.id for r in state.replicas if self.subset is not None and r.address not in self.subset)
        affinity = router.spec.prefix_affinity
        replica = choose_replica(
            state, router.rng, prefix=parsed.prefix, prefix_chars=affinity.prefix_chars if affinity.enabled else 0,
            homes=router.homes(route.backend), load_bound=affinity.load_bound, exclude=outside, adapter=route.adapter,
        )  # fmt: skip
        if replica is None:
            where = " among the endpoints the gateway allowed" if self.subset is not None else ""
            return [self._refuse(503, f"no ready replica of {route.backend}{where}", route)]
        others = sorted((r for r in state.replicas if r.id not in outside and r.id != replica.id
                         and (route.adapter is None or route.adapter in r.adapters)), key=lambda r: r.load)  # fmt: skip
        picks = [replica.address, *(r.address for r in others[: MAX_ATTEMPTS - 1])]
        replica.outstanding += 1
        router.metrics.inflight.labels(route.backend).inc()
        self.replica, self.route = replica, route
        mutation = [header(DESTINATION, replica.address)]
        payload = b""
        if body_ended:
            upstream_model = upstream_model_of(route, replica, state, body["model"])
            payload = with_model(raw, body, upstream_model)
            if upstream_model != body["model"] and body["model"] != AUTO:
                self.rewriter = ModelRewriter(upstream_model, body["model"])
            mutation.append(header("content-length", str(len(payload))))
        metadata = struct_pb2.Struct()
        metadata.update({LB_NAMESPACE: {DESTINATION: ",".join(picks)}})
        answer = pb.ProcessingResponse(
            request_headers=pb.HeadersResponse(response=pb.CommonResponse(
                header_mutation=pb.HeaderMutation(set_headers=mutation), clear_route_cache=True)),
            dynamic_metadata=metadata,
        )  # fmt: skip
        router.metrics.overhead.observe(time.perf_counter() - self.started)
        out = [answer]
        if body_ended:
            out += [body_response("request_body", part, last) for part, last in chunks(payload)]
        return out

    def _response_headers(self, message: pb.HttpHeaders) -> pb.ProcessingResponse:
        headers = headers_of(message)
        self.status = headers.get(":status", "")
        mutation = pb.HeaderMutation()
        if self.route is not None and self.replica is not None:
            mutation.set_headers.append(header(ROUTE_HEADER, f"{self.route.backend};{self.route.reason};"
                                                              f"{self.replica.id}"))  # fmt: skip
        if self.rewriter is not None:
            mutation.remove_headers.append("content-length")
        if message.end_of_stream:
            self.finish()
        return pb.ProcessingResponse(response_headers=pb.HeadersResponse(
            response=pb.CommonResponse(header_mutation=mutation)))  # fmt: skip

    def _response_body(self, chunk: bytes, last: bool) -> pb.ProcessingResponse:
        self.tail = (self.tail + chunk)[-TAIL_BYTES:]
        out = self.rewriter.feed(chunk, last) if self.rewriter is not None else chunk
        if last:
            self.finish()
        return body_response("response_body", out, last)

    def finish(self) -> None:
        """The request is over (answered, failed or abandoned): its replica's load and the metrics are settled."""
        if self.finished:
            return
        self.finished = True
        route, replica = self.route, self.replica
        if route is None or replica is None:
            return
        replica.outstanding -= 1
        metrics = self.router.metrics
        metrics.inflight.labels(route.backend).dec()
        metrics.requests.labels(route.backend, route.reason, self.status or "aborted").inc()
        metrics.gateway.labels(route.backend, self.status or "aborted").inc()
        if self.status == "200":
            metrics.count_usage(route.backend, usage_of_stream_tail(self.tail), route.adapter)


class Picker(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """The ext_proc service: one `Exchange` per stream."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def Process(  # noqa: N802 (the gRPC method's name)
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.ProcessingResponse]:
        """Answer Envoy's messages for one request."""
        exchange = Exchange(self.router, gone=context.done)
        try:
            async for request in request_iterator:
                for answer in await exchange.handle(request):
                    yield answer
        finally:
            exchange.finish()


class PickerHealth:
    """gRPC health for the gateway's probes: serving once the router's discovery has a first view."""

    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()

    async def update(self, ready: bool) -> None:
        """Set every service's status."""
        serving = health_pb2.HealthCheckResponse.SERVING
        for service in HEALTH_SERVICES:
            status = serving if ready or service == "liveness" else health_pb2.HealthCheckResponse.NOT_SERVING
            await self.servicer.set(service, status)


async def start_picker(router: Router, host: str, port: int) -> tuple[grpc.aio.Server, PickerHealth]:
    """The Endpoint Picker's gRPC server on host:port, started."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 4 * 1024 * 1024)])
    pb_grpc.add_ExternalProcessorServicer_to_server(Picker(router), server)
    checks = PickerHealth()
    health_pb2_grpc.add_HealthServicer_to_server(checks.servicer, server)
    await checks.update(router.discovery.refreshed)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, checks
