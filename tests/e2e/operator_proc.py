"""The operator under test as a real `qwenfleet run` process, and polling with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml

T = TypeVar("T")


async def wait_for(
    probe: Callable[[], Awaitable[T | bool | None]],
    timeout: float,
    what: str,
    detail: Callable[[], object] | None = None,
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` (and `detail()`) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    last: object = None
    while True:
        last = await probe()
        if last:
            return last  # type: ignore[return-value]
        if time.monotonic() > deadline:
            more = f"; {detail()}" if detail else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r}){more}")
        await asyncio.sleep(delay)
        delay = min(1.0, delay * 1.5)


async def wait_healthy(session: aiohttp.ClientSession, base: str, timeout: float, what: str) -> None:
    """Poll `base`/health until it answers 200; fail with `what` after `timeout` seconds."""

    async def healthy() -> bool:
        try:
            async with session.get(f"{base}/health") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(healthy, timeout, what)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    """`qwenfleet run` (default `--all-namespaces`) against the test cluster, restartable, with its log kept."""

    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        args: tuple[str, ...] = ("--all-namespaces",),
        name: str = "operator",
        env: dict[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.args = args
        self.name = name
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.health_port = 0
        """Set to serve kopf's /healthz on that port (0: off)."""
        self.starts = 0

    @property
    def log_path(self) -> Path:
        """Where the current run logs."""
        return self.log_dir / f"{self.name}-{self.starts}.log"

    def start(self) -> None:
        """Start the operator and wait until its metrics endpoint answers."""
        self.starts += 1
        self.metrics_port = free_port()
        log = self.log_path.open("wb")
        cmd = [sys.executable, "-m", "qwenfleet.cli", "run", *self.args, f"--kubeconfig={self.kubeconfig}",
               f"--metrics-port={self.metrics_port}", f"--health-port={self.health_port}",
               "--autoscale-interval=1"]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 30
        while self._metrics() is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"operator did not start; see {self.log_path}:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the operator (SIGKILL after 10 s)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    async def restart(self) -> None:
        """Stop and start again."""
        await asyncio.to_thread(self.stop)
        await asyncio.to_thread(self.start)

    def _metrics(self) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            return None

    def metric(self, series: str, /, **labels: str) -> float:
        """The value of a metric of the current process, the first series with `labels` (0 when absent)."""
        text = self._metrics() or ""
        wanted = [f'{k}="{v}"' for k, v in labels.items()]
        for line in text.splitlines():
            if (line.startswith(f"{series} ") or line.startswith(f"{series}{{")) and all(w in line for w in wanted):
                return float(line.split()[-1])
        return 0.0

    def reconcile_count(self) -> float:
        """Reconciles the current process has finished."""
        return self.metric("qwenfleet_reconcile_duration_seconds_count")


@contextlib.contextmanager
def router_process(
    spec: dict[str, Any],
    namespace: str,
    kubeconfig: Path,
    tmp_path: Path,
    discovery_interval: float = 0.5,
    args: Sequence[str] = (),
) -> Iterator[str]:
    """`qwenfleet router` with `spec` (and `args`) on a free loopback port, discovering in `namespace` every
    `discovery_interval` seconds; yields its base URL."""
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump({"spec": spec}))
    port = free_port()
    log = (tmp_path / "router.log").open("wb")
    cmd = [sys.executable, "-m", "qwenfleet.cli", "router", f"--config={config}", f"--namespace={namespace}",
           f"--kubeconfig={kubeconfig}", "--host=127.0.0.1", f"--port={port}",
           f"--discovery-interval={discovery_interval}", *args]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def metric_sum(session: aiohttp.ClientSession, url: str, prefix: str) -> float:
    """The sum of the samples at `url` (Prometheus text) whose line starts with `prefix`."""
    async with session.get(url) as r:
        text = await r.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


async def assert_disconnect_cancels(session: aiohttp.ClientSession, response: aiohttp.ClientResponse,
                                    metrics_url: str) -> None:  # fmt: skip
    """`response` is a stream still open: once the engine behind `metrics_url` runs it, the client goes away, and
    the engine's running count must return to zero (the request was cancelled all the way down)."""

    async def running() -> float:
        return await metric_sum(session, metrics_url, "vllm:num_requests_running{")

    async def busy() -> bool:
        return await running() >= 1

    async def idle() -> bool:
        return await running() == 0

    await wait_for(busy, 10, "the streamed request running at the engine")
    response.close()
    await wait_for(idle, 30, "the engine's request cancelled after the client went away")


async def wait_openai_serving(client: Any, models: Sequence[str], within: float, what: str) -> None:
    """Wait until the openai `client` gets an answer for each of `models` (an error or no connection: not yet)."""
    import openai

    async def served() -> bool:
        try:
            for model in models:
                await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                     max_tokens=2)  # fmt: skip
        except (openai.APIStatusError, openai.APIConnectionError):
            return False
        return True

    await wait_for(served, within, what)
