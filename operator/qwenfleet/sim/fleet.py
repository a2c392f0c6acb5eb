"""Many simulated vLLM pods in one process: one listener per pod IP and port."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from qwenfleet.api.plan import Plan
from qwenfleet.sim.server import SimServer


@dataclass
class _Pod:
    server: SimServer
    runner: web.AppRunner


class SimFleet:
    """Start and stop simulated replicas by key (e.g. namespace/pod name)."""

    def __init__(self, *, time_scale: float = 1.0) -> None:
        self.time_scale = time_scale
        self.pods: dict[str, _Pod] = {}

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
    ) -> SimServer:
        """Serve a simulated vLLM for `plan` on host:port; replaces an existing pod with the same key."""
        await self.stop_pod(key)
        server = SimServer(plan, time_scale=self.time_scale, seed=seed, cold_start_seconds=cold_start_seconds,
                           max_num_seqs=max_num_seqs)  # fmt: skip
        runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        server.start()
        self.pods[key] = _Pod(server, runner)
        return server

    async def stop_pod(self, key: str) -> bool:
        """Stop a pod's server; False if there was none."""
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
