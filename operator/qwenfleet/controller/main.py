"""`qwenfleet run`: the operator process (kopf embedded, one API client, liveness and metrics endpoints)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

import kopf


def run(args: argparse.Namespace) -> int:
    """Run the operator until interrupted."""
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = os.path.abspath(args.kubeconfig)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if not args.verbose:  # kopf logs every successful watch-event handler at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    import qwenfleet.controller.handlers  # noqa: F401  (registers the handlers)

    memo = kopf.Memo(
        kubeconfig=args.kubeconfig,
        metrics_port=args.metrics_port,
        prometheus_url=args.prometheus_url,
        autoscale_interval=args.autoscale_interval,
    )
    namespaces = [] if args.all_namespaces else [args.namespace or "default"]
    liveness = f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=args.all_namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
            memo=memo,
        )
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `qwenfleet run`."""
    p = sub.add_parser("run", help="run the operator")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", help="watch one namespace (default: default)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    p.add_argument("--metrics-port", type=int, default=9090, help="Prometheus /metrics port (0: off)")
    p.add_argument("--health-port", type=int, default=8080, help="liveness /healthz port (0: off)")
    p.add_argument("--prometheus-url", default=None, help="Prometheus the KEDA ScaledObjects query")
    p.add_argument("--autoscale-interval", type=float, default=10.0, help="seconds between autoscaler decisions")
    p.add_argument("--verbose", "-v", action="store_true")
    p.set_defaults(func=run)
