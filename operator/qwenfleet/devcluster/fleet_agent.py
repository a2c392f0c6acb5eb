"""The fleet agent: what the containers of kwok's pods would run, at each pod's own IP.

- every Running model-server pod gets a simulated vLLM on podIP:8000, sized by the plan in its
  `qwenfleet.dev/plan` annotation, or, when its Qwen3Deployment is annotated `qwenfleet.dev/dev-engine: vllm`,
  the real vLLM engine started from the pod's own command and args (see `real_pods`);
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
import signal
import zlib
from pathlib import Path
from typing import Any

from aiohttp import web

from qwenfleet.api.plan import Plan
from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.devcluster import engine
from qwenfleet.devcluster.podvolumes import host_mounts, lora_runtime_updates
from qwenfleet.devcluster.real_pods import RealEngines, wants_real_engine
from qwenfleet.kube import Kube, KubeError, make_api_client
from qwenfleet.render.names import GROUP, HTTP_PORT, PLAN_ANNOTATION
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
        runner = Router(routes, discovery, keys).runner()  # with the router's header timeout, as in a pod
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


async def sync(kube: Kube, fleet: SimFleet, engines: RealEngines, cold_start_scale: float) -> None:
    """Start servers for new pods and stop those whose pod is gone."""
    pods = await kube.list("v1", "Pod", label_selector=SELECTOR)
    deployments = {}
    if pods:
        for d in await kube.list(f"{GROUP}/v1alpha1", "Qwen3Deployment"):
            deployments[(d["metadata"]["namespace"], d["metadata"]["name"])] = d
    wanted, real, lora = {}, {}, {}
    for pod in pods:
        serving = _serving(pod)
        if serving and wants_real_engine(pod, deployments):
            real[serving[0]] = (serving[1], pod)
        elif serving:
            wanted[serving[0]] = serving
            lora[serving[0]] = pod if lora_runtime_updates(pod) else None
    await sync_real(kube, engines, real)
    for key in set(fleet.pods) - set(wanted):
        await fleet.stop_pod(key)
        log.info("stopped simulated vLLM for %s", key)
    for key, (_, ip, plan) in wanted.items():
        if key in fleet.pods:
            continue
        lora_pod = lora.get(key)
        try:
            path_map = await host_mounts(kube, lora_pod) if lora_pod else None
            await fleet.start_pod(key, ip, HTTP_PORT, plan, seed=zlib.crc32(key.encode()),
                                  cold_start_seconds=plan.cold_start_seconds * cold_start_scale,
                                  lora_runtime_updates=lora_pod is not None, path_map=path_map)  # fmt: skip
            log.info("simulated vLLM for %s on %s:%d", key, ip, HTTP_PORT)
        except OSError as exc:
            log.warning("cannot serve %s on %s:%d: %s", key, ip, HTTP_PORT, exc)


async def sync_real(kube: Kube, engines: RealEngines, wanted: dict[str, tuple[str, dict[str, Any]]]) -> None:
    """Start a real engine for each new pod that asks for one, stop those whose pod is gone, report the rest."""
    for key in set(engines.pods) - set(wanted):
        await asyncio.to_thread(engines.stop_pod, key)
    for key, (ip, pod) in wanted.items():
        if key in engines.pods:
            continue
        try:
            engines.start_pod(key, pod, ip, await host_mounts(kube, pod) if lora_runtime_updates(pod) else None)
        except (engine.ArgsError, OSError) as exc:
            log.warning("cannot run the real engine for %s: %s", key, exc)
    await engines.tick(kube, {key: pod for key, (_, pod) in wanted.items()})


async def run(
    kubeconfig: str, time_scale: float, cold_start_scale: float, stop: asyncio.Event, log_dir: Path | None = None
) -> None:
    """Keep the simulated servers and real engines in step with the pods until `stop` is set."""
    kube = Kube(await make_api_client(kubeconfig))
    fleet = SimFleet(time_scale=time_scale)
    routers = RouterPods()
    engines = RealEngines(log_dir or Path("engine-logs"))
    try:
        while not stop.is_set():
            try:
                await sync(kube, fleet, engines, cold_start_scale)
                await sync_routers(kube, routers)
            except KubeError as exc:
                log.warning("fleet agent: %s", exc)
            except Exception:  # never die: the fleet would silently stop answering
                log.exception("fleet agent: sync failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
    finally:
        await routers.close()
        await engines.close()
        await fleet.close()
        await kube.close()


def main() -> None:
    """`python -m qwenfleet.devcluster.fleet_agent --kubeconfig F`."""
    parser = argparse.ArgumentParser(description="simulated vLLM on every model-server pod")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per wall second")
    parser.add_argument("--cold-start-scale", type=float, default=0.1,
                        help="fraction of the plan's cold start the simulated load takes")  # fmt: skip
    parser.add_argument("--log-dir", type=Path, default=None, help="where real engines write their output")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = asyncio.Event()

    async def main_loop() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)  # stop the real engines too, never leave them behind
        await run(args.kubeconfig, args.time_scale, args.cold_start_scale, stop, args.log_dir)

    asyncio.run(main_loop())


if __name__ == "__main__":
    main()
