"""The simulated vLLM over real HTTP on loopback: protocol, thinking, metrics, queueing, disconnects, the fleet."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qwenfleet.planner import PlanRequest, plan
from qwenfleet.sim.fleet import SimFleet
from qwenfleet.sim.metrics import ITL_BUCKETS, REQUEST_LATENCY_BUCKETS, TTFT_BUCKETS
from qwenfleet.sim.server import SimServer

SCALE = 100.0


async def _eventually(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def fleet() -> AsyncIterator[SimFleet]:
    async with SimFleet(time_scale=SCALE) as f:
        yield f


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _start(fleet: SimFleet, model: str = "Qwen3-8B", *, cold: float = 0.0, **kw: Any) -> tuple[str, SimServer]:
    p = plan(PlanRequest(model, "H100-80GB", thinking_default=kw.pop("thinking_default", None)))
    key = f"{model}-{len(fleet.pods)}"
    server = await fleet.start_pod(key, "127.0.0.1", 0, p, cold_start_seconds=cold, **kw)
    return fleet.url(key), server


async def _families(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/metrics") as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        return {f.name: f for f in text_string_to_metric_families(await r.text())}


def _value(families: dict[str, Any], name: str, sample: str | None = None, **labels: str) -> float:
    return sum(
        s.value
        for s in families[name].samples
        if s.name == (sample or name) and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _chat(content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "Qwen3-8B", "messages": [{"role": "user", "content": content}], **extra}


async def test_health_is_503_until_the_cold_start_is_over(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    base, _ = await _start(fleet, cold=40.0)  # 0.4 s of wall time at x100
    async with http.get(f"{base}/health") as r:
        assert r.status == 503
    async with http.post(f"{base}/v1/chat/completions", json=_chat()) as r:
        assert r.status == 503 and (await r.json())["error"]["code"] == 503

    async def healthy() -> bool:
        async with http.get(f"{base}/health") as r:
            return r.status == 200 and await r.read() == b""

    await _eventually(healthy, 5, "health 200")
    async with http.get(f"{base}/v1/models") as r:
        card = (await r.json())["data"][0]
    assert card["id"] == "Qwen3-8B" and card["object"] == "model" and card["owned_by"] == "vllm"
    assert card["root"] == "Qwen/Qwen3-8B" and card["max_model_len"] == 40960 and card["created"] > 0


async def test_streaming_shape_with_usage_chunk_and_done(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    base, _ = await _start(fleet)
    body = _chat(max_tokens=30, stream=True, stream_options={"include_usage": True})
    async with http.post(f"{base}/v1/chat/completions", json=body) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        raw = await r.text()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all("usage" not in c for c in chunks[:-1])  # vLLM leaves the key out, not null
    final = chunks[-1]
    assert final["choices"] == [] and final["usage"]["completion_tokens"] == 30
    assert final["usage"]["total_tokens"] == final["usage"]["prompt_tokens"] + 30
    last = chunks[-2]["choices"][0]
    assert last["finish_reason"] == "length" and all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
    deltas = [c["choices"][0]["delta"] for c in chunks[1:-1]]
    assert any("reasoning" in d for d in deltas)  # a hybrid model thinks by default

    plain = {"model": "Qwen3-8B", "prompt": "count", "max_tokens": 12, "stream": True}
    async with http.post(f"{base}/v1/completions", json=plain) as r:
        events = [e for e in (await r.text()).split("\n\n") if e]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert events[-1] == "data: [DONE]" and all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length") and "usage" not in chunks[-1]


async def test_non_streamed_responses(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    base, _ = await _start(fleet)
    async with http.post(f"{base}/v1/completions", json={"model": "Qwen3-8B", "prompt": "go", "max_tokens": 40,
                                                         "ignore_eos": True}) as r:  # fmt: skip
        out = await r.json()
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
    assert out["choices"][0]["finish_reason"] == "length" and len(out["choices"][0]["text"]) > 40
    assert out["usage"] == {"prompt_tokens": 1, "total_tokens": 41, "completion_tokens": 40,
                            "prompt_tokens_details": None, "completion_tokens_details": None}  # fmt: skip
    async with http.post(f"{base}/v1/chat/completions", json=_chat(max_tokens=3000, seed=5)) as r:
        first = await r.json()
    async with http.post(f"{base}/v1/chat/completions", json=_chat(max_tokens=3000, seed=5)) as r:
        again = await r.json()
    assert first["choices"] == again["choices"]  # a request seed makes the answer reproducible
    choice = first["choices"][0]
    assert first["object"] == "chat.completion" and choice["message"]["role"] == "assistant"
    if choice["finish_reason"] == "stop":
        assert first["usage"]["completion_tokens"] < 3000 and choice["message"]["content"]


async def test_reasoning_follows_the_thinking_rules(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    hybrid, _ = await _start(fleet)
    quiet, _ = await _start(fleet, thinking_default=False)
    instruct, _ = await _start(fleet, "Qwen3-4B-Instruct-2507")
    thinking, _ = await _start(fleet, "Qwen3-4B-Thinking-2507")

    async def reasoning(base: str, body: dict[str, Any]) -> str | None:
        async with http.post(f"{base}/v1/chat/completions", json={"max_tokens": 20, **body}) as r:
            assert r.status == 200, await r.text()
            return (await r.json())["choices"][0]["message"]["reasoning"]  # type: ignore[no-any-return]

    assert await reasoning(hybrid, _chat())
    assert await reasoning(hybrid, _chat(chat_template_kwargs={"enable_thinking": False})) is None
    assert await reasoning(hybrid, _chat("hi /no_think")) is None
    assert await reasoning(quiet, _chat()) is None  # --default-chat-template-kwargs from the plan
    assert await reasoning(quiet, _chat(chat_template_kwargs={"enable_thinking": True}))
    assert await reasoning(instruct, _chat(model="Qwen3-4B-Instruct-2507")) is None
    assert await reasoning(thinking, _chat("hi /no_think", model="Qwen3-4B-Thinking-2507"))


async def test_errors_look_like_vllm(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    base, _ = await _start(fleet)
    async with http.post(f"{base}/v1/chat/completions", json=_chat(model="gpt-4")) as r:
        error = (await r.json())["error"]
        assert r.status == 404 and error["type"] == "NotFoundError" and error["code"] == 404
        assert error["message"] == "The model `gpt-4` does not exist. Valid aliases: Qwen3-8B."
        assert error["param"] == "model"
    async with http.post(f"{base}/v1/completions", data=b"{not json") as r:
        error = (await r.json())["error"]
        assert r.status == 400 and error["type"] == "Bad Request" and error["param"] == "body.1"
    async with http.post(f"{base}/v1/completions", json={"model": "Qwen3-8B", "prompt": "x", "max_tokens": 10**7}) as r:
        assert r.status == 400 and "cannot be greater than max_model_len" in (await r.json())["error"]["message"]
    async with http.get(f"{base}/v1/nothing") as r:
        assert r.status == 404 and await r.json() == {"detail": "Not Found"}
    async with http.get(f"{base}/version") as r:
        assert r.headers["Server"] == "uvicorn" and "version" in await r.json()


async def test_metrics_have_vllm_names_types_and_labels(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    base, server = await _start(fleet)
    body = {"model": "Qwen3-8B", "prompt": "measure me", "max_tokens": 100, "ignore_eos": True}
    async with http.post(f"{base}/v1/completions", json=body) as r:
        n = (await r.json())["usage"]["prompt_tokens"]
    families = await _families(http, base)
    kinds = {
        "vllm:num_requests_running": "gauge",
        "vllm:num_requests_waiting": "gauge",
        "vllm:kv_cache_usage_perc": "gauge",
        "vllm:cache_config_info": "gauge",
        "vllm:prompt_tokens": "counter",
        "vllm:generation_tokens": "counter",
        "vllm:num_preemptions": "counter",
        "vllm:request_success": "counter",
        "vllm:prefix_cache_queries": "counter",
        "vllm:prefix_cache_hits": "counter",
        "vllm:time_to_first_token_seconds": "histogram",
        "vllm:inter_token_latency_seconds": "histogram",
        "vllm:e2e_request_latency_seconds": "histogram",
        "vllm:request_queue_time_seconds": "histogram",
    }
    for name, kind in kinds.items():
        assert families[name].type == kind, name
        for sample in families[name].samples:
            if name != "vllm:cache_config_info":
                assert sample.labels["model_name"] == "Qwen3-8B" and sample.labels["engine"] == "0", sample
    assert {s.name for s in families["vllm:prompt_tokens"].samples} >= {"vllm:prompt_tokens_total"}
    assert _value(families, "vllm:generation_tokens", "vllm:generation_tokens_total") == 100
    assert _value(families, "vllm:request_success", "vllm:request_success_total", finished_reason="length") == 1
    assert {s.labels["finished_reason"] for s in families["vllm:request_success"].samples} == {"stop", "length",
                                                                                               "abort"}  # fmt: skip
    info = families["vllm:cache_config_info"].samples[0]
    assert info.value == 1 and info.labels["block_size"] == "16" and info.labels["engine"] == "0"
    for name, buckets in (("vllm:time_to_first_token_seconds", TTFT_BUCKETS),
                          ("vllm:inter_token_latency_seconds", ITL_BUCKETS),
                          ("vllm:e2e_request_latency_seconds", REQUEST_LATENCY_BUCKETS)):  # fmt: skip
        les = [float(s.labels["le"]) for s in families[name].samples if s.name == f"{name}_bucket"]
        assert les == [*buckets, float("inf")]
    assert _value(families, "vllm:inter_token_latency_seconds", "vllm:inter_token_latency_seconds_count") == 99
    # Seconds are simulated: the one request took exactly its steps' modelled time, whatever the time scale.
    perf = server.perf
    expected = sum(perf.batch_seconds(1 if i else n, n + i) for i in range(100))  # a prefill step, then decode
    e2e = _value(families, "vllm:e2e_request_latency_seconds", "vllm:e2e_request_latency_seconds_sum")
    assert e2e == pytest.approx(expected, rel=1e-6)


async def test_waiting_gauge_rises_beyond_max_num_seqs(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    base, _ = await _start(fleet, max_num_seqs=2, time_scale=20.0)
    body = {"model": "Qwen3-8B", "prompt": "count to a thousand", "max_tokens": 200, "ignore_eos": True}

    async def one() -> dict[str, Any]:
        async with http.post(f"{base}/v1/completions", json=body) as r:
            return dict(await r.json())

    tasks = [asyncio.ensure_future(one()) for _ in range(8)]

    async def queued() -> bool:
        m = await _families(http, base)
        return _value(m, "vllm:num_requests_waiting") >= 3 and _value(m, "vllm:num_requests_running") == 2

    await _eventually(queued, 10, "waiting requests")
    results = await asyncio.gather(*tasks)
    m = await _families(http, base)
    assert all(r["usage"]["completion_tokens"] == 200 for r in results)
    assert _value(m, "vllm:request_success", "vllm:request_success_total") == 8
    assert _value(m, "vllm:num_requests_waiting") == 0 and _value(m, "vllm:num_requests_running") == 0
    assert _value(m, "vllm:request_queue_time_seconds", "vllm:request_queue_time_seconds_sum") > 0
    assert _value(m, "vllm:prefix_cache_hits", "vllm:prefix_cache_hits_total") == 0  # 5-token prompts: no full block


async def test_client_disconnect_frees_the_slot(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    base, server = await _start(fleet, max_num_seqs=1)
    long = {"model": "Qwen3-8B", "prompt": "long", "max_tokens": 30000, "ignore_eos": True}
    r = await http.post(f"{base}/v1/completions", json={**long, "stream": True})
    await r.content.readline()
    assert len(server.engine.running) == 1 and server.engine.kv_usage > 0
    r.close()

    async def freed() -> bool:
        return server.engine.idle and server.engine.kv_usage == 0

    await _eventually(freed, 5, "engine idle after a streaming client went away")
    with pytest.raises(asyncio.TimeoutError):  # a non-streamed request whose client gives up
        async with http.post(f"{base}/v1/completions", json=long, timeout=aiohttp.ClientTimeout(total=0.2)) as r:
            await r.read()
    await _eventually(freed, 5, "engine idle after a waiting client went away")
    async with http.post(f"{base}/v1/completions", json={**long, "max_tokens": 5}) as r:
        assert r.status == 200  # the slot serves the next request
    m = await _families(http, base)
    # vLLM 0.32 counts no finished reason for a request its client abandoned (tests/engine checks it on the engine)
    assert _value(m, "vllm:request_success", "vllm:request_success_total", finished_reason="abort") == 0
    assert _value(m, "vllm:request_success", "vllm:request_success_total", finished_reason="length") == 1


async def test_fleet_serves_pods_on_their_own_addresses(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    p = plan(PlanRequest("Qwen3-0.6B", "L4-24GB"))
    await fleet.start_pod("ns/a", "127.1.3.7", 0, p, seed=1, cold_start_seconds=0)
    await fleet.start_pod("ns/b", "127.1.3.8", 0, p, seed=2, cold_start_seconds=0)
    assert fleet.url("ns/a").startswith("http://127.1.3.7:") and fleet.url("ns/b").startswith("http://127.1.3.8:")
    for key in ("ns/a", "ns/b"):
        async with http.get(f"{fleet.url(key)}/health") as r:
            assert r.status == 200
    long = {"model": "Qwen3-0.6B", "prompt": "go", "max_tokens": 30000, "ignore_eos": True, "stream": True}
    stream = await http.post(f"{fleet.url('ns/a')}/v1/completions", json=long)
    await stream.content.readline()
    gone = fleet.url("ns/a")
    started = time.monotonic()
    assert await fleet.stop_pod("ns/a") and not await fleet.stop_pod("ns/a")
    assert time.monotonic() - started < 3
    with pytest.raises(aiohttp.ClientError):
        async with http.get(f"{gone}/health") as r:
            await r.read()
    stream.close()
    async with http.get(f"{fleet.url('ns/b')}/metrics") as r:
        assert "vllm:num_requests_running" in await r.text()
    assert set(fleet.pods) == {"ns/b"}


async def test_metrics_ignore_the_query_string_like_vllm(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    """vLLM 0.32's /metrics renders the whole registry whatever the query says (`name[]` included)."""
    base, _ = await _start(fleet)
    async with http.get(f"{base}/metrics", params={"name[]": "vllm:num_requests_waiting"}) as r:
        filtered = {f.name for f in text_string_to_metric_families(await r.text())}
    assert filtered == set(await _families(http, base)) and "vllm:kv_cache_usage_perc" in filtered


async def test_load_counts_requests_in_flight(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    base, _ = await _start(fleet)
    async with http.get(f"{base}/load") as r:
        assert r.status == 200 and await r.json() == {"server_load": 0}
