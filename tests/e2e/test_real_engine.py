"""The dev fleet with the real vLLM engine (CPU build, pinned version) behind the operator, router and autoscaler.

One Qwen3Deployment asks for the real engine; its pods run `vllm serve` from their own rendered command line.
The test walks one deployment through the whole life a user would see: started from the pod's args, served
through the router (thinking on and off, streaming, a tool call, spillover to a simulated size), a client
disconnect cancelled inside the engine, scaled up by the builtin autoscaler on the real
`vllm:num_requests_waiting` and back down, and an engine killed: the router drops its pod, the pod restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qwenfleet.catalog.engine import VLLM_VERSION
from qwenfleet.devcluster import engine
from qwenfleet.devcluster.real_pods import ENGINE_ANNOTATION
from qwenfleet.kube import Kube
from qwenfleet.render.names import HTTP_PORT
from tests.e2e.operator_proc import OperatorProcess, router_process, wait_for
from tests.e2e.test_reconciler import API, KIND, _create, _pods, _wait_ready
from tests.engine.test_conformance import CASES

pytestmark = pytest.mark.e2e

ENGINE_START = 400.0
"""Seconds a real engine may take to answer /health on 2 shared cores (torch compile warm-up included)."""

ROUTES = {
    "backends": [
        {"name": "real", "aliases": ["qwen3-real"], "spilloverTo": "sim", "spilloverQueuePerReplica": 1},
        {"name": "sim", "aliases": ["qwen3-sim"]},
    ],
    "defaultBackend": "real",
    "scaleFromZero": {"enabled": True, "holdSeconds": 60},
}


def _real(name: str) -> dict[str, Any]:
    # The scale-down delay outlasts a real engine's start under load (about a minute on 2 cores): a shorter one lets
    # a lull between the load's requests remove the second replica before it serves, and the test never sees it.
    return {
        "apiVersion": API,
        "kind": KIND,
        "metadata": {"name": name, "annotations": {ENGINE_ANNOTATION: "vllm"}},
        "spec": {
            "model": "Qwen3-0.6B",
            "gpu": "L4-24GB",
            "overrides": {"maxNumSeqs": 2},
            "autoscaling": {"mode": "builtin", "minReplicas": 1, "maxReplicas": 2, "targetQueueDepth": 1,
                            "scaleDownDelaySeconds": 60},
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
def real_engine_installed() -> Path:
    """The engine is installed by `make engine` (a dependency of `make e2e`); install it here if run alone."""
    return engine.ensure(echo=False)


@pytest.fixture
def router(namespace: str, kubeconfig: Path, tmp_path: Path) -> Iterator[str]:
    with router_process(ROUTES, namespace, kubeconfig, tmp_path) as url:
        yield url


def _engine_processes() -> dict[str, tuple[int, list[str]]]:
    """Running real engines by the host they bind: (pid, argv)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode().split("\0")[:-1]
        except OSError:
            continue
        if len(argv) > 2 and argv[1].endswith("/vllm") and argv[2] == "serve" and "--host" in argv:
            out[argv[argv.index("--host") + 1]] = (int(entry.name), argv[1:])
    return out


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


async def _metric(session: aiohttp.ClientSession, ip: str, name: str, label: str = "") -> float:
    async with session.get(f"http://{ip}:{HTTP_PORT}/metrics") as r:
        text = await r.text()
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _chat(session: aiohttp.ClientSession, base: str, **body: Any) -> tuple[int, dict[str, str], Any]:
    payload = {"model": "qwen3-real", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, **body}
    async with session.post(f"{base}/v1/chat/completions", json=payload) as r:
        text = await r.text()
        return r.status, dict(r.headers), (json.loads(text) if not body.get("stream") else text)


