"""A closed API as a router backend, as a user runs it: the API is stood in by the simulator on loopback (it checks
the key as vLLM's --api-key does), behind `qwenfleet router` on the dev fleet, driven by the openai client.
Premium requests go to it, it answers while a backend wakes from zero, the daily budget stops the overflow, a wrong
key and a slow API get clear errors, a stream that is cancelled is cancelled at the API, and the API's spend is
what the client received at its list prices."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qwenfleet.kube import Kube
from tests.e2e.operator_proc import (
    OperatorProcess,
    assert_disconnect_cancels,
    free_port,
    metric_sum,
    router_process,
    wait_for,
    wait_openai_serving,
)
from tests.e2e.test_reconciler import API, KIND, _create, _wait_ready

pytestmark = pytest.mark.e2e

KEY = "sk-stand-in-e2e-7c1f"
MODEL = "Qwen3-4B-Instruct-2507"
"""The stand-in API's model: a non-thinking one, so short answers carry content."""
PRICES = {"inputPerMillionUSD": 3.0, "outputPerMillionUSD": 15.0}  # example inputs, not quotes
AT_ZERO = {"autoscaling": {"mode": "builtin", "minReplicas": 0, "maxReplicas": 1, "scaleToZeroAfterSeconds": 600}}


@contextlib.contextmanager
def _stand_in(tmp_path: Path, name: str, time_scale: float) -> Iterator[str]:
    """`qwenfleet sim` as an OpenAI-compatible API on loopback that wants KEY; yields its base URL."""
    port = free_port()
    log = (tmp_path / f"{name}.log").open("wb")
    cmd = [sys.executable, "-m", "qwenfleet.cli", "sim", "--model", MODEL, "--gpu", "H100-80GB", "--host",
           "127.0.0.1", "--port", str(port), "--api-key", KEY, "--time-scale", str(time_scale),
           "--cold-start-seconds", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:  # serving before a test sends it anything
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/health",
                                                                      timeout=1) as answer:  # fmt: skip
                if answer.status == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, f"the stand-in API did not start ({name})"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _external(base_url: str, **extra: Any) -> dict[str, Any]:
    return {"baseURL": base_url, "model": MODEL, "prices": PRICES, "apiKeySecretRef": {"name": "api", "key": "k"},
            **extra}  # fmt: skip


