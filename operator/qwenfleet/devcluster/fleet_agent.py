"""The fleet agent: a simulated vLLM on every model-server pod that kwok runs, at the pod's own IP.

It watches (by polling) Running model-server pods with an IP, reads each pod's plan from its
`qwenfleet.dev/plan` annotation, serves a simulated vLLM on podIP:8000, and stops it when the pod goes.
From then on the operator, the router and the autoscaler talk real HTTP to real pod IPs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import zlib

from qwenfleet.api.plan import Plan
from qwenfleet.kube import Kube, KubeError, make_api_client
from qwenfleet.render.names import HTTP_PORT, PLAN_ANNOTATION
from qwenfleet.sim.fleet import SimFleet

log = logging.getLogger(__name__)
SELECTOR = "app.kubernetes.io/managed-by=qwenfleet,app.kubernetes.io/component=model-server"


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
    try:
        while not stop.is_set():
            try:
                await sync(kube, fleet, cold_start_scale)
            except KubeError as exc:
                log.warning("fleet agent: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
    finally:
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
