"""Cost truth on the simulated fleet: status.cost agrees within 2% with an independent count (the tokens the
client received, GPU-seconds from the pods' own timestamps), and the totals survive an operator restart."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from qwenfleet.devcluster.cluster import DevCluster
from qwenfleet.devcluster.demo import router_url
from qwenfleet.kube import Kube
from tests.e2e.operator_proc import OperatorProcess, wait_for, wait_healthy
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


async def _ask(session: aiohttp.ClientSession, pod: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One chat request straight to a pod's simulated vLLM; its `usage`."""
    body = {"model": "Qwen3-8B", "max_tokens": rng.randint(8, 64),
            "messages": [{"role": "user", "content": "count the cost " * rng.randint(1, 40)}]}  # fmt: skip
    async with session.post(f"http://{pod['status']['podIP']}:8000/v1/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        return dict((await r.json())["usage"])


GPU_HOURS_ROUNDING = 5e-5
"""status.cost's gpuHours has 4 decimals: a few seconds of GPU time is 0.0017 h, so 2% is below its rounding."""


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
            await wait_healthy(session, f"http://{pod['status']['podIP']}:8000", 60, "simulated vLLM loaded")

        for _ in range(4):
            for usage in await asyncio.gather(*(_ask(session, pods[i % 2], rng) for i in range(25))):
                prompt += usage["prompt_tokens"]
                output += usage["completion_tokens"]
    loaded = datetime.now().timestamp()
    cost = await _cost_after(kube, namespace, name, loaded + 1)
    total = cost["sinceCreation"]
    assert total["promptTokens"] == pytest.approx(prompt, rel=0.02)
    assert total["outputTokens"] == pytest.approx(output, rel=0.02)
    ledger = cost["ledger"]
    pods = await _pods(kube, namespace, name)
    expected = _gpu_seconds_from_pods(pods, ledger["updated"])
    assert ledger["total"][0] == pytest.approx(expected, rel=0.02)
    assert total["gpuHours"] == pytest.approx(expected / 3600, rel=0.02, abs=GPU_HOURS_ROUNDING)
    assert total["usd"] == pytest.approx(expected / 3600 * cost["gpuHourUSD"], rel=0.02)
    assert total["usdPerMillionOutputTokens"] == pytest.approx(total["usd"] / output * 1e6, rel=0.03)
    assert 0 < total["utilization"] <= 1
    assert cost["estimatedUSDPerMillionOutputTokens"] > 0

    # The operator restarts, and serves a little more: nothing is counted twice and no GPU time is lost.
    await operator.restart()
    restarted = datetime.now().timestamp()
    async with aiohttp.ClientSession() as session:
        more = await asyncio.gather(*(_ask(session, pods[i % 2], rng) for i in range(10)))
    cost = await _cost_after(kube, namespace, name, restarted + 1)
    after = cost["sinceCreation"]
    assert after["promptTokens"] == total["promptTokens"] + sum(u["prompt_tokens"] for u in more)
    assert after["outputTokens"] == total["outputTokens"] + sum(u["completion_tokens"] for u in more)
    pods = await _pods(kube, namespace, name)
    expected = _gpu_seconds_from_pods(pods, cost["ledger"]["updated"])
    assert cost["ledger"]["total"][0] == pytest.approx(expected, rel=0.02)


DEMO = Path(__file__).resolve().parents[2] / "manifests" / "demo" / "fleet.yaml"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qwenfleet.cli", *args], capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


async def test_demo_load_and_qwenfleet_cost_agree_with_what_the_load_received(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    dev_cluster: DevCluster | None,
    kubeconfig: Path,
    tmp_path: Path,
) -> None:
    """The done-when of the cost work, as a user runs it: the demo fleet, `qwenfleet dev load`, then
    `qwenfleet cost -o json` and `kubectl get q3d` show what the load generator itself counted (tokens per backend,
    from the answers' usage) and GPU time as the pods' own timestamps give it, within 2%."""
    if dev_cluster is None:
        pytest.skip("`qwenfleet dev load` needs the dev cluster's run directory")
    for doc in (d for d in yaml.safe_load_all(DEMO.read_text()) if d):
        doc["metadata"]["namespace"] = namespace
        await kube.apply(doc)
    for name in ("qwen3-small", "qwen3-medium"):
        await _wait_ready(kube, namespace, name, timeout=180)
    await wait_for(lambda: router_url(kube, "qwen3", namespace), 120, "the demo router pod")
    summary = tmp_path / "received.json"
    load = await asyncio.to_thread(_cli, "dev", "load", f"--run-dir={dev_cluster.run_dir}", f"--namespace={namespace}",
                                   "--rate=8", "--seconds=20", "--thinking-share=0.2", f"--json={summary}")  # fmt: skip
    assert load.returncode == 0, load.stdout + load.stderr
    received = json.loads(summary.read_text())
    assert received["errors"] == 0 and received["sent"] > 50, received
    backends = received["backends"]
    assert "qwen3-small" in backends and {"qwen3-medium", "qwen3-large"} & set(backends), backends

    # Every deployment that served has written the tokens of the whole load, and the router has counted them.
    for name, got in backends.items():

        async def accounted(name: str = name, want: int = got["completion_tokens"]) -> bool:
            total = (await _cost(kube, namespace, name)).get("sinceCreation") or {}
            return bool(total.get("outputTokens", 0) >= want * 0.98)

        await wait_for(accounted, 120, f"status.cost of {name} accounting the whole load")

    async def router_counted() -> dict[str, Any] | None:
        obj = await kube.get(API, "Qwen3Router", "qwen3", namespace)
        cost = ((obj or {}).get("status") or {}).get("cost") or {}
        rows = {r["name"]: r for r in cost.get("backends") or []}
        done = all(rows.get(n, {}).get("outputTokens") == b["completion_tokens"] for n, b in backends.items())
        return cost if done else None

    routed = await wait_for(router_counted, 120, "the router's status.cost counting every token the load received")
    rows = {r["name"]: r for r in routed["backends"]}
    for name, got in backends.items():
        assert rows[name]["promptTokens"] == got["prompt_tokens"]
        assert rows[name]["reasoningTokens"] == got["reasoning_tokens"]

    # What routing saved is what GPU-hours explain: the largest backend's replica-hours at its plan's throughput for
    # every routed token, at its hourly price, plus its own idle floor; never its idle-dominated realised price
    # times the other backends' tokens (which made a minute of demo load "save" thousands of USD).
    largest = await kube.get(API, KIND, routed["largestBackend"], namespace)
    plan = ((largest or {}).get("status") or {})["plan"]
    prompt, output = (sum(r[k] for r in routed["backends"]) for k in ("promptTokens", "outputTokens"))
    hours = (output / plan["decodeTokensPerSecond"] + prompt / plan["prefillTokensPerSecond"]) / 3600
    assert routed["onLargestReplicaHours"] == pytest.approx(hours, rel=1e-3, abs=1e-6)
    own = rows.get(routed["largestBackend"], {}).get("usd", 0.0)
    assert 0 <= routed["onLargestUSD"] <= hours * plan["costPerHourUSD"] + own + 1e-3, routed
    assert routed["savedVsLargestUSD"] == pytest.approx(routed["onLargestUSD"] - routed["usd"], abs=1e-3)

    shown = _cli("cost", f"--kubeconfig={kubeconfig}", f"--namespace={namespace}", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    view = {d["name"]: d["cost"] for d in json.loads(shown.stdout)["deployments"]}
    for name, got in backends.items():
        total = view[name]["sinceCreation"]
        assert total["promptTokens"] == pytest.approx(got["prompt_tokens"], rel=0.02), name
        assert total["outputTokens"] == pytest.approx(got["completion_tokens"], rel=0.02), name
        obj = await kube.get(API, KIND, name, namespace)
        ledger = ((obj or {}).get("status") or {})["cost"]["ledger"]
        scheduled = [
            p
            for p in await _pods(kube, namespace, name)
            if any(c["type"] == "PodScheduled" and c["status"] == "True" for c in p["status"]["conditions"])
        ]
        expected = _gpu_seconds_from_pods(scheduled, ledger["updated"])
        assert total["gpuHours"] == pytest.approx(expected / 3600, rel=0.02, abs=GPU_HOURS_ROUNDING), name

    # `kubectl get q3d`: the realised USD per 1M output tokens of the last day (the estimate is under `-o wide`).
    table = subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", "-n", namespace, "get", "q3d"],
                           capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
    header, *lines = table.splitlines()
    assert "USD/1M-OUT" in header
    column = header.index("USD/1M-OUT")
    small = next(line for line in lines if line.startswith("qwen3-small "))
    assert float(small[column:].split()[0]) == pytest.approx(
        view["qwen3-small"]["lastDay"]["usdPerMillionOutputTokens"], rel=0.01
    )


async def _stream_ttft(session: aiohttp.ClientSession, base: str) -> float:
    """Wall seconds from sending a streamed completion to its first text, as the client sees it (the whole answer
    is read)."""
    body = {"model": "Qwen3-0.6B", "prompt": "tell me a story", "max_tokens": 1000, "ignore_eos": True,
            "stream": True}  # fmt: skip
    start = time.monotonic()
    first: float | None = None
    async with session.post(f"{base}/v1/completions", json=body) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            if first is None and line.startswith(b"data: {") and json.loads(line[6:])["choices"][0]["text"]:
                first = time.monotonic() - start
    assert first is not None
    return first


async def test_slo_attainment_is_measured_from_the_engines_and_shown_in_status(
    kube: Kube, namespace: str, operator: OperatorProcess, kubeconfig: Path, dev_cluster: DevCluster | None
) -> None:
    """A replica that runs two sequences at once gets six streamed requests of 1,000 tokens: the first two get
    their first token at once, the others wait their turn past a 1 s objective. status.slo counts every request,
    and no more late ones than the client saw late (the engine's clock starts after the client's): as many, unless
    a client time lies near the objective. The dev cluster's engines run `time_scale` times faster than
    wall time and report simulated seconds, as a real engine would have measured them: the client's times are
    compared in the same unit. The operator exports the same counts."""
    name = "timed"
    doc = {"apiVersion": API, "kind": KIND, "metadata": {"name": name},
           "spec": {"model": "Qwen3-0.6B", "gpu": "H100-80GB", "overrides": {"maxNumSeqs": 2},
                    "autoscaling": {"mode": "builtin", "minReplicas": 1, "maxReplicas": 1,
                                    "slo": {"ttftSeconds": 1.0, "attainment": 0.9}}}}  # fmt: skip
    await _create(kube, namespace, doc)
    await _wait_ready(kube, namespace, name, timeout=180)
    pod = (await _pods(kube, namespace, name))[0]
    base = f"http://{pod['status']['podIP']}:8000"
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, base, 60, "simulated vLLM loaded")
        wall = await asyncio.gather(*(_stream_ttft(session, base) for _ in range(6)))
    scale = dev_cluster.time_scale if dev_cluster is not None else 1.0
    seen = [t * scale for t in wall]  # in the engine's (simulated) seconds
    client_late = sum(t > 1.0 for t in seen)
    assert client_late >= 2, seen  # the load did queue past the objective

    async def counted() -> dict[str, Any] | None:
        obj = await kube.get(API, KIND, name, namespace)
        slo = ((obj or {}).get("status") or {}).get("slo") or {}
        return slo if (slo.get("sinceCreation") or {}).get("requests") == 6 else None

    slo = await wait_for(counted, 120, "status.slo counting the six requests")
    assert (slo["ttftSeconds"], slo["attainmentTarget"], slo["measuredAtSeconds"]) == (1.0, 0.9, 1.0)
    total = slo["sinceCreation"]
    late = total["requests"] - total["onTime"]
    assert 1 <= late <= client_late, (total, seen)
    if all(t < 0.5 or t > 2.0 for t in seen):  # the usual case: no client time near the objective, where the
        assert late == client_late, (total, seen)  # engine's few milliseconds less could put it on time
    assert total["attainment"] == round(total["onTime"] / 6, 4)
    assert slo["lastHour"] == total
    cost = await _cost(kube, namespace, name)
    assert cost["sinceCreation"]["requests"] == 6

    async def exported() -> bool:
        return operator.metric("qwenfleet_deployment_slo_requests_total", deployment=name, result="late") == late

    await wait_for(exported, 30, "the operator exporting the late requests")
    assert operator.metric("qwenfleet_deployment_slo_target", deployment=name) == 0.9  # the alerts' error budget
    assert (
        operator.metric("qwenfleet_deployment_slo_requests_total", deployment=name, result="on_time") == total["onTime"]
    )
    table = subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", "-n", namespace, "get", "q3d", name, "-o", "wide"],
                           capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
    header, row = table.splitlines()
    assert float(row[header.index("SLO-1H") :].split()[0]) == total["attainment"]
