"""Fault injection on the real control plane: the operator killed mid-reconcile, the API server restarted,
fighting edits of a child, a model-server pod lost, a router killed mid-stream."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from qwenfleet.devcluster.cluster import DevCluster
from qwenfleet.kube import Kube, KubeError
from tests.e2e.operator_proc import OperatorProcess, free_port, wait_for
from tests.e2e.test_reconciler import API, KIND, _pods, _wait_ready

CHILDREN = (("apps/v1", "Deployment"), ("v1", "Service"), ("policy/v1", "PodDisruptionBudget"),
            ("networking.k8s.io/v1", "NetworkPolicy"))  # fmt: skip


def _q3d(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": KIND, "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": "Qwen3-0.6B", "gpu": "H100-80GB", "replicas": 1, **spec}}  # fmt: skip


async def _children_exactly_once(kube: Kube, namespace: str, owner_uid: str) -> None:
    for api_version, kind in CHILDREN:
        items = await kube.list(api_version, kind, namespace, label_selector="app.kubernetes.io/managed-by=qwenfleet")
        assert len(items) == 1, (kind, [i["metadata"]["name"] for i in items])
        refs = items[0]["metadata"].get("ownerReferences") or []
        assert [r["uid"] for r in refs] == [owner_uid], (kind, refs)


async def test_operator_killed_mid_reconcile_converges_without_duplicates(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    obj = await kube.apply(_q3d("crash", namespace))

    async def some_child() -> bool:
        return bool(await kube.list("v1", "Service", namespace) or await kube.list("apps/v1", "Deployment", namespace))

    await wait_for(some_child, 30, "the first child applied")
    operator.stop(signal.SIGKILL)  # between child applies, before status
    await asyncio.to_thread(operator.start)
    await _wait_ready(kube, namespace, "crash")
    await _children_exactly_once(kube, namespace, obj["metadata"]["uid"])


async def test_api_server_restart_during_reconcile(
    kube: Kube, namespace: str, operator: OperatorProcess, dev_cluster: DevCluster | None
) -> None:
    if dev_cluster is None:
        pytest.fail("restarting the API server needs the suite's own dev cluster (unset QWENFLEET_TEST_KUBECONFIG)")
    obj = await kube.apply(_q3d("outage", namespace))
    await asyncio.to_thread(dev_cluster.restart_apiserver, 3.0)
    await kube.apply({**obj, "metadata": {"name": "outage", "namespace": namespace},
                      "spec": {**obj["spec"], "replicas": 2}})  # fmt: skip

    async def two_ready() -> bool:
        try:
            current = await kube.get(API, KIND, "outage", namespace)
        except KubeError:
            return False
        st = (current or {}).get("status") or {}
        return (
            st.get("readyReplicas") == 2 and st.get("observedGeneration") == (current or {})["metadata"]["generation"]
        )

    await wait_for(two_ready, 120, "the operator recovering from the API server restart")
    assert operator.proc is not None and operator.proc.poll() is None
    await _children_exactly_once(kube, namespace, obj["metadata"]["uid"])


async def test_fighting_edits_of_a_child_converge_without_a_hot_loop(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    await kube.apply(_q3d("fight", namespace))
    await _wait_ready(kube, namespace, "fight")
    before = operator.reconcile_count()
    assert before > 0
    for i in range(5):  # another writer keeps changing a field the operator owns
        await kube._call(
            "PATCH", f"/apis/apps/v1/namespaces/{namespace}/deployments/fight",
            body={"spec": {"replicas": 3 + i}}, content_type="application/merge-patch+json",
        )  # fmt: skip
        await asyncio.sleep(1)

    async def restored() -> bool:
        dep = await kube.get("apps/v1", "Deployment", "fight", namespace)
        return bool(dep and dep["spec"]["replicas"] == 1)

    await wait_for(restored, 30, "the operator restoring its replica count")
    fought = operator.reconcile_count() - before  # each edit, and the pods it made come and go, cause some

    async def quiet() -> bool:  # once the fight is over, reconciles stop: no loop feeds on itself
        start = operator.reconcile_count()
        await asyncio.sleep(10)
        return operator.reconcile_count() - start <= 2

    await wait_for(quiet, 60, f"reconciles to stop after the fight ({fought} during it)")


ROUTER = {"backends": [{"name": "pair"}], "defaultBackend": "pair", "scaleFromZero": {"enabled": False}}


@pytest.fixture
def routers(namespace: str, kubeconfig: Path, tmp_path: Path) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    """Two `qwenfleet router` processes in front of the namespace's `pair` backend."""
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump({"spec": ROUTER}))
    procs = []
    for i in range(2):
        port = free_port()
        log = (tmp_path / f"router-{i}.log").open("wb")
        cmd = [sys.executable, "-m", "qwenfleet.cli", "router", f"--config={config}", f"--namespace={namespace}",
               f"--kubeconfig={kubeconfig}", "--host=127.0.0.1", f"--port={port}",
               "--discovery-interval=0.5"]  # fmt: skip
        procs.append((f"http://127.0.0.1:{port}", subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
    yield procs
    for _, proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


LAST: list[str] = [""]


async def _route(session: aiohttp.ClientSession, base: str) -> str | None:
    body = {"model": "pair", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    try:
        async with session.post(f"{base}/v1/chat/completions", json=body) as r:
            LAST[0] = f"{r.status} {(await r.read())[:300]!r}"
            return r.headers.get("x-qwenfleet-route", "").split(";")[-1] if r.status == 200 else None
    except aiohttp.ClientError as exc:
        LAST[0] = repr(exc)
        return None


async def test_a_lost_model_pod_leaves_the_router_and_is_replaced(
    kube: Kube, namespace: str, operator: OperatorProcess, routers: list[tuple[str, subprocess.Popen[bytes]]]
) -> None:
    await kube.apply(_q3d("pair", namespace, replicas=2))
    await _wait_ready(kube, namespace, "pair")
    base = routers[0][0]
    async with aiohttp.ClientSession() as s:

        async def both_used() -> bool:
            seen = {await _route(s, base) for _ in range(12)}
            return len(seen - {None}) == 2

        await wait_for(both_used, 60, "the router spreading over both replicas", detail=lambda: LAST[0])
        victim = (await _pods(kube, namespace, "pair"))[0]["metadata"]["name"]
        await kube.delete("v1", "Pod", victim, namespace)  # the pod (and its vLLM) goes away

        async def avoided() -> bool:
            picks = [await _route(s, base) for _ in range(10)]
            return None not in picks and victim not in picks

        await wait_for(avoided, 15, "the router no longer sending to the lost pod")

        async def replaced() -> bool:
            pods = [p for p in await _pods(kube, namespace, "pair") if p["metadata"]["name"] != victim]
            ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                            for c in p["status"].get("conditions") or [])]  # fmt: skip
            return len(ready) == 2

        await wait_for(replaced, 60, "the workload replacing the lost pod")


async def test_a_killed_router_fails_its_stream_cleanly_and_spares_the_other(
    kube: Kube, namespace: str, operator: OperatorProcess, routers: list[tuple[str, subprocess.Popen[bytes]]]
) -> None:
    await kube.apply(_q3d("pair", namespace, replicas=1))
    await _wait_ready(kube, namespace, "pair")
    (doomed, doomed_proc), (other, _) = routers
    long = {"model": "pair", "prompt": "tell me everything", "max_tokens": 20000, "stream": True, "ignore_eos": True}
    async with aiohttp.ClientSession() as s:
        await wait_for(lambda: _route(s, doomed), 60, "router 0 serving")
        await wait_for(lambda: _route(s, other), 60, "router 1 serving")

        async def stream(base: str) -> tuple[int, str]:
            chunks = 0
            try:
                async with s.post(f"{base}/v1/completions", json=long) as r:
                    async for _ in r.content.iter_any():
                        chunks += 1
                        if chunks == 5 and base == doomed:
                            doomed_proc.send_signal(signal.SIGKILL)
                        if chunks >= 40 and base == other:
                            return chunks, "ok"
            except aiohttp.ClientError as exc:
                return chunks, type(exc).__name__
            return chunks, "ended"

        (killed_chunks, killed), (other_chunks, fine) = await asyncio.wait_for(
            asyncio.gather(stream(doomed), stream(other)), 60
        )
    assert killed in ("ClientPayloadError", "ServerDisconnectedError", "ClientOSError", "ended"), killed
    assert killed_chunks >= 5
    assert fine == "ok" and other_chunks >= 40