@pytest.mark.timeout(1200)  # three real engine starts on 2 shared cores; the waits inside give the failure
async def test_real_engine_behind_operator_router_and_autoscaler(
    kube: Kube, namespace: str, operator: OperatorProcess, router: str, real_engine_installed: Path
) -> None:
    await _create(kube, namespace, _real("real"))
    sim = {"apiVersion": API, "kind": KIND, "metadata": {"name": "sim"},
           "spec": {"model": "Qwen3-0.6B", "gpu": "H100-80GB", "replicas": 1}}  # fmt: skip
    await _create(kube, namespace, sim)

    # The pod is not Ready until vLLM's own /health answers: a real engine takes a minute or more to start.
    pod = (await wait_for(lambda: _pods(kube, namespace, "real"), 60, "a pod of the real deployment"))[0]
    ip = await wait_for(lambda: _pod_ip(kube, namespace, "real"), 60, "the pod's IP")
    await wait_for(lambda: _engine_bound(ip), 30, f"a real engine bound to {ip}")
    seen_unready = await wait_for(lambda: _pod_unready(kube, namespace, "real"), 30, "the pod unready while starting")
    assert seen_unready
    await wait_for(lambda: _ready_pods(kube, namespace, "real", 1), ENGINE_START, "the pod Ready once vLLM serves")
    async with aiohttp.ClientSession() as probe, probe.get(f"http://{ip}:{HTTP_PORT}/health") as r:
        assert r.status == 200
    await _wait_ready(kube, namespace, "real")
    await _wait_ready(kube, namespace, "sim")

    # Started from the pod's own command and args, with only the documented substitutions.
    pod = (await _pods(kube, namespace, "real"))[0]
    container = pod["spec"]["containers"][0]
    _, argv = _engine_processes()[ip]
    assert argv == engine.engine_argv(container["command"], container["args"], ip, HTTP_PORT)
    assert "--max-num-seqs" in argv and argv[argv.index("--max-num-seqs") + 1] == "2"

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
        async with s.get(f"http://{ip}:{HTTP_PORT}/version") as r:
            assert (await r.json())["version"] == VLLM_VERSION

        async def routable() -> bool:
            try:
                status, headers, _ = await _chat(s, router)
            except aiohttp.ClientError:
                return False
            return status == 200 and headers.get("x-qwenfleet-route", "").startswith("real;")

        await wait_for(routable, 60, "the router serving the real backend")

        # Thinking on and off: real vLLM's qwen3 reasoning parser fills `reasoning` only when thinking is on.
        status, _, thinking = await _chat(s, router, max_tokens=16, chat_template_kwargs={"enable_thinking": True})
        assert status == 200 and "reasoning" in thinking["choices"][0]["message"]
        status, _, plain = await _chat(s, router, max_tokens=16, chat_template_kwargs={"enable_thinking": False})
        assert status == 200 and plain["choices"][0]["message"].get("reasoning") is None
        assert plain["usage"]["completion_tokens"] >= 1

        # Streaming, with the usage chunk and [DONE].
        status, _, stream = await _chat(s, router, stream=True, stream_options={"include_usage": True})
        events = [line[6:] for line in stream.splitlines() if line.startswith("data: ")]
        assert status == 200 and events[-1] == "[DONE]"
        assert json.loads(events[-2])["choices"] == [] and json.loads(events[-2])["usage"]["completion_tokens"] >= 1

        # A tool call parsed by vLLM: the conformance suite's named-tool request (a fixed seed; random weights
        # make a complete call a matter of the seed), sent through the router.
        _, body = CASES["tools named"]
        status, headers, called = await _chat(s, router, **{k: v for k, v in body.items() if k != "model"})
        assert status == 200, called
        calls = called["choices"][0]["message"].get("tool_calls")
        assert calls and calls[0]["function"]["name"] == "get_weather", (headers, called["choices"])
        assert calls[0]["id"].startswith("chatcmpl-tool-")

        # A client disconnect cancels the request inside the engine.

        body = {"model": "qwen3-real", "messages": [{"role": "user", "content": "go"}], "max_tokens": 20000,
                "ignore_eos": True, "stream": True}  # fmt: skip
        async with s.post(f"{router}/v1/chat/completions", json=body) as r:
            assert r.status == 200
            await r.content.readline()
        await wait_for(lambda: _running_is(s, ip, 0), 30, "no running request after the disconnect")
        generated = await _metric(s, ip, "vllm:generation_tokens_total")
        await asyncio.sleep(2)
        assert await _metric(s, ip, "vllm:generation_tokens_total") == generated  # nothing more generated for it
        assert generated < 20000

        # A burst beyond 2 sequences spills to the simulated size while the real replica's queue is full.
        burst = [asyncio.create_task(_chat(s, router, max_tokens=400, ignore_eos=True)) for _ in range(12)]
        results = await asyncio.gather(*burst)
        routes = [headers.get("x-qwenfleet-route", "") for _, headers, _ in results]
        assert all(status == 200 for status, _, _ in results)
        assert any(r.startswith("sim;") for r in routes), routes
        assert any(r.startswith("real;") for r in routes), routes

        # Sustained load on the real replica (direct, so nothing spills): the builtin autoscaler reads the real
        # vllm:num_requests_waiting and adds a replica; a lighter load holds it there until the second is Ready.
        stop, clients = asyncio.Event(), []

        async def client() -> None:
            while not stop.is_set():
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    await _chat(s, f"http://{ip}:{HTTP_PORT}", model="Qwen3-0.6B", max_tokens=200, ignore_eos=True)

        clients = [asyncio.create_task(client()) for _ in range(8)]
        await wait_for(lambda: _desired_at_least(kube, namespace, "real", 2), 180, "a second real replica wanted")
        for task in clients[4:]:
            task.cancel()
        await wait_for(lambda: _ready_pods(kube, namespace, "real", 2), ENGINE_START, "two Ready real replicas")
        # A scale-down within the restart below (a minute or more on 2 cores) would remove the very pod under
        # test: the delay is lengthened for it, and shortened again once it is over.
        await kube.merge_patch(API, KIND, "real", namespace, {"spec": {"autoscaling": {"scaleDownDelaySeconds": 3600}}})
        stop.set()
        await asyncio.gather(*clients, return_exceptions=True)

        # An engine killed: its pod turns unready at once, the router stops using it, the kubelet-like restart.
        pods = await _pods(kube, namespace, "real")
        victim = next(p for p in pods if p["status"]["podIP"] != ip)
        victim_ip = victim["status"]["podIP"]
        vpid, _ = _engine_processes()[victim_ip]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(vpid, signal.SIGKILL)
        await wait_for(lambda: _pod_state(kube, namespace, victim, ready=False, restarts=1), 15, "the pod unready")
        await asyncio.sleep(2)
        statuses = [(await _chat(s, router, model="qwen3-real"))[0] for _ in range(10)]
        assert statuses == [200] * 10
        await wait_for(lambda: _pod_state(kube, namespace, victim, ready=True, restarts=1), ENGINE_START,
                       "the killed engine restarted and Ready")  # fmt: skip
        await kube.merge_patch(API, KIND, "real", namespace, {"spec": {"autoscaling": {"scaleDownDelaySeconds": 60}}})

        # Idle again: back down to one replica.
        await wait_for(lambda: _desired_at_most(kube, namespace, "real", 1), 180, "scaled back down to 1")


