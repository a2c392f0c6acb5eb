"""Scraping replicas' /metrics, once per tick however many loops read the sample.

The operator's autoscaler and cost loop both need every model-server pod's sample each tick. They share one
`Scraper`: a caller says how old a sample may be, and a sample that young (or a scrape of that pod already under
way) is shared instead of asking the pod again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import aiohttp

from qwenfleet.enginemetrics.parse import EngineSample, parse
from qwenfleet.render.names import HTTP_PORT

SCRAPE_TIMEOUT_SECONDS = 2.0
KEEP_SECONDS = 120.0
"""Samples older than this are dropped (pods that went away)."""


class Scraper:
    """Replicas' samples by pod IP, shared between callers within their `max_age`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        port: int = HTTP_PORT,
        timeout: float = SCRAPE_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.port = port
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.clock = clock
        self.scrapes = 0
        """Requests sent (for tests and the operator's metrics)."""
        self._taken: dict[str, tuple[float, EngineSample | None]] = {}
        self._running: dict[str, asyncio.Future[EngineSample | None]] = {}

    async def sample(self, ip: str, max_age: float = 0.0) -> EngineSample | None:
        """The pod's sample, at most `max_age` seconds old; None if it did not answer (that answer is shared too)."""
        taken = self._taken.get(ip)
        if taken is not None and self.clock() - taken[0] <= max_age:
            return taken[1]
        running = self._running.get(ip)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[EngineSample | None] = asyncio.get_running_loop().create_future()
        self._running[ip] = future
        try:
            result = await self._scrape(ip)
            self._taken[ip] = (self.clock(), result)
            future.set_result(result)
            return result
        finally:
            if not future.done():
                future.set_result(None)  # cancelled: whoever shares it sees no answer
            del self._running[ip]

    async def samples(self, ips: Iterable[str], max_age: float = 0.0) -> dict[str, EngineSample]:
        """Samples of every pod that answered, by IP."""
        wanted = list(dict.fromkeys(ips))
        now = self.clock()
        for ip, (at, _) in list(self._taken.items()):
            if now - at > KEEP_SECONDS:
                del self._taken[ip]
        results = await asyncio.gather(*(self.sample(ip, max_age) for ip in wanted))
        return {ip: r for ip, r in zip(wanted, results, strict=True) if r is not None}

    async def _scrape(self, ip: str) -> EngineSample | None:
        self.scrapes += 1
        try:
            async with self.session.get(f"http://{ip}:{self.port}/metrics", timeout=self.timeout) as response:
                if response.status != 200:
                    return None
                return parse(await response.text())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
