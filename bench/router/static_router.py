"""`qwenfleet router` with a fixed backend list instead of Kubernetes discovery (for the benchmark only).

With `--epp-port`, the same router also serves its policy as a gateway's Endpoint Picker (Envoy ext_proc, gRPC).
"""

from __future__ import annotations

import argparse
import asyncio
import gc

import aiohttp
from aiohttp import web

from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.router.app import Router
from qwenfleet.router.discovery import FULL_SCRAPE_EVERY, Discovery, QueueSignal
from qwenfleet.router.epp import start_picker
from qwenfleet.router.policy import BackendState, Replica


class StaticDiscovery(Discovery):
    """Fixed replicas; only their queue depth is scraped, as the real discovery does."""

    def __init__(self, spec: Qwen3RouterSpec, addresses: list[str], model: str, signal: QueueSignal) -> None:
        super().__init__(kube=None, namespace="bench", spec=spec, interval=0.5)  # type: ignore[arg-type]
        replicas = [Replica(f"r{i}", a) for i, a in enumerate(addresses)]
        self.states = {"small": BackendState("small", model, replicas)}
        self._signals = {r.id: signal for r in replicas}
        self.refreshed = True

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                for r in self.states["small"].replicas:
                    await self._scrape(session, r)
                # `metrics-every-pass`: the full exposition at every pass, as discovery read it before /load
                self._passes = 0 if self.every_pass else self._passes + 1
                await asyncio.sleep(self.interval)

    every_pass = False


async def main(
    addresses: list[str],
    port: int,
    affinity: bool,
    model: str,
    load_bound: float | None,
    signal: str,
    seqs: int,
    epp_port: int | None = None,
) -> None:
    bound = {"loadBound": load_bound} if load_bound else {}
    spec = Qwen3RouterSpec.model_validate({
        "backends": [{"name": "small", "aliases": ["qwen3"]}], "defaultBackend": "small",
        "prefixAffinity": {"enabled": affinity, "prefixChars": 256, **bound},
    })  # fmt: skip
    discovery = StaticDiscovery(spec, addresses, model, QueueSignal(signal == "load", seqs))
    discovery.every_pass = signal == "metrics-every-pass"
    scraper = asyncio.ensure_future(discovery.run(asyncio.Event()))
    router = Router(spec, discovery)
    runner = web.AppRunner(router.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    if epp_port is not None:
        _picker, health = await start_picker(router, "127.0.0.1", epp_port)
        await health.update(True)
    gc.freeze()
    print("ready", flush=True)
    await asyncio.Event().wait()
    scraper.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", nargs="+", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix-affinity", action="store_true")
    parser.add_argument("--model", default="Qwen3-0.6B", help="the model the backends serve")
    parser.add_argument(
        "--signal",
        choices=["load", "metrics", "metrics-every-pass"],
        default="load",
        help=f"queue signal: /load, /metrics every {FULL_SCRAPE_EVERY} passes, or /metrics every pass",
    )
    parser.add_argument("--max-num-seqs", type=int, default=16, help="the replicas' --max-num-seqs")
    parser.add_argument("--load-bound", type=float, default=None, help="prefix affinity's load bound (default: API's)")
    parser.add_argument("--epp-port", type=int, default=None, help="also serve the Endpoint Picker (gRPC) here")
    a = parser.parse_args()
    import uvloop

    uvloop.run(main(a.backends, a.port, a.prefix_affinity, a.model, a.load_bound, a.signal, a.max_num_seqs, a.epp_port))
