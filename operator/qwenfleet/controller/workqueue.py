"""A work queue of object keys with a fixed pool of workers: one reconcile per key at a time, no task per object.

A key is queued at most once however often it is added; a key added while its reconcile runs is queued again
when that reconcile ends (so no change is lost, and no key is reconciled twice at once). After each pass the
process function says when to look at the key again (the resync, a retry, a back-off): one timer handle per key,
the soonest schedule kept, and cancelled when the key is forgotten (also while its pass runs: the pass's
answer then schedules nothing). A stop lets the passes that are running finish, for at most its drain time, and
takes no key after it has begun.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """Keys in, `process(key) -> seconds until the next pass (None: none)` out, `workers` at a time."""

    def __init__(self, process: Callable[[K], Awaitable[float | None]], workers: int, name: str = "work") -> None:
        self._process = process
        self._workers = workers
        self._name = name
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._running: set[K] = set()
        self._again: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._forgotten: set[K] = set()  # forgotten while their pass ran: schedule nothing after it
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()  # set while no pass runs
        self._idle.set()
        self.running = False
        self.passes = 0
        self.done_once: set[K] = set()  # keys passed at least once since start
        self._reported = 0
        self._started = time.monotonic()

    def start(self) -> None:
        """Start the workers (inside the running event loop)."""
        self._started = time.monotonic()
        self.running = True
        self._tasks = [asyncio.ensure_future(self._work()) for _ in range(self._workers)]

    async def stop(self, drain_seconds: float = 0.0) -> None:
        """Take no more keys; let the passes that run finish (for at most `drain_seconds`), then stop the
        workers and every timer. What was queued or scheduled is dropped: a start begins from the cluster."""
        self.running = False
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queued.clear()
        self._again.clear()
        if drain_seconds > 0 and self._running:
            try:
                await asyncio.wait_for(self._idle.wait(), drain_seconds)
            except TimeoutError:
                log.warning("%s queue: %d passes still running after %.1fs; cancelled", self._name,
                            len(self._running), drain_seconds)  # fmt: skip
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._running.clear()
        self._idle.set()

    def add(self, key: K) -> None:
        """Reconcile `key` soon (once, however often it is added before its turn); ignored while stopped."""
        if not self.running:
            return
        self._forgotten.discard(key)
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()
        if key in self._running:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: K, seconds: float) -> None:
        """Reconcile `key` after `seconds`, unless it is already due sooner (the sooner schedule wins); ignored
        while stopped."""
        if not self.running:
            return
        loop = asyncio.get_running_loop()
        handle = self._timers.get(key)
        if handle is not None:
            if handle.when() <= loop.time() + seconds:
                return
            handle.cancel()
        self._timers[key] = loop.call_later(seconds, self._due, key)

    def _due(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def forget(self, key: K) -> None:
        """Drop `key`'s schedule (the object is gone); a pass already queued finds it gone and does nothing."""
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()
        self._again.discard(key)
        self.done_once.discard(key)
        if key in self._running:
            self._forgotten.add(key)

    def known(self) -> int:
        """Keys queued, running or scheduled."""
        return len(self._queued | self._running | set(self._timers))

    def _note_pass(self, key: K) -> None:
        """Log when the queue drains with more objects passed at least once than at the last drain: the first
        full pass after a start is the first such line that counts every object."""
        self.passes += 1
        self.done_once.add(key)
        drained = not self._queued and not self._again and len(self._running) <= 1
        if drained and len(self.done_once) > self._reported:
            self._reported = len(self.done_once)
            log.info("%s queue drained: %d objects passed at least once, %.1fs after start", self._name,
                     self._reported, time.monotonic() - self._started)  # fmt: skip

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._running.add(key)
            self._idle.clear()
            wait: float | None = None
            try:
                wait = await self._process(key)
            except asyncio.CancelledError:
                raise
            except Exception:  # the process function handles its own errors; this is the last guard
                log.exception("%s queue: %s failed", self._name, key)
                wait = 60.0
            finally:
                self._note_pass(key)
                self._running.discard(key)
                if not self._running:
                    self._idle.set()
            if key in self._forgotten:
                self._forgotten.discard(key)
                self.done_once.discard(key)
            elif key in self._again:
                self._again.discard(key)
                self.add(key)
            elif wait is not None:
                self.add_after(key, wait)
