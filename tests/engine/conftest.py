"""The real vLLM engine (the pinned CPU build on the tiny checkpoint) and the simulator, both from the planner's
arguments for Qwen3-0.6B on an L4: plain, and with LoRA (`real_lora`, `sim_lora`).

The machine runs one real engine at a time: asking for the other configuration stops the running one, so the
tests of each configuration are grouped by module and each engine starts once per session."""

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
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qwenfleet.devcluster import engine
from qwenfleet.devcluster.adapters import write_adapter
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


LORA_ENV = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
"""Serve /v1/load_lora_adapter and /v1/unload_lora_adapter."""


@dataclass(frozen=True)
class Adapters:
    """The LoRA adapters of the tests: a1 (served from the start) and a2 of rank 8, big of rank 32 (above
    --max-lora-rank), and notensors (a config without weights)."""

    a1: Path
    a2: Path
    big: Path
    notensors: Path


def lora_args(adapters: Adapters) -> list[str]:
    """The LoRA flags both servers get beside the plan's."""
    return ["--enable-lora", "--max-loras", "2", "--max-lora-rank", "16", "--lora-modules", f"a1={adapters.a1}"]


@pytest.fixture(scope="session")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> Adapters:
    root = tmp_path_factory.mktemp("adapters")
    checkpoint = engine.checkpoint_dir()
    return Adapters(
        a1=write_adapter(root / "a1", rank=8, checkpoint=checkpoint, seed=1),
        a2=write_adapter(root / "a2", rank=8, checkpoint=checkpoint, seed=2),
        big=write_adapter(root / "big", rank=32, checkpoint=checkpoint, seed=3),
        notensors=write_adapter(root / "notensors", rank=8, checkpoint=checkpoint, with_tensors=False),
    )


@dataclass
class RealEngines:
    """At most one running real engine, started on demand by configuration name."""

    logs: Path
    running: tuple[str, str, subprocess.Popen[bytes]] | None = None
    started: dict[str, int] = field(default_factory=dict)

    def ensure(self, name: str, args: list[str], env: dict[str, str]) -> str:
        """The base URL of the engine `name`, stopping another one first."""
        if self.running is not None and self.running[0] == name and self.running[2].poll() is None:
            return self.running[1]
        self.stop()
        port = free_port()
        argv = engine.engine_argv(["vllm", "serve"], args, "127.0.0.1", port)
        self.started[name] = self.started.get(name, 0) + 1
        log = self.logs / f"{name}-{self.started[name]}.log"
        proc = _spawn(argv, log, env)
        base = f"http://127.0.0.1:{port}"
        self.running = (name, base, proc)
        _wait(base, proc, ENGINE_START_SECONDS, log)
        return base

    def stop(self) -> None:
        """Stop the running engine, if any."""
        if self.running is not None:
            _stop(self.running[2])
            self.running = None


def _spawn(argv: list[str], log: Path, extra_env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`engine.spawn` with extra environment variables."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**engine.engine_env(), **extra_env}
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(engine.engine_root()),
                                start_new_session=True)  # fmt: skip


@pytest.fixture(scope="session")
def real_engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealEngines]:
    engine.ensure(echo=False)  # `make engine-tests` installs it first; never skip for want of it
    engines = RealEngines(tmp_path_factory.mktemp("engine"))
    try:
        yield engines
    finally:
        engines.stop()


@pytest.fixture
def real(real_engines: RealEngines) -> str:
    """The real engine's base URL."""
    return real_engines.ensure("plain", container_args(), {})


@pytest.fixture
def real_lora(real_engines: RealEngines, adapters: Adapters) -> str:
    """The real engine with LoRA (a1 loaded, runtime updating on)."""
    return real_engines.ensure("lora", [*container_args(), *lora_args(adapters)], LORA_ENV)


def _start_sim(log: Path, extra: list[str], env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    cli = Path(sys.executable).parent / "qwenfleet"
    argv = [str(cli), "sim", "--model", MODEL, "--gpu", GPU, "--port", str(port), "--cold-start-seconds", "0",
            "--time-scale", "100", *extra]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base, proc, 30, log)
        yield base
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The simulator's base URL (`qwenfleet sim` for the same plan, loaded at once, time x100)."""
    yield from _start_sim(tmp_path_factory.mktemp("sim") / "sim.log", [], {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "0"})


@pytest.fixture(scope="session")
def sim_lora(tmp_path_factory: pytest.TempPathFactory, adapters: Adapters) -> Iterator[str]:
    """The simulator with the same LoRA flags and runtime updating."""
    yield from _start_sim(tmp_path_factory.mktemp("sim-lora") / "sim.log", lora_args(adapters), LORA_ENV)
