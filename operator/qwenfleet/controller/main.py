"""`qwenfleet run`: the kopf operator process (watches, indexes, probes), with the work run by the Lease holder.

kopf runs on every replica: it watches, keeps the indexes warm, serves /healthz and stops on SIGTERM (its handlers
and our running passes drain first). With `--leader-election`, only the holder of the Lease runs the work (the
reconcile and autoscaler queues, the cost loop, Events); a replica that loses the Lease stops that work before
the Lease can pass to another, and stands by again. Without it, the work starts as soon as the indexes are full.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket

import kopf

from qwenfleet.autoscale.loop import CHECKPOINT_SECONDS
from qwenfleet.controller import kopfpatch, metrics
from qwenfleet.controller.handlers import build_registry
from qwenfleet.controller.kopfsettings import EXIT_SECONDS
from qwenfleet.controller.leader import LEASE_SECONDS, LeaderElector
from qwenfleet.controller.operator import AUTOSCALE_INTERVAL_SECONDS, Operator, Options
from qwenfleet.kube import Kube, make_api_client

log = logging.getLogger(__name__)
LOST_DRAIN_SECONDS = 2.0
"""How long passes may run on after the Lease is lost: with the renew deadline at two thirds of the lease
duration (10 of 15 s), they end well before a standby may take over."""


async def _lead_while_elected(op: Operator, elector: LeaderElector) -> None:
    """Acquire, work, hold; on a lost Lease stop the work first, then stand by and try again."""
    while True:
        await elector.acquire()
        await op.lead()
        await elector.hold()
        await op.stand_down(LOST_DRAIN_SECONDS, checkpoint=False)  # the new leader owns the checkpoints
        log.error("leader election: leadership lost; work stopped, standing by")


async def _serve(args: argparse.Namespace, options: Options) -> int:
    op = Operator(Kube(await make_api_client(args.kubeconfig)), options)
    elector: LeaderElector | None = None
    if args.leader_election:
        identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
        lease_kube = Kube(await make_api_client(args.kubeconfig, connections=2))  # renewals never wait for a turn
        elector = LeaderElector(lease_kube, args.lease_namespace, args.lease_name, identity, args.lease_duration)
    work = asyncio.ensure_future(_lead_while_elected(op, elector) if elector else op.lead())

    async def cleanup() -> None:
        work.cancel()  # no more leading, nor standing down, from the election loop
        await asyncio.gather(work, return_exceptions=True)
        await op.stand_down(EXIT_SECONDS, checkpoint=True)
        if elector is not None:
            await elector.release()  # after the work has stopped: a standby takes over at once

    op.on_cleanup = cleanup
    metrics.LEADER.set(0)
    kopfpatch.apply()
    try:
        await kopf.operator(
            registry=build_registry(op),
            clusterwide=not options.namespaces,
            namespaces=list(options.namespaces),
            standalone=True,
            liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None,
        )
    except Exception as exc:  # kopf stops the operator when a watch fails for good (a 403 it retried)
        log.error("stopping: %s", op.health.problems() or f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        await op.stand_down(EXIT_SECONDS, checkpoint=True)  # no-op if kopf's cleanup already stood down
        await op.close()
        if elector is not None:
            await elector.release()  # no-op if already released
            await elector.kube.close()
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the operator until interrupted."""
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = os.path.abspath(args.kubeconfig)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if not args.verbose:
        logging.getLogger("kopf").setLevel(logging.WARNING)  # kopf logs every handler call at INFO
    metrics.start(args.metrics_port)
    options = Options(
        kubeconfig=args.kubeconfig,
        namespaces=() if args.all_namespaces else tuple(args.namespace or ["default"]),
        prometheus_url=args.prometheus_url,
        autoscale_interval=args.autoscale_interval,
        checkpoint_interval=args.autoscaler_checkpoint_interval,
    )
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(args, options))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `qwenfleet run`."""
    p = sub.add_parser("run", help="run the operator")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", help="watch this namespace (repeatable; default: default)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    p.add_argument("--metrics-port", type=int, default=9090, help="Prometheus /metrics port (0: off)")
    p.add_argument("--health-port", type=int, default=8080, help="liveness /healthz port, served by kopf (0: off)")
    p.add_argument("--prometheus-url", default=None, help="Prometheus the KEDA ScaledObjects query")
    p.add_argument("--autoscale-interval", type=float, default=AUTOSCALE_INTERVAL_SECONDS,
                   help="seconds between autoscaler decisions")  # fmt: skip
    p.add_argument("--autoscaler-checkpoint-interval", type=float, default=CHECKPOINT_SECONDS,
                   help="seconds between checkpoints of SLO mode's memory (a ConfigMap per deployment)")  # fmt: skip
    p.add_argument("--leader-election", action="store_true", help="run the work only while holding the Lease")
    p.add_argument("--lease-namespace", default="default", help="namespace of the leader-election Lease")
    p.add_argument("--lease-name", default="qwenfleet-operator", help="name of the leader-election Lease")
    p.add_argument(
        "--lease-duration", type=float, default=LEASE_SECONDS, help="seconds a silent leader keeps the Lease"
    )
    p.add_argument("--verbose", "-v", action="store_true")
    p.set_defaults(func=run)
