"""LoRA adapters on the real vLLM engine (CPU build, pinned version) behind the operator and the router, as a user
works with them: adapters on a volume of theirs, served by name through the router and the openai client; one
added and one removed with `kubectl apply` while the pod keeps running; a broken one refused with vLLM's message
in a condition while the others keep serving."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qwenfleet.devcluster import engine
from qwenfleet.devcluster.adapters import write_adapter
from qwenfleet.devcluster.real_pods import ENGINE_ANNOTATION
from qwenfleet.kube import Kube
from tests.e2e.operator_proc import OperatorProcess, metric_sum, router_process, wait_for, wait_openai_serving
from tests.e2e.test_reconciler import API, KIND, _create, _pods, _wait_ready

pytestmark = pytest.mark.e2e

ENGINE_START = 400.0
LIVE_CHANGE_SECONDS = 60.0
"""The promise to a user: an adapter added with `kubectl apply` answers by name within a minute."""
ROUTES: dict[str, Any] = {"backends": [{"name": "tuned", "aliases": ["qwen3-tuned"]}], "defaultBackend": "tuned"}
MESSAGES: Any = [{"role": "user", "content": "Say hello."}]
QUIET: Any = {"chat_template_kwargs": {"enable_thinking": False}}


def _adapter(name: str) -> dict[str, Any]:
    return {"name": name, "pvc": {"claimName": "adapters", "path": f"/{name}"}}


def _deployment(adapters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": KIND,
        "metadata": {"name": "tuned", "annotations": {ENGINE_ANNOTATION: "vllm"}},
        "spec": {"model": "Qwen3-0.6B", "gpu": "L4-24GB", "replicas": 1, "overrides": {"maxNumSeqs": 2},
                 "lora": {"maxRank": 16, "maxLoras": 2}, "adapters": adapters},
    }  # fmt: skip


@pytest.fixture
def router(namespace: str, kubeconfig: Path, tmp_path: Path) -> Iterator[str]:
    with router_process(ROUTES, namespace, kubeconfig, tmp_path) as url:
        yield url


async def _volume_dir(kube: Kube, namespace: str, claim: str) -> Path:
    """The host directory of a bound claim (the dev cluster's hostPath volume)."""

    async def bound() -> str | None:
        pvc = await kube.get("v1", "PersistentVolumeClaim", claim, namespace)
        return ((pvc or {}).get("spec") or {}).get("volumeName") if (pvc or {}).get("status", {}).get(
            "phase") == "Bound" else None  # fmt: skip

    volume = await wait_for(bound, 60, f"claim {claim} bound")
    pv = await kube.get("v1", "PersistentVolume", volume)
    path = Path(pv["spec"]["hostPath"]["path"]) if pv else None
    assert path is not None
    path.mkdir(parents=True, exist_ok=True)
    return path


async def _adapters_status(kube: Kube, namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(status.adapters by name, the AdaptersLoaded condition)."""
    status = ((await kube.get(API, KIND, "tuned", namespace)) or {}).get("status") or {}
    by_name = {a["name"]: a for a in status.get("adapters") or []}
    cond = next((c for c in status.get("conditions") or [] if c["type"] == "AdaptersLoaded"), {})
    return by_name, cond


@pytest.mark.timeout(1200)
async def test_adapters_are_served_by_name_and_change_live_on_the_real_engine(
    kube: Kube, namespace: str, operator: OperatorProcess, router: str
) -> None:
    import openai

    engine.ensure(echo=False)
    await _create(kube, namespace, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "adapters"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "standard",
                 "resources": {"requests": {"storage": "1Gi"}}},
    })  # fmt: skip
    folder = await _volume_dir(kube, namespace, "adapters")
    for seed, name in enumerate(("support", "legal", "sql")):
        write_adapter(folder / name, rank=8, checkpoint=engine.checkpoint_dir(), seed=seed)
    write_adapter(folder / "too-big", rank=32, checkpoint=engine.checkpoint_dir())  # above maxRank 16

    await _create(kube, namespace, _deployment([_adapter("support"), _adapter("legal")]))
    await _wait_ready(kube, namespace, "tuned", timeout=ENGINE_START)

    async def loaded(*names: str) -> bool:
        by_name, cond = await _adapters_status(kube, namespace)
        return cond.get("status") == "True" and set(by_name) == set(names) and all(
            by_name[n]["loadedReplicas"] == by_name[n]["replicas"] == 1 for n in names)  # fmt: skip

    await wait_for(lambda: loaded("support", "legal"), 120, "both adapters loaded on the replica")
    client = openai.AsyncOpenAI(base_url=f"{router}/v1", api_key="unused", max_retries=0)
    await wait_openai_serving(client, ["support", "legal"], 60, "the router knowing the adapters' replicas")
    line = 'qwenfleet_router_adapter_tokens_total{adapter="support",backend="tuned",type="output"}'
    async with aiohttp.ClientSession() as session:
        before = await metric_sum(session, f"{router}/metrics", line)
    raw = await client.chat.completions.with_raw_response.create(model="support", messages=MESSAGES, max_tokens=4,
                                                                 extra_body=QUIET)  # fmt: skip
    reply = raw.parse()
    assert reply.model == "support"  # vLLM served the adapter under its own name
    assert reply.usage is not None
    async with aiohttp.ClientSession() as session:  # the adapter's tokens, as the client got them (cost per adapter)
        counted = await metric_sum(session, f"{router}/metrics", line) - before
    assert counted == reply.usage.completion_tokens
    assert raw.headers["x-qwenfleet-route"].startswith("tuned;alias>adapter;tuned-")
    base = await client.chat.completions.create(model="qwen3-tuned", messages=MESSAGES, max_tokens=2, extra_body=QUIET)
    assert base.model == "Qwen3-0.6B"
    listed = {m.id: m.model_dump() for m in (await client.models.list()).data}
    assert listed["support"]["parent"] == listed["legal"]["parent"] == "Qwen3-0.6B"
    assert "parent" not in listed["qwen3-tuned"]

    (pod,) = await _pods(kube, namespace, "tuned")
    uid = pod["metadata"]["uid"]

    # one added and one removed with an apply of the whole spec, as GitOps does: no rollout, no restart
    started = time.monotonic()
    await _create(kube, namespace, _deployment([_adapter("support"), _adapter("sql")]))
    await wait_openai_serving(client, ["sql"], LIVE_CHANGE_SECONDS, "the added adapter answering through the router")
    print(f"adapter added live: served through the router {time.monotonic() - started:.1f}s after the apply")
    await wait_for(lambda: loaded("support", "sql"), 60, "legal unloaded, sql loaded")
    with pytest.raises(openai.NotFoundError) as gone:
        await client.chat.completions.create(model="legal", messages=MESSAGES, max_tokens=2)
    assert "support" in str(gone.value) and "sql" in str(gone.value)  # the 404 lists the names that do answer

    # a broken adapter: refused by vLLM, a condition says why, the others keep serving
    await _create(kube, namespace, _deployment([_adapter("support"), _adapter("sql"), _adapter("too-big")]))

    async def refused() -> dict[str, Any] | None:
        by_name, cond = await _adapters_status(kube, namespace)
        return cond if cond.get("reason") == "AdapterLoadFailed" and by_name.get("too-big", {}).get("message") else None

    cond = await wait_for(refused, 60, "AdaptersLoaded=False for the adapter vLLM refused")
    assert cond["status"] == "False" and "too-big" in cond["message"]
    assert "LoRA rank 32 is greater than max_lora_rank 16" in cond["message"]  # vLLM's own words
    by_name, _ = await _adapters_status(kube, namespace)
    assert by_name["support"]["loadedReplicas"] == by_name["sql"]["loadedReplicas"] == 1
    for name in ("support", "sql"):
        reply = await client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=2, extra_body=QUIET)
        assert reply.model == name

    (after,) = await _pods(kube, namespace, "tuned")
    assert after["metadata"]["uid"] == uid, "the pod was replaced: adapters must change live"
    statuses = (after.get("status") or {}).get("containerStatuses") or [{}]
    assert statuses[0].get("restartCount", 0) == 0, "the engine restarted: adapters must change live"
