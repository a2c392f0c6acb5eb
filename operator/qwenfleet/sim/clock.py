"""Simulated time on a wall clock: `time_scale` simulated seconds pass per wall second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class SimClock:
    """Maps wall time to simulated seconds since the clock started, and sleeps until a simulated instant."""

    def __init__(self, time_scale: float = 1.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale
        self._monotonic = monotonic
        self._origin = monotonic()

    def now(self) -> float:
        """Simulated seconds since the clock started."""
        return (self._monotonic() - self._origin) * self.time_scale

    def wall_seconds_until(self, sim_time: float) -> float:
        """Wall seconds until simulated time `sim_time` (negative once past)."""
        return self._origin + sim_time / self.time_scale - self._monotonic()

    async def sleep_until(self, sim_time: float) -> None:
        """Sleep until `sim_time`; when already past, only yield to the event loop (so a lagging loop catches up
        without accumulating drift)."""
        await asyncio.sleep(max(0.0, self.wall_seconds_until(sim_time)))
