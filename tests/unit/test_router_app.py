"""The router's proxy carrying out the policy's decision, against in-process upstreams on loopback: wake-up with
a fallback meanwhile, held requests (bound, 429, SSE keep-alives, the metric), missing backends, bursts that
spill before any scrape, deep JSON, slow clients, and discovery's view of the backends' Qwen3Deployments."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.router.app import Router
from qwenfleet.router.discovery import Discovery
from qwenfleet.router.policy import BackendState, Replica


@dataclass
class Upstream:
    """A stand-in replica: answers chat and completions (SSE when asked), optionally only once `gate` opens."""

    name: str
    gate: asyncio.Event | None = None
    models: list[str] = field(default_factory=list)
    server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.models.append(body["model"])
        if self.gate is not None:
            await self.gate.wait()
        if body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(f"data: {json.dumps({'served_by': self.name})}\n\ndata: [DONE]\n\n".encode())
            await response.write_eof()
            return response
        return web.json_response({"served_by": self.name, "model": body["model"]})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_post("/v1/completions", self.handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return f"127.0.0.1:{self.server.port}"


class FakeDiscovery(Discovery):
    """Discovery with states set by the test; `publish()` stands for a refresh, wakes are recorded."""

    def __init__(self, spec: Qwen3RouterSpec, states: dict[str, BackendState]) -> None:
        super().__init__(kube=None, namespace="ns", spec=spec)  # type: ignore[arg-type]
        self.states = states
        self.refreshed = True
        self.woken: list[str] = []

    async def wake(self, backend: str) -> None:
        self.woken.append(backend)

    def publish(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


SPEC: dict[str, Any] = {
    "backends": [
        {"name": "large", "aliases": ["big"], "fallback": "medium"},
        {"name": "medium", "aliases": ["mid"]},
        {"name": "lonely", "aliases": ["solo"]},
    ],
    "defaultBackend": "medium",
    "rules": [{"name": "thinking", "match": {"thinking": True}, "backend": "large"}],
    "scaleFromZero": {"holdSeconds": 30},
}


@pytest.fixture
async def upstreams() -> AsyncIterator[dict[str, tuple[Upstream, str]]]:
    made = {name: Upstream(name) for name in ("large", "medium", "lonely")}
    addresses = {name: await u.start() for name, u in made.items()}
    yield {name: (u, addresses[name]) for name, u in made.items()}
    for u in made.values():
        assert u.server is not None
        await u.server.close()


def _states(ready: dict[str, str]) -> dict[str, BackendState]:
    """`ready`: backend -> address of its one ready replica; the others are at zero."""
    states = {n: BackendState(n, f"Qwen3-{n}") for n in ("large", "medium", "lonely")}
    for name, address in ready.items():
        states[name].replicas = [Replica(f"{name}-0", address, served_model=f"Qwen3-{name}")]
        states[name].desired = 1
    return states


@contextlib.asynccontextmanager
async def _client(
    states: dict[str, BackendState], spec: dict[str, Any] = SPEC, keepalive_seconds: float = 10.0
) -> AsyncIterator[tuple[TestClient[web.Request, web.Application], FakeDiscovery]]:
    """A test client of the router over `spec`, and its discovery showing `states`."""
    parsed = Qwen3RouterSpec.model_validate(spec)
    discovery = FakeDiscovery(parsed, states)
    async with TestClient(TestServer(Router(parsed, discovery, keepalive_seconds=keepalive_seconds).app())) as client:
        yield client, discovery


async def _serve(router: Router) -> tuple[web.AppRunner, int]:
    """The router served as `qwenfleet router` serves it (its own runner and server options)."""
    runner = router.runner()
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


THINK = {"model": "auto", "messages": [{"role": "user", "content": "why is the sky blue? /think"}]}


async def test_a_thinking_request_wakes_the_large_backend_and_the_fallback_serves_until_it_is_ready(
    upstreams: dict[str, tuple[Upstream, str]],
) -> None:
    states = _states({"medium": upstreams["medium"][1]})
    async with _client(states) as (client, discovery):
        r = await client.post("/v1/chat/completions", json=THINK)
        assert r.status == 200
        assert r.headers["x-qwenfleet-route"] == "medium;rule:thinking>wake>fallback;medium-0"
        assert (await r.json())["served_by"] == "medium" and discovery.woken == ["large"]
        states["large"].desired = 1  # scaled up, still starting: the fallback keeps serving, large kept awake
        r = await client.post("/v1/chat/completions", json=THINK)
        assert r.headers["x-qwenfleet-route"].startswith("medium;rule:thinking>wake>fallback;")
        assert discovery.woken == ["large", "large"]
        states["large"].replicas = [Replica("large-0", upstreams["large"][1], served_model="Qwen3-large")]
        r = await client.post("/v1/chat/completions", json=THINK)
        assert r.headers["x-qwenfleet-route"] == "large;rule:thinking;large-0"
        assert await r.json() == {"served_by": "large", "model": "Qwen3-large"}
        assert discovery.woken == ["large", "large"]


async def test_without_a_fallback_the_request_is_held_until_the_backend_is_ready(
    upstreams: dict[str, tuple[Upstream, str]],
) -> None:
    states = _states({"medium": upstreams["medium"][1]})
    async with _client(states) as (client, discovery):
        body = {"model": "solo", "messages": [{"role": "user", "content": "hi"}]}
        held = asyncio.ensure_future(client.post("/v1/chat/completions", json=body))
        await asyncio.sleep(0.3)
        assert not held.done() and discovery.woken == ["lonely"]
        metrics = await (await client.get("/metrics")).text()
        assert 'qwenfleet_router_held_requests{backend="lonely"} 1.0' in metrics
        states["lonely"].replicas = [Replica("lonely-0", upstreams["lonely"][1])]
        discovery.publish()
        r = await asyncio.wait_for(held, 5)
        assert r.status == 200 and r.headers["x-qwenfleet-route"] == "lonely;alias>wake>held;lonely-0"
        metrics = await (await client.get("/metrics")).text()
        assert 'qwenfleet_router_held_requests{backend="lonely"} 0.0' in metrics
        # the time held, which no engine saw: most of the 0.3 s above (the hold starts a few milliseconds after the
        # request was sent, and the test's own /metrics call comes before the backend is published)
        assert 'qwenfleet_router_hold_seconds_count{backend="lonely"} 1.0' in metrics
        held_for = float(metrics.split('qwenfleet_router_hold_seconds_sum{backend="lonely"} ')[1].split()[0])
        assert 0.2 <= held_for < 5


async def test_held_requests_are_bounded_then_429_with_retry_after_and_503_after_the_hold(
    upstreams: dict[str, tuple[Upstream, str]],
) -> None:
    spec = {**SPEC, "scaleFromZero": {"holdSeconds": 1, "maxHeldRequests": 2}}
    async with _client(_states({}), spec) as (client, _):
        body = {"model": "solo", "messages": [{"role": "user", "content": "hi"}]}
        started = time.monotonic()
        first = [asyncio.ensure_future(client.post("/v1/chat/completions", json=body)) for _ in range(2)]
        await asyncio.sleep(0.2)
        extra = await client.post("/v1/chat/completions", json=body)
        assert extra.status == 429 and int(extra.headers["Retry-After"]) > 0
        assert "holds 2 requests" in (await extra.json())["error"]["message"]
        for r in await asyncio.gather(*first):
            assert r.status == 503 and "within 1s" in (await r.json())["error"]["message"]
        assert 0.9 < time.monotonic() - started < 3
        metrics = await (await client.get("/metrics")).text()
        assert 'qwenfleet_router_hold_seconds_count{backend="lonely"} 2.0' in metrics  # refused after the hold
        assert 'qwenfleet_router_hold_seconds_bucket{backend="lonely",le="0.5"} 0.0' in metrics


async def test_a_held_stream_gets_keepalive_comments_then_the_answer(
    upstreams: dict[str, tuple[Upstream, str]],
) -> None:
    states = _states({})
    async with _client(states, keepalive_seconds=0.2) as (client, discovery):
        body = {"model": "solo", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["x-qwenfleet-route"] == "lonely;alias>wake>held"
        assert await asyncio.wait_for(r.content.readuntil(b"\n\n"), 2) == b": keep-alive\n\n"
        assert await asyncio.wait_for(r.content.readuntil(b"\n\n"), 2) == b": keep-alive\n\n"
        states["lonely"].replicas = [Replica("lonely-0", upstreams["lonely"][1])]
        discovery.publish()
        rest = (await asyncio.wait_for(r.content.read(), 5)).decode()
        events = [e for e in rest.split("\n\n") if e.startswith("data: ")]
        assert events == ['data: {"served_by": "lonely"}', "data: [DONE]"]


async def test_a_held_stream_that_times_out_ends_with_an_error_event() -> None:
    spec = {**SPEC, "scaleFromZero": {"holdSeconds": 1}}
    async with _client(_states({}), spec, keepalive_seconds=0.3) as (c, _):
        body = {"model": "solo", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        r = await c.post("/v1/chat/completions", json=body)
        text = (await asyncio.wait_for(r.content.read(), 5)).decode()
        assert text.startswith(": keep-alive\n\n") and text.endswith("data: [DONE]\n\n")
        error = json.loads(text.split("data: ")[1].strip())["error"]
        assert error["code"] == 503 and "lonely" in error["message"]


async def test_a_backend_whose_deployment_is_missing_is_answered_at_once_and_the_others_keep_serving(
    upstreams: dict[str, tuple[Upstream, str]],
) -> None:
    states = _states({"medium": upstreams["medium"][1]})
    states["lonely"].exists = False
    spec = {**SPEC, "scaleFromZero": {"holdSeconds": 60}}
    async with _client(states, spec) as (client, discovery):
        started = time.monotonic()
        r = await client.post("/v1/chat/completions", json={"model": "solo", "messages": []})
        assert r.status == 503 and time.monotonic() - started < 1
        assert "Qwen3Deployment lonely does not exist" in (await r.json())["error"]["message"]
        assert discovery.woken == []
        r = await client.post("/v1/chat/completions", json={"model": "mid", "messages": []})
        assert r.status == 200 and (await r.json())["served_by"] == "medium"


async def test_a_burst_spills_before_any_scrape_sees_a_queue(upstreams: dict[str, tuple[Upstream, str]]) -> None:
    small, small_address = upstreams["lonely"]
    big, big_address = upstreams["medium"]
    small.gate = asyncio.Event()  # small's replica holds every request: they pile up in flight
    spec = {"backends": [{"name": "lonely", "aliases": ["small"], "spilloverTo": "medium",
                          "spilloverQueuePerReplica": 1}, {"name": "medium"}, {"name": "large"}],
            "defaultBackend": "lonely"}  # fmt: skip
    states = _states({"medium": big_address})
    states["lonely"].replicas = [Replica("lonely-0", small_address, capacity=8)]  # plan: referenceConcurrency 8
    async with _client(states, spec) as (client, _):
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        burst = [asyncio.ensure_future(client.post("/v1/chat/completions", json=body)) for _ in range(40)]
        for _ in range(100):
            if len(small.models) + len(big.models) == 40:
                break
            await asyncio.sleep(0.05)
        small.gate.set()
        routes = [r.headers["x-qwenfleet-route"] for r in await asyncio.gather(*burst)]
    assert len(small.models) == 10  # 8 run, the 9th and 10th wait (1 waiting is the threshold, 2 pass it); then spill
    assert sum(r.startswith("medium;default>spillover;") for r in routes) == 30


async def test_json_nested_ten_thousand_deep_is_a_400() -> None:
    async with _client(_states({})) as (client, _):
        for depth in (10_000, 100_000):
            raw = '{"model": "mid", "messages": ' + "[" * depth + "]" * depth + "}"
            r = await client.post("/v1/chat/completions", data=raw)
            assert r.status == 400 and "nested too deeply" in (await r.json())["error"]["message"]


async def test_a_slow_header_client_is_cut_off_while_others_are_served(
    upstreams: dict[str, tuple[Upstream, str]],
) -> None:
    spec = Qwen3RouterSpec.model_validate({**SPEC, "limits": {"headerTimeoutSeconds": 1, "bodyTimeoutSeconds": 1}})
    router = Router(spec, FakeDiscovery(spec, _states({"medium": upstreams["medium"][1]})))
    runner, port = await _serve(router)
    try:
        async with aiohttp.ClientSession() as session:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            closed_after = None
            for i in range(40):  # one header line every 0.25 s, for up to 10 s
                writer.write(f"X-Slow-{i}: {i}\r\n".encode())
                body = {"model": "mid", "messages": [{"role": "user", "content": "hi"}]}
                async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as r:
                    assert r.status == 200  # the others are served meanwhile
                try:
                    data = await asyncio.wait_for(reader.read(1024), 0.25)
                except TimeoutError:
                    continue
                assert not data  # closed, not answered
                closed_after = time.monotonic() - started
                break
            assert closed_after is not None and closed_after < 3, closed_after
            writer.close()

            reader, writer = await asyncio.open_connection("127.0.0.1", port)  # a body that never finishes
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            started = time.monotonic()
            answer = await asyncio.wait_for(reader.read(4096), 5)
            assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 3
            writer.close()
    finally:
        await runner.cleanup()


class _FakeKube:
    def __init__(self) -> None:
        self.deployments: list[dict[str, Any]] = []
        self.pods: list[dict[str, Any]] = []

    async def list(self, api: str, kind: str, namespace: str, label_selector: str | None = None) -> list[Any]:
        return self.deployments if kind == "Qwen3Deployment" else self.pods


class _NoScrape(Discovery):
    async def _scrape(self, session: aiohttp.ClientSession, replica: Replica, adapters: bool = False) -> bool:
        return True


def _deployment(name: str, model: str, desired: int) -> dict[str, Any]:
    plan = {"vllmArgs": ["Qwen/x", "--served-model-name", model], "maxNumSeqs": 64}
    return {"metadata": {"name": name}, "status": {"desiredReplicas": desired, "plan": plan}}


def _pod(name: str, backend: str, ip: str, model: str) -> dict[str, Any]:
    plan = json.dumps(
        {"vllmArgs": ["Qwen/x", "--served-model-name", model], "maxNumSeqs": 256, "referenceConcurrency": 64}
    )
    return {"metadata": {"name": name, "labels": {"qwenfleet.dev/deployment": backend},
                         "annotations": {"qwenfleet.dev/plan": plan}},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}}  # fmt: skip


async def test_discovery_tells_a_missing_deployment_from_one_at_zero_and_follows_model_edits() -> None:
    kube = _FakeKube()
    spec = Qwen3RouterSpec.model_validate(SPEC)
    discovery = _NoScrape(kube, "ns", spec)  # type: ignore[arg-type]
    kube.deployments = [_deployment("medium", "Qwen3-30B-A3B", 1), _deployment("large", "Qwen3-235B-A22B", 0)]
    kube.pods = [_pod("medium-abc", "medium", "127.1.0.9", "Qwen3-30B-A3B")]
    async with aiohttp.ClientSession() as session:
        await discovery.refresh(session)
        phases = {n: s.phase for n, s in discovery.states.items()}
        assert phases == {"large": "zero", "medium": "ready", "lonely": "missing"}
        replica = discovery.states["medium"].replicas[0]
        assert (replica.address, replica.capacity, replica.served_model) == ("127.1.0.9:8000", 64, "Qwen3-30B-A3B")
        assert discovery.states["large"].served_model == "Qwen3-235B-A22B"
        kube.deployments[0] = _deployment("medium", "Qwen3-32B", 1)  # spec.model edited: a new plan
        kube.deployments[1]["status"]["desiredReplicas"] = 1
        await discovery.refresh(session)
        assert discovery.states["medium"].served_model == "Qwen3-32B"
        assert discovery.states["large"].phase == "starting"
        kube.deployments.append(_deployment("lonely", "Qwen3-8B", 0))
        await discovery.refresh(session)
        assert discovery.states["lonely"].phase == "zero"


async def test_a_held_request_whose_model_name_goes_away_gets_a_404() -> None:
    states = _states({})
    async with _client(states) as (client, discovery):
        body = {"model": "Qwen3-lonely", "messages": [{"role": "user", "content": "hi"}]}  # a served model name
        held = asyncio.ensure_future(client.post("/v1/chat/completions", json=body))
        await asyncio.sleep(0.2)
        states["lonely"].served_model = "Qwen3-lonelier"  # spec.model edited while the request waits
        discovery.publish()
        r = await asyncio.wait_for(held, 5)
        assert r.status == 404 and "Qwen3-lonely" in (await r.json())["error"]["message"]


def test_the_queue_signal_is_read_from_load_beyond_the_running_limit() -> None:
    from qwenfleet.router.discovery import QueueSignal, queue_signal, waiting_from_load

    assert waiting_from_load({"server_load": 40}, 16) == 24.0
    assert waiting_from_load({"server_load": 3}, 16) == 0.0
    assert waiting_from_load({"server_load": 5}, None) == 5.0
    with pytest.raises(ValueError):
        waiting_from_load({"load": 1}, 16)
    rendered = {"vllmArgs": ["m", "--max-num-seqs", "16", "--enable-server-load-tracking"], "maxNumSeqs": 16}
    assert queue_signal(rendered) == QueueSignal(True, 16)
    assert queue_signal({"vllmArgs": ["m"], "maxNumSeqs": 8}) == QueueSignal(False, 8)


async def test_a_ready_pod_counts_only_once_its_address_lists_the_model_it_should_serve() -> None:
    """A pod IP given out again may still reach the previous pod's server for a moment: the router must not send
    that server the new pod's requests (it would answer 404 for a model it does not serve)."""
    from qwenfleet.render.names import HTTP_PORT

    async def serving(model: str, ip: str) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/health", lambda _: web.Response())
        app.router.add_get("/v1/models", lambda _: web.json_response({"data": [{"id": model}]}))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, ip, HTTP_PORT).start()
        return runner

    kube = _FakeKube()
    spec = Qwen3RouterSpec.model_validate(SPEC)
    discovery = Discovery(kube, "ns", spec)  # type: ignore[arg-type]
    kube.deployments = [_deployment("medium", "Qwen3-30B-A3B", 1)]
    kube.pods = [_pod("medium-new", "medium", "127.7.7.1", "Qwen3-30B-A3B")]
    stale = await serving("Qwen3-8B", "127.7.7.1")  # another deployment's server, still on that address
    try:
        async with aiohttp.ClientSession() as session:
            await discovery.refresh(session)
            assert discovery.states["medium"].replicas == []
            await stale.cleanup()
            stale = await serving("Qwen3-30B-A3B", "127.7.7.1")  # the pod's own server
            await discovery.refresh(session)
            assert [r.id for r in discovery.states["medium"].replicas] == ["medium-new"]
            assert discovery.states["medium"].replicas[0].confirmed
    finally:
        await stale.cleanup()
