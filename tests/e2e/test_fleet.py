"""The simulated fleet: every model-server pod answers as vLLM on its own loopback pod IP."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from qwenfleet.kube import Kube
from tests.e2e.operator_proc import OperatorProcess, wait_for
from tests.e2e.test_reconciler import _create, _example, _pods, _wait_ready

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
