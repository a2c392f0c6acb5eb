"""Autoscaling on the simulated fleet: up under load, down when idle, to zero and awake again, and in SLO mode
ahead of the load (its rate, or the recurring burst a checkpoint remembers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qwenfleet.autoscale import checkpoint
from qwenfleet.kube import Kube
from tests.e2e.operator_proc import OperatorProcess, wait_for, wait_healthy
from tests.e2e.test_reconciler import API, KIND, _create, _pods, _wait_ready

pytestmark = pytest.mark.e2e


def _deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "model": "Qwen3-0.6B",
            "gpu": "H100-80GB",
            "overrides": {"maxNumSeqs": 4},
            "autoscaling": {"mode": "builtin", "minReplicas": 0, "maxReplicas": 3, "targetQueueDepth": 2,
                            "scaleDownDelaySeconds": 5, "scaleToZeroAfterSeconds": 30},
        },
    }  # fmt: skip


async def _desired(kube: Kube, namespace: str, name: str) -> int:
    obj = await kube.get(API, KIND, name, namespace)
    return int(((obj or {}).get("status") or {}).get("desiredReplicas", -1))


async def _running(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return [p for p in await _pods(kube, namespace, name) if p["status"].get("phase") == "Running"]


async def _first_replica_url(kube: Kube, namespace: str, name: str) -> str:
    first = (await _running(kube, namespace, name))[0]["status"]["podIP"]
    return f"http://{first}:8000"


@contextlib.asynccontextmanager
async def _load(
    session: aiohttp.ClientSession, base: str, clients: int, also: Callable[[], Awaitable[None]] | None = None
) -> AsyncIterator[None]:
    """`clients` concurrent clients asking `base` for long completions back to back, and `also` alongside, until
    the block exits."""
    stop = asyncio.Event()

    async def client() -> None:
        body = {"model": "Qwen3-0.6B", "prompt": "tell me a long story", "max_tokens": 4000}
        while not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError):
                async with session.post(f"{base}/v1/completions", json=body) as r:
                    await r.read()

    tasks = [asyncio.ensure_future(client()) for _ in range(clients)]
    if also:
        tasks.append(asyncio.ensure_future(also()))
    try:
        yield
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


KWOK_POOL = {"provisioner": "karpenter",
             "nodeClassRef": {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"}}  # fmt: skip


@pytest.mark.parametrize("karpenter", [False, True], ids=["existing-nodes", "karpenter-nodes"])
async def test_builtin_autoscaler_follows_the_queue(
    kube: Kube, namespace: str, operator: OperatorProcess, karpenter: bool
) -> None:
    name = "scaled"
    doc = _deployment(name)
    doc["spec"]["autoscaling"]["minReplicas"] = 1
    if karpenter:
        doc["spec"]["nodePool"] = KWOK_POOL
    await _create(kube, namespace, doc)
    await _wait_ready(kube, namespace, name)
    base = await _first_replica_url(kube, namespace, name)
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, base, 30, "the simulated vLLM to load")
        async with _load(session, base, 24):

            async def scaled_up() -> bool:
                return len(await _running(kube, namespace, name)) == 3

            await wait_for(scaled_up, 60, "three Running replicas under load")
            if karpenter:
                pool = f"qwenfleet-{namespace}-{name}"
                nodes = {p["spec"]["nodeName"] for p in await _running(kube, namespace, name)}
                for node_name in nodes:
                    node = await kube.get("v1", "Node", node_name)
                    assert node is not None and node["metadata"]["labels"]["karpenter.sh/nodepool"] == pool
                assert len(nodes) >= 2  # new nodes appeared for the new replicas
            obj = await kube.get(API, KIND, name, namespace)
            assert obj is not None and obj["status"]["autoscaler"]["reason"].startswith("scale up")
            assert obj["status"]["autoscaler"]["queuePerReplica"] > 0

            async def scaled_event() -> bool:
                return any(e.get("reason") == "Scaled" for e in await kube.list("v1", "Event", namespace))

            await wait_for(scaled_event, 30, "a Scaled Event")

    async def back_to_min() -> bool:
        return len(await _running(kube, namespace, name)) == 1 and await _desired(kube, namespace, name) == 1

    await wait_for(back_to_min, 90, "scale back down to minReplicas when idle")
    deployment = await kube.get("apps/v1", "Deployment", name, namespace)
    assert deployment is not None and deployment["spec"]["replicas"] == 1
    obj = await kube.get(API, KIND, name, namespace)
    assert obj is not None and "replicas" not in obj["spec"]  # the autoscaler never writes spec.replicas


async def test_scale_to_zero_and_wake(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    name = "sleepy"
    await _create(kube, namespace, _deployment(name))

    async def at_zero() -> bool:
        obj = await kube.get(API, KIND, name, namespace)
        status = (obj or {}).get("status") or {}
        return status.get("observedGeneration") == 1 and status.get("desiredReplicas") == 0

    await wait_for(at_zero, 30, "minReplicas 0 starts at zero")
    ready = await _wait_ready(kube, namespace, name)
    assert ready["reason"] == "ScaledToZero"
    await kube.merge_patch(API, KIND, name, namespace, {"metadata": {"annotations": {"qwenfleet.dev/wake": "1"}}})

    async def awake() -> bool:
        return len(await _running(kube, namespace, name)) == 1

    await wait_for(awake, 30, "a wake annotation brings one replica")

    async def asleep() -> bool:
        return not await _pods(kube, namespace, name) and await _desired(kube, namespace, name) == 0

    await wait_for(asleep, 90, "back to zero after the idle time")


async def test_kubectl_scale_in_mode_none(
    kube: Kube, namespace: str, operator: OperatorProcess, kubeconfig: Path
) -> None:
    name = "manual"
    doc = _deployment(name)
    doc["spec"].pop("autoscaling")
    doc["spec"]["replicas"] = 1
    await _create(kube, namespace, doc)
    await _wait_ready(kube, namespace, name)
    subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", "-n", namespace, "scale", "q3d", name, "--replicas=2"],
                   check=True, capture_output=True)  # fmt: skip

    async def two() -> bool:
        return len(await _running(kube, namespace, name)) == 2

    await wait_for(two, 30, "kubectl scale to 2")
    scale = await kube._call("GET", f"/apis/{API}/namespaces/{namespace}/qwen3deployments/{name}/scale")
    assert scale["spec"]["replicas"] == 2 and "qwenfleet.dev/deployment=manual" in scale["status"]["selector"]


async def test_keda_mode_renders_a_scaled_object(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    name = "keda"
    doc = _deployment(name)
    doc["spec"]["autoscaling"]["mode"] = "keda"
    await _create(kube, namespace, doc)

    async def scaled_object() -> dict[str, Any] | None:
        return await kube.get("keda.sh/v1alpha1", "ScaledObject", name, namespace)

    obj = await wait_for(scaled_object, 30, "ScaledObject")
    assert obj["spec"]["scaleTargetRef"]["kind"] == KIND and obj["spec"]["maxReplicaCount"] == 3


async def test_slo_mode_scales_for_the_latency_objective(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    """targetQueueDepth so high that the queue alone would never add a replica: SLO mode adds them from the
    arrival rate, the measured service time and the backlog a 2.5 s time to first token allows, then removes
    them when the load stops. A ConfigMap of the user's with the name of SLO mode's checkpoint is left alone."""
    name = "slo"
    doc = _deployment(name)
    doc["spec"]["autoscaling"] |= {"minReplicas": 1, "targetQueueDepth": 1000,
                                   "slo": {"ttftSeconds": 2.5, "attainment": 0.5}}  # fmt: skip
    users = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-autoscaler",
             "namespace": namespace}, "data": {"notes": "the user's own, of the same name"}}  # fmt: skip
    await kube.create(users)
    await _create(kube, namespace, doc)
    await _wait_ready(kube, namespace, name)
    base = await _first_replica_url(kube, namespace, name)
    seen: list[object] = []

    async def watch() -> None:  # what the autoscaler said, for the failure message
        while True:
            obj = await kube.get(API, KIND, name, namespace)
            seen[:] = [((obj or {}).get("status") or {}).get("autoscaler")]
            await asyncio.sleep(1)

    async with aiohttp.ClientSession() as session, _load(session, base, 12, also=watch):

        async def scaled_up() -> bool:
            return len(await _running(kube, namespace, name)) >= 2

        await wait_for(scaled_up, 120, "Running replicas added for the SLO", detail=lambda: seen)
        reasons = [e.get("message", "") for e in await kube.list("v1", "Event", namespace)
                   if e.get("reason") == "Scaled"]  # fmt: skip
        assert any("for the SLO" in m for m in reasons), reasons

    async def back_to_min() -> bool:
        return len(await _running(kube, namespace, name)) == 1 and await _desired(kube, namespace, name) == 1

    await wait_for(back_to_min, 240, "scale back down to minReplicas when the load stops")

    async def declined() -> bool:  # SLO mode's checkpoint would have this name: the user's ConfigMap stays theirs
        return "is not a qwenfleet checkpoint" in operator.log_path.read_text()

    await wait_for(declined, 90, "the operator declining to checkpoint over the user's ConfigMap")
    kept = await kube.get("v1", "ConfigMap", f"{name}-autoscaler", namespace)
    assert kept is not None and kept["data"] == users["data"] and not kept["metadata"].get("ownerReferences")


BURST_RATE = 200.0
"""Arrivals per second in the recorded bursts: far beyond what one replica serves (maxReplicas then)."""


def _recorded(saved_at: float, bucket_start: float, burst_phase: int) -> dict[str, Any]:
    """A checkpoint as an operator writes it: 40 minutes of a 10-minute cycle with one burst minute (at
    `burst_phase`) and nothing learnt of the replicas."""
    minutes = [BURST_RATE if i % 10 == burst_phase else 0.5 for i in range(40)]
    return {"format": 1, "plan": "", "savedAt": saved_at, "bucketSeconds": 60.0, "bucketStart": bucket_start,
            "bucketArrivals": 0.0, "arrivalsPerSecond": minutes, "busy": [0, 0], "full": [0, 0],
            "kv": [0, 0]}  # fmt: skip


async def _checkpoint(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    found = await kube.get("v1", "ConfigMap", f"{name}-autoscaler", namespace)
    return None if found is None else dict(json.loads(found["data"]["forecast.json"]))


async def test_slo_mode_prewarms_for_the_recurring_burst_its_checkpoint_foresees(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    """An operator restarts with a deployment whose arrivals burst one minute in ten, as its checkpoint recorded.
    With no request sent at all, SLO mode has the replicas up before the next burst's minute, no earlier than its
    61 s cold start asks, takes them back down once the minute is over, and checkpoints what it saw since (at once,
    then on a graceful stop)."""
    name = "prewarm"
    doc = _deployment(name)
    doc["spec"]["autoscaling"] |= {"minReplicas": 1, "targetQueueDepth": 1000,
                                   "slo": {"ttftSeconds": 2.5, "attainment": 0.99}}  # fmt: skip
    await _create(kube, namespace, doc)
    await _wait_ready(kube, namespace, name)
    body = await kube.get(API, KIND, name, namespace)
    assert body is not None
    cold_start = float(body["status"]["plan"]["coldStartSeconds"])
    await asyncio.to_thread(operator.stop)  # its own memory of this deployment must not overwrite the checkpoint
    t0 = time.time()
    # the 41st minute started 20 s ago; the burst recurs in the 43rd, at t0 + 100
    burst = t0 - 20 + 2 * 60
    recorded = _recorded(t0, t0 - 20, burst_phase=2)
    await kube.apply(checkpoint.configmap(namespace, name, body["metadata"]["uid"],
                                          {"forecast.json": json.dumps(recorded)}))  # fmt: skip
    await asyncio.to_thread(operator.start)
    seen: list[object] = []

    async def decided() -> dict[str, Any]:
        obj = await kube.get(API, KIND, name, namespace)
        autoscaler = dict(((obj or {}).get("status") or {}).get("autoscaler") or {})
        seen[:] = [autoscaler]
        return autoscaler

    async def scaled_up() -> float | None:
        return time.time() if int((await decided()).get("desiredReplicas", 0)) >= 2 else None

    up_at = await wait_for(scaled_up, burst + 30 - time.time(), "replicas pre-warmed for the burst", lambda: seen)
    assert operator.metric("qwenfleet_autoscaler_checkpoints_total", result="restored") >= 1
    assert operator.metric("qwenfleet_autoscaler_period_minutes", namespace=namespace, name=name) == 10
    reason = str((await decided()).get("reason"))
    assert "recurring load" in reason, reason
    assert up_at < burst, f"scaled up {up_at - burst:.0f}s after the burst began: {reason}"
    assert up_at >= burst - cold_start - 60 - 3, "pre-warmed earlier than the cold start needs"

    async def warm() -> bool:
        return len(await _running(kube, namespace, name)) == 3

    await wait_for(warm, burst + 45 - time.time(), "three replicas Running for the burst", lambda: seen)

    async def back_to_min() -> bool:
        return await _desired(kube, namespace, name) == 1 and len(await _running(kube, namespace, name)) == 1

    await wait_for(back_to_min, burst + 60 + 90 - time.time(), "back to minReplicas after the burst", lambda: seen)

    written = await _checkpoint(kube, namespace, name)
    assert written is not None and written["savedAt"] > t0, "the operator checkpointed what it saw since"
    assert written["arrivalsPerSecond"][:40] == recorded["arrivalsPerSecond"]
    assert len(written["arrivalsPerSecond"]) >= 41
    await operator.restart()  # a graceful stop checkpoints the minutes since
    flushed = await _checkpoint(kube, namespace, name)
    assert flushed is not None and len(flushed["arrivalsPerSecond"]) > len(written["arrivalsPerSecond"])
    assert flushed["arrivalsPerSecond"][40:] == pytest.approx([0.0] * (len(flushed["arrivalsPerSecond"]) - 40),
                                                              abs=1.0)  # fmt: skip
