"""The demo on the simulated fleet: three Qwen3 sizes and a router (`qwenfleet dev up --demo`), and a load
generator to watch the autoscaler move replicas (`qwenfleet dev load`).

With `--karpenter` the cluster has no GPU node at start (the `karpenter` profile is one CPU node), so each
Qwen3Deployment of the demo gets a Karpenter NodePool of its own on the dev cluster's kwok node class, and
Karpenter's kwok provider brings up the GPU nodes its pods ask for."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from rich.console import Console
from rich.live import Live
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from qwenfleet.api.base import API_VERSION
from qwenfleet.devcluster.real_pods import ENGINE_ANNOTATION, REAL_ENGINE
from qwenfleet.kube import Kube, make_api_client
from qwenfleet.render.router import ROUTER_PORT

DEMO = Path(__file__).resolve().parents[3] / "manifests" / "demo" / "fleet.yaml"
API = API_VERSION
ROUTER = "qwen3"
NAMESPACE = "default"
KWOK_NODE_CLASS = {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"}
"""The node class `qwenfleet dev up --karpenter` creates for Karpenter's kwok provider."""


REAL_ENGINE_SIZE = "qwen3-small"
"""The demo size `--real-engine` serves with the real vLLM engine (Qwen3-0.6B: one engine on CPU)."""


def fleet(karpenter: bool = False, real_engine: bool = False) -> list[dict[str, Any]]:
    """The demo's objects (manifests/demo/fleet.yaml); with `karpenter`, every Qwen3Deployment provisions its
    GPU nodes through a NodePool of its own instead of selecting existing GPU nodes."""
    docs = [d for d in yaml.safe_load_all(DEMO.read_text()) if d]
    for doc in docs:
        if real_engine and doc["kind"] == "Qwen3Deployment" and doc["metadata"]["name"] == REAL_ENGINE_SIZE:
            doc["metadata"].setdefault("annotations", {})[ENGINE_ANNOTATION] = REAL_ENGINE
    if karpenter:
        for doc in docs:
            if doc["kind"] == "Qwen3Deployment":
                doc["spec"]["nodePool"] = {"provisioner": "karpenter", "nodeClassRef": dict(KWOK_NODE_CLASS)}
    return docs


def _ready(obj: dict[str, Any] | None) -> tuple[bool, str]:
    for cond in ((obj or {}).get("status") or {}).get("conditions", []):
        if cond["type"] == "Ready":
            return cond["status"] == "True", f"{cond['reason']}: {cond.get('message', '')}"[:90]
    return False, "waiting for the operator"


async def router_url(kube: Kube, name: str = ROUTER, namespace: str = NAMESPACE) -> str | None:
    """http://<router pod IP>:8080 of a ready router pod (the fleet agent serves it there), or None."""
    selector = f"app.kubernetes.io/component=router,qwenfleet.dev/deployment={name}"
    for pod in await kube.list("v1", "Pod", namespace, label_selector=selector):
        conditions = {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or []}
        if conditions.get("Ready") == "True" and pod["status"].get("podIP"):
            return f"http://{pod['status']['podIP']}:{ROUTER_PORT}"
    return None


async def deploy(
    kubeconfig: str, console: Console, within: float = 600, karpenter: bool = False, real_engine: bool = False
) -> str:
    """Apply the demo fleet (on Karpenter NodePools with `karpenter`), show progress until every object is
    Ready, and return the router's URL."""
    kube = Kube(await make_api_client(kubeconfig))
    try:
        docs = fleet(karpenter, real_engine)
        for doc in docs:
            await kube.apply(doc)
        deadline = time.monotonic() + within
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console) as progress:  # fmt: skip
            tasks = {
                d["metadata"]["name"]: (d["kind"], progress.add_task(d["metadata"]["name"], total=1)) for d in docs
            }
            pending = set(tasks)
            url = None
            while pending or url is None:
                for name in list(pending):
                    kind, task = tasks[name]
                    ready, why = _ready(await kube.get(API, kind, name, NAMESPACE))
                    progress.update(task, description=f"{kind} {name}: {why}", completed=1 if ready else 0)
                    if ready:
                        pending.discard(name)
                url = await router_url(kube)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the demo fleet was not ready within {within:.0f}s: {sorted(pending)}")
                await asyncio.sleep(0.5)
        return url
    finally:
        await kube.close()


