"""One real vLLM engine (the pinned CPU build on the tiny checkpoint) and one simulator, both from the planner's
arguments for Qwen3-0.6B on an L4, for the whole session."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwenfleet.devcluster import engine
from qwenfleet.planner import PlanRequest, plan

MODEL, GPU = "Qwen3-0.6B", "L4-24GB"
ENGINE_START_SECONDS = 420


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait(base: str, proc: subprocess.Popen[bytes], seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not _healthy(base):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else ""
            raise RuntimeError(f"{base} never became healthy (exit {proc.poll()}); log {log}:\n{tail}")
        time.sleep(1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def container_args() -> list[str]:
    """The model-server container's `vllm serve` arguments as the renderer writes them for the plan."""
    p = plan(PlanRequest(model=MODEL, gpu=GPU))
    return [*p.vllm_args, "--host", "0.0.0.0", "--port", "8000"]


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real engine's base URL."""
    engine.ensure(echo=False)  # `make engine-tests` installs it first; never skip for want of it
    port = free_port()
    argv = engine.engine_argv(["vllm", "serve"], container_args(), "127.0.0.1", port)
    log = tmp_path_factory.mktemp("engine") / "vllm.log"
    proc = engine.spawn(argv, log)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base, proc, ENGINE_START_SECONDS, log)
        yield base
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The simulator's base URL (`qwenfleet sim` for the same plan, loaded at once, time x100)."""
    port = free_port()
    cli = Path(sys.executable).parent / "qwenfleet"
    log = tmp_path_factory.mktemp("sim") / "sim.log"
    argv = [str(cli), "sim", "--model", MODEL, "--gpu", GPU, "--port", str(port), "--cold-start-seconds", "0",
            "--time-scale", "100"]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base, proc, 30, log)
        yield base
    finally:
        _stop(proc)
