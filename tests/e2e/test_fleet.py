"""The simulated fleet: every model-server pod answers as vLLM on its own loopback pod IP; the demo fleet wakes
its large model for a thinking request and serves that request meanwhile."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from qwenfleet.devcluster.demo import router_url
from qwenfleet.kube import Kube
from qwenfleet.render.names import WAKE_ANNOTATION
from tests.e2e.operator_proc import OperatorProcess, wait_for
from tests.e2e.test_reconciler import API, KIND, _create, _example, _pods, _wait_ready

pytestmark = pytest.mark.e2e


async def test_every_model_server_pod_serves_vllm_on_its_ip(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    doc = _example("qwen3-0.6b-l4.yaml")
    doc["spec"]["replicas"] = 2
    doc["spec"]["gpu"] = "H100-80GB"
    name = doc["metadata"]["name"]
    await _create(kube, namespace, doc)
    await _wait_ready(kube, namespace, name)
    pods = await _pods(kube, namespace, name)
    assert len(pods) == 2
    async with aiohttp.ClientSession() as session:
        for pod in pods:
            base = f"http://{pod['status']['podIP']}:8000"

            async def healthy(base: str = base) -> bool:
                try:
                    async with session.get(f"{base}/health") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(healthy, 30, f"simulated vLLM on {base}")
            async with session.get(f"{base}/v1/models") as r:
                assert (await r.json())["data"][0]["id"] == "Qwen3-0.6B"
            body: dict[str, Any] = {"model": "Qwen3-0.6B", "messages": [{"role": "user", "content": "hi"}],
                                    "max_tokens": 16}  # fmt: skip
            async with session.post(f"{base}/v1/chat/completions", json=body) as r:
                out = await r.json()
            assert r.status == 200 and out["usage"]["completion_tokens"] >= 1
            async with session.get(f"{base}/metrics") as r:
                assert 'vllm:request_success_total{engine="0",finished_reason=' in await r.text()
        await kube.merge_patch("qwenfleet.dev/v1alpha1", "Qwen3Deployment", name, namespace, {"spec": {"replicas": 1}})
        gone = f"http://{pods[0]['status']['podIP']}:8000"
        survivors: list[str] = []

        async def one_left() -> bool:
            now = await _pods(kube, namespace, name)
            survivors[:] = [p["status"].get("podIP", "") for p in now]
            return len(now) == 1

        await wait_for(one_left, 30, "scaled to one pod")
        stopped = survivors[0] != pods[0]["status"]["podIP"]
        target = gone if stopped else f"http://{pods[1]['status']['podIP']}:8000"

        async def refused() -> bool:
            try:
                async with session.get(f"{target}/health", timeout=aiohttp.ClientTimeout(total=1)):
                    return False
            except aiohttp.ClientError:
                return True

        await wait_for(refused, 15, "the deleted pod's server stopped")


DEMO = Path(__file__).resolve().parents[2] / "manifests" / "demo" / "fleet.yaml"
README_THINKING = {"model": "auto", "messages": [{"role": "user", "content": "Why is the sky blue? /think"}],
                   "max_tokens": 16}  # fmt: skip


async def test_demo_fleet_wakes_the_large_model_for_thinking_and_serves_meanwhile(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    for doc in (d for d in yaml.safe_load_all(DEMO.read_text()) if d):
        doc["metadata"]["namespace"] = namespace
        await kube.apply(doc)
    url: str = await wait_for(lambda: router_url(kube, "qwen3", namespace), 120, "the demo router pod")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:

        async def ask(body: dict[str, Any]) -> tuple[int, str]:
            try:
                async with s.post(f"{url}/v1/chat/completions", json=body) as r:
                    await r.read()
                    return r.status, r.headers.get("x-qwenfleet-route", "")
            except aiohttp.ClientError:
                return 0, ""

        async def medium_serving() -> bool:
            return (await ask({**README_THINKING, "model": "medium"}))[0] == 200

        await wait_for(medium_serving, 120, "the router serving qwen3-medium")
        large = await kube.get(API, KIND, "qwen3-large", namespace)
        assert large is not None and (large.get("status") or {}).get("desiredReplicas", 0) == 0
        assert WAKE_ANNOTATION not in (large["metadata"].get("annotations") or {})

        # the README's example: served at once by the fallback, and qwen3-large is woken
        status, route = await ask(README_THINKING)
        assert status == 200 and route.startswith("qwen3-medium;rule:thinking>wake>fallback;"), route

        async def woken() -> bool:  # the router annotates in the background, beside the answer
            large = await kube.get(API, KIND, "qwen3-large", namespace)
            return large is not None and WAKE_ANNOTATION in (large["metadata"].get("annotations") or {})

        await wait_for(woken, 10, "qwen3-large annotated to wake")

        # until qwen3-large can serve, thinking requests are answered by the fallback, never held or refused
        pods: list[dict[str, Any]] = []

        async def large_ready() -> bool:
            status, route = await ask(README_THINKING)
            assert status == 200 and route.split(";")[0] in ("qwen3-medium", "qwen3-large"), (status, route)
            pods[:] = await _pods(kube, namespace, "qwen3-large")
            obj = await kube.get(API, KIND, "qwen3-large", namespace)
            ready = any(c["type"] == "Ready" and c["status"] == "True"
                        for c in ((obj or {}).get("status") or {}).get("conditions", []))  # fmt: skip
            if not ready or not pods:
                return False
            # Ready as a readiness probe sees it: kwok marks pods Ready at once, the server answers after loading
            for pod in pods:
                ip = (pod.get("status") or {}).get("podIP")
                if not ip:  # just created by the wake; the status may say ScaledToZero a moment longer
                    return False
                try:
                    async with s.get(f"http://{ip}:8000/health") as r:
                        if r.status != 200:
                            return False
                except aiohttp.ClientError:
                    return False
            return True

        await wait_for(large_ready, 240, "qwen3-large woken from zero and Ready")
        await asyncio.sleep(1.5)  # one pass of the router's discovery (every second) sees the new pod
        status, route = await ask(README_THINKING)
        assert status == 200 and route.startswith("qwen3-large;rule:thinking;"), route