async def _engine_bound(ip: str) -> bool:
    return ip in _engine_processes()


async def _pod_ip(kube: Kube, namespace: str, name: str) -> str | None:
    pods = await _pods(kube, namespace, name)
    return pods[0]["status"].get("podIP") if pods else None


async def _pod_unready(kube: Kube, namespace: str, name: str) -> bool:
    pods = await _pods(kube, namespace, name)
    return bool(pods) and not _ready(pods[0]) and pods[0]["status"].get("phase") == "Running"


async def _running_is(s: aiohttp.ClientSession, ip: str, value: float) -> bool:
    return await _metric(s, ip, "vllm:num_requests_running") == value


async def _desired_at_least(kube: Kube, namespace: str, name: str, n: int) -> bool:
    obj = await kube.get(API, KIND, name, namespace)
    return int(((obj or {}).get("status") or {}).get("desiredReplicas", 0)) >= n


async def _desired_at_most(kube: Kube, namespace: str, name: str, n: int) -> bool:
    obj = await kube.get(API, KIND, name, namespace)
    return 0 < int(((obj or {}).get("status") or {}).get("desiredReplicas", 99)) <= n


async def _ready_pods(kube: Kube, namespace: str, name: str, n: int) -> bool:
    """At least `n` pods Ready whose engines answer /health (kwok marks a new pod Ready for the moment before the
    fleet agent reports its engine starting, so readiness alone could count a pod that is not serving yet)."""
    ready = [p for p in await _pods(kube, namespace, name) if _ready(p) and p["status"].get("podIP")]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
        healthy = 0
        for pod in ready:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with s.get(f"http://{pod['status']['podIP']}:{HTTP_PORT}/health") as r:
                    healthy += r.status == 200
    return healthy >= n


async def _pod_state(kube: Kube, namespace: str, pod: dict[str, Any], *, ready: bool, restarts: int) -> bool:
    now = await kube.get("v1", "Pod", pod["metadata"]["name"], namespace)
    if now is None:
        return False
    statuses = now["status"].get("containerStatuses") or [{}]
    return _ready(now) == ready and statuses[0].get("restartCount") == restarts
