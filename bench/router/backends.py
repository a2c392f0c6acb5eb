"""Simulated vLLM replicas on loopback for the router benchmark, some deliberately slower than others."""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from qwenfleet.planner import PlanRequest, plan
from qwenfleet.sim.server import SimServer


async def serve(ips: list[str], scales: list[float], max_num_seqs: int, model: str, gpu: str) -> None:
    """One simulated replica of `model` on `gpu` per IP, each at its own speed (time scale)."""
    p = plan(PlanRequest(model, gpu))
    runners = []
    for i, (ip, scale) in enumerate(zip(ips, scales, strict=True)):
        server = SimServer(p, time_scale=scale, seed=i, cold_start_seconds=0, max_num_seqs=max_num_seqs)
        runner = web.AppRunner(server.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, ip, 8000).start()
        server.start()
        runners.append(runner)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--ips", nargs="+", required=True)
    parser.add_argument("--scales", nargs="+", type=float, required=True)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--model", nargs=2, default=["Qwen3-0.6B", "L4-24GB"], metavar=("MODEL", "GPU"))
    a = parser.parse_args()
    asyncio.run(serve(a.ips, a.scales, a.max_num_seqs, *a.model))
