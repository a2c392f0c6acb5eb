"""The router on the simulated fleet: aliases, auto rules, streaming, unknown models, missing backends, scale
from zero."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qwenfleet.kube import Kube
from tests.e2e.operator_proc import OperatorProcess, assert_disconnect_cancels, router_process, wait_for
from tests.e2e.test_reconciler import API, KIND, _create, _wait_ready

pytestmark = pytest.mark.e2e

ROUTER = {
    "backends": [
        {"name": "small", "aliases": ["qwen3-small"], "fallback": "big"},
        {"name": "big", "aliases": ["qwen3-big"]},
        {"name": "sleepy", "aliases": ["qwen3-sleepy"]},
        {"name": "ghost", "aliases": ["qwen3-ghost"]},  # no Qwen3Deployment of that name
    ],
    "defaultBackend": "small",
    "rules": [{"name": "thinking", "match": {"thinking": True}, "backend": "big"}],
    "scaleFromZero": {"enabled": True, "holdSeconds": 60},
}


def _q3d(name: str, model: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": KIND, "metadata": {"name": name},
            "spec": {"model": model, "gpu": "H100-80GB", **spec}}  # fmt: skip


@pytest.fixture
def router(namespace: str, kubeconfig: Path, tmp_path: Path) -> Iterator[str]:
    with router_process(ROUTER, namespace, kubeconfig, tmp_path) as url:
        yield url


async def _small_and_big_ready(kube: Kube, namespace: str, small_max_num_seqs: int) -> None:
    """One replica each of `small` (Qwen3-0.6B, running at most `small_max_num_seqs` at once) and `big`
    (Qwen3-30B-A3B), Ready."""
    await _create(
        kube, namespace, _q3d("small", "Qwen3-0.6B", replicas=1, overrides={"maxNumSeqs": small_max_num_seqs})
    )
    await _create(kube, namespace, _q3d("big", "Qwen3-30B-A3B", replicas=1))
    await _wait_ready(kube, namespace, "small")
    await _wait_ready(kube, namespace, "big")


async def _chat(session: aiohttp.ClientSession, base: str, model: str, **extra: Any) -> tuple[int, dict[str, str], Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16, **extra}
    async with session.post(f"{base}/v1/chat/completions", json=body) as r:
        text = await r.text()
        return r.status, dict(r.headers), text


async def test_router_routes_across_sizes(kube: Kube, namespace: str, operator: OperatorProcess, router: str) -> None:
    await _create(kube, namespace, _q3d("small", "Qwen3-0.6B", replicas=1))
    await _create(kube, namespace, _q3d("big", "Qwen3-30B-A3B", replicas=1))
    sleepy = {"autoscaling": {"mode": "builtin", "minReplicas": 0, "maxReplicas": 1, "scaleToZeroAfterSeconds": 600}}
    await _create(kube, namespace, _q3d("sleepy", "Qwen3-4B-Instruct-2507", **sleepy))
    await _wait_ready(kube, namespace, "small")
    await _wait_ready(kube, namespace, "big")
    async with aiohttp.ClientSession() as s:

        async def routable() -> bool:
            try:
                status, _, _ = await _chat(s, router, "qwen3-small")
                status2, _, _ = await _chat(s, router, "qwen3-big")
            except aiohttp.ClientError:
                return False
            return status == 200 and status2 == 200

        await wait_for(routable, 60, "router serving both backends")
        status, headers, text = await _chat(s, router, "qwen3-big")
        assert headers["x-qwenfleet-route"].startswith("big;alias;")
        assert json.loads(text)["model"] == "Qwen3-30B-A3B"
        _, headers, _ = await _chat(s, router, "auto")
        assert headers["x-qwenfleet-route"].startswith("small;default;")
        _, headers, _ = await _chat(s, router, "auto", chat_template_kwargs={"enable_thinking": True})
        assert headers["x-qwenfleet-route"].startswith("big;rule:thinking;")
        status, _, text = await _chat(s, router, "gpt-4")
        assert status == 404 and "qwen3-small" in json.loads(text)["error"]["message"]
        async with s.post(f"{router}/v1/chat/completions", data=b"{oops") as r:
            assert r.status == 400
        body = {"model": "qwen3-small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
                "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
        async with s.post(f"{router}/v1/chat/completions", json=body) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            lines = [line.decode().strip() async for line in r.content if line.strip()]
        assert lines[-1] == "data: [DONE]" and json.loads(lines[-2].removeprefix("data: "))["usage"]
        async with s.get(f"{router}/v1/models") as r:
            ids = {m["id"] for m in (await r.json())["data"]}
        assert {"auto", "qwen3-small", "qwen3-big", "qwen3-sleepy", "Qwen3-0.6B"} <= ids

        # a backend whose Qwen3Deployment does not exist: a clear error at once, not a hold; the others serve
        started = time.monotonic()
        status, headers, text = await _chat(s, router, "qwen3-ghost")
        assert status == 503 and time.monotonic() - started < 2, (status, text)
        assert "Qwen3Deployment ghost does not exist" in json.loads(text)["error"]["message"]
        assert (await _chat(s, router, "qwen3-small"))[0] == 200

        # scale from zero: the request is held while the router wakes the backend, never a 404
        obj = await kube.get(API, KIND, "sleepy", namespace)
        assert obj is not None and obj["status"].get("desiredReplicas") == 0
        status, headers, text = await asyncio.wait_for(_chat(s, router, "qwen3-sleepy"), 90)
        assert status == 200, text
        assert headers["x-qwenfleet-route"].startswith("sleepy;alias>wake>held;")
        async with s.get(f"{router}/metrics") as r:
            assert "qwenfleet_router_requests_total" in await r.text()

        # spec.model edited: the new served model name routes without a router restart, the old one is gone
        await kube.merge_patch(API, KIND, "small", namespace, {"spec": {"model": "Qwen3-1.7B"}})
        seen: list[Any] = []

        async def renamed() -> bool:
            status, _, text = await _chat(s, router, "Qwen3-1.7B")
            seen[:] = [status, text[:200]]
            return status == 200 and json.loads(text)["model"] == "Qwen3-1.7B"

        await wait_for(renamed, 90, "the edited model name served through the router", detail=lambda: seen)
        assert (await _chat(s, router, "Qwen3-0.6B"))[0] == 404


async def test_qwen3router_reconciler(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    await _create(kube, namespace, _q3d("small", "Qwen3-0.6B", replicas=1))
    router = {"apiVersion": API, "kind": "Qwen3Router", "metadata": {"name": "front", "namespace": namespace},
              "spec": {**ROUTER, "replicas": 2}}  # fmt: skip
    await kube.apply(router)

    async def ready() -> dict[str, Any] | None:
        obj = await kube.get(API, "Qwen3Router", "front", namespace)
        conds = {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions", [])}
        backends = {b["name"]: b["readyReplicas"] for b in (obj or {}).get("status", {}).get("backends", [])}
        return obj if conds.get("Ready", {}).get("status") == "True" and backends.get("small") == 1 else None

    obj = await wait_for(ready, 60, "Qwen3Router Ready with the small backend counted")
    assert obj["status"]["endpoint"] == f"http://front.{namespace}.svc/v1"
    config = await kube.get("v1", "ConfigMap", "front-routes", namespace)
    assert config is not None and json.loads(config["data"]["routes.json"])["spec"]["defaultBackend"] == "small"
    role = await kube.get("rbac.authorization.k8s.io/v1", "Role", "front-router", namespace)
    assert role is not None
    verbs = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert verbs == {(("",), ("pods",)): {"get", "list", "watch"},
                     (("qwenfleet.dev",), ("qwen3deployments",)): {"get", "list", "watch", "patch"}}  # fmt: skip
    deployment = await kube.get("apps/v1", "Deployment", "front-router", namespace)
    assert deployment is not None and deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "router" and f"--namespace={namespace}" in container["args"]
    before = deployment["spec"]["template"]["metadata"]["annotations"]["qwenfleet.dev/routes-hash"]
    await kube.merge_patch(API, "Qwen3Router", "front", namespace, {"spec": {"defaultBackend": "big"}})

    async def rolled() -> bool:
        dep = await kube.get("apps/v1", "Deployment", "front-router", namespace)
        return (
            dep is not None
            and dep["spec"]["template"]["metadata"]["annotations"]["qwenfleet.dev/routes-hash"] != before
        )

    await wait_for(rolled, 30, "route change rolls the router pods")


@pytest.fixture
def guarded_router(namespace: str, kubeconfig: Path, tmp_path: Path) -> Iterator[str]:
    """A router with an API key, a 4 KiB body limit and spillover from small to big at 1 waiting request."""
    spec = {**ROUTER, "limits": {"maxBodyBytes": 4096}}
    spec["backends"] = [{"name": "small", "aliases": ["qwen3-small"], "spilloverTo": "big",
                         "spilloverQueuePerReplica": 1}, {"name": "big", "aliases": ["qwen3-big"]}]  # fmt: skip
    keys = tmp_path / "keys"
    keys.write_text("sk-test-one\nsk-test-two\n")
    args = [f"--api-keys-file={keys}"]
    with router_process(spec, namespace, kubeconfig, tmp_path, discovery_interval=0.3, args=args) as url:
        yield url


async def test_openai_client_errors_spillover_and_disconnect(
    kube: Kube, namespace: str, operator: OperatorProcess, guarded_router: str
) -> None:
    import openai

    await _small_and_big_ready(kube, namespace, small_max_num_seqs=1)
    client = openai.AsyncOpenAI(base_url=f"{guarded_router}/v1", api_key="sk-test-two", max_retries=0)
    messages: Any = [{"role": "user", "content": "hello"}]

    async def served() -> bool:
        try:
            await client.chat.completions.create(model="qwen3-big", messages=messages, max_tokens=4)
            await client.chat.completions.create(model="qwen3-small", messages=messages, max_tokens=4)
        except (openai.APIStatusError, openai.APIConnectionError):
            return False
        return True

    await wait_for(served, 60, "the router serving both backends")
    no_thinking: Any = {"chat_template_kwargs": {"enable_thinking": False}}  # hybrid models reason first otherwise
    reply = await client.chat.completions.create(
        model="qwen3-small", messages=messages, max_tokens=8, extra_body=no_thinking
    )
    assert reply.choices[0].message.content and reply.usage is not None
    stream = await client.chat.completions.create(
        model="auto", messages=messages, max_tokens=8, stream=True, extra_body=no_thinking
    )
    pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(pieces).strip()

    bad_key = openai.AsyncOpenAI(base_url=f"{guarded_router}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad_key.chat.completions.create(model="qwen3-small", messages=messages)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="qwen3-huge", messages=messages)
    with pytest.raises(openai.APIStatusError) as too_big:
        await client.chat.completions.create(model="qwen3-small", messages=[{"role": "user", "content": "x" * 8000}])
    assert too_big.value.status_code == 413
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="qwen3-small", messages=messages, max_tokens=0)

    # spillover: keep small's single slot busy and its queue long; then an auto request goes to big
    stop = asyncio.Event()

    async def hog() -> None:
        while not stop.is_set():
            with contextlib.suppress(openai.APIError):
                await client.completions.create(model="qwen3-small", prompt="go", max_tokens=20000)

    hogs = [asyncio.ensure_future(hog()) for _ in range(8)]
    try:

        async def spilled() -> bool:
            raw = await client.chat.completions.with_raw_response.create(model="auto", messages=messages, max_tokens=2)
            return raw.headers["x-qwenfleet-route"].startswith("big;default>spillover;")

        await wait_for(spilled, 30, "auto requests spill over to big")
    finally:
        stop.set()
        for task in hogs:
            task.cancel()
        await asyncio.gather(*hogs, return_exceptions=True)

    # disconnect: the upstream request is cancelled, the serving pod's running count returns to zero
    async with aiohttp.ClientSession() as s:
        body = {"model": "qwen3-small", "prompt": "long", "max_tokens": 30000, "stream": True}
        r = await s.post(f"{guarded_router}/v1/completions", json=body, headers={"Authorization": "Bearer sk-test-one"})
        await r.content.readline()
        pod_name = r.headers["x-qwenfleet-route"].rsplit(";", 1)[1]
        pod = await kube.get("v1", "Pod", pod_name, namespace)
        assert pod is not None
        await assert_disconnect_cancels(s, r, f"http://{pod['status']['podIP']}:8000/metrics")


@pytest.fixture
def burst_router(namespace: str, kubeconfig: Path, tmp_path: Path) -> Iterator[str]:
    """A router spilling small over to big past 1 waiting request per replica, scraping only every 5 s."""
    spec = {"backends": [{"name": "small", "aliases": ["qwen3-small"], "spilloverTo": "big",
                          "spilloverQueuePerReplica": 1}, {"name": "big", "aliases": ["qwen3-big"]}],
            "defaultBackend": "small"}  # fmt: skip
    with router_process(spec, namespace, kubeconfig, tmp_path, discovery_interval=5) as url:
        yield url


async def test_a_burst_between_scrapes_spills_over(
    kube: Kube, namespace: str, operator: OperatorProcess, burst_router: str
) -> None:
    await _small_and_big_ready(kube, namespace, small_max_num_seqs=32)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:

        async def both() -> bool:
            try:
                return all([(await _chat(s, burst_router, m))[0] == 200 for m in ("qwen3-small", "qwen3-big")])
            except aiohttp.ClientError:
                return False

        await wait_for(both, 60, "the router serving both backends")
        await asyncio.sleep(6)  # a scrape after those requests: small's queue is seen empty
        # 300 at once, long enough to be in flight together; the last scrape saw small idle
        no_thinking = {"chat_template_kwargs": {"enable_thinking": False}, "max_tokens": 3000, "ignore_eos": True}
        results = await asyncio.gather(*(_chat(s, burst_router, "qwen3-small", **no_thinking) for _ in range(300)))
    assert all(status == 200 for status, _, _ in results), {status for status, _, _ in results}
    routes = [headers["x-qwenfleet-route"].split(";")[:2] for _, headers, _ in results]
    on_small = sum(r == ["small", "alias"] for r in routes)
    spilled = sum(r == ["big", "alias>spillover"] for r in routes)
    assert on_small + spilled == 300
    # small runs 32 at once and may queue 1; past that, requests spill while big has headroom (its own in-flight
    # requests below its plan's concurrency + 1), and the rest queue on small, the alternate being full too
    big = await kube.get(API, KIND, "big", namespace)
    assert big is not None
    big_capacity = big["status"]["plan"]["referenceConcurrency"]
    assert spilled >= big_capacity + 1 and on_small >= 34, (on_small, spilled, big_capacity)
