"""`qwenfleet run`: the operator process (watches, work queue and reconcile; liveness and metrics endpoints).

With `--leader-election`, every replica serves /healthz and /metrics, and only the holder of the Lease watches
and reconciles; a replica that loses the Lease stops and stands by again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket

from aiohttp import web

from qwenfleet.autoscale.loop import CHECKPOINT_SECONDS
from qwenfleet.controller import metrics
from qwenfleet.controller.leader import LeaderElector
from qwenfleet.controller.operator import Operator, Options
from qwenfleet.controller.waiting import first_of
from qwenfleet.kube import Kube, make_api_client

log = logging.getLogger(__name__)


async def _serve_health(port: int, elector: LeaderElector | None) -> web.AppRunner | None:
    """/healthz answers while the event loop runs; it says whether this replica leads."""
    if not port:
        return None

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "leader": elector.leading if elector else True})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # the kubelet probes the pod IP
    return runner


def _on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _lead_while_elected(args: argparse.Namespace, options: Options) -> None:
    kube = Kube(await make_api_client(args.kubeconfig))
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    elector = LeaderElector(kube, args.lease_namespace, args.lease_name, identity, args.lease_duration)
    health = await _serve_health(args.health_port, elector)
    shutdown = asyncio.Event()
    _on_signals(shutdown)
    try:
        while not shutdown.is_set():
            await first_of(elector.acquire(), shutdown.wait())
            if shutdown.is_set():
                break
            metrics.LEADER.set(1)
            lost, stop = asyncio.Event(), asyncio.Event()
            running = await Operator.connect(options)
            operator = asyncio.ensure_future(running.run(stop))
            holder = asyncio.ensure_future(elector.hold(lost))
            await first_of(asyncio.shield(operator), lost.wait(), shutdown.wait())
            running.checkpoint_on_stop = not lost.is_set()  # a lost lease: the new leader owns the checkpoints
            stop.set()
            await operator
            holder.cancel()
            metrics.LEADER.set(0)
            if not lost.is_set():
                break  # asked to shut down
            log.error("leader election: leadership lost; handlers stopped, standing by")
    finally:
        await elector.release()
        await kube.close()
        if health:
            await health.cleanup()


async def _serve(args: argparse.Namespace, options: Options) -> None:
    if args.leader_election:
        await _lead_while_elected(args, options)
        return
    health = await _serve_health(args.health_port, None)
    metrics.LEADER.set(1)
    stop = asyncio.Event()
    _on_signals(stop)
    try:
        await (await Operator.connect(options)).run(stop)
    finally:
        if health:
            await health.cleanup()


def run(args: argparse.Namespace) -> int:
    """Run the operator until interrupted."""
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = os.path.abspath(args.kubeconfig)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    metrics.start(args.metrics_port)
    options = Options(
        kubeconfig=args.kubeconfig,
        namespaces=() if args.all_namespaces else tuple(args.namespace or ["default"]),
        prometheus_url=args.prometheus_url,
        autoscale_interval=args.autoscale_interval,
        checkpoint_interval=args.autoscaler_checkpoint_interval,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args, options))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `qwenfleet run`."""
    p = sub.add_parser("run", help="run the operator")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", help="watch this namespace (repeatable; default: default)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    p.add_argument("--metrics-port", type=int, default=9090, help="Prometheus /metrics port (0: off)")
    p.add_argument("--health-port", type=int, default=8080, help="liveness /healthz port (0: off)")
    p.add_argument("--prometheus-url", default=None, help="Prometheus the KEDA ScaledObjects query")
    p.add_argument("--autoscale-interval", type=float, default=10.0, help="seconds between autoscaler decisions")
    p.add_argument("--autoscaler-checkpoint-interval", type=float, default=CHECKPOINT_SECONDS,
                   help="seconds between checkpoints of SLO mode's memory (a ConfigMap per deployment)")  # fmt: skip
    p.add_argument("--leader-election", action="store_true", help="run handlers only while holding the Lease")
    p.add_argument("--lease-namespace", default="default", help="namespace of the leader-election Lease")
    p.add_argument("--lease-name", default="qwenfleet-operator", help="name of the leader-election Lease")
    p.add_argument("--lease-duration", type=float, default=15.0, help="seconds a silent leader keeps the Lease")
    p.add_argument("--verbose", "-v", action="store_true")
    p.set_defaults(func=run)
