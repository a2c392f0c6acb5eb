"""`qwenfleet router`: serve the OpenAI-compatible router for one Qwen3Router spec."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from qwenfleet.kube import Kube, make_api_client
from qwenfleet.render.router import EXTERNAL_KEYS_DIR
from qwenfleet.router.app import Router, load_spec
from qwenfleet.router.discovery import Discovery


def _keys(path: str | None) -> set[str]:
    if not path:
        return set()
    return {line.strip() for line in Path(path).read_text().splitlines() if line.strip()}


DRAIN_SECONDS = 3.0
"""Longer than a gateway's health-check interval (Envoy's, as qwenfleet's gateway tests configure it: 1 s)."""


def _external_keys(directory: Path, backends: list[str]) -> dict[str, str]:
    """The API key of each external backend whose Secret is mounted at <directory>/<backend>/key."""
    keys = {}
    for name in backends:
        path = directory / name / "key"
        if path.is_file():
            keys[name] = path.read_text().strip()
    return keys


async def _serving_once_discovered(discovery: Discovery, update: Callable[[bool], Awaitable[None]]) -> None:
    while not discovery.refreshed:
        await discovery.wait_changed(1.0)
    await update(True)


async def _serve(args: argparse.Namespace) -> None:
    spec = load_spec(args.config)
    keys = _keys(args.api_keys_file)
    external = _external_keys(Path(args.external_keys_dir), [b.name for b in spec.backends if b.external])
    kube = Kube(await make_api_client(args.kubeconfig))
    discovery = Discovery(kube, args.namespace, spec, interval=args.discovery_interval)
    router = Router(spec, discovery, keys, external_keys=external)
    stop = asyncio.Event()
    loop = asyncio.create_task(discovery.run(stop))
    runner = router.runner()
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    picker = None
    if args.epp_port:
        from qwenfleet.router.epp import start_picker  # gRPC only where a gateway uses the router

        picker, checks = await start_picker(router, args.host, args.epp_port)
        print(f"qwenfleet endpoint picker (ext_proc) on {args.host}:{args.epp_port}", flush=True)
        ready = asyncio.create_task(_serving_once_discovered(discovery, checks.update))
    gc.freeze()  # start-up objects (models, modules) never need collecting: shorter collector pauses per request
    print(f"qwenfleet router on http://{args.host}:{args.port}/v1", flush=True)
    terminated = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminated.set)
    try:
        await terminated.wait()
        if picker is not None:  # drain: the gateway's health checks see NOT_SERVING before the port closes
            ready.cancel()
            await checks.update(False)
            await asyncio.sleep(args.drain_seconds)
    finally:
        stop.set()
        if picker is not None:
            ready.cancel()
            await picker.stop(grace=5)
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await runner.cleanup()
        await kube.close()


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve(args))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `qwenfleet router`."""
    p = sub.add_parser("router", help="serve the OpenAI-compatible router for a Qwen3Router spec")
    p.add_argument("--config", required=True, help="Qwen3Router (or its spec) as YAML/JSON")
    p.add_argument("--namespace", required=True, help="namespace of the backend Qwen3Deployments")
    p.add_argument("--kubeconfig", default=None, help="default: in-cluster, then $KUBECONFIG")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--api-keys-file", default=None, help="accepted API keys, one per line")
    p.add_argument("--discovery-interval", type=float, default=1.0)
    p.add_argument("--external-keys-dir", default=EXTERNAL_KEYS_DIR,
                   help="the external API backends' keys, one <backend>/key file each")  # fmt: skip
    p.add_argument("--drain-seconds", type=float, default=DRAIN_SECONDS,
                   help="on SIGTERM, how long the Endpoint Picker answers NOT_SERVING before it stops")  # fmt: skip
    p.add_argument(
        "--epp-port", type=int, default=0, help="also serve the policy as a gateway's Endpoint Picker (ext_proc, gRPC)"
    )
    p.set_defaults(func=run)
