"""The floor for any Python router: the least an aiohttp + uvloop proxy can do (no routing, one replica)."""

from __future__ import annotations

import argparse
import asyncio
import gc

import aiohttp
import uvloop
from aiohttp import web


async def main(port: int, upstream: str) -> None:
    """Forward every chat request to `upstream` and return its answer."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)

    async def forward(request: web.Request) -> web.Response:
        headers = {"Content-Type": "application/json"}
        async with session.post(f"http://{upstream}{request.path}", data=await request.read(), headers=headers) as r:
            return web.Response(status=r.status, body=await r.read(), content_type="application/json")

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", forward)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    gc.freeze()
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    a = parser.parse_args()
    uvloop.run(main(a.port, a.upstream))
