"""Many simulated vLLM pods in one process: one aiohttp listener per pod IP and port.

    fleet = SimFleet(time_scale=10)
    pod = await fleet.start_pod("ns/name/uid", "127.1.3.7", 8000, plan, seed=7)
    ...                                   # http://127.1.3.7:8000/v1/... until
    await fleet.stop_pod("ns/name/uid")   # or `await fleet.close()` for all of them

Each pod has its own engine, clock, cold start and metrics registry. Keys are the caller's (the fleet agent
uses namespace/name/uid); starting a key that exists replaces its pod.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from aiohttp import web

from qwenfleet.api.plan import Plan
from qwenfleet.sim.lora import LoraConfig
from qwenfleet.sim.server import SimServer

SHUTDOWN_SECONDS = 0.5
"""Wall seconds aiohttp may wait for handlers while a pod stops (they end at once: their engine is gone)."""


@dataclass(frozen=True)
class SimPod:
    """A running simulated pod."""

    key: str
    host: str
    port: int
    server: SimServer
    runner: web.AppRunner

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.1.3.7:8000."""
        return f"http://{self.host}:{self.port}"


class SimFleet:
    """Start and stop simulated replicas by key."""

    def __init__(self, *, time_scale: float = 1.0) -> None:
        self.time_scale = time_scale
        self.pods: dict[str, SimPod] = {}

    async def __aenter__(self) -> SimFleet:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start_pod(
        self,
        key: str,
        host: str,
        port: int,
        plan: Plan,
        *,
        seed: int = 0,
        cold_start_seconds: float | None = None,
        max_num_seqs: int | None = None,
        max_num_batched_tokens: int | None = None,
        time_scale: float | None = None,
        enable_lora: bool | None = None,
        max_loras: int | None = None,
        max_lora_rank: int | None = None,
        lora_modules: dict[str, str] | None = None,
        lora_runtime_updates: bool = False,
        path_map: dict[str, Path] | None = None,
    ) -> SimServer:
        """Serve a simulated vLLM for `plan` on host:port (port 0 picks a free one: see `pods[key].port`).

        `cold_start_seconds` is in simulated seconds (default: the plan's estimate); `/health` answers 503
        until it has passed. `time_scale` defaults to the fleet's. Raises OSError when the address is taken.
        The LoRA settings left None follow the plan's vLLM arguments (`--enable-lora`, `--max-loras`,
        `--max-lora-rank`, `--lora-modules`); `lora_runtime_updates` serves the load/unload routes, and
        `path_map` maps the pod's path prefixes to directories on this machine.
        """
        await self.stop_pod(key)
        server = SimServer(
            plan,
            time_scale=time_scale or self.time_scale,
            seed=seed,
            cold_start_seconds=cold_start_seconds,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            lora=lora_config(plan, enable_lora, max_loras, max_lora_rank, lora_modules, lora_runtime_updates),
            path_map=path_map,
        )
        runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        server.start()
        bound = port or _bound_port(runner, port)
        self.pods[key] = SimPod(key, host, bound, server, runner)
        return server

    async def stop_pod(self, key: str) -> bool:
        """Stop a pod as if its container died: open requests lose their connections. False if unknown.

        (By the time the fleet agent sees a pod gone, Kubernetes has already killed the real container.)
        """
        pod = self.pods.pop(key, None)
        if pod is None:
            return False
        await pod.server.close()
        await pod.runner.cleanup()
        return True

    async def close(self) -> None:
        """Stop every pod."""
        for key in list(self.pods):
            await self.stop_pod(key)

    def url(self, key: str) -> str:
        """Base URL of a running pod."""
        return self.pods[key].url


def lora_config(
    plan: Plan,
    enable: bool | None = None,
    max_loras: int | None = None,
    max_rank: int | None = None,
    modules: dict[str, str] | None = None,
    runtime_updates: bool = False,
) -> LoraConfig:
    """The plan's LoRA flags, with each setting given here in place of the plan's."""
    base = LoraConfig.from_vllm_args(plan.vllm_args, runtime_updates=runtime_updates)
    return replace(
        base,
        enabled=base.enabled if enable is None else enable,
        max_loras=base.max_loras if max_loras is None else max_loras,
        max_lora_rank=base.max_lora_rank if max_rank is None else max_rank,
        modules=base.modules if modules is None else tuple(modules.items()),
    )


def _bound_port(runner: web.AppRunner, default: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return default
