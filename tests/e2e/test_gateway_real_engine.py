"""The real vLLM engine (CPU build, pinned version) behind a real Envoy with qwenfleet's Endpoint Picker: what the
picker assumes about vLLM's answers (the compact `"model":"..."` it writes the asked name back into, the usage at a
stream's end, the body it forwards) holds for the engine itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qwenfleet.devcluster import engine
from qwenfleet.devcluster.real_pods import ENGINE_ANNOTATION
from qwenfleet.kube import Kube
from tests.e2e.operator_proc import OperatorProcess, wait_for, wait_openai_serving
from tests.e2e.test_gateway import (
    ROUTER_KIND,
    envoy_gateway,
    picker_process,
    pool_endpoints,
    pools_of,
    stream_with_usage,
)
from tests.e2e.test_reconciler import API, KIND, _create, _wait_ready

pytestmark = pytest.mark.e2e

ENGINE_START = 400.0
ROUTES: dict[str, Any] = {
    "backends": [{"name": "real", "aliases": ["qwen3-real"]}],
    "defaultBackend": "real",
    "endpointPicker": {"enabled": True},
}


@pytest.mark.timeout(900)
async def test_the_real_engine_is_served_through_envoy_and_the_picker(
    kube: Kube, namespace: str, operator: OperatorProcess, kubeconfig: Path, tmp_path: Path
) -> None:
    import openai

    engine.ensure(echo=False)
    meta = {"name": "real", "annotations": {ENGINE_ANNOTATION: "vllm"}}
    spec = {"model": "Qwen3-0.6B", "gpu": "L4-24GB", "replicas": 1, "overrides": {"maxNumSeqs": 2}}
    real = {"apiVersion": API, "kind": KIND, "metadata": meta, "spec": spec}
    await _create(kube, namespace, real)
    await _create(kube, namespace, {"apiVersion": API, "kind": ROUTER_KIND, "metadata": {"name": "edge"},
                                    "spec": ROUTES})  # fmt: skip
    await _wait_ready(kube, namespace, "real", timeout=ENGINE_START)

    async def endpoints() -> list[str] | None:
        pool = (await pools_of(kube, namespace)).get("edge-real")
        return (await pool_endpoints(kube, namespace, pool)) or None if pool else None

    pool = await wait_for(endpoints, 60, "the InferencePool of the real deployment and its endpoint")
    with picker_process(ROUTES, namespace, kubeconfig, tmp_path) as (_, epp, _), \
            envoy_gateway(tmp_path, "gateway", epp, pool) as (gateway, _):  # fmt: skip
        client = openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0)
        messages: Any = [{"role": "user", "content": "Say hello."}]
        quiet: Any = {"chat_template_kwargs": {"enable_thinking": False}}

        await wait_openai_serving(client, ["qwen3-real"], 60, "the real engine answering through the gateway")
        raw = await client.chat.completions.with_raw_response.create(model="qwen3-real", messages=messages,
                                                                     max_tokens=8, extra_body=quiet)  # fmt: skip
        reply = raw.parse()
        assert raw.headers["x-qwenfleet-route"].startswith("real;alias;real-")
        assert reply.model == "qwen3-real"  # vLLM wrote its served name; the picker wrote the asked one back
        assert reply.usage is not None and reply.usage.completion_tokens >= 1

        await stream_with_usage(client, "qwen3-real", messages, quiet)  # the asked name in vLLM's stream chunks

        raw = await client.chat.completions.with_raw_response.create(model="auto", messages=messages, max_tokens=2)
        assert raw.parse().model == "Qwen3-0.6B"  # auto: the served name, as the engine wrote it
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="qwen3-nothing", messages=messages)