PROMPTS = ["Summarise the plot of Hamlet in two sentences.", "Write a haiku about GPUs.",
           "What is the capital of Australia?", "Explain tensor parallelism to a new engineer."]  # fmt: skip


@dataclass
class Received:
    """What the load generator received from one backend (the first field of `x-qwenfleet-route`)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0

    def add(self, usage: dict[str, Any]) -> None:
        """Count one answer's `usage`."""
        self.requests += 1
        self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.completion_tokens += int(usage.get("completion_tokens") or 0)
        details = usage.get("completion_tokens_details") or {}
        self.reasoning_tokens += int(details.get("reasoning_tokens") or 0)


async def _replicas_table(kube: Kube, namespace: str, sent: int, errors: int, started: float) -> Table:
    table = Table(title=f"qwenfleet demo: {sent} requests sent, {errors} errors, {time.monotonic() - started:.0f}s")
    for column in ("Qwen3Deployment", "model", "ready/desired", "queue per replica", "autoscaler"):
        table.add_column(column)
    for obj in await kube.list(API, "Qwen3Deployment", namespace):
        st = obj.get("status") or {}
        auto = st.get("autoscaler") or {}
        table.add_row(obj["metadata"]["name"], obj["spec"]["model"],
                      f"{st.get('readyReplicas', 0)}/{st.get('desiredReplicas', 0)}",
                      f"{auto.get('queuePerReplica', 0.0):.1f}", str(auto.get("reason", ""))[:60])  # fmt: skip
    return table


def received_table(received: dict[str, Received]) -> Table:
    """The tokens the load received, per backend: what `qwenfleet cost` should account for."""
    table = Table(title="received by the load generator (compare with `qwenfleet cost`)")
    for column in ("backend", "requests", "prompt tokens", "output tokens", "reasoning tokens"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for backend, r in sorted(received.items()):
        table.add_row(backend, str(r.requests), str(r.prompt_tokens), str(r.completion_tokens), str(r.reasoning_tokens))
    return table


async def load(
    kubeconfig: str,
    rate: float,
    seconds: float,
    model: str,
    thinking_share: float,
    namespace: str = NAMESPACE,
    summary: Path | None = None,
) -> int:
    """Send chat requests through the demo router at `rate` per second, showing replicas as they change; at the
    end, show (and with `summary`, write as JSON) the tokens received per backend."""
    kube = Kube(await make_api_client(kubeconfig))
    sent = errors = 0
    received: dict[str, Received] = {}
    rng = random.Random(1)
    try:
        url = await router_url(kube, ROUTER, namespace)
        if url is None:
            print("no ready router pod: run `qwenfleet dev up --demo` (make fleet) first")
            return 1

        async def one(session: aiohttp.ClientSession) -> None:
            nonlocal errors
            thinking = rng.random() < thinking_share
            body = {"model": model, "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
                    "max_tokens": 256, "chat_template_kwargs": {"enable_thinking": thinking}}  # fmt: skip
            try:
                async with session.post(f"{url}/v1/chat/completions", json=body) as r:
                    answer = await r.json(content_type=None) if r.status == 200 else None
                    backend = r.headers.get("x-qwenfleet-route", "").split(";")[0] or "?"
            except (aiohttp.ClientError, ValueError):
                errors += 1
                return
            if answer is None:
                errors += 1
                return
            received.setdefault(backend, Received()).add(answer.get("usage") or {})

        started = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            with Live(await _replicas_table(kube, namespace, 0, 0, started), refresh_per_second=2) as live:
                next_view = 0.0
                while time.monotonic() - started < seconds:
                    task = asyncio.create_task(one(session))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    sent += 1
                    if time.monotonic() > next_view:
                        live.update(await _replicas_table(kube, namespace, sent, errors, started))
                        next_view = time.monotonic() + 1
                    await asyncio.sleep(rng.expovariate(rate))
                await asyncio.gather(*tasks, return_exceptions=True)
                live.update(await _replicas_table(kube, namespace, sent, errors, started))
        Console().print(received_table(received))
        if summary is not None:
            out = {"sent": sent, "errors": errors, "backends": {k: asdict(v) for k, v in sorted(received.items())}}
            await asyncio.to_thread(summary.write_text, json.dumps(out, indent=2) + "\n")
        return 0
    finally:
        await kube.close()
