"""The fleet agent: what the containers of kwok's pods would run, at each pod's own IP.

- every Running model-server pod gets a simulated vLLM on podIP:8000, sized by the plan in its
  `qwenfleet.dev/plan` annotation;
- every Running router pod gets the real `qwenfleet router` (this package's Router) on podIP:8080, with the
  routes from its ConfigMap and the API keys from its Secret, discovering backends through the API server.

Servers stop when their pod goes. From then on the operator, the router and the autoscaler talk real HTTP to
real pod IPs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import zlib
from typing import Any

from aiohttp import web

from qwenfleet.api.plan import Plan
from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.kube import Kube, KubeError, make_api_client
from qwenfleet.render.names import HTTP_PORT, PLAN_ANNOTATION
from qwenfleet.render.router import CONFIG_KEY, ROUTER_PORT
from qwenfleet.router.app import Router
from qwenfleet.router.discovery import Discovery
from qwenfleet.sim.fleet import SimFleet

log = logging.getLogger(__name__)
SELECTOR = "app.kubernetes.io/managed-by=qwenfleet,app.kubernetes.io/component=model-server"
ROUTER_SELECTOR = "app.kubernetes.io/managed-by=qwenfleet,app.kubernetes.io/component=router"


def _serving(pod: dict[str, object]) -> tuple[str, str, Plan] | None:
    """(key, ip, plan) for a pod that should have a simulated server, else None."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    assert isinstance(meta, dict) and isinstance(status, dict)
    ip = status.get("podIP")
    raw = (meta.get("annotations") or {}).get(PLAN_ANNOTATION)
    labels = meta.get("labels") or {}
    if not ip or not raw or status.get("phase") != "Running" or meta.get("deletionTimestamp"):
        return None
    if labels.get("qwenfleet.dev/role") == "worker":
        return None  # workers of a multi-node replica serve no HTTP
    return f"{meta['namespace']}/{meta['name']}/{meta.get('uid')}", str(ip), Plan.model_validate(json.loads(raw))


class RouterPods:
    """Router servers by pod key: the aiohttp runner and the discovery task of each."""

    def __init__(self) -> None:
        self.running: dict[str, tuple[web.AppRunner, asyncio.Event, asyncio.Task[None]]] = {}

    async def start(self, kube: Kube, key: str, ip: str, pod: dict[str, Any]) -> None:
        """Serve the router of `pod` on ip:8080."""
        meta, spec = pod["metadata"], pod["spec"]
        namespace = meta["namespace"]
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        config = await kube.get("v1", "ConfigMap", volumes["routes"]["configMap"]["name"], namespace)
        if config is None:
            return
        routes = Qwen3RouterSpec.model_validate(json.loads(config["data"][CONFIG_KEY])["spec"])
        keys: set[str] = set()
        if "api-keys" in volumes:
            ref = volumes["api-keys"]["secret"]
            secret = await kube.get("v1", "Secret", ref["secretName"], namespace)
            raw = ((secret or {}).get("data") or {}).get(ref["items"][0]["key"], "")
            keys = {line.strip() for line in base64.b64decode(raw).decode().splitlines() if line.strip()}
        discovery = Discovery(kube, namespace, routes, interval=1.0)
        stop = asyncio.Event()
        task = asyncio.create_task(discovery.run(stop))
        runner = web.AppRunner(Router(routes, discovery, keys).app(), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, ip, ROUTER_PORT).start()
        except OSError:
            stop.set()
            await runner.cleanup()
            raise
        self.running[key] = (runner, stop, task)

    async def stop(self, key: str) -> None:
        """Stop one router server."""
        runner, stop, task = self.running.pop(key)
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()

    async def close(self) -> None:
        """Stop them all."""
        for key in list(self.running):
            await self.stop(key)


def _pod_key(pod: dict[str, Any]) -> tuple[str, str] | None:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    ip = status.get("podIP")
    if not ip or status.get("phase") != "Running" or meta.get("deletionTimestamp"):
        return None
    return f"{meta['namespace']}/{meta['name']}/{meta.get('uid')}", str(ip)


async def sync_routers(kube: Kube, routers: RouterPods) -> None:
    """Start a router for every Running router pod and stop those whose pod is gone."""
    wanted = {}
    for pod in await kube.list("v1", "Pod", label_selector=ROUTER_SELECTOR):
        found = _pod_key(pod)
        if found:
            wanted[found[0]] = (found[1], pod)
    for key in set(routers.running) - set(wanted):
        await routers.stop(key)
        log.info("stopped router for %s", key)
    for key, (ip, pod) in wanted.items():
        if key in routers.running:
            continue
        try:
            await routers.start(kube, key, ip, pod)
            log.info("router for %s on http://%s:%d/v1", key, ip, ROUTER_PORT)
        except (OSError, KeyError, ValueError) as exc:
            log.warning("cannot serve router %s on %s:%d: %s", key, ip, ROUTER_PORT, exc)


async def sync(kube: Kube, fleet: SimFleet, cold_start_scale: float) -> None:
    """Start servers for new pods and stop those whose pod is gone."""
    wanted = {}
    for pod in await kube.list("v1", "Pod", label_selector=SELECTOR):
        serving = _serving(pod)
        if serving:
            wanted[serving[0]] = serving
    for key in set(fleet.pods) - set(wanted):
        await fleet.stop_pod(key)
        log.info("stopped simulated vLLM for %s", key)
    for key, (_, ip, plan) in wanted.items():
        if key in fleet.pods:
            continue
        try:
            await fleet.start_pod(key, ip, HTTP_PORT, plan, seed=zlib.crc32(key.encode()),
                                  cold_start_seconds=plan.cold_start_seconds * cold_start_scale)  # fmt: skip
            log.info("simulated vLLM for %s on %s:%d", key, ip, HTTP_PORT)
        except OSError as exc:
            log.warning("cannot serve %s on %s:%d: %s", key, ip, HTTP_PORT, exc)


async def run(kubeconfig: str, time_scale: float, cold_start_scale: float, stop: asyncio.Event) -> None:
    """Keep the simulated servers in step with the pods until `stop` is set."""
    kube = Kube(await make_api_client(kubeconfig))
    fleet = SimFleet(time_scale=time_scale)
    routers = RouterPods()
    try:
        while not stop.is_set():
            try:
                await sync(kube, fleet, cold_start_scale)
                await sync_routers(kube, routers)
            except KubeError as exc:
                log.warning("fleet agent: %s", exc)
            except Exception:  # never die: the fleet would silently stop answering
                log.exception("fleet agent: sync failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
    finally:
        await routers.close()
        await fleet.close()
        await kube.close()


def main() -> None:
    """`python -m qwenfleet.devcluster.fleet_agent --kubeconfig F`."""
    parser = argparse.ArgumentParser(description="simulated vLLM on every model-server pod")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per wall second")
    parser.add_argument("--cold-start-scale", type=float, default=0.1,
                        help="fraction of the plan's cold start the simulated load takes")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(run(args.kubeconfig, args.time_scale, args.cold_start_scale, asyncio.Event()))


if __name__ == "__main__":
    main()
