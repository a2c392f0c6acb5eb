"""External API backends: the pure pieces (URL, payload, usage kept from the client, error mapping, daily spend),
the policy (target, fallback, spillover, concurrency limit, budget) and the proxy against an in-process stand-in
API on loopback (key, model name, streaming usage, 401, timeouts, cost counted)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from qwenfleet.api.cost import ApiPrices
from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.router.app import Router
from qwenfleet.router.discovery import Discovery
from qwenfleet.router.external import DailySpend, UsageFilter, api_error, api_payload, api_url, price
from qwenfleet.router.policy import BackendState, Replica, RouteRequest, decide
from qwenfleet.router.usage import Usage
from tests.unit.test_router_app import FakeDiscovery, Upstream

KEY = "sk-stand-in-1234"
PRICES = {"inputPerMillionUSD": 3.0, "outputPerMillionUSD": 15.0}


def _spec(base_url: str = "http://127.0.0.1:9/v1", **extra: Any) -> dict[str, Any]:
    api = {"baseURL": base_url, "model": "frontier-1", "prices": PRICES, "apiKeySecretRef": {"name": "k", "key": "k"},
           "maxConcurrency": 2, "timeoutSeconds": 2, **extra.pop("api", {})}  # fmt: skip
    return {
        "backends": [
            {"name": "small", "aliases": ["qwen3-small"], "spilloverTo": "premium", "spilloverQueuePerReplica": 1},
            {"name": "large", "aliases": ["qwen3-large"], "fallback": "premium"},
            {"name": "premium", "aliases": ["frontier"], "external": api},
        ],
        "defaultBackend": "small",
        "rules": [{"name": "premium", "match": {"tier": "premium"}, "backend": "premium"}],
        **extra,
    }


def _states(spec: Qwen3RouterSpec, small: str | None = None) -> dict[str, BackendState]:
    states = Discovery(kube=None, namespace="ns", spec=spec).states  # type: ignore[arg-type]
    states["small"] = BackendState("small", "Qwen3-small", desired=1)
    if small:
        states["small"].replicas = [Replica("small-0", small, served_model="Qwen3-small")]
    states["large"] = BackendState("large", "Qwen3-large")  # at zero
    return states


# -- pure -------------------------------------------------------------------------------------------------------


def test_the_request_to_the_api_names_its_model_and_asks_for_usage_when_streaming() -> None:
    assert (
        api_url("https://api.example.com/v1/", "/v1/chat/completions") == "https://api.example.com/v1/chat/completions"
    )
    payload, injected = api_payload({"model": "frontier", "stream": True, "messages": []}, "frontier-1")
    assert injected and json.loads(payload) == {"model": "frontier-1", "stream": True, "messages": [],
                                                "stream_options": {"include_usage": True}}  # fmt: skip
    payload, injected = api_payload({"model": "x", "stream": True, "stream_options": {"include_usage": True}}, "m")
    assert not injected
    assert api_payload({"model": "x"}, "m") == (b'{"model": "m"}', False)


def test_the_usage_chunk_is_kept_from_a_client_that_did_not_ask_and_counted() -> None:
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n'
    stream = b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n' + usage + b"data: [DONE]\n\n"
    stripped = UsageFilter(strip=True)
    out = b"".join(stripped.feed(stream[i : i + 9]) for i in range(0, len(stream), 9)) + stripped.close()
    assert out == b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\ndata: [DONE]\n\n'
    assert stripped.usage == Usage(5, 2, 0)
    kept = UsageFilter(strip=False)
    assert kept.feed(stream) == stream and kept.close() == b"" and kept.usage == Usage(5, 2, 0)


def test_api_errors_become_the_routers_and_never_carry_the_key() -> None:
    status, message = api_error(401, "premium", "https://api.example.com/v1", "keys/openai", b'{"error": "nope"}')
    assert status == 502 and "refused its API key (401 from api.example.com)" in message and "keys/openai" in message
    assert api_error(429, "premium", "https://a/v1", None, b"")[0] == 429
    assert api_error(503, "premium", "https://a/v1", None, b"")[0] == 502
    status, message = api_error(400, "premium", "https://a/v1", None, b'{"error": {"message": "bad max_tokens"}}')
    assert status == 400 and "bad max_tokens" in message


def test_the_daily_spend_rolls_over_at_midnight_utc() -> None:
    spend = DailySpend(budget=1.0)
    spend.add(0.6, now=86400 * 10 + 5)
    assert not spend.exhausted(86400 * 10 + 6)
    spend.add(0.5, now=86400 * 10 + 7)
    assert spend.exhausted(86400 * 10 + 8)
    assert not spend.exhausted(86400 * 11 + 1)  # a new day
    assert price(Usage(1_000_000, 100_000, 0), ApiPrices.model_validate(PRICES)) == pytest.approx(3.0 + 1.5)


# -- policy -----------------------------------------------------------------------------------------------------


def test_the_api_serves_premium_requests_and_overflow_until_its_limit_or_the_budget() -> None:
    spec = Qwen3RouterSpec.model_validate(_spec())
    states = _states(spec, small="192.0.2.1:8000")
    route = decide(RouteRequest("auto", tier="premium"), spec, states)
    assert (route.backend, route.reason) == ("premium", "rule:premium")
    route = decide(RouteRequest("qwen3-large"), spec, states)  # large at zero: woken, the API serves meanwhile
    assert (route.backend, route.wake, route.meanwhile) == ("premium", True, "premium")
    states["small"].replicas[0].waiting = 5  # small is over its threshold: spills to the API
    assert decide(RouteRequest("qwen3-small"), spec, states).backend == "premium"
    api = states["premium"].replicas[0]
    api.outstanding = 2  # at its concurrency limit: no longer an alternate, and a request naming it gets 429
    assert decide(RouteRequest("qwen3-small"), spec, states).backend == "small"
    assert decide(RouteRequest("qwen3-large"), spec, states).hold
    refused = decide(RouteRequest("frontier"), spec, states).refusal
    assert refused is not None and refused.status == 429
    api.outstanding = 0
    states["premium"].over_budget = True  # the budget is spent: not an alternate, but still served when named
    assert decide(RouteRequest("qwen3-small"), spec, states).backend == "small"
    assert decide(RouteRequest("qwen3-large"), spec, states).hold
    assert decide(RouteRequest("frontier"), spec, states).backend == "premium"


# -- proxy ------------------------------------------------------------------------------------------------------


class StandIn:
    """An OpenAI-compatible API on loopback: checks the key, streams with usage when asked, can be slow."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.delay = 0.0

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"error": {"message": "Incorrect API key provided", "type": "invalid"}},
                                     status=401)  # fmt: skip
        body = await request.json()
        self.bodies.append(body)
        await asyncio.sleep(self.delay)
        usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        if not body.get("stream"):
            return web.json_response({"id": "x", "model": body["model"], "usage": usage,
                                      "choices": [{"message": {"role": "assistant", "content": "hi"}}]})  # fmt: skip
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        with_usage = (body.get("stream_options") or {}).get("include_usage")
        for word in ("hel", "lo"):
            chunk = {"model": body["model"], "choices": [{"delta": {"content": word}}], "usage": None}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if with_usage:
            await response.write(f"data: {json.dumps({'model': body['model'], 'choices': [], 'usage': usage})}\n\n"
                                 .encode())  # fmt: skip
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def _router(spec: dict[str, Any], key: str | None = KEY) -> AsyncIterator[
        tuple[TestClient[web.Request, web.Application], StandIn, Router]]:  # fmt: skip
    stand_in = StandIn()
    api = web.Application()
    api.router.add_post("/v1/chat/completions", stand_in.chat)
    async with TestServer(api, host="127.0.0.1") as server:
        local = Upstream("small")
        small = await local.start()
        parsed = Qwen3RouterSpec.model_validate({**spec, "backends": [
            {**b, "external": {**b["external"], "baseURL": f"http://127.0.0.1:{server.port}/v1"}} if "external" in b
            else b for b in spec["backends"]]})  # fmt: skip
        discovery = FakeDiscovery(parsed, _states(parsed, small=small))
        router = Router(parsed, discovery, external_keys={"premium": key} if key else {})
        async with TestClient(TestServer(router.app())) as client:
            yield client, stand_in, router
        assert local.server is not None
        await local.server.close()


