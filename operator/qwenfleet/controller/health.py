"""Whether kopf's watches are alive: a watch that ended with an error makes the operator unhealthy.

kopf retries a failed watch request (a 403 during an upgrade, say) a few times, then gives up on that watch: the
task that streamed it ends with the error, and the operator goes on without that kind, and (for an indexed kind)
without ever running a handler again. kopf names each such task `watcher for <resource>@<namespace>`; this
tracker follows them from the moment they appear and remembers every one that ended with an error (a
cancellation, such as a CRD's removal or the operator's stop, is not an error). The probe behind /healthz
reports them, so the kubelet restarts the pod and `kubectl logs` says which kind was refused and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref

from prometheus_client import Gauge

log = logging.getLogger(__name__)
WATCHER_PREFIX = "watcher for "
"""How kopf names the task of each watch (kopf/_core/reactor/orchestration.py)."""
SCAN_SECONDS = 2.0
FAILED = Gauge("qwenfleet_watch_failed", "1 for each watch kopf gave up on (by resource@namespace).", ["watch"])


def describe(exc: BaseException) -> str:
    """A short account of why a watch ended: the HTTP status and the API server's message when there is one."""
    status = getattr(exc, "status", None)
    text = str(exc) or type(exc).__name__
    return f"{status} {type(exc).__name__}: {text}" if status else f"{type(exc).__name__}: {text}"


class WatchHealth:
    """The watches kopf runs, and those that failed."""

    def __init__(self) -> None:
        self.failed: dict[str, str] = {}
        self._tracked: weakref.WeakSet[asyncio.Task[object]] = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None

    def alive(self) -> int:
        """Watches running now."""
        return sum(1 for t in self._tracked if not t.done())

    def scan(self) -> None:
        """Start following the watch tasks that appeared since the last scan."""
        for task in asyncio.all_tasks():
            if task not in self._tracked and task.get_name().startswith(WATCHER_PREFIX):
                self._tracked.add(task)
                task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[object]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        watch = task.get_name()[len(WATCHER_PREFIX) :]
        self.failed[watch] = describe(exc)
        FAILED.labels(watch=watch).set(1)
        log.error("the watch of %s failed and is not retried: %s", watch, self.failed[watch])

    def problems(self) -> str | None:
        """What is wrong, in one line (None: every watch is alive)."""
        if not self.failed:
            return None
        return "; ".join(f"watch of {watch} failed: {why}" for watch, why in sorted(self.failed.items()))

    def start(self) -> None:
        """Scan every SCAN_SECONDS (inside the running loop), so a watch that fails at once is seen too."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._scan_forever())

    async def stop(self) -> None:
        """Stop scanning."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _scan_forever(self) -> None:
        while True:
            self.scan()
            await asyncio.sleep(SCAN_SECONDS)
