"""The simulated vLLM server over real HTTP on 127.0.0.1: protocol, thinking, metrics, queueing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qwenfleet.planner import PlanRequest, plan
from qwenfleet.sim.fleet import SimFleet
from tests.e2e.operator_proc import free_port, wait_for


@pytest.fixture
async def fleet() -> AsyncIterator[SimFleet]:
    f = SimFleet(time_scale=50.0)
    yield f
    await f.close()


async def _start(fleet: SimFleet, model: str = "Qwen3-8B", **kw: Any) -> str:
    port = free_port()
    p = plan(PlanRequest(model, "H100-80GB", thinking_default=kw.pop("thinking_default", None)))
    await fleet.start_pod(f"{model}-{port}", "127.0.0.1", port, p, cold_start_seconds=kw.pop("cold", 0.0), **kw)
    return f"http://127.0.0.1:{port}"


async def _metrics(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with session.get(f"{base}/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


async def test_health_is_503_until_loaded(fleet: SimFleet) -> None:
    base = await _start(fleet, cold=25.0)  # 0.5 s of wall time at x50
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/health") as r:
            assert r.status == 503
        started = time.monotonic()

        async def healthy() -> bool:
            async with s.get(f"{base}/health") as r:
                return r.status == 200

        await wait_for(healthy, 5, "health 200")
        assert time.monotonic() - started < 5
        async with s.get(f"{base}/v1/models") as r:
            card = (await r.json())["data"][0]
        assert card["id"] == "Qwen3-8B" and card["owned_by"] == "vllm" and card["max_model_len"] > 0


async def test_streaming_shape_usage_and_reasoning(fleet: SimFleet) -> None:
    base = await _start(fleet)
    body = {"model": "Qwen3-8B", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 30,
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    async with aiohttp.ClientSession() as s, s.post(f"{base}/v1/chat/completions", json=body) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = [line.decode().strip() async for line in r.content if line.strip()]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1
    assert all(c["usage"] is None for c in chunks[:-1])
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1] if c["choices"]]
    assert any("reasoning" in d for d in deltas)  # hybrid model thinks by default
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")


async def test_thinking_switches(fleet: SimFleet) -> None:
    hybrid = await _start(fleet)
    instruct = await _start(fleet, "Qwen3-4B-Instruct-2507")
    msg = [{"role": "user", "content": "hi"}]
    async with aiohttp.ClientSession() as s:
        off = {
            "model": "Qwen3-8B",
            "messages": msg,
            "max_tokens": 20,
            "chat_template_kwargs": {"enable_thinking": False},
        }
        async with s.post(f"{hybrid}/v1/chat/completions", json=off) as r:
            out = await r.json()
        assert "reasoning" not in out["choices"][0]["message"] and out["usage"]["prompt_tokens"] >= 1
        soft = {"model": "Qwen3-8B", "messages": [{"role": "user", "content": "hi /no_think"}], "max_tokens": 20}
        async with s.post(f"{hybrid}/v1/chat/completions", json=soft) as r:
            assert "reasoning" not in (await r.json())["choices"][0]["message"]
        body = {"model": "Qwen3-4B-Instruct-2507", "messages": msg, "max_tokens": 20}
        async with s.post(f"{instruct}/v1/chat/completions", json=body) as r:
            assert "reasoning" not in (await r.json())["choices"][0]["message"]


async def test_errors_look_like_vllm(fleet: SimFleet) -> None:
    base = await _start(fleet)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/v1/chat/completions", json={"model": "gpt-4", "messages": []}) as r:
            assert r.status == 404 and (await r.json())["error"]["type"] == "NotFoundError"
        async with s.post(f"{base}/v1/completions", data=b"{not json") as r:
            assert r.status == 400
        async with s.post(
            f"{base}/v1/completions", json={"model": "Qwen3-8B", "prompt": "x", "max_tokens": 10**7}
        ) as r:
            assert r.status == 400 and "maximum context length" in (await r.json())["error"]["message"]


async def test_queue_builds_beyond_max_num_seqs_and_metrics_count_it(fleet: SimFleet) -> None:
    base = await _start(fleet, max_num_seqs=2)
    body = {"model": "Qwen3-8B", "prompt": "count to a thousand", "max_tokens": 400}
    async with aiohttp.ClientSession() as s:

        async def one() -> dict[str, Any]:
            async with s.post(f"{base}/v1/completions", json=body) as r:
                return dict(await r.json())

        tasks = [asyncio.ensure_future(one()) for _ in range(8)]

        async def queued() -> bool:
            m = await _metrics(s, base)
            return m.get("vllm:num_requests_waiting", 0) >= 3 and m.get("vllm:num_requests_running", 0) == 2

        await wait_for(queued, 10, "waiting requests")
        results = await asyncio.gather(*tasks)
        assert all(r["object"] == "text_completion" for r in results)
        m = await _metrics(s, base)
    assert m["vllm:request_success_total"] == 8
    assert m["vllm:generation_tokens_total"] == sum(r["usage"]["completion_tokens"] for r in results)
    assert m["vllm:time_to_first_token_seconds_count"] == 8 and m["vllm:num_requests_waiting"] == 0


async def test_client_disconnect_frees_the_slot(fleet: SimFleet) -> None:
    base = await _start(fleet, max_num_seqs=1)
    body = {"model": "Qwen3-8B", "prompt": "long", "max_tokens": 30000, "stream": True}
    server = next(iter(fleet.pods.values())).server
    async with aiohttp.ClientSession() as s:
        r = await s.post(f"{base}/v1/completions", json=body)
        await r.content.readline()
        assert len(server.engine.running) == 1
        r.close()

        async def freed() -> bool:
            return server.engine.idle

        await wait_for(freed, 5, "engine idle after disconnect")
