"""Replicas that answer at once, for the long-prompt case's path-only rows (for the benchmark only).

The simulator estimates a prompt's tokens in Python (tens of milliseconds of CPU for a 220 KB prompt), so under
150 concurrent long prompts it, not the path in front of it, sets the pace on a small machine. These replicas only
read and parse the request (as any engine must) and stream one token: what is left is the router or gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web


def _chunk(rid: str, model: str, delta: dict[str, str], finish: str | None = None) -> bytes:
    body = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def app(model: str) -> web.Application:
    """One replica: /health, /load, /v1/models and streaming or whole /v1/chat/completions."""
    inflight = 0
    served = 0

    async def chat(request: web.Request) -> web.StreamResponse:
        nonlocal inflight, served
        inflight += 1
        try:
            body = json.loads(await request.read())
            served += 1
            rid = f"chatcmpl-stub-{served}"
            if not body.get("stream"):
                message = {"role": "assistant", "content": "ok"}
                choice = {"index": 0, "message": message, "finish_reason": "length"}
                return web.json_response({"id": rid, "object": "chat.completion", "model": model, "choices": [choice]})
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
            await response.prepare(request)
            await response.write(_chunk(rid, model, {"role": "assistant", "content": ""}) + _chunk(rid, model, {
                "content": "ok"}) + _chunk(rid, model, {}, "length") + b"data: [DONE]\n\n")  # fmt: skip
            await response.write_eof()
            return response
        finally:
            inflight -= 1

    async def health(_: web.Request) -> web.Response:
        return web.Response()

    async def load(_: web.Request) -> web.Response:
        return web.json_response({"server_load": inflight})

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": model, "object": "model"}]})

    application = web.Application(client_max_size=64 * 1024 * 1024)
    application.router.add_post("/v1/chat/completions", chat)
    application.router.add_get("/health", health)
    application.router.add_get("/load", load)
    application.router.add_get("/v1/models", models)
    return application


async def serve(ips: list[str], model: str) -> None:
    """One replica per IP on port 8000."""
    for ip in ips:
        runner = web.AppRunner(app(model), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, ip, 8000).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--ips", nargs="+", required=True)
    parser.add_argument("--model", default="Qwen3-4B-Instruct-2507")
    a = parser.parse_args()
    import uvloop

    uvloop.run(serve(a.ips, a.model))
