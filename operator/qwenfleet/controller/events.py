"""Kubernetes Events about our objects (`kubectl describe` shows them), sent off the reconcile's path.

A pass queues its Events and goes on; SENDERS tasks create them. When thousands of objects turn Ready at once
the queue fills, and then a pass waits for room instead of dropping an Event: none is lost, and the reconcile
is slowed only when the Events are that far behind. A refused Event (a namespace being deleted, say) is logged
and not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from qwenfleet.kube import Kube, KubeError

log = logging.getLogger(__name__)
Obj = dict[str, Any]
COMPONENT = "qwenfleet"
MAX_MESSAGE = 1024
MAX_PENDING = 1000
SENDERS = 4


def event_manifest(obj: Obj, type_: str, reason: str, message: str, now: datetime, unique: int) -> Obj:
    """A core/v1 Event about `obj`, named after it as kubectl and client-go do (`name.<hex>`)."""
    meta = obj.get("metadata") or {}
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.get('name')}.{unique:x}", "namespace": meta.get("namespace") or "default"},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def post_event(kube: Kube, event: Obj) -> None:
    """Create an Event; a refusal is logged, never raised."""
    try:
        await kube.create(event)
    except KubeError as exc:
        log.info("event %s about %s not posted: %s", event["reason"], event["involvedObject"]["name"], exc)


class EventPoster:
    """`post` queues an Event about an object (waiting only while MAX_PENDING are queued); SENDERS tasks send."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._pending: asyncio.Queue[Obj] = asyncio.Queue(MAX_PENDING)
        self._tasks: list[asyncio.Task[None]] = []

    async def post(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        """Queue an Event about `obj`."""
        await self._pending.put(event_manifest(obj, type_, reason, message, datetime.now(UTC), time.time_ns()))

    def start(self) -> None:
        """Start sending (inside the running event loop)."""
        self._tasks = [asyncio.ensure_future(self._send()) for _ in range(SENDERS)]

    async def stop(self, drain_seconds: float = 2.0) -> None:
        """Send what is queued (for at most `drain_seconds`), then stop."""
        if not self._tasks:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pending.join(), drain_seconds)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _send(self) -> None:
        while True:
            event = await self._pending.get()
            try:
                await post_event(self.kube, event)
            finally:
                self._pending.task_done()
