"""Cost truth on the simulated fleet: status.cost agrees within 2% with an independent count (the tokens the
client received, GPU-seconds from the pods' own timestamps), and the totals survive an operator restart."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from qwenfleet.kube import Kube
from tests.e2e.operator_proc import OperatorProcess, wait_for
from tests.e2e.test_reconciler import API, KIND, _create, _pods, _wait_ready

pytestmark = pytest.mark.e2e


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _gpu_seconds_from_pods(pods: list[dict[str, Any]], until: float) -> float:
    """GPU-seconds counted independently: (until - scheduled) x the pod's GPU limit, summed."""
    total = 0.0
    for pod in pods:
        scheduled = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
        gpus = sum(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for c in pod["spec"]["containers"])
        total += (until - _epoch(scheduled["lastTransitionTime"])) * gpus
    return total


async def _cost(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    obj = await kube.get(API, KIND, name, namespace)
    return dict(((obj or {}).get("status") or {}).get("cost") or {})


async def _cost_after(kube: Kube, namespace: str, name: str, after: float) -> dict[str, Any]:
    async def fresh() -> dict[str, Any] | None:
        cost = await _cost(kube, namespace, name)
        return cost if (cost.get("ledger") or {}).get("updated", 0) > after else None

    return await wait_for(fresh, 120, f"status.cost of {namespace}/{name} accounted after {after}")


async def test_realised_cost_matches_an_independent_count_and_survives_a_restart(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "costed"
    doc = {"apiVersion": API, "kind": KIND, "metadata": {"name": name},
           "spec": {"model": "Qwen3-8B", "gpu": "H100-80GB", "replicas": 2}}  # fmt: skip
    await _create(kube, namespace, doc)
    await _wait_ready(kube, namespace, name, timeout=180)
    pods = await _pods(kube, namespace, name)
    assert len(pods) == 2
    prompt = output = 0
    rng = random.Random(7)
    async with aiohttp.ClientSession() as session:
        for pod in pods:

            async def healthy(base: str = f"http://{pod['status']['podIP']}:8000") -> bool:
                try:
                    async with session.get(f"{base}/health") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(healthy, 60, "simulated vLLM loaded")

        async def one(i: int) -> None:
            nonlocal prompt, output
            pod = pods[i % len(pods)]
            body = {"model": "Qwen3-8B", "max_tokens": rng.randint(8, 64),
                    "messages": [{"role": "user", "content": "count the cost " * rng.randint(1, 40)}]}  # fmt: skip
            async with session.post(f"http://{pod['status']['podIP']}:8000/v1/chat/completions", json=body) as r:
                assert r.status == 200, await r.text()
                usage = (await r.json())["usage"]
            prompt += usage["prompt_tokens"]
            output += usage["completion_tokens"]

        for batch in range(4):
            await asyncio.gather(*(one(batch * 25 + i) for i in range(25)))
    loaded = datetime.now().timestamp()
    cost = await _cost_after(kube, namespace, name, loaded + 1)
    total = cost["sinceCreation"]
    assert total["promptTokens"] == pytest.approx(prompt, rel=0.02)
    assert total["outputTokens"] == pytest.approx(output, rel=0.02)
    ledger = cost["ledger"]
    pods = await _pods(kube, namespace, name)
    expected = _gpu_seconds_from_pods(pods, ledger["updated"])
    assert ledger["total"][0] == pytest.approx(expected, rel=0.02)
    assert total["gpuHours"] == pytest.approx(expected / 3600, rel=0.02)
    assert total["usd"] == pytest.approx(expected / 3600 * cost["gpuHourUSD"], rel=0.02)
    assert total["usdPerMillionOutputTokens"] == pytest.approx(total["usd"] / output * 1e6, rel=0.03)
    assert 0 < total["utilization"] <= 1
    assert cost["estimatedUSDPerMillionOutputTokens"] > 0

    # The operator restarts: nothing is counted twice and no GPU time is lost.
    await operator.restart()
    restarted = datetime.now().timestamp()
    cost = await _cost_after(kube, namespace, name, restarted + 1)
    after = cost["sinceCreation"]
    assert (after["promptTokens"], after["outputTokens"]) == (total["promptTokens"], total["outputTokens"])
    pods = await _pods(kube, namespace, name)
    expected = _gpu_seconds_from_pods(pods, cost["ledger"]["updated"])
    assert cost["ledger"]["total"][0] == pytest.approx(expected, rel=0.02)