def _chat(model: str = "frontier", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def test_the_api_gets_its_model_and_key_and_the_answer_is_counted_at_its_prices() -> None:
    async with _router(_spec()) as (client, stand_in, _):
        r = await client.post("/v1/chat/completions", json=_chat(), headers={"x-qwenfleet-tier": "premium"})
        assert r.status == 200 and r.headers["x-qwenfleet-route"] == "premium;alias;api"
        assert stand_in.bodies[-1]["model"] == "frontier-1"
        metrics = (await (await client.get("/metrics")).text()).splitlines()
        usd = next(
            line for line in metrics if line.startswith('qwenfleet_router_external_usd_total{backend="premium"}')
        )
        assert float(usd.rsplit(" ", 1)[1]) == pytest.approx((7 * 3.0 + 3 * 15.0) / 1e6)
        output = 'qwenfleet_router_tokens_total{backend="premium",mode="non_thinking",type="output"} 3'
        assert any(line.startswith(output) for line in metrics)


async def test_a_stream_gets_usage_from_the_api_but_the_client_only_what_it_asked_for() -> None:
    async with _router(_spec()) as (client, stand_in, router):
        r = await client.post("/v1/chat/completions", json=_chat(stream=True))
        text = await r.text()
        assert stand_in.bodies[-1]["stream_options"] == {"include_usage": True}
        assert '"usage": {' not in text and text.endswith("data: [DONE]\n\n") and "hel" in text
        assert router.spend.usd == pytest.approx((7 * 3.0 + 3 * 15.0) / 1e6)  # counted although not shown
        r = await client.post("/v1/chat/completions", json=_chat(stream=True, stream_options={"include_usage": True}))
        assert '"usage": {"prompt_tokens": 7' in await r.text()


async def test_a_wrong_key_is_a_502_that_says_so_without_the_key() -> None:
    async with _router(_spec(), key="sk-wrong-key-999") as (client, _, _):
        r = await client.post("/v1/chat/completions", json=_chat())
        body = await r.json()
        assert r.status == 502 and "refused its API key (401" in body["error"]["message"]
        assert "sk-wrong" not in json.dumps(body) and "k/k" in body["error"]["message"]


async def test_a_slow_api_is_a_504_after_its_timeout() -> None:
    async with _router(_spec(api={"timeoutSeconds": 0.3})) as (client, stand_in, _):
        stand_in.delay = 2.0
        r = await client.post("/v1/chat/completions", json=_chat())
        assert r.status == 504 and "did not answer within 0.3s" in (await r.json())["error"]["message"]


async def test_past_the_budget_overflow_stays_home_and_the_metric_says_so() -> None:
    async with _router(_spec(externalDailyBudgetUSD=0.00005, replicas=1)) as (client, _, router):
        r = await client.post("/v1/chat/completions", json=_chat("qwen3-large"))  # large at zero: the API meanwhile
        assert r.headers["x-qwenfleet-route"].startswith("premium;alias>wake>fallback")
        assert router.spend.exhausted(time.time())  # 0.000066 USD > the budget
        metrics = await (await client.get("/metrics")).text()
        assert "qwenfleet_router_external_budget_exhausted 1.0" in metrics
        router.discovery.states["small"].replicas[0].waiting = 5
        r = await client.post("/v1/chat/completions", json=_chat("qwen3-small"))
        assert r.headers["x-qwenfleet-route"].startswith("small;alias;")  # no spillover to the API any more
        r = await client.post("/v1/chat/completions", json=_chat("frontier"))
        assert r.status == 200  # named, it is still served