@pytest.mark.timeout(900)
async def test_a_closed_api_serves_premium_work_and_overflow_within_its_budget(
    kube: Kube, namespace: str, operator: OperatorProcess, kubeconfig: Path, tmp_path: Path
) -> None:
    import openai

    await _create(kube, namespace, {"apiVersion": API, "kind": KIND, "metadata": {"name": "small"},
                                    "spec": {"model": "Qwen3-0.6B", "gpu": "L4-24GB", "replicas": 1}})  # fmt: skip
    for name, model in (("sleepy", "Qwen3-4B"), ("dormant", "Qwen3-1.7B")):
        await _create(kube, namespace, {"apiVersion": API, "kind": KIND, "metadata": {"name": name},
                                        "spec": {"model": model, "gpu": "H100-80GB", **AT_ZERO}})  # fmt: skip
    await _wait_ready(kube, namespace, "small")
    keys = tmp_path / "keys"
    for backend, key in (("premium", KEY), ("slow", KEY), ("wrongkey", "sk-not-the-right-one")):
        (keys / backend).mkdir(parents=True)
        (keys / backend / "key").write_text(key + "\n")
    with _stand_in(tmp_path, "api", 20.0) as api, _stand_in(tmp_path, "slow-api", 0.05) as slow_api:
        routes = {
            "backends": [
                {"name": "small", "aliases": ["qwen3-small"]},
                {"name": "sleepy", "aliases": ["qwen3-sleepy"], "fallback": "premium"},
                {"name": "dormant", "aliases": ["qwen3-dormant"], "fallback": "premium"},
                {"name": "premium", "aliases": ["frontier"], "external": _external(api, maxConcurrency=4)},
                {"name": "slow", "aliases": ["frontier-slow"], "external": _external(slow_api, timeoutSeconds=2)},
                {"name": "wrongkey", "aliases": ["frontier-wrong"], "external": _external(api)},
            ],
            "defaultBackend": "small",
            "rules": [{"name": "premium", "match": {"tier": "premium"}, "backend": "premium"}],
            "scaleFromZero": {"enabled": True, "holdSeconds": 240},
            "externalDailyBudgetUSD": 0.02,
            "replicas": 1,
        }
        with router_process(routes, namespace, kubeconfig, tmp_path, args=[f"--external-keys-dir={keys}"]) as router:
            client = openai.AsyncOpenAI(base_url=f"{router}/v1", api_key="unused", max_retries=0)
            messages: Any = [{"role": "user", "content": "Write one line about the sea."}]
            received = {"prompt": 0, "output": 0}

            def count(usage: Any) -> None:
                received["prompt"] += usage.prompt_tokens
                received["output"] += usage.completion_tokens

            await wait_openai_serving(client, ["qwen3-small"], 60, "the router serving small")

            # premium work: the tier header's rule sends it to the API, which the route header says
            raw = await client.chat.completions.with_raw_response.create(
                model="auto", messages=messages, max_tokens=16, extra_headers={"x-qwenfleet-tier": "premium"}
            )
            assert raw.headers["x-qwenfleet-route"] == "premium;rule:premium;api"
            reply = raw.parse()
            assert reply.choices[0].message.content and reply.usage is not None
            count(reply.usage)

            # a stream from the API: usage was asked of it, but the client that did not ask gets none
            stream = await client.chat.completions.create(model="frontier", messages=messages, max_tokens=16,
                                                          stream=True)  # fmt: skip
            chunks = [c async for c in stream]
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
            assert all(c.usage is None for c in chunks)
            stream = await client.chat.completions.create(
                model="frontier", messages=messages, max_tokens=16, stream=True, stream_options={"include_usage": True}
            )
            chunks = [c async for c in stream]
            assert chunks[-1].usage is not None
            count(chunks[-1].usage)

            async with aiohttp.ClientSession() as s:
                metrics = f"{router}/metrics"
                # the cost of the un-asked stream's usage is counted too: spend so far = what the client saw + it
                counted = await metric_sum(s, metrics, 'qwenfleet_router_tokens_total{backend="premium",mode="non_'
                                        'thinking",type="output"}')  # fmt: skip
                assert counted > received["output"]

                # a wrong key: 502 that names the Secret and never the key; a slow API: 504 after its timeout
                with pytest.raises(openai.APIStatusError) as wrong:
                    await client.chat.completions.create(model="frontier-wrong", messages=messages, max_tokens=2)
                assert wrong.value.status_code == 502 and "refused its API key (401" in wrong.value.message
                assert "sk-not" not in wrong.value.message and "api/k" in wrong.value.message
                with pytest.raises(openai.APIStatusError) as slow:
                    await client.chat.completions.create(model="frontier-slow", messages=messages, max_tokens=200)
                assert slow.value.status_code == 504 and "did not answer within 2s" in slow.value.message

                # a client that goes away mid-stream: the API's own request is cancelled
                body = {"model": "frontier", "prompt": "long", "max_tokens": 30000, "stream": True}
                r = await s.post(f"{router}/v1/completions", json=body)
                await r.content.readline()
                await assert_disconnect_cancels(s, r, api.removesuffix("/v1") + "/metrics")

                # overflow while a backend wakes: the API answers meanwhile, the backend is woken
                raw = await client.chat.completions.with_raw_response.create(model="qwen3-sleepy", messages=messages,
                                                                             max_tokens=16)  # fmt: skip
                assert raw.headers["x-qwenfleet-route"].startswith("premium;alias>wake>fallback;api")

                # past the daily budget the API is no longer the overflow: a request for dormant (at zero, the API
                # its fallback) waits for it instead
                spent = await metric_sum(s, metrics, 'qwenfleet_router_external_usd_total{backend="premium"}')
                while spent < 0.02:
                    big = await client.chat.completions.create(model="frontier", messages=messages, max_tokens=400,
                                                               extra_body={"ignore_eos": True})  # fmt: skip
                    assert big.usage is not None
                    spent = await metric_sum(s, metrics, 'qwenfleet_router_external_usd_total{backend="premium"}')
                assert await metric_sum(s, metrics, "qwenfleet_router_external_budget_exhausted") == 1.0
                raw = await asyncio.wait_for(client.chat.completions.with_raw_response.create(
                    model="qwen3-dormant", messages=messages, max_tokens=4), 260)  # fmt: skip
                assert raw.headers["x-qwenfleet-route"].startswith("dormant;alias>wake>held;dormant-")
                # a request that names the API is still served past the budget
                assert (await client.chat.completions.create(model="frontier", messages=messages, max_tokens=2)).usage


@pytest.mark.timeout(300)
async def test_the_apis_spend_is_what_the_client_received_at_its_list_prices(
    namespace: str, kubeconfig: Path, tmp_path: Path
) -> None:
    import openai

    keys = tmp_path / "keys"
    (keys / "premium").mkdir(parents=True)
    (keys / "premium" / "key").write_text(KEY)
    with _stand_in(tmp_path, "api", 20.0) as api:
        routes = {"backends": [{"name": "premium", "aliases": ["frontier"], "external": _external(api)}],
                  "defaultBackend": "premium"}  # fmt: skip
        with router_process(routes, namespace, kubeconfig, tmp_path, args=[f"--external-keys-dir={keys}"]) as router:
            client = openai.AsyncOpenAI(base_url=f"{router}/v1", api_key="unused", max_retries=0)

            async def up() -> bool:
                try:
                    async with aiohttp.ClientSession() as s, s.get(f"{router}/health") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(up, 30, "the router up")
            prompt = output = 0
            for i in range(6):
                reply = await client.chat.completions.create(
                    model="frontier", messages=[{"role": "user", "content": f"question {i} " * (i + 1)}],
                    max_tokens=20 + 10 * i,
                )  # fmt: skip
                assert reply.usage is not None
                prompt += reply.usage.prompt_tokens
                output += reply.usage.completion_tokens
            async with aiohttp.ClientSession() as s:
                spent = await metric_sum(
                    s, f"{router}/metrics", 'qwenfleet_router_external_usd_total{backend="premium"}'
                )
            assert spent == pytest.approx(prompt / 1e6 * 3.0 + output / 1e6 * 15.0, rel=1e-9)
